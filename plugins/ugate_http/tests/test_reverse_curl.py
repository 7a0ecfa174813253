"""http listener in reverse mode: route by Host to a pooled HTTP/1.1 upstream; curl as client."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ugate_core import Gateway
from ugate_core.testing import StartGateway, free_port, metric, require_peer, run

if TYPE_CHECKING:
    from conftest import Origin  # type: ignore[import-not-found]

MIB = 1 << 20


def config(origin_port: int, extra: str = "", gateway: str = "") -> str:
    dead = free_port()
    return f"""
[admin]
listen = ""
[gateway]
handshake_timeout = 5.0
{gateway}
[listeners.web]
listen = "127.0.0.1:0"
protocols = ["http"]
mode = "reverse"
{extra}
[listeners.shared]
listen = "127.0.0.1:0"
protocols = ["*"]
mode = "auto"
[hosts."svc.test"]
endpoints = ["127.0.0.1:{origin_port}"]
[hosts.localhost]
endpoints = ["127.0.0.1:{origin_port}"]
[hosts."dead.test"]
endpoints = ["127.0.0.1:{dead}"]
"""


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A temporary directory whose (100 MiB) files are deleted after the test, so pytest's
    kept temporary directories do not pile them up."""
    yield tmp_path
    for f in tmp_path.iterdir():
        if f.is_file():
            f.unlink()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MIB):
            h.update(chunk)
    return h.hexdigest()


async def curl(*args: str, ok: bool = True, timeout: float = 120, noproxy: str = "*"
               ) -> tuple[int, bytes, bytes]:
    """curl; ``noproxy="*"`` keeps proxy variables of the environment out of the way."""
    exe = require_peer("curl")
    res = await run(exe, "-sS", "--http1.1", "--noproxy", noproxy, "--max-time", str(timeout),
                    "-w", "\n%{http_code}", *args, timeout=timeout + 10)
    if ok:
        assert res.returncode == 0, f"curl {' '.join(args)}: exit {res.returncode}: {res.stderr!r}"
    body, _, code = res.stdout.rpartition(b"\n")
    return int(code or 0), body, res.stderr


def url(gw: Gateway, path: str, listener: str = "web", host: str = "svc.test") -> list[str]:
    port = gw.port(listener)
    return ["--resolve", f"{host}:{port}:127.0.0.1", f"http://{host}:{port}{path}"]


def rejections(gw: Gateway, reason: str, listener: str = "web") -> float:
    return metric(gw, "ugate_rejections_total", listener=listener, reason=reason)


@pytest.mark.parametrize("size", [0, MIB, 100 * MIB], ids=["0B", "1MiB", "100MiB"])
async def test_download_sha256(start_gateway: StartGateway, origin: Origin, scratch: Path,
                               size: int) -> None:
    gw = await start_gateway(config(origin.port))
    want = origin.sha256(size)
    for query in ("", "?chunked", "?close"):
        out = scratch / "out"
        t0 = time.monotonic()
        code, _, _ = await curl("-o", str(out), *url(gw, f"/bytes/{size}{query}"))
        dt = time.monotonic() - t0
        assert code == 200
        assert file_sha256(out) == want, query
        if size >= 100 * MIB:
            print(f"download {size >> 20} MiB{query}: {dt:.2f}s {size / dt / MIB:.0f} MiB/s")
    headers = origin.requests[0][2]
    assert headers["host"] == f"svc.test:{gw.port('web')}"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["forwarded"] == f'for=127.0.0.1;host="svc.test:{gw.port("web")}";proto=http'
    assert headers["via"].startswith("1.1 ugate-")


@pytest.mark.parametrize("size", [0, MIB, 100 * MIB], ids=["0B", "1MiB", "100MiB"])
@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
async def test_upload_sha256(start_gateway: StartGateway, origin: Origin, scratch: Path,
                             size: int, chunked: bool) -> None:
    gw = await start_gateway(config(origin.port))
    src = scratch / "src"
    want = origin.write_body(src, size)
    te = ["-H", "Transfer-Encoding: chunked"] if chunked else []
    t0 = time.monotonic()
    code, body, _ = await curl(*te, "--data-binary", f"@{src}", *url(gw, "/sha256"))
    dt = time.monotonic() - t0
    assert (code, body) == (200, f"{want} {size}".encode())
    if size >= 100 * MIB:
        print(f"upload {size >> 20} MiB chunked={chunked}: {dt:.2f}s {size / dt / MIB:.0f} MiB/s")
    sent = origin.requests[-1][2]
    assert sent.get("transfer-encoding") == ("chunked" if chunked else None)
    assert "expect" not in sent  # curl's Expect: 100-continue is answered by the proxy


