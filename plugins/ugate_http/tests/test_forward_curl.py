"""http listener as a forward proxy, end to end with curl (a real HTTP proxy client)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import pytest

from ugate_core import ConfigError, Gateway, loads
from ugate_core.testing import StartGateway, Upstream, free_port, metric, pattern, require_peer, run

MIB = 1 << 20


def config(up: Upstream, http_extra: str = "", gateway_extra: str = "handshake_timeout = 5.0"
           ) -> str:
    return f"""
[admin]
listen = ""
[gateway]
{gateway_extra}
[listeners.proxy]
listen = "127.0.0.1:0"
protocols = ["http"]
{http_extra}
[listeners.shared]
listen = "127.0.0.1:0"
protocols = ["*"]
[hosts."svc.test"]
endpoints = ["127.0.0.1:{up.port}"]
"""


async def curl(*args: str, ok: bool = True) -> tuple[int, bytes, bytes]:
    """Run curl; returns (http status, body, stderr). ``--noproxy ''`` beats NO_PROXY."""
    exe = require_peer("curl")
    res = await run(exe, "-sS", "--noproxy", "", "--max-time", "60", "-w", "\n%{http_code}",
                    *args, timeout=70)
    if ok:
        assert res.returncode == 0, f"curl {' '.join(args)}: exit {res.returncode}: {res.stderr!r}"
    body, _, code = res.stdout.rpartition(b"\n")
    return int(code or 0), body, res.stderr


async def wait_metric(gw: Gateway, name: str, want: float, **labels: str) -> float:
    for _ in range(200):
        v = metric(gw, name, **labels)
        if v >= want:
            return v
        await asyncio.sleep(0.02)
    return metric(gw, name, **labels)


def rejections(gw: Gateway, reason: str, listener: str = "proxy") -> float:
    return metric(gw, "ugate_rejections_total", listener=listener, reason=reason)


@pytest.mark.parametrize("listener", ["proxy", "shared"])
async def test_get_absolute_uri_exact_bytes(
    start_gateway: StartGateway, http_upstream: Upstream, listener: str
) -> None:
    gw = await start_gateway(config(http_upstream))
    proxy = f"http://127.0.0.1:{gw.port(listener)}"
    code, body, _ = await curl("-x", proxy, f"http://{http_upstream.address}/bytes/{MIB}")
    assert code == 200
    assert hashlib.sha256(body).digest() == hashlib.sha256(pattern(MIB)).digest()
    method, target, headers = http_upstream.requests[-1]
    assert (method, target) == ("GET", f"/bytes/{MIB}")  # origin-form upstream
    assert headers["host"] == http_upstream.address
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["forwarded"].startswith("for=127.0.0.1;")
    assert not any(k.startswith("proxy-") for k in headers), headers
    assert metric(gw, "ugate_http_requests_total", listener=listener, code="200") == 1


@pytest.mark.parametrize("listener", ["proxy", "shared"])
async def test_connect_tunnel_exact_bytes(
    start_gateway: StartGateway, http_upstream: Upstream, listener: str
) -> None:
    gw = await start_gateway(config(http_upstream))
    proxy = f"http://127.0.0.1:{gw.port(listener)}"
    code, body, _ = await curl("-p", "-x", proxy, f"http://{http_upstream.address}/bytes/{MIB}")
    assert code == 200
    assert body == pattern(MIB)
    # through a tunnel the upstream sees curl's own request, not a proxied one
    assert "forwarded" not in http_upstream.requests[-1][2]
    await wait_metric(gw, "ugate_streams_total", 1, listener=listener, end="done")


@pytest.mark.parametrize("listener", ["proxy", "shared"])
@pytest.mark.parametrize("tunnel", [False, True], ids=["absolute", "connect"])
async def test_post_1mib_echo(
    start_gateway: StartGateway, http_upstream: Upstream, tmp_path: Path, listener: str,
    tunnel: bool,
) -> None:
    gw = await start_gateway(config(http_upstream))
    data = pattern(MIB, seed=7)
    f = tmp_path / "body"
    f.write_bytes(data)
    args = ["-p"] if tunnel else []
    code, body, _ = await curl(*args, "-x", f"http://127.0.0.1:{gw.port(listener)}",
                               "--data-binary", f"@{f}", f"http://{http_upstream.address}/echo")
    assert code == 200
    assert body == data


async def test_chunked_upload_and_keepalive_sequence(
    start_gateway: StartGateway, http_upstream: Upstream, tmp_path: Path
) -> None:
    """A chunked upload (curl -T - reads stdin) and several URLs on one client connection."""
    gw = await start_gateway(config(http_upstream))
    proxy = f"http://127.0.0.1:{gw.port('proxy')}"
    exe = require_peer("curl")
    data = pattern(300_000, seed=3)
    res = await run(exe, "-sS", "--noproxy", "", "-x", proxy, "-H",
                    "Transfer-Encoding: chunked", "--data-binary", "@-",
                    f"http://{http_upstream.address}/echo", input=data, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout == data
    assert http_upstream.requests[-1][2].get("transfer-encoding") == "chunked"
    urls = [f"http://{http_upstream.address}/bytes/{n}" for n in (10, 70000, 0, 5)]
    res = await run(exe, "-sS", "--noproxy", "", "-x", proxy, *urls, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"".join(pattern(n) for n in (10, 70000, 0, 5))
    # one client connection for the four requests, one upstream connection reused
    assert metric(gw, "ugate_connections_total", listener="proxy", protocol="http") == 2
    assert state_pool(gw).reused >= 3


def state_pool(gw: Gateway):  # type: ignore[no-untyped-def]
    from ugate_http.h1front import state_for

    return state_for(gw).pools["proxy"]


async def test_hosts_entry_routes_by_name(
    start_gateway: StartGateway, http_upstream: Upstream
) -> None:
    gw = await start_gateway(config(http_upstream))
    proxy = f"http://127.0.0.1:{gw.port('proxy')}"
    code, body, _ = await curl("-x", proxy, "http://svc.test/named?x=1")
    assert (code, body) == (200, b"hello /named?x=1\n")
    assert http_upstream.requests[-1][2]["host"] == "svc.test"
    assert 'host="svc.test"' in http_upstream.requests[-1][2]["forwarded"]
    code, body, _ = await curl("-p", "-x", proxy, "http://svc.test:8080/t")
    assert (code, body) == (200, b"hello /t\n")


async def test_proxy_auth(start_gateway: StartGateway, http_upstream: Upstream) -> None:
    gw = await start_gateway(config(http_upstream, 'users = { alice = "s3cret" }'))
    proxy = f"http://127.0.0.1:{gw.port('proxy')}"
    url = f"http://{http_upstream.address}/who"
    code, body, _ = await curl("-x", proxy, "-i", url)
    assert code == 407
    assert b'Proxy-Authenticate: Basic realm="ugate"' in body
    assert rejections(gw, "auth_required") == 1
    code, body, _ = await curl("-x", proxy, "-U", "alice:wrong", url)
    assert code == 407
    assert b"wrong user name or password (user 'alice')" in body
    assert rejections(gw, "auth_failed") == 1
    code, body, err = await curl("-x", proxy, "-U", "mallory:s3cret", "-p", url, ok=False)
    assert b"CONNECT tunnel failed, response 407" in err
    assert rejections(gw, "auth_failed") == 2
    code, body, _ = await curl("-x", proxy, "-U", "alice:s3cret", url)
    assert (code, body) == (200, b"hello /who\n")
    assert "proxy-authorization" not in http_upstream.requests[-1][2]
    code, body, _ = await curl("-x", proxy, "-U", "alice:s3cret", "-p", url)
    assert (code, body) == (200, b"hello /who\n")
    assert metric(gw, "ugate_http_requests_total", listener="proxy", code="407") == 3


async def test_denied_by_allow_list(start_gateway: StartGateway, http_upstream: Upstream) -> None:
    gw = await start_gateway(config(http_upstream, 'allow = ["svc.test"]'))
    proxy = f"http://127.0.0.1:{gw.port('proxy')}"
    code, body, _ = await curl("-x", proxy, f"http://{http_upstream.address}/x")
    assert code == 403, body
    assert b"not allowed: no rule allows an unauthenticated client on listener 'proxy' to " \
        b"reach 127.0.0.1:" in body
    code, body, err = await curl("-p", "-x", proxy, f"http://{http_upstream.address}/x",
                                 ok=False)
    assert b"CONNECT tunnel failed, response 403" in err
    assert rejections(gw, "denied") == 2
    code, body, _ = await curl("-x", proxy, "http://svc.test/ok")
    assert (code, body) == (200, b"hello /ok\n")


async def test_refused_port_is_502(start_gateway: StartGateway, http_upstream: Upstream) -> None:
    gw = await start_gateway(config(http_upstream))
    proxy = f"http://127.0.0.1:{gw.port('proxy')}"
    dead = free_port()
    code, body, _ = await curl("-x", proxy, f"http://127.0.0.1:{dead}/")
    assert code == 502
    assert f"cannot reach 127.0.0.1:{dead}: refused".encode() in body
    code, _, err = await curl("-p", "-x", proxy, f"http://127.0.0.1:{dead}/", ok=False)
    assert b"502" in err  # curl reports the CONNECT answer
    assert rejections(gw, "dial_refused") == 2
    assert metric(gw, "ugate_dial_errors_total", reason="refused") == 2


async def raw(port: int, data: bytes, *, timeout: float = 10) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(data)
        await w.drain()
        return await asyncio.wait_for(r.read(-1), timeout)
    finally:
        w.close()


@pytest.mark.parametrize("listener", ["proxy", "shared"])
async def test_malformed_is_400(
    start_gateway: StartGateway, http_upstream: Upstream, listener: str
) -> None:
    gw = await start_gateway(config(http_upstream))
    port = gw.port(listener)
    bad = [
        b"GET http://x/ HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET http://x/ HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET http://x/ HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
        b"POST http://x/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST http://x/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET http://user@x/ HTTP/1.1\r\n\r\n",
        b"GET  http://x/ HTTP/1.1\r\n\r\n",
    ]
    for data in bad:
        got = await raw(port, data)
        assert got.startswith(b"HTTP/1.1 400 Bad Request\r\n"), (data, got)
        assert b"Connection: close" in got
    assert rejections(gw, "bad_request", listener) == len(bad)
    got = await raw(port, b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 400 ") and b"not an absolute URI" in got
    got = await raw(port, b"GET http://x/ HTTP/2.0\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 505 ")
    got = await raw(port, b"POST http://x/ HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 501 ")


async def test_oversize_header_is_431(
    start_gateway: StartGateway, http_upstream: Upstream
) -> None:
    gw = await start_gateway(config(http_upstream, "max_header_bytes = 8192"))
    proxy = f"http://127.0.0.1:{gw.port('proxy')}"
    code, body, _ = await curl("-x", proxy, "-H", "X-Big: " + "a" * 9000,
                               f"http://{http_upstream.address}/")
    assert code == 431
    assert b"longer than 8192 bytes" in body
    assert rejections(gw, "header_too_large") == 1
    # just under the bound passes
    code, body, _ = await curl("-x", proxy, "-H", "X-Big: " + "a" * 7000,
                               f"http://{http_upstream.address}/")
    assert code == 200
    # the default bound is 64 KiB, on the shared port too
    got = await raw(gw.port("shared"), b"GET http://x/ HTTP/1.1\r\nX: " + b"a" * 70000)
    assert got.startswith(b"HTTP/1.1 431 ")
    assert rejections(gw, "header_too_large", "shared") == 1


async def test_slowloris_closed_at_deadline(
    start_gateway: StartGateway, http_upstream: Upstream
) -> None:
    gw = await start_gateway(config(http_upstream, gateway_extra="handshake_timeout = 1.0"))
    r, w = await asyncio.open_connection("127.0.0.1", gw.port("proxy"))
    head = b"GET http://x/ HTTP/1.1\r\nX-Slow: " + b"a" * 100
    t0 = time.monotonic()
    sent = 0
    closed_at = None
    for b in head[:60]:  # bounded: 60 bytes x 0.2 s = 12 s at most
        w.write(bytes([b]))
        sent += 1
        try:
            got = await asyncio.wait_for(r.read(4096), 0.2)
        except TimeoutError:
            continue
        closed_at = time.monotonic() - t0
        assert got.startswith(b"HTTP/1.1 408 "), got
        break
    w.close()
    assert closed_at is not None, "slow client was never closed"
    assert 0.9 <= closed_at <= 2.5, closed_at
    assert sent < 15
    assert rejections(gw, "header_timeout") == 1


def test_check_options_errors() -> None:
    from ugate_http.options import check_options, parse_options

    check_options({"users": {"a": "b"}, "mode": "auto", "other_plugins_key": 1}, "l")
    for opts, msg in [
        ({"mode": "sideways"}, "l.mode: 'sideways' is not one of forward, reverse, auto"),
        ({"users": {"a": 1}}, "l.users.a: int value"),
        ({"user": {"a": "b"}}, "l.user: unknown key; did you mean 'users'?"),
        ({"max_header_bytes": 10}, "l.max_header_bytes: 10 is not in 1024..16777216"),
        ({"realm": 'a"b'}, "l.realm:"),
        ({"keepalive_timeout": "x"}, "l.keepalive_timeout: 'x' is not a number"),
    ]:
        with pytest.raises(ConfigError) as ei:
            parse_options(opts, "l")
        assert str(ei.value).startswith(msg), str(ei.value)


async def test_open_relay_refused_without_auth() -> None:
    cfg = loads("""
