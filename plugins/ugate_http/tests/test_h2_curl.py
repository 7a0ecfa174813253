"""HTTP/2 reverse proxy: curl (--http2-prior-knowledge, --http2 Upgrade, https h2), nghttp and
h2load as clients, the streaming HTTP/1.1 origin of conftest.py behind, and nghttpd and a
second gateway as HTTP/2 upstreams."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives import serialization

from ugate_core import Gateway
from ugate_core.certs import anchor_pem
from ugate_core.testing import StartGateway, free_port, metric, require_peer, run

if TYPE_CHECKING:
    from conftest import Origin  # type: ignore[import-not-found]

MIB = 1 << 20


def config(origin_port: int, extra: str = "", tail: str = "") -> str:
    dead = free_port()
    return f"""
[admin]
listen = ""
[gateway]
handshake_timeout = 5.0
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
[hosts."*.m"]
endpoints = ["127.0.0.1:{origin_port}"]
[hosts."dead.test"]
endpoints = ["127.0.0.1:{dead}"]
{tail}
"""


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
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


async def curl2(*args: str, mode: str = "--http2-prior-knowledge", ok: bool = True,
                timeout: float = 120) -> tuple[str, int, bytes, bytes]:
    """curl over HTTP/2; returns (http_version, status, body, stderr)."""
    res = await run(require_peer("curl"), "-sS", mode, "--noproxy", "*", "--max-time",
                    str(timeout), "-w", "\n%{http_version} %{http_code}", *args,
                    timeout=timeout + 10)
    if ok:
        assert res.returncode == 0, f"curl {' '.join(args)[-300:]}: exit {res.returncode}: " \
            f"{res.stderr[-1000:]!r}"
    body, _, tail = res.stdout.rpartition(b"\n")
    version, _, code = tail.decode().partition(" ")
    return version, int(code or 0), body, res.stderr


def url(gw: Gateway, path: str, listener: str = "web", host: str = "svc.test") -> list[str]:
    port = gw.port(listener)
    return ["--resolve", f"{host}:{port}:127.0.0.1", f"http://{host}:{port}{path}"]


def rejections(gw: Gateway, reason: str, listener: str = "web") -> float:
    return metric(gw, "ugate_rejections_total", listener=listener, reason=reason)


def answered(gw: Gateway, code: int, listener: str = "web") -> float:
    return metric(gw, "ugate_http_requests_total", listener=listener, code=str(code))


# ------------------------------------------------------------------------------ h2c, curl
@pytest.mark.parametrize("size", [0, MIB, 100 * MIB], ids=["0B", "1MiB", "100MiB"])
async def test_h2c_download_sha256(start_gateway: StartGateway, origin: Origin, scratch: Path,
                                   size: int) -> None:
    gw = await start_gateway(config(origin.port))
    want = origin.sha256(size)
    for query in ("", "?chunked", "?close"):
        out = scratch / "out"
        t0 = time.monotonic()
        version, code, _, _ = await curl2("-o", str(out), *url(gw, f"/bytes/{size}{query}"))
        dt = time.monotonic() - t0
        assert (version, code) == ("2", 200)
        assert file_sha256(out) == want, query
        if size >= 100 * MIB:
            print(f"h2c download {size >> 20} MiB{query}: {dt:.2f}s {size / dt / MIB:.0f} MiB/s")
    headers = origin.requests[0][2]
    port = gw.port("web")
    assert headers["host"] == f"svc.test:{port}"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["forwarded"] == f'for=127.0.0.1;host="svc.test:{port}";proto=http'
    assert headers["via"].startswith("2 ugate-")
    assert answered(gw, 200) == 3


@pytest.mark.parametrize("size", [0, MIB, 100 * MIB], ids=["0B", "1MiB", "100MiB"])
async def test_h2c_upload_sha256(start_gateway: StartGateway, origin: Origin, scratch: Path,
                                 size: int) -> None:
    gw = await start_gateway(config(origin.port))
    src = scratch / "src"
    want = origin.write_body(src, size)
    t0 = time.monotonic()
    version, code, body, _ = await curl2("--data-binary", f"@{src}", *url(gw, "/sha256"))
    dt = time.monotonic() - t0
    assert (version, code, body) == ("2", 200, f"{want} {size}".encode())
    if size >= 100 * MIB:
        print(f"h2c upload {size >> 20} MiB: {dt:.2f}s {size / dt / MIB:.0f} MiB/s")
    sent = origin.requests[-1][2]
    assert sent.get("content-length") == str(size)


@pytest.mark.parametrize("size", [0, MIB, 100 * MIB], ids=["0B", "1MiB", "100MiB"])
async def test_h2c_echo_both_ways_at_once(start_gateway: StartGateway, origin: Origin,
                                          scratch: Path, size: int) -> None:
    """The origin echoes while it reads: both directions stream under flow control."""
    gw = await start_gateway(config(origin.port))
    src, out = scratch / "src", scratch / "out"
    want = origin.write_body(src, size)
    version, code, _, _ = await curl2("--data-binary", f"@{src}", "-o", str(out),
                                      *url(gw, "/echo"))
    assert (version, code) == ("2", 200)
    assert file_sha256(out) == want


async def test_h2c_unknown_length_upload_goes_chunked(start_gateway: StartGateway,
                                                      origin: Origin, scratch: Path) -> None:
    gw = await start_gateway(config(origin.port))
    src = scratch / "src"
    want = origin.write_body(src, 3 * MIB + 7)
    # from stdin, curl does not know the length: no content-length on the HTTP/2 request
    res = await run(require_peer("curl"), "-sS", "--http2-prior-knowledge", "--noproxy", "*",
                    "-T", "-", "-X", "POST", *url(gw, "/sha256"), input=src.read_bytes(),
                    timeout=60)
    assert res.stdout == f"{want} {3 * MIB + 7}".encode(), res.stderr
    assert origin.requests[-1][2].get("transfer-encoding") == "chunked"


async def test_h2c_upgrade_from_http11(start_gateway: StartGateway, origin: Origin,
                                       scratch: Path) -> None:
    gw = await start_gateway(config(origin.port))
    version, code, body, _ = await curl2(*url(gw, "/up"), mode="--http2")
    assert (version, code, body) == ("2", 200, b"hello /up\n")
    assert answered(gw, 101) == 1
    sent = origin.requests[-1][2]
    assert "upgrade" not in sent and "http2-settings" not in sent
    # the upgraded connection carries more requests (curl reuses it)
    port = gw.port("web")
    res = await run(require_peer("curl"), "-sS", "--http2", "--noproxy", "*", "--resolve",
                    f"svc.test:{port}:127.0.0.1", f"http://svc.test:{port}/a",
                    f"http://svc.test:{port}/b", "-w", "%{http_version} %{num_connects}\n",
                    timeout=30)
    assert res.stdout == b"hello /a\n2 1\nhello /b\n2 0\n", res.stderr
    # with a body the upgrade is declined (RFC 7540 3.2 allows it): HTTP/1.1 answers
    src = scratch / "src"
    want = origin.write_body(src, MIB)
    version, code, body, _ = await curl2("--data-binary", f"@{src}", *url(gw, "/sha256"),
                                         mode="--http2")
    assert (version, code, body) == ("1.1", 200, f"{want} {MIB}".encode())
    # the shared port serves HTTP/1.1, so the upgrade works there too
    version, code, body, _ = await curl2(*url(gw, "/s", listener="shared"), mode="--http2")
    assert (version, code, body) == ("2", 200, b"hello /s\n")


async def test_h2c_prior_knowledge_not_taken_in_forward_mode(start_gateway: StartGateway,
                                                             origin: Origin) -> None:
    gw = await start_gateway(config(origin.port).replace('mode = "reverse"',
                                                         'mode = "forward"'))
    _, code, _, _ = await curl2(*url(gw, "/"), ok=False)
    assert code == 0  # an HTTP/1.1 answer (505) to an HTTP/2 preface: curl fails
    assert rejections(gw, "bad_version") == 1


async def test_h2_disabled(start_gateway: StartGateway, origin: Origin) -> None:
    gw = await start_gateway(config(origin.port, "h2 = false"))
    version, code, body, _ = await curl2(*url(gw, "/up"), mode="--http2")
    assert (version, code, body) == ("1.1", 200, b"hello /up\n")  # upgrade declined
    _, code, _, _ = await curl2(*url(gw, "/"), ok=False)
    assert code == 0 and rejections(gw, "bad_version") == 1  # the preface is not HTTP/1.x


# ------------------------------------------------------------------------------ nghttp
async def test_nghttp_download_upload_and_multiplexing(start_gateway: StartGateway,
                                                       origin: Origin, scratch: Path) -> None:
    nghttp = require_peer("nghttp", apt="nghttp2-client")
    gw = await start_gateway(config(origin.port))
    base = f"http://127.0.0.1:{gw.port('web')}"
    auth = ["-H", ":authority: svc.test"]
    for size in (0, MIB, 100 * MIB):
        res = await run(nghttp, *auth, f"{base}/bytes/{size}", timeout=120)
        assert res.returncode == 0, res.stderr
        assert hashlib.sha256(res.stdout).hexdigest() == origin.sha256(size)
        src = scratch / "src"
        want = origin.write_body(src, size)
        res = await run(nghttp, *auth, "-d", str(src), f"{base}/sha256", timeout=120)
        assert res.stdout == f"{want} {size}".encode(), res.stderr
    # several streams on one connection, answered concurrently (-m repeats the URI)
    res = await run(nghttp, *auth, "-m", "20", "-v", f"{base}/bytes/100000", timeout=60)
    assert res.returncode == 0
    assert res.stdout.count(b":status: 200") == 20
    assert len(set(re.findall(rb"recv \(stream_id=(\d+)\) :status: 200", res.stdout))) == 20


async def test_small_client_windows_are_respected(start_gateway: StartGateway,
                                                   origin: Origin) -> None:
    """nghttp with a 16 KiB stream and 64 KiB connection window: we send only what the
    windows allow (nghttp fails with FLOW_CONTROL_ERROR otherwise); three streams at once
    share the connection window."""
    nghttp = require_peer("nghttp", apt="nghttp2-client")
    gw = await start_gateway(config(origin.port))
    base = f"http://127.0.0.1:{gw.port('web')}"
    size = 8 * MIB
    res = await run(nghttp, "-w", "14", "-W", "16", "-H", ":authority: svc.test",
                    f"{base}/bytes/{size}", f"{base}/bytes/{size}?chunked",
                    f"{base}/bytes/{size}?close", timeout=120)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout) == 3 * size  # (interleaved as the DATA frames arrived)
    for q in ("", "?chunked"):
        res = await run(nghttp, "-w", "14", "-W", "16", "-H", ":authority: svc.test",
                        f"{base}/bytes/{size}{q}", timeout=120)
        assert hashlib.sha256(res.stdout).hexdigest() == origin.sha256(size)


async def test_upload_to_a_stalled_upstream_is_bounded(start_gateway: StartGateway) -> None:
    """An upstream that reads nothing after the head: the client can send one stream window
    (64 KiB here) plus what the kernel's socket buffers between us and the origin absorb
    (~10 MiB measured on this loopback), not its whole 128 MiB body: no body is buffered
    whole, the client waits for WINDOW_UPDATE."""
    import socket

    from h2.config import H2Configuration
    from h2.connection import H2Connection

    heads: list[bytes] = []

    async def stalled(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        heads.append(await r.readuntil(b"\r\n\r\n"))
        await asyncio.sleep(30)

    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    lsock.bind(("127.0.0.1", 0))
    server = await asyncio.start_server(stalled, sock=lsock)
    try:
        port = lsock.getsockname()[1]
        gw = await start_gateway(config(port, "h2_stream_window = 65535\n"
                                        "h2_connection_window = 65535"))
        r, w = await asyncio.open_connection("127.0.0.1", gw.port("web"))
        c = H2Connection(H2Configuration(client_side=True))
        c.initiate_connection()
        c.send_headers(1, [(":method", "POST"), (":scheme", "http"),
                           (":authority", "svc.test"), (":path", "/stalled")])
        w.write(c.data_to_send())
        sent = 0
        chunk = b"x" * 16384
        loop = asyncio.get_running_loop()
        end = loop.time() + 3
        while loop.time() < end and sent < 128 * MIB:
            room = min(c.local_flow_control_window(1), c.max_outbound_frame_size)
            if room > 0:
                c.send_data(1, chunk[:room])
                sent += room
                w.write(c.data_to_send())
                await w.drain()
                continue
            try:
                data = await asyncio.wait_for(r.read(65536), 0.5)
            except TimeoutError:
                continue
            if not data:
                break
            c.receive_data(data)
            w.write(c.data_to_send())
        w.close()
        print(f"sent {sent} bytes before the windows closed")
        assert heads and b"content-length" not in heads[0].lower()  # chunked upstream
        assert sent < 20 * MIB
    finally:
        server.close()


# ------------------------------------------------------------------------------ h2load
async def test_h2load_100_concurrent_streams(start_gateway: StartGateway, origin: Origin
                                             ) -> None:
    h2load = require_peer("h2load", apt="nghttp2-client")
    gw = await start_gateway(config(origin.port, "pool_max_idle = 128"))
    res = await run(h2load, "-n", "2000", "-c", "1", "-m", "100", "-H", ":authority: svc.test",
                    f"http://127.0.0.1:{gw.port('web')}/hi", timeout=120)
    out = res.stdout.decode()
    print(out[out.find("finished in"):][:400])
    m = re.search(r"requests: 2000 total, 2000 started, 2000 done, (\d+) succeeded", out)
    assert m is not None and int(m.group(1)) == 2000, out
    assert "status codes: 2000 2xx" in out
    assert answered(gw, 200) == 2000
    assert origin.connections <= 128  # upstream connections were reused
    from ugate_http.state import state_for

    assert state_for(gw).expressed > 1000  # most streams were answered from callbacks


# ------------------------------------------------------------------------------ https h2
def _pin(gw: Gateway) -> str:
    spki = gw.identity.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


async def test_https_h2_on_the_shared_port(start_gateway: StartGateway, origin: Origin,
                                           tmp_path: Path) -> None:
    gw = await start_gateway(config(origin.port))
    name = gw.identity.fqdns[0]
    port = gw.port("shared")
    anchor = tmp_path / "anchor.pem"
    anchor.write_bytes(anchor_pem())
    tls = ["--resolve", f"{name}:{port}:127.0.0.1", "--cacert", str(anchor),
           "--pinnedpubkey", f"sha256//{_pin(gw)}"]
    version, code, body, _ = await curl2(*tls, f"https://{name}:{port}/bytes/300000",
                                         mode="--http2")
    assert (version, code) == ("2", 200)
    assert hashlib.sha256(body).hexdigest() == origin.sha256(300000)
    sent = origin.requests[-1][2]
    assert sent["forwarded"].endswith("proto=https")
    assert sent["host"] == f"{name}:{port}"
    # HTTP/1.1 inside TLS is served by the same listener (re-sniffed by the TLS front)
    version, code, body, _ = await curl2(*tls, f"https://{name}:{port}/one", mode="--http1.1")
    assert (version, code, body) == ("1.1", 200, b"hello /one\n")
    assert metric(gw, "ugate_http_requests_total", listener="shared", code="200") == 2


async def test_https_h2_dedicated_port_with_sniffing(start_gateway: StartGateway,
                                                     origin: Origin, tmp_path: Path) -> None:
    """A dedicated HTTPS port: ``protocols = ["tls", "http"]`` (TLS front, then h2 by ALPN
    or HTTP/1.1 by sniffing)."""
    gw = await start_gateway(config(origin.port, tail="""