@pytest.mark.parametrize("size", [0, MIB, 100 * MIB], ids=["0B", "1MiB", "100MiB"])
async def test_echo_streams_both_ways_at_once(start_gateway: StartGateway, origin: Origin,
                                              scratch: Path, size: int) -> None:
    """The origin echoes while it reads: only a proxy that streams both ways finishes."""
    gw = await start_gateway(config(origin.port))
    src, out = scratch / "src", scratch / "out"
    want = origin.write_body(src, size)
    code, _, _ = await curl("--data-binary", f"@{src}", "-o", str(out), *url(gw, "/echo"))
    assert code == 200
    assert file_sha256(out) == want


async def test_keepalive_and_pool_reuse(start_gateway: StartGateway, origin: Origin) -> None:
    gw = await start_gateway(config(origin.port))
    port = gw.port("web")
    urls = [f"http://svc.test:{port}/r{i}" for i in range(5)]
    exe = require_peer("curl")
    res = await run(exe, "-sS", "--http1.1", "--resolve", f"svc.test:{port}:127.0.0.1", *urls,
                    timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"".join(f"hello /r{i}\n".encode() for i in range(5))
    # another client later: the idle upstream connection is reused
    code, body, _ = await curl(*url(gw, "/again"))
    assert (code, body) == (200, b"hello /again\n")
    assert origin.connections == 1
    assert metric(gw, "ugate_connections_total", listener="web", protocol="http") == 2


async def test_http10_client_and_head(start_gateway: StartGateway, origin: Origin) -> None:
    gw = await start_gateway(config(origin.port))
    exe = require_peer("curl")
    port = gw.port("web")
    res = await run(exe, "-sS", "--http1.0", "-i", "--resolve", f"svc.test:{port}:127.0.0.1",
                    f"http://svc.test:{port}/bytes/70000?chunked", timeout=30)
    head, _, body = res.stdout.partition(b"\r\n\r\n")
    assert b"Connection: close" in head and b"Transfer-Encoding" not in head
    assert hashlib.sha256(body).hexdigest() == origin.sha256(70000)
    code, body, _ = await curl("-I", *url(gw, "/bytes/12345"))
    assert code == 200 and b"Content-Length: 12345" in body


async def test_shared_port_auto_mode(start_gateway: StartGateway, origin: Origin) -> None:
    gw = await start_gateway(config(origin.port))
    code, body, _ = await curl(*url(gw, "/auto", listener="shared"))
    assert (code, body) == (200, b"hello /auto\n")
    code, body, _ = await curl("-x", f"http://127.0.0.1:{gw.port('shared')}",
                               "http://svc.test/fwd", noproxy="")
    assert (code, body) == (200, b"hello /fwd\n")


async def test_upstream_errors(start_gateway: StartGateway, origin: Origin) -> None:
    gw = await start_gateway(config(origin.port, "response_timeout = 0.5"))
    code, body, _ = await curl(*url(gw, "/", host="dead.test"))
    assert code == 502 and b"cannot reach dead.test:" in body and b"refused" in body
    assert rejections(gw, "dial_refused") == 1
    t0 = time.monotonic()
    code, body, _ = await curl(*url(gw, "/slow"))
    assert code == 504 and b"did not answer within 0.5s" in body
    assert time.monotonic() - t0 < 3
    assert rejections(gw, "upstream_timeout") == 1
    code, body, _ = await curl(*url(gw, "/garbage"))
    assert code == 502 and b"malformed status line" in body
    assert rejections(gw, "bad_response") == 1
    code, body, _ = await curl("-H", "X-Big: " + "a" * 70000, *url(gw, "/"))
    assert code == 431
    assert rejections(gw, "header_too_large") == 1
    exe = require_peer("curl")
    res = await run(exe, "-sS", "--http1.0", "-H", "Host:", "-w", "%{http_code}",
                    f"http://127.0.0.1:{gw.port('web')}/", timeout=30)
    assert res.stdout.endswith(b"400") and b"missing Host field" in res.stdout
    code, _, err = await curl("-p", "-x", f"http://127.0.0.1:{gw.port('web')}",
                              "http://svc.test/", ok=False, noproxy="")
    assert b"405" in err
    assert metric(gw, "ugate_http_requests_total", listener="web", code="504") == 1


async def test_early_answer_reaches_client(start_gateway: StartGateway, origin: Origin,
                                           scratch: Path) -> None:
    """The origin answers 413 before reading a 20 MiB upload: the client gets the 413."""
    gw = await start_gateway(config(origin.port))
    src = scratch / "src"
    origin.write_body(src, 20 * MIB)
    code, body, _ = await curl("--data-binary", f"@{src}", *url(gw, "/early"), ok=False)
    assert (code, body) == (413, b"too large")


async def test_reverse_auth(start_gateway: StartGateway, origin: Origin) -> None:
    gw = await start_gateway(config(origin.port, 'users = { bob = "pw" }'))
    code, body, _ = await curl("-i", *url(gw, "/a"))
    assert code == 401 and b'WWW-Authenticate: Basic realm="ugate"' in body
    code, body, _ = await curl("-u", "bob:pw", *url(gw, "/a"))
    assert (code, body) == (200, b"hello /a\n")
    assert "authorization" not in origin.requests[-1][2]
    assert rejections(gw, "auth_required") == 1


WS_CLIENT = r"""
const ws = new WebSocket(process.argv[2]);
ws.binaryType = 'arraybuffer';
const sent = ['hello', 'x'.repeat(100000), new Uint8Array([0, 1, 2, 255])];
const got = [];
ws.onopen = () => { for (const m of sent) ws.send(m); };
ws.onmessage = (e) => {
  got.push(typeof e.data === 'string' ? e.data.length + ':' + e.data.slice(0, 5)
                                      : 'bin:' + Buffer.from(e.data).toString('hex'));
  if (got.length === sent.length) ws.close(1000, 'bye');
};
ws.onclose = (e) => { console.log(JSON.stringify({got, code: e.code})); process.exit(0); };
ws.onerror = (e) => { console.error('error', e.message); process.exit(1); };
setTimeout(() => { console.error('timeout'); process.exit(2); }, 15000);
"""


async def test_websocket_upgrade_pass_through(start_gateway: StartGateway, origin: Origin,
                                              tmp_path: Path) -> None:
    """Node's WebSocket client (undici) through the reverse proxy to a WebSocket echo."""
    node = require_peer("node", hint="Node.js >= 20.10 (the machine image's NodeSource "
                        "nodejs; Debian's nodejs 18 has no WebSocket client)")
    probe = await run(node, "--experimental-websocket", "-e", "new WebSocket('ws://0:1')",
                      timeout=20)
    if probe.returncode != 0:
        require_peer("node-with-websocket", hint=f"{node} has no WebSocket client: "
                     "Node.js >= 20.10 is needed")
    gw = await start_gateway(config(origin.port))
    script = tmp_path / "ws.js"
    script.write_text(WS_CLIENT)
    res = await run(node, "--experimental-websocket", "--no-warnings", str(script),
                    f"ws://localhost:{gw.port('web')}/ws", timeout=30)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out == {"got": ["5:hello", "100000:xxxxx", "bin:000102ff"], "code": 1000}
    _, target, headers = origin.requests[-1]
    assert target == "/ws" and headers["upgrade"] == "websocket"
    assert headers["connection"].lower() == "upgrade"
    for _ in range(100):
        if metric(gw, "ugate_streams_total", listener="web", end="done"):
            break
        await asyncio.sleep(0.05)
    assert metric(gw, "ugate_http_requests_total", listener="web", code="101") == 1


async def test_wrk_bounded_load(start_gateway: StartGateway, origin: Origin) -> None:
    """A short wrk run through the reverse proxy: every response 2xx, no socket errors."""
    wrk = require_peer("wrk")
    gw = await start_gateway(config(origin.port))

    async def load(port: int, host: str) -> float:
        res = await run(wrk, "-t1", "-c16", "-d2s", "-H", f"Host: {host}",
                        f"http://127.0.0.1:{port}/w", timeout=30)
        out = res.stdout.decode()
        assert res.returncode == 0, res.stderr
        assert "Non-2xx" not in out and "Socket errors" not in out, out
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        assert m, out
        return float(m.group(1))

    direct = await load(origin.port, "svc.test")
    proxied = await load(gw.port("web"), "svc.test")
    print(f"wrk -c16: direct {direct:.0f} req/s, through ugate {proxied:.0f} req/s "
          f"({proxied / direct:.2f}x)")
    assert proxied > 200
    assert origin.connections <= 16 + 16 + 1  # wrk's 16 direct, at most 16 pooled


async def test_loop_is_508(start_gateway: StartGateway, origin: Origin) -> None:
    """A Host that names the gateway itself comes back with our Via token: 508, not a storm."""
    gw = await start_gateway(config(origin.port))
    port = gw.port("web")
    code, body, _ = await curl("-H", f"Host: 127.0.0.1:{port}", f"http://127.0.0.1:{port}/x")
    assert code == 508 and b"came back to this gateway" in body
    assert rejections(gw, "loop") == 1


async def test_pipelined_requests_and_keepalive_timeout(start_gateway: StartGateway,
                                                        origin: Origin) -> None:
    gw = await start_gateway(config(origin.port, "keepalive_timeout = 0.5"))
    r, w = await asyncio.open_connection("127.0.0.1", gw.port("web"))
    w.write(b"GET /one HTTP/1.1\r\nHost: svc.test\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: svc.test\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /three HTTP/1.1\r\nHost: svc.test\r\n\r\n")
    await w.drain()
    t0 = time.monotonic()
    got = await asyncio.wait_for(r.read(-1), 10)  # ends when the idle connection is closed
    idle = time.monotonic() - t0
    w.close()
    bodies = re.findall(rb"HTTP/1\.1 200 OK\r\n.*?\r\n\r\n([^H]*)", got, re.S)
    assert bodies == [b"hello /one\n", b"abc", b"hello /three\n"], got
    assert 0.4 <= idle <= 3, idle


async def test_pool_idle_expiry(start_gateway: StartGateway, origin: Origin) -> None:
    gw = await start_gateway(config(origin.port, "pool_idle_timeout = 0.3"))
    from ugate_http.h1front import state_for

    pool = state_for(gw).pools
    code, _, _ = await curl(*url(gw, "/1"))
    assert code == 200 and pool["web"].idle_count() == 1
    await asyncio.sleep(0.6)
    assert pool["web"].idle_count() == 0
    code, _, _ = await curl(*url(gw, "/2"))
    assert code == 200 and origin.connections == 2
    # an idle connection the origin closes leaves the pool at once, not at its timeout
    assert (await curl(*url(gw, "/bye")))[:2] == (200, b"bye\n")
    for _ in range(10):  # well before pool_idle_timeout
        if pool["web"].idle_count() == 0:
            break
        await asyncio.sleep(0.02)
    assert pool["web"].idle_count() == 0


async def test_round_trip_api(start_gateway: StartGateway, origin: Origin) -> None:
    """The pool on its own, as an HTTP/2 front end or the RoundTrip API would use it."""
    from ugate_core import BytesBody
    from ugate_http.client import OutgoingRequest, UpstreamPool

    gw = await start_gateway(config(origin.port))
    pool = UpstreamPool(gw, response_timeout=5)
    data = bytes(range(256)) * 400
    for length in (None, len(data)):  # chunked, then Content-Length
        resp = await pool.round_trip(OutgoingRequest(
            method="POST", target="/echo", authority="svc.test:80",
            headers=(("Host", "svc.test"),), body=BytesBody(data), length=length))
        assert resp.head.status == 200
        got = b""
        while chunk := await resp.read():
            got += chunk
        await resp.release()
        assert got == data
    assert (pool.dialed, pool.reused, pool.idle_count("svc.test:80")) == (1, 1, 1)
    await pool.aclose()
    assert pool.idle_count() == 0


async def test_stale_keepalive_retried_once_without_body(start_gateway: StartGateway,
                                                         origin: Origin) -> None:
    """A pooled connection the origin drops instead of answering: a request without a body
    is retried on a new connection; one with a body is not (it may have had effects)."""
    gw = await start_gateway(config(origin.port))
    assert (await curl(*url(gw, "/flaky")))[:2] == (200, b"hello /flaky\n")
    assert (await curl(*url(gw, "/flaky")))[:2] == (200, b"hello /flaky\n")
    assert origin.connections == 2
    code, body, _ = await curl("--data-binary", "x", *url(gw, "/flaky"))
    assert code == 502 and b"closed the connection without answering" in body
    assert rejections(gw, "upstream_closed") == 1


async def test_half_open_head_flood(start_gateway: StartGateway, origin: Origin) -> None:
    """300 clients that send part of a head and stall: each gets 408 at the header deadline
    and a closed connection, counted; a real client served meanwhile is not held up."""
    n, deadline = 300, 1.0
    gw = await start_gateway(config(origin.port).replace("handshake_timeout = 5.0",
                                                         f"handshake_timeout = {deadline}"))
    port = gw.port("web")
    partial = b"GET /x HTTP/1.1\r\nHost: svc.test\r\nX-Slow: aaa"

    async def stall() -> tuple[bytes, float]:
        t0 = time.monotonic()
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(partial)
        try:
            got = await asyncio.wait_for(r.read(-1), deadline + 15)  # the answer, then EOF
        finally:
            w.close()
        return got, time.monotonic() - t0

    flood = [asyncio.create_task(stall()) for _ in range(n)]
    await asyncio.sleep(0.3)
    t0 = time.monotonic()
    code, body, _ = await curl(*url(gw, "/during"), timeout=20)
    served = time.monotonic() - t0
    assert code == 200 and body == b"hello /during\n"
    results = await asyncio.gather(*flood)
    for got, age in results:
        assert got.startswith(b"HTTP/1.1 408 ") and b"no complete request head" in got, got
        assert deadline * 0.8 <= age <= deadline + 10, age
    assert served < deadline + 5, served  # (answered while the flood waited its deadline)
    assert rejections(gw, "header_timeout") == n