[admin]
listen = ""
[listeners.p]
listen = "0.0.0.0:0"
protocols = ["http"]
""")
    with pytest.raises(ConfigError, match="open relay"):
        Gateway(cfg).check()
    users = """
[admin]
listen = ""
[listeners.p]
listen = "0.0.0.0:0"
protocols = ["http"]
users = { a = "b" }
"""
    # a password says who, not what: without a rule the listener still refuses to start
    with pytest.raises(ConfigError, match="no rule says who may reach what"):
        Gateway(loads(users)).check()
    Gateway(loads(users + '[[rules]]\nclients = ["user:a"]\nto = ["*.test:80"]\n')).check()


async def test_https_proxy_connect_tunnel_on_the_shared_port(
        start_gateway: StartGateway, http_upstream: Upstream, tmp_path: Path) -> None:
    """curl with an HTTPS proxy (``-x https://``): TLS terminated by the shared port's front,
    CONNECT inside it, then a tunnel relayed over the TLS stream. The handler's return must not
    close the TLS stream's socket under the relay."""
    from ugate_core.certs import anchor_pem

    gw = await start_gateway(config(http_upstream))
    name, port = gw.identity.fqdns[0], gw.port("shared")
    anchor = tmp_path / "anchor.pem"
    anchor.write_bytes(anchor_pem())
    code, body, err = await curl("-p", "-x", f"https://{name}:{port}", "--proxy-cacert",
                                 str(anchor), "--resolve", f"{name}:{port}:127.0.0.1",
                                 f"http://{http_upstream.address}/bytes/{MIB}")
    assert code == 200, err
    assert body == pattern(MIB)
    assert await wait_metric(gw, "ugate_streams_total", 1, listener="shared", end="done") == 1
