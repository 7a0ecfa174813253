"""The HBONE server with a raw HTTP/2 client (h2): status codes, bytes, many streams on one
connection, a stalled stream next to busy ones, the shared port, passed-on headers."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ugate_core import Destination, Gateway, StreamMeta, hookimpl, id_of_public_key
from ugate_core.certs import issue_leaf
from ugate_core.testing import StartGateway, free_port, metric, pattern

from .conftest import Blob, H2Connect, MiB

HBONEC = """
[admin]
listen = ""
[listeners.h]
listen = "127.0.0.1:0"
protocols = ["hbonec"]
"""


def client_ctx(tmp: Path) -> tuple[ssl.SSLContext, str]:
    """A TLS client context with a fresh key and an anchor-issued certificate; its mesh ID."""
    import datetime as dt

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    mid = id_of_public_key(key)
    cert = issue_leaf(key, common_name=mid.lower(), dns_names=[f"{mid.lower()}.m"],
                      not_before=now - dt.timedelta(hours=1), not_after=now + dt.timedelta(days=1))
    p = tmp / "client.pem"
    p.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(str(p))
    ctx.set_alpn_protocols(["h2"])
    return ctx, mid


@pytest.fixture
async def silent_server() -> AsyncIterator[tuple[str, int]]:
    """Accepts and never reads (a stalled upstream)."""
    conns: list[asyncio.StreamWriter] = []

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        conns.append(w)
        await asyncio.sleep(3600)

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield "127.0.0.1", srv.sockets[0].getsockname()[1]
    for w in conns:
        w.close()
    srv.close()


async def test_connect_relays_bytes_both_ways(start_gateway: StartGateway,
                                              h2_client: H2Connect, blob_server: object) -> None:
    reply = pattern(MiB, 2)
    up: Blob = await blob_server(reply)  # type: ignore[operator]
    gw = await start_gateway(HBONEC)
    c = await h2_client(gw.port("h"), window=8 * MiB)
    s = c.request(up.address)
    assert await c.response(s) == 200
    payload = pattern(MiB, 1)
    await c.send(s, payload, end=True)
    data = await c.read_until(s, 32 + MiB)
    await c.wait_end(s)
    assert data[:32] == hashlib.sha256(payload).digest()
    assert data[32:] == reply
    assert s.ended and s.reset is None


async def test_post_is_connect_on_hbonec(start_gateway: StartGateway, h2_client: H2Connect,
                                         blob_server: object) -> None:
    up: Blob = await blob_server(b"pong")  # type: ignore[operator]
    gw = await start_gateway(HBONEC)
    c = await h2_client(gw.port("h"))
    s = c.request(up.address, method="POST")
    assert await c.response(s) == 200
    await c.send(s, b"ping", end=True)
    assert await c.read_until(s, 36) == hashlib.sha256(b"ping").digest() + b"pong"


@pytest.mark.parametrize(("method", "authority", "why"), [
    ("GET", "127.0.0.1:80", b"bad_method: method 'GET' is not CONNECT or POST"),
    ("CONNECT", "127.0.0.1", b"bad_authority: authority '127.0.0.1' has no port"),
    ("CONNECT", "a_b c:80", b"is not a DNS name or an IP address"),
    ("CONNECT", "[::1:80", b"missing ']'"),
    ("CONNECT", "host:0", b"port 0 is not a port"),
    ("CONNECT", "user@host:80", b"is not a DNS name or an IP address"),
])
async def test_400(start_gateway: StartGateway, h2_client: H2Connect, method: str,
                   authority: str, why: bytes) -> None:
    gw = await start_gateway(HBONEC)
    c = await h2_client(gw.port("h"))
    s = c.request(authority, method=method, end=method == "GET")
    assert await c.response(s) == 400
    body = await c.read_until(s, 1 << 16)
    assert why in body, body
    reason = why.split(b":")[0].decode() if why.startswith(b"bad_") else "bad_authority"
    assert metric(gw, "ugate_rejections_total", listener="h", reason=reason) == 1
    # the connection stays usable
    s2 = c.request("127.0.0.1:0")
    assert await c.response(s2) == 400


async def test_503_when_the_upstream_refuses(start_gateway: StartGateway,
                                             h2_client: H2Connect) -> None:
    gw = await start_gateway(HBONEC)
    c = await h2_client(gw.port("h"))
    port = free_port()
    s = c.request(f"127.0.0.1:{port}")
    assert await c.response(s) == 503
    body = await c.read_until(s, 1 << 16)
    assert body.startswith(b"refused: ") and str(port).encode() in body, body
    assert metric(gw, "ugate_dial_errors_total", reason="refused") == 1


async def test_401_for_unauthenticated_client_denied_by_allow(
        start_gateway: StartGateway, h2_client: H2Connect, blob_server: object) -> None:
    up: Blob = await blob_server(b"ok")  # type: ignore[operator]
    gw = await start_gateway(HBONEC + f"""allow = ["svc.test"]