[listeners.https]
listen = "127.0.0.1:0"
protocols = ["tls", "http"]
mode = "reverse"
[listeners.https-fwd]
listen = "127.0.0.1:0"
protocols = ["tls", "http"]
"""))
    name = gw.identity.fqdns[0]
    port = gw.port("https")
    anchor = tmp_path / "anchor.pem"
    anchor.write_bytes(anchor_pem())
    version, code, body, _ = await curl2(
        "--resolve", f"{name}:{port}:127.0.0.1", "--cacert", str(anchor), "--pinnedpubkey",
        f"sha256//{_pin(gw)}", f"https://{name}:{port}/ded", mode="--http2")
    assert (version, code, body) == ("2", 200, b"hello /ded\n")
    # a forward proxy (the default mode) does not route HTTP/2 requests by :authority
    port = gw.port("https-fwd")
    version, code, body, _ = await curl2(
        "--resolve", f"{name}:{port}:127.0.0.1", "--cacert", str(anchor), "--pinnedpubkey",
        f"sha256//{_pin(gw)}", f"https://{name}:{port}/fwd", mode="--http2")
    assert (version, code) == ("2", 400) and b"mode 'reverse' or 'auto'" in body
    assert rejections(gw, "not_proxy_request", listener="https-fwd") == 1


# ------------------------------------------------------------------------------ errors
async def test_h2_errors_answer_count_and_log(start_gateway: StartGateway, origin: Origin,
                                              caplog: pytest.LogCaptureFixture) -> None:
    # (nghttp2, under curl, sends no header block beyond 64 KiB: a smaller bound here)
    gw = await start_gateway(config(origin.port, "response_timeout = 0.5\n"
                                    "max_header_bytes = 16384"))
    caplog.set_level("INFO", logger="ugate")
    version, code, body, _ = await curl2(*url(gw, "/", host="dead.test"))
    assert (version, code) == ("2", 502) and b"cannot reach dead.test:" in body
    assert rejections(gw, "dial_refused") == 1
    t0 = time.monotonic()
    version, code, body, _ = await curl2(*url(gw, "/slow"))
    assert code == 504 and b"did not answer within 0.5s" in body
    assert time.monotonic() - t0 < 3
    assert rejections(gw, "upstream_timeout") == 1
    _, code, body, _ = await curl2(*url(gw, "/garbage"))
    assert code == 502 and b"malformed status line" in body
    assert rejections(gw, "bad_response") == 1
    _, code, body, _ = await curl2("-H", "X-Big: " + "a" * 30000, *url(gw, "/"))
    assert code == 431 and b"header block" in body
    assert rejections(gw, "header_too_large") == 1
    # curl sends a Host field as :authority
    _, code, body, _ = await curl2("-H", "Host: bad host", f"http://127.0.0.1:{gw.port('web')}/")
    assert code == 400 and body == b"bad authority 'bad host': not host[:port]\n"
    assert rejections(gw, "bad_request") == 1
    for code in (502, 504, 431, 400):
        assert answered(gw, code) >= 1
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for reason in ("dial_refused", "upstream_timeout", "bad_response", "header_too_large",
                   "bad_request"):
        assert f"rejected listener=web reason={reason} " in logged
    # a refusal ends its stream only: the connection carries the other requests (nghttp:
    # one connection; curl 7.88 cannot reuse a prior-knowledge connection, even to nghttpd)
    base = f"http://127.0.0.1:{gw.port('web')}"
    res = await run(require_peer("nghttp", apt="nghttp2-client"), "-v", "-H",
                    ":authority: svc.test", f"{base}/garbage", f"{base}/ok", f"{base}/ok2",
                    timeout=30)
    out = res.stdout
    assert out.count(b"Connected") == 1
    assert b":status: 502" in out and out.count(b":status: 200") == 2
    assert b"hello /ok\n" in out and b"hello /ok2\n" in out


async def test_h2_auth_and_loop(start_gateway: StartGateway, origin: Origin) -> None:
    gw = await start_gateway(config(origin.port, 'users = { alice = "s3cret" }'))
    _, code, body, _ = await curl2(*url(gw, "/"))
    assert code == 401 and b"Authorization (Basic) is required" in body
    _, code, body, _ = await curl2("-u", "alice:s3cret", *url(gw, "/in"))
    assert (code, body) == (200, b"hello /in\n")
    assert "authorization" not in origin.requests[-1][2]
    assert rejections(gw, "auth_required") == 1
    gw2 = await start_gateway(config(origin.port))
    from ugate_http.h1front import state_for

    token = state_for(gw2).via
    _, code, body, _ = await curl2("-H", f"via: 1.1 {token}", *url(gw2, "/"))
    assert code == 508 and b"came back" in body


# ------------------------------------------------------------------------------ bad peers
async def _raw(port: int, data: bytes, wait: float = 5.0) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(data)
    got = b""
    try:
        async with asyncio.timeout(wait):
            while chunk := await r.read(65536):
                got += chunk
    except (TimeoutError, ConnectionError):
        pass
    w.close()
    return got


async def test_bad_frames_close_with_goaway_and_count(start_gateway: StartGateway,
                                                      origin: Origin) -> None:
    from h2.connection import H2Connection

    gw = await start_gateway(config(origin.port))
    port = gw.port("web")
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    # a frame of an unknown connection-level kind with a bad length: PROTOCOL/FRAME_SIZE error
    got = await _raw(port, preface + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00" + b"\xff" * 16)
    assert b"\x07" in got[:200]  # a GOAWAY frame (type 7) came back before the close
    # a header block beyond the hard limit (2 x max_header_bytes): closed, no answer
    c = H2Connection()
    c.initiate_connection()
    c.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":path", "/"),
                       (":authority", "svc.test"), ("x-big", "a" * 200_000)], end_stream=True)
    got = await _raw(port, c.data_to_send())
    assert b"hello" not in got
    # counted when the server's side ends: it lingers, reading, until the client's close
    for _ in range(250):
        if rejections(gw, "h2_protocol_error") >= 2:
            break
        await asyncio.sleep(0.02)
    assert rejections(gw, "h2_protocol_error") == 2
    # silence after the preface: closed at the handshake deadline
    t0 = time.monotonic()
    await _raw(port, preface, wait=10)
    assert time.monotonic() - t0 < 8
    assert rejections(gw, "header_timeout") == 1


# ------------------------------------------------------------------------------ h2 upstreams
async def test_h2_upstream_nghttpd(start_gateway: StartGateway, tmp_path: Path) -> None:
    """``labels.http = "h2"``: HTTP/1.1 and HTTP/2 clients reach an HTTP/2-only origin
    (nghttpd, prior knowledge)."""
    nghttpd = require_peer("nghttpd", apt="nghttp2-server")
    docroot = tmp_path / "www"
    docroot.mkdir()
    data = hashlib.sha256(b"x").digest() * 40000  # 1.28 MB
    (docroot / "big").write_bytes(data)
    port = free_port()
    p = await asyncio.create_subprocess_exec(nghttpd, "--no-tls", "-d", str(docroot),
                                             "-a", "127.0.0.1", str(port),
                                             stdout=asyncio.subprocess.DEVNULL,
                                             stderr=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        gw = await start_gateway(config(1, tail=f"""
