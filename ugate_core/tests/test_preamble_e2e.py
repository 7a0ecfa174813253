"""The stream preamble end to end: a client opens TCP streams to a running gateway whose
listener serves them with ``serve_preamble`` (as a QUIC/WebTransport/libp2p plugin would
serve its streams), and gets relayed bytes, a refusal status or a 400."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ugate_core import (
    Destination,
    DialError,
    Gateway,
    ListenerContext,
    ListenerType,
    PreambleOpener,
    Stream,
    StreamMeta,
    TcpStream,
    hookimpl,
    loads,
    serve_preamble,
    stream_pair,
)
from ugate_core.preamble import MAX_REQUEST, encode_varint
from ugate_core.preamble_io import open_preamble
from ugate_core.testing import metric


class _Plugin:
    """``preamble-anon``: an unauthenticated transport; ``preamble-peer``: one that verified
    its client (a QUIC or WebTransport client certificate) and says so in ``meta.peer_id``."""

    @hookimpl
    def ugate_listener_types(self) -> list[ListenerType]:
        async def peer(stream: Stream, ctx: ListenerContext) -> None:
            stream.meta.peer_id = "TESTPEER"
            await serve_preamble(stream, ctx)

        return [ListenerType("preamble-anon", serve=serve_preamble),
                ListenerType("preamble-peer", serve=peer)]

    #: the listener of every client the policy was asked about
    seen: list[str] = []

    @hookimpl
    def ugate_authorize(self, gateway: Gateway, peer: StreamMeta,
                        destination: Destination) -> bool | None:
        self.seen.append(peer.listener)
        return False if destination.name == "denied.test" else None


class Upstream:
    def __init__(self) -> None:
        self.connections = 0
        self.port = 0

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        while data := await r.read(65536):
            w.write(data)
        w.close()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    u = Upstream()
    server = await asyncio.start_server(u.handle, "127.0.0.1", 0)
    u.port = server.sockets[0].getsockname()[1]
    try:
        yield u
    finally:
        server.close()


@pytest.fixture
async def gw(tmp_path: Path, upstream: Upstream) -> AsyncIterator[Gateway]:
    g = Gateway(loads(f"""
[admin]
listen = ""
[gateway]
handshake_timeout = 0.5
[listeners.anon]
listen = "127.0.0.1:0"
protocols = ["preamble-anon"]
[listeners.peer]
listen = "127.0.0.1:0"
protocols = ["preamble-peer"]
[hosts."echo.test"]
endpoints = ["127.0.0.1:{upstream.port}"]
[hosts."denied.test"]
endpoints = ["127.0.0.1:{upstream.port}"]
"""), state_dir=tmp_path)
    g.pm.register(_Plugin(), name="preamble-test")
    await g.start()
    try:
        yield g
    finally:
        await g.shutdown(0.5)


async def connect(port: int) -> TcpStream:
    loop = asyncio.get_running_loop()
    _t, s = await loop.create_connection(TcpStream, "127.0.0.1", port)
    return s


async def read_all(s: Stream) -> bytes:
    out = bytearray()
    async with asyncio.timeout(5):
        while data := await s.read():
            out += data
    return bytes(out)


async def test_allowed_destination_relays_bytes(gw: Gateway, upstream: Upstream) -> None:
    s = await connect(gw.port("anon"))
    st = await open_preamble(s, "echo.test:7", {"traceparent": "00-1-2-01"})
    assert (st.status, st.ok) == (200, True)
    s.write(b"hello through the preamble")
    s.write_eof()
    assert await read_all(s) == b"hello through the preamble"
    assert upstream.connections == 1
    assert metric(gw, "ugate_connections_total", listener="anon", protocol="preamble-anon") == 1


@pytest.mark.parametrize(("listener", "status"), [("peer", 403), ("anon", 401)])
async def test_denied_destination_gets_the_status_and_no_payload_byte(
    gw: Gateway, upstream: Upstream, listener: str, status: int
) -> None:
    s = await connect(gw.port(listener))
    st = await open_preamble(s, "denied.test:7")
    assert (st.status, st.reason) == (status, "denied")
    s.write(b"payload the gateway must not pass on")
    assert await read_all(s) == b""  # nothing after the status: the stream ended
    assert upstream.connections == 0
    assert metric(gw, "ugate_dial_errors_total", reason="denied") == 1


async def test_unreachable_destination_gets_502(gw: Gateway) -> None:
    s = await connect(gw.port("anon"))
    st = await open_preamble(s, "127.0.0.1:1")  # nothing listens on port 1
    assert st.status == 502 and st.reason == "refused"


@pytest.mark.parametrize(("data", "reason", "says"), [
    (b"\x01\x08not-a-hostport", "preamble_malformed", "'not-a-ho': not host:port"),
    (b"\x01" + encode_varint(MAX_REQUEST + 1) + b"x" * 64, "preamble_too_long",
     "length 4097 over the limit of 4096"),
    (b"\x07\x05a:1", "preamble_version", "version 7 not supported"),
])
async def test_malformed_preamble_is_answered_400_closed_and_counted(
    gw: Gateway, upstream: Upstream, data: bytes, reason: str, says: str
) -> None:
    s = await connect(gw.port("anon"))
    s.write(data)
    answer = await read_all(s)
    st = PreambleOpener().receive_data(answer)
    assert st is not None and st.status == 400, answer
    assert says in st.reason, st.reason
    assert metric(gw, "ugate_rejections_total", listener="anon", reason=reason) == 1
    assert upstream.connections == 0


async def test_silent_opener_is_closed_at_the_handshake_deadline(gw: Gateway) -> None:
    s = await connect(gw.port("anon"))
    assert await read_all(s) == b""
    assert metric(gw, "ugate_rejections_total", listener="anon",
                  reason="handshake_timeout") == 1


async def test_a_plugin_stream_without_a_listener_is_judged_as_the_listeners(
    gw: Gateway, upstream: Upstream
) -> None:
    """A plugin that forgot ``meta.listener`` must not make its clients the embedding program
    (which the policy trusts): serve_preamble names the listener."""
    client, server = stream_pair()
    [cfg] = [lc for lc in gw.config.listeners if lc.name == "anon"]
    task = asyncio.create_task(serve_preamble(server, ListenerContext(gw, cfg)))
    _Plugin.seen.clear()
    st = await open_preamble(client, "denied.test:7")
    assert st.status == 401
    with pytest.raises(DialError, match="denied"):
        await task
    assert server.meta.listener == "anon" and _Plugin.seen == ["anon"]