[hosts."svc.test"]
endpoints = ["{up.address}"]
""")
    c = await h2_client(gw.port("h"))
    s = c.request("other.test:80")
    assert await c.response(s) == 401
    assert b"denied" in await c.read_until(s, 1 << 16)
    ok = c.request("svc.test:80")
    assert await c.response(ok) == 200
    await c.send(ok, b"x", end=True)
    assert (await c.read_until(ok, 34))[32:] == b"ok"


class Deny:
    """A policy plugin: refuses every destination named deny.*."""

    @hookimpl
    def ugate_authorize(self, gateway: Gateway, peer: StreamMeta,
                        destination: Destination) -> bool | None:
        return False if destination.name.startswith("deny.") else None


async def test_403_for_authenticated_client_denied_by_policy(
        start_gateway: StartGateway, h2_client: H2Connect, tmp_path: Path,
        blob_server: object) -> None:
    up: Blob = await blob_server(b"ok")  # type: ignore[operator]
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.hb]
listen = "127.0.0.1:0"
protocols = ["hbone"]
[hosts."deny.test"]
endpoints = ["{up.address}"]
[hosts."svc.test"]
endpoints = ["{up.address}"]
""")
    gw.pm.register(Deny())
    ctx, _mid = client_ctx(tmp_path)
    c = await h2_client(gw.port("hb"), ssl_ctx=ctx)
    s = c.request("deny.test:80")
    assert await c.response(s) == 403
    s2 = c.request("svc.test:80")
    assert await c.response(s2) == 200
    await c.send(s2, b"x", end=True)
    assert (await c.read_until(s2, 34))[32:] == b"ok"
    assert metric(gw, "ugate_connections_total", listener="hb", protocol="hbone") == 1


async def test_hbone_listener_requires_a_client_certificate(
        start_gateway: StartGateway) -> None:
    gw = await start_gateway("""
[admin]
listen = ""
[listeners.hb]
listen = "127.0.0.1:0"
protocols = ["hbone"]
""")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    with pytest.raises((ssl.SSLError, ConnectionError)):
        r, w = await asyncio.open_connection("127.0.0.1", gw.port("hb"), ssl=ctx)
        w.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        await w.drain()
        assert await r.read() == b""
        raise ConnectionError("closed")
    for _ in range(50):
        if metric(gw, "ugate_rejections_total", listener="hb", reason="tls_handshake"):
            break
        await asyncio.sleep(0.05)
    assert metric(gw, "ugate_rejections_total", listener="hb", reason="tls_handshake") == 1


async def test_hbone_listener_peers_allow_list(start_gateway: StartGateway,
                                               h2_client: H2Connect, tmp_path: Path) -> None:
    ctx, _mid = client_ctx(tmp_path)
    gw = await start_gateway("""
[admin]
listen = ""
[listeners.hb]
listen = "127.0.0.1:0"
protocols = ["hbone"]
peers = ["id:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]
""")
    c = await h2_client(gw.port("hb"), ssl_ctx=ctx)
    await asyncio.wait_for(c.closed.wait(), 10)
    assert metric(gw, "ugate_rejections_total", listener="hb", reason="identity") == 1
    assert metric(gw, "ugate_identity_failures_total", protocol="hbone",
                  direction="accept") == 1


async def test_hundred_streams_on_one_connection(start_gateway: StartGateway,
                                                 h2_client: H2Connect,
                                                 blob_server: object) -> None:
    up: Blob = await blob_server(pattern(64 * 1024, 9))  # type: ignore[operator]
    gw = await start_gateway(HBONEC + "[hbone]\nmax_streams = 100\n")
    c = await h2_client(gw.port("h"), window=1 * MiB)
    streams = [c.request(up.address) for _ in range(100)]
    assert [await c.response(s) for s in streams] == [200] * 100
    assert c.c.remote_settings.max_concurrent_streams == 100
    payloads = [pattern(32 * 1024, i) for i in range(100)]
    await asyncio.gather(*(c.send(s, p, end=True) for s, p in zip(streams, payloads,
                                                                     strict=True)))
    for s, p in zip(streams, payloads, strict=True):
        data = await c.read_until(s, 32 + 64 * 1024)
        assert data == hashlib.sha256(p).digest() + pattern(64 * 1024, 9)
    assert metric(gw, "ugate_connections_total", listener="h", protocol="hbonec") == 1
    assert metric(gw, "ugate_streams_total", listener="h", end="done") == 100