[hosts."h2.test"]
endpoints = ["127.0.0.1:{port}"]
labels = {{ http = "h2" }}
"""))
        res = await run(require_peer("curl"), "-sS", "--http1.1", "--noproxy", "*",
                        *url(gw, "/big", host="h2.test"), "-D", "-", timeout=30)
        head, _, body = res.stdout.partition(b"\r\n\r\n")
        assert body == data and b"HTTP/1.1 200" in head, res.stderr
        assert b"content-length: 1280000" in head.lower()
        version, code, body, _ = await curl2(*url(gw, "/big", host="h2.test"))
        assert (version, code, body) == ("2", 200, data)
        _, code, _, _ = await curl2(*url(gw, "/nothing-here", host="h2.test"))
        assert code == 404
        # concurrent requests share one upstream connection
        res = await run(require_peer("h2load", apt="nghttp2-client"), "-n", "200", "-c", "1",
                        "-m", "50", "-H", ":authority: h2.test",
                        f"http://127.0.0.1:{gw.port('web')}/big", timeout=60)
        assert "200 succeeded" in res.stdout.decode(), res.stdout.decode()
        from ugate_http.h1front import state_for

        assert state_for(gw).h2pools["web"].dialed <= 2
    finally:
        p.kill()
        await p.wait()


async def test_h2_upstream_is_another_gateway(start_gateway: StartGateway, origin: Origin,
                                              scratch: Path) -> None:
    """curl (HTTP/1.1 and h2c) → gateway A → HTTP/2 → gateway B (h2c reverse proxy) → origin:
    upload, download and echo with sha256, HTTP/2 flow control on both hops."""
    b = await start_gateway(config(origin.port, tail=f"""
