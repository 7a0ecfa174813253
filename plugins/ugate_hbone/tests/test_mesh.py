"""ugate ↔ ugate over HBONE: curl (SOCKS5) on gateway A reaches a service behind gateway B over
HTTP/2 CONNECT with mTLS; identities, pooling, SETTINGS_MAX_CONCURRENT_STREAMS, reconnects."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ugate_core import DialError, Gateway, Stream, id_of_public_key
from ugate_core.testing import StartGateway, Upstream, metric, pattern, require_peer, run
from ugate_hbone.dialer import pool_of
from ugate_hbone.server import sessions_of

from .conftest import Blob, MiB

OTHER_ID = "A" * 52


def gateway_b(target: str, extra: str = "") -> str:
    return f"""
[admin]
listen = ""
[listeners.hbone]
listen = "127.0.0.1:0"
protocols = ["hbone"]
[hosts."svc.test"]
endpoints = ["{target}"]
{extra}
"""


def gateway_a(b: Gateway, expect: str, extra: str = "") -> str:
    return f"""
[admin]
listen = ""
[listeners.socks]
listen = "127.0.0.1:0"
protocols = ["socks5"]
[hosts."svc.test"]
endpoints = ["127.0.0.1:{b.port("hbone")}"]
protocol = "hbone"
identity = ["id:{expect}"]
{extra}
"""


async def curl(*args: str) -> tuple[int, bytes, bytes]:
    exe = require_peer("curl")
    res = await run(exe, "-sS", "--max-time", "30", *args, timeout=40)
    return res.returncode, res.stdout, res.stderr


async def read_all(s: Stream, limit: int, timeout: float = 30) -> bytes:
    out = bytearray()
    async with asyncio.timeout(timeout):
        while len(out) <= limit:
            d = await s.read(1 << 20)
            if not d:
                break
            out += d
    return bytes(out)


async def test_curl_socks5_through_hbone_mtls(start_gateway: StartGateway,
                                              http_upstream: Upstream, tmp_path: Path) -> None:
    b = await start_gateway(gateway_b(http_upstream.address))
    a = await start_gateway(gateway_a(b, b.identity.id))
    socks = f"127.0.0.1:{a.port('socks')}"
    # download 1 MiB
    code, out, err = await curl("--socks5-hostname", socks, f"http://svc.test/bytes/{MiB}")
    assert code == 0, err
    assert out == pattern(MiB)
    # upload 1 MiB (and get it back)
    body = tmp_path / "body"
    body.write_bytes(pattern(MiB, 7))
    code, out, err = await curl("--socks5-hostname", socks, "--data-binary", f"@{body}",
                                "-H", "Content-Type: application/octet-stream",
                                "http://svc.test/echo")
    assert code == 0, err
    assert out == pattern(MiB, 7)
    # B saw A's verified identity; both tunnels used one HTTP/2 connection
    assert pool_of(a).connections_opened == 1
    assert metric(b, "ugate_connections_total", listener="hbone", protocol="hbone") == 1
    assert metric(b, "ugate_streams_total", listener="hbone", end="done") == 2
    assert metric(a, "ugate_dials_total", dialer="hbone", result="ok") == 2


async def test_wrong_peer_key_fails_the_dial(start_gateway: StartGateway,
                                             http_upstream: Upstream,
                                             caplog: pytest.LogCaptureFixture) -> None:
    b = await start_gateway(gateway_b(http_upstream.address))
    a = await start_gateway(gateway_a(b, OTHER_ID))
    code, out, _err = await curl("--socks5-hostname", f"127.0.0.1:{a.port('socks')}",
                                "http://svc.test/bytes/10")
    assert code != 0 and out == b""
    assert metric(a, "ugate_identity_failures_total", protocol="hbone", direction="dial") == 1
    assert metric(a, "ugate_dial_errors_total", reason="identity") == 1
    with pytest.raises(DialError) as ei:
        await a.dial("svc.test:80")
    msg = str(ei.value)
    assert ei.value.reason == "identity"
    assert f"expected id {OTHER_ID}" in msg and f"presented id {b.identity.id}" in msg
    assert any("identity_mismatch protocol=hbone direction=dial" in r.message
               for r in caplog.records)
    assert http_upstream.requests == []


async def test_mesh_name_is_its_own_identity(start_gateway: StartGateway,
                                             blob_server: Any, tmp_path: Path) -> None:
    up: Blob = await blob_server(b"by-name")
    key = ec.generate_private_key(ec.SECP256R1())
    bid = id_of_public_key(key)
    state = tmp_path / "b"
    state.mkdir(mode=0o700)
    (state / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    os.chmod(state / "key.pem", 0o600)
    name = f"{bid.lower()}.m"
    other = f"{OTHER_ID.lower()}.m"
    b = await start_gateway(gateway_b(up.address) + f"""