async def test_stalled_stream_does_not_block_others(start_gateway: StartGateway,
                                                    h2_client: H2Connect,
                                                    blob_server: object,
                                                    silent_server: tuple[str, int]) -> None:
    big: Blob = await blob_server(pattern(32 * MiB, 3))  # type: ignore[operator]
    small: Blob = await blob_server(pattern(4 * MiB, 4))  # type: ignore[operator]
    gw = await start_gateway(HBONEC)
    c = await h2_client(gw.port("h"), window=256 * 1024)
    # download stall: the client never acknowledges stream 1's data
    s1 = c.request(big.address)
    c.stalled.add(s1.sid)
    assert await c.response(s1) == 200
    await c.send(s1, b"go", end=True)
    # upload stall: the upstream never reads
    s2 = c.request(f"{silent_server[0]}:{silent_server[1]}")
    assert await c.response(s2) == 200
    upload = asyncio.get_running_loop().create_task(c.send(s2, pattern(64 * MiB, 5)))
    await asyncio.sleep(0.5)
    # meanwhile other streams on the same connection move megabytes both ways
    for i in range(3):
        s = c.request(small.address)
        assert await c.response(s) == 200
        payload = pattern(4 * MiB, 10 + i)
        await c.send(s, payload, end=True)
        data = await c.read_until(s, 32 + 4 * MiB, timeout=30)
        assert data == hashlib.sha256(payload).digest() + pattern(4 * MiB, 4)
    # the stalled download holds at most its window (+ one read) in the gateway
    assert len(s1.data) <= 256 * 1024
    rec = next(r for r in gw.streams.values() if r.client.target == big.address)
    assert rec.stats.down <= 2 * MiB, rec.stats.down
    assert not upload.done()
    upload.cancel()
    # release the stall: the rest arrives
    c.release(s1)
    data = await c.read_until(s1, 32 + 32 * MiB, timeout=60)
    assert data[32:] == pattern(32 * MiB, 3)


async def test_hbonec_on_the_shared_port(start_gateway: StartGateway, h2_client: H2Connect,
                                         blob_server: object) -> None:
    up: Blob = await blob_server(b"shared")  # type: ignore[operator]
    gw = await start_gateway("""
[admin]
listen = ""
[listeners.main]
listen = "127.0.0.1:0"
protocols = ["*"]
""")
    c = await h2_client(gw.port("main"))
    s = c.request(up.address, extra=[("baggage", "k1=v1"), ("traceparent",
                  "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")])
    assert await c.response(s) == 200
    rec = next(iter(gw.streams.values()))
    assert rec.client.protocol == "hbonec"
    assert rec.client.extra["baggage"] == "k1=v1"
    assert rec.client.extra["traceparent"].startswith("00-0af7")
    await c.send(s, b"hi", end=True)
    assert (await c.read_until(s, 38))[32:] == b"shared"


async def test_hbonec_beyond_loopback_needs_an_allow_rule(start_gateway: StartGateway) -> None:
    from ugate_core import ConfigError

    with pytest.raises(ConfigError, match="open relay"):
        await start_gateway("""
[admin]
listen = ""
[listeners.h]
listen = "0.0.0.0:0"
protocols = ["hbonec"]
""")


async def test_garbage_after_preface_is_a_counted_protocol_error(
        start_gateway: StartGateway) -> None:
    gw = await start_gateway(HBONEC)
    r, w = await asyncio.open_connection("127.0.0.1", gw.port("h"))
    w.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x04\x09\x00\x00\x00\x00\x01abcd")
    await w.drain()
    async with asyncio.timeout(10):
        while await r.read(65536):
            pass
    w.close()
    for _ in range(50):
        if metric(gw, "ugate_rejections_total", listener="h", reason="h2_protocol"):
            break
        await asyncio.sleep(0.05)
    assert metric(gw, "ugate_rejections_total", listener="h", reason="h2_protocol") == 1