[hosts."via-b.test"]
endpoints = ["127.0.0.1:{origin.port}"]
"""))
    a = await start_gateway(config(1, tail=f"""
[hosts."via-b.test"]
endpoints = ["127.0.0.1:{b.port('web')}"]
labels = {{ http = "h2" }}
"""))
    src, out = scratch / "src", scratch / "out"
    size = 20 * MIB
    want = origin.write_body(src, size)
    res = await run(require_peer("curl"), "-sS", "--http1.1", "--noproxy", "*",
                    "--data-binary", f"@{src}", "-o", str(out),
                    *url(a, "/echo", host="via-b.test"), timeout=60)
    assert res.returncode == 0, res.stderr
    assert file_sha256(out) == want
    version, code, body, _ = await curl2("--data-binary", f"@{src}",
                                         *url(a, "/sha256", host="via-b.test"))
    assert (version, code, body) == ("2", 200, f"{want} {size}".encode())
    version, code, _, _ = await curl2("-o", str(out), *url(a, f"/bytes/{size}?chunked",
                                                            host="via-b.test"))
    assert (version, code) == ("2", 200)
    assert file_sha256(out) == origin.sha256(size)
    assert answered(b, 200) == 3  # each request went through B
    sent = origin.requests[-1][2]
    assert sent["via"].count("ugate-") == 2  # both gateways added themselves
    assert sent["x-forwarded-for"] == "127.0.0.1, 127.0.0.1"
    # B down: A answers 502 over HTTP/2 and counts it
    await b.shutdown(0.5)
    _, code, body, _ = await curl2(*url(a, "/x", host="via-b.test"))
    assert code == 502 and b"via-b.test" in body