[hosts."{name}"]
endpoints = ["{up.address}"]
""", state_dir=state)
    assert b.identity.id == bid
    a = await start_gateway(f"""
[admin]
listen = ""
[hosts."{name}"]
endpoints = ["127.0.0.1:{b.port("hbone")}"]
protocol = "hbone"
[hosts."{other}"]
endpoints = ["127.0.0.1:{b.port("hbone")}"]
protocol = "hbone"
""")
    s = await a.dial(f"{name}:9")  # no identity configured: the name says whom to expect
    assert s.meta.peer_id == bid
    s.write(b"n")
    s.write_eof()
    assert (await read_all(s, 100))[32:] == b"by-name"
    s.close()
    with pytest.raises(DialError) as ei:
        await a.dial(f"{other}:9")
    assert ei.value.reason == "identity"
    assert f"expected id {OTHER_ID}, presented id {bid}" in str(ei.value)


async def test_max_concurrent_streams_second_connection_and_queue(
        start_gateway: StartGateway, blob_server: Any) -> None:
    up: Blob = await blob_server(b"done")
    b = await start_gateway(gateway_b(up.address, "[hbone]\nmax_streams = 2\n"))
    a = await start_gateway(gateway_a(b, b.identity.id,
                                      "[hbone]\nmax_connections_per_peer = 2\n"))
    open_ = [await a.dial("svc.test:1") for _ in range(4)]
    assert pool_of(a).connections_opened == 2
    fifth = asyncio.get_running_loop().create_task(a.dial("svc.test:1"))
    await asyncio.sleep(0.3)
    assert not fifth.done()  # both connections full, no third one allowed: queued
    first = open_.pop(0)
    first.write(b"x")
    first.write_eof()
    assert (await read_all(first, 100))[32:] == b"done"
    first.close()
    s5 = await asyncio.wait_for(fifth, 10)
    assert pool_of(a).connections_opened == 2
    for s in [*open_, s5]:
        s.write(b"y")
        s.write_eof()
        assert await read_all(s, 100) == hashlib.sha256(b"y").digest() + b"done"
        s.close()


async def test_reconnect_after_the_connection_drops(start_gateway: StartGateway,
                                                    blob_server: Any) -> None:
    up: Blob = await blob_server(b"again")
    b = await start_gateway(gateway_b(up.address))
    a = await start_gateway(gateway_a(b, b.identity.id))
    s = await a.dial("svc.test:1")
    # B drops every HBONE connection
    for sess in list(sessions_of(b)):
        sess.close(ConnectionResetError("test drop"))
    with pytest.raises(ConnectionError):
        async with asyncio.timeout(5):
            await s.wait_closed()
            await s.drain()
            raise ConnectionResetError("lost")
    s2 = await a.dial("svc.test:1")
    s2.write(b"z")
    s2.write_eof()
    assert (await read_all(s2, 100))[32:] == b"again"
    assert pool_of(a).connections_opened == 2


async def test_goaway_on_shutdown_lets_running_tunnels_finish(start_gateway: StartGateway,
                                                              blob_server: Any) -> None:
    up: Blob = await blob_server(pattern(MiB, 12))
    b = await start_gateway(gateway_b(up.address))
    a = await start_gateway(gateway_a(b, b.identity.id))
    s = await a.dial("svc.test:1")
    stop = asyncio.get_running_loop().create_task(b.shutdown(10))
    await asyncio.sleep(0.2)
    # the running tunnel still works after B's GOAWAY
    s.write(b"late")
    s.write_eof()
    out = await read_all(s, 32 + MiB)
    assert out == hashlib.sha256(b"late").digest() + pattern(MiB, 12)
    s.close()
    await asyncio.wait_for(stop, 10)
    # new tunnels are not opened on the GOAWAY'd connection
    with pytest.raises(DialError):
        await a.dial("svc.test:1")


def test_mesh_under_uvloop(tmp_path: Path) -> None:
    """The same path under uvloop (what 'ugate run' uses): uvloop's TLS transports, 20
    concurrent tunnels of 1 MiB each way over one pooled HTTP/2 connection."""
    uvloop = pytest.importorskip("uvloop")
    from ugate_core import loads

    async def main() -> None:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            h = hashlib.sha256()
            while d := await r.read(1 << 20):
                h.update(d)
            w.write(h.digest() + pattern(MiB, 77))
            await w.drain()
            w.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        up = f"127.0.0.1:{srv.sockets[0].getsockname()[1]}"
        b = Gateway(loads(gateway_b(up)), state_dir=tmp_path / "b")
        await b.start()
        a = Gateway(loads(f"""