async def test_serve_hbone_after_a_tls_front(start_gateway: StartGateway,
                                             blob_server: object) -> None:
    """What core's TLS front hands over: a decrypted stream, ALPN h2, the client's ID."""
    from ugate_core import AuthError, ListenerContext, stream_pair
    from ugate_hbone.server import serve_hbone
    from ugate_hbone.session import H2Session
    from ugate_hbone.settings import HboneSettings

    up: Blob = await blob_server(b"fronted")  # type: ignore[operator]
    gw = await start_gateway(HBONEC)
    ctx = ListenerContext(gw, gw.config.listeners[0])
    client_end, server_end = stream_pair(
        StreamMeta(), StreamMeta(listener="h", alpn="h2", peer_id="A" * 52))
    task = asyncio.get_running_loop().create_task(serve_hbone(server_end, ctx))
    sess = H2Session(client_end, HboneSettings(), client=True)
    sess.start()
    s = sess.open_stream([(b":method", b"CONNECT"), (b":authority", up.address.encode())],
                         StreamMeta())
    assert s.response is not None
    await s.response
    assert s.status == 200
    rec = next(iter(gw.streams.values()))
    assert (rec.client.protocol, rec.client.peer_id) == ("hbone", "A" * 52)
    s.write(b"q")
    s.write_eof()
    out = bytearray()
    while d := await asyncio.wait_for(s.read(), 10):
        out += d
    assert bytes(out[32:]) == b"fronted"
    sess.close()
    await asyncio.wait_for(task, 10)
    # no client certificate: refused before HTTP/2
    _c, anon = stream_pair(StreamMeta(), StreamMeta(listener="h", alpn="h2"))
    with pytest.raises(AuthError, match="requires a client certificate"):
        await serve_hbone(anon, ctx)


async def test_silent_client_is_closed_after_the_handshake_timeout(
        start_gateway: StartGateway) -> None:
    gw = await start_gateway(HBONEC.replace("[admin]", "[gateway]\nhandshake_timeout = 0.3\n"
                                            "[admin]"))
    r, w = await asyncio.open_connection("127.0.0.1", gw.port("h"))
    w.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    t0 = asyncio.get_running_loop().time()
    async with asyncio.timeout(10):
        while await r.read(65536):
            pass
    assert asyncio.get_running_loop().time() - t0 < 5
    w.close()


async def test_reset_flood_leaves_nothing_behind(start_gateway: StartGateway,
                                                 h2_client: H2Connect,
                                                 silent_server: tuple[str, int]) -> None:
    """300 tunnels opened and reset by the client (half of them before the answer): every
    relay ends, no stream stays in the gateway or the session; the connection stays usable."""
    from ugate_hbone.server import sessions_of

    gw = await start_gateway(HBONEC)
    c = await h2_client(gw.port("h"))
    target = f"{silent_server[0]}:{silent_server[1]}"
    streams = [c.request(target) for _ in range(300)]
    for s in streams[:150]:
        c.c.reset_stream(s.sid)
    c.flush()
    for s in streams[150:]:
        assert await c.response(s) == 200
        c.c.reset_stream(s.sid)
    c.flush()
    for _ in range(200):
        if not gw.streams and not any(sess.streams for sess in sessions_of(gw)):
            break
        await asyncio.sleep(0.05)
    assert not gw.streams
    assert metric(gw, "ugate_streams_total", listener="h", end="reset") == 150
    ok = c.request(target)
    assert await c.response(ok) == 200


async def test_config_errors_name_the_key(start_gateway: StartGateway) -> None:
    from ugate_core import ConfigError

    with pytest.raises(ConfigError, match=r"hbone\.max_streams: 0 is not an integer"):
        await start_gateway("[admin]\nlisten = \"\"\n[hbone]\nmax_streams = 0\n")
    with pytest.raises(ConfigError, match=r"listeners\.hb\.peers\[0\]: 'id:nope'"):
        await start_gateway("""
[admin]
listen = ""
[listeners.hb]
listen = "127.0.0.1:0"
protocols = ["hbone"]
peers = ["id:nope"]
""")
    with pytest.raises(ConfigError, match=r"listeners\.hb\.peerz: unknown key"):
        await start_gateway("""
[admin]
listen = ""
[listeners.hb]
listen = "127.0.0.1:0"
protocols = ["hbone"]
peerz = []
""")