[admin]
listen = ""
[hosts."svc.test"]
endpoints = ["127.0.0.1:{b.port("hbone")}"]
protocol = "hbone"
identity = ["id:{b.identity.id}"]
"""), state_dir=tmp_path / "a")
        await a.start()
        try:
            async def one(i: int) -> None:
                s = await a.dial("svc.test:1")
                payload = pattern(MiB, i)
                s.write(payload)
                s.write_eof()
                out = await read_all(s, 32 + MiB)
                assert out == hashlib.sha256(payload).digest() + pattern(MiB, 77)
                s.close()

            await asyncio.gather(*(one(i) for i in range(20)))
            assert pool_of(a).connections_opened == 1
            assert metric(b, "ugate_streams_total", listener="hbone", end="done") == 20
        finally:
            await a.shutdown(1)
            await b.shutdown(1)
            srv.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        r.run(main())


async def test_dial_to_a_peer_that_is_not_http2(start_gateway: StartGateway) -> None:
    """A peer answering HTTP/1.1, or nothing at all: a DialError naming the peer, no crash."""
    async def http1(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read(100)
        w.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await w.drain()

    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read(1 << 16)
        await asyncio.sleep(30)

    s1 = await asyncio.start_server(http1, "127.0.0.1", 0)
    s2 = await asyncio.start_server(silent, "127.0.0.1", 0)
    p1, p2 = s1.sockets[0].getsockname()[1], s2.sockets[0].getsockname()[1]
    a = await start_gateway(f"""
[admin]
listen = ""
[gateway]
connect_timeout = 1.0
[hosts."h1.test"]
endpoints = ["127.0.0.1:{p1}"]
protocol = "hbonec"
[hosts."quiet.test"]
endpoints = ["127.0.0.1:{p2}"]
protocol = "hbonec"
""")
    with pytest.raises(DialError) as ei:
        await a.dial("h1.test:80")
    assert ei.value.reason == "unreachable"
    assert f"HBONE peer 127.0.0.1:{p1}: no HTTP/2 SETTINGS" in str(ei.value)
    with pytest.raises(DialError) as ei:
        await a.dial("quiet.test:80")
    assert ei.value.reason == "timeout"
    s1.close()
    s2.close()
