"""Limits and bad input on the QUIC endpoint: handshake deadline, an unknown ALPN, streams per
connection, a flood of Initial packets while a stream is live (with and without Retry)."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl

from aioquic.asyncio.client import connect
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from ugate_core import PreambleOpener, StreamMeta
from ugate_core.testing import StartGateway, metric, pattern
from ugate_quic.alpn import AlpnHandler
from ugate_quic.endpoint import QuicEndpoint, QuicPeer
from ugate_quic.mesh import ALPN, MeshClientSession, open_stream_id, pool_of

from .test_mesh import echo_through, gateway_a, read_all


def config_b(echo: tuple[str, int], listener: str = "", gateway: str = "") -> str:
    return f"""
[gateway]
{gateway}
[admin]
listen = ""
[listeners.quic]
listen = "127.0.0.1:0"
protocols = ["quic"]
{listener}
[hosts."svc.test"]
endpoints = ["{echo[0]}:{echo[1]}"]
"""


async def counted(gw: object, reason: str, timeout: float = 5.0) -> None:
    """Wait (bounded) until the quic listener counted one refusal for ``reason``."""
    for _ in range(int(timeout / 0.05)):
        if metric(gw, "ugate_rejections_total", listener="quic", reason=reason) >= 1:  # type: ignore[arg-type]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {reason!r} refusal counted within {timeout}s")


def endpoint_of(gw: object) -> QuicEndpoint:
    ep = gw.running["quic"]  # type: ignore[attr-defined]
    assert isinstance(ep, QuicEndpoint)
    return ep


async def test_a_client_that_stops_after_its_first_packet_is_dropped_at_the_deadline(
        start_gateway: StartGateway, echo_server: tuple[str, int]) -> None:
    b = await start_gateway(config_b(echo_server, gateway="handshake_timeout = 0.5"))
    c = QuicConnection(configuration=QuicConfiguration(is_client=True, alpn_protocols=[ALPN]))
    c.connect(("127.0.0.1", b.port("quic")), now=0.0)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for data, addr in c.datagrams_to_send(now=0.0):
            s.sendto(data, addr)
        await asyncio.sleep(0.2)
        assert len(endpoint_of(b).connections) == 1
        await counted(b, "handshake_timeout")
    finally:
        s.close()


async def test_unknown_alpn_fails_the_handshake_and_is_counted(
        start_gateway: StartGateway, echo_server: tuple[str, int]) -> None:
    b = await start_gateway(config_b(echo_server))
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["nope/9"], verify_mode=ssl.CERT_NONE)
    try:
        async with asyncio.timeout(5):
            async with connect("127.0.0.1", b.port("quic"), configuration=cfg):
                raise AssertionError("the handshake should have failed")
    except ConnectionError:
        pass
    await counted(b, "handshake")
    assert not endpoint_of(b).connections


async def test_streams_beyond_max_streams_are_reset_and_counted(
        start_gateway: StartGateway, echo_server: tuple[str, int]) -> None:
    b = await start_gateway(config_b(echo_server, listener="max_streams = 2"))
    cfg = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE)

    def make(quic: QuicConnection, stream_handler: object = None) -> QuicPeer:
        return QuicPeer(quic, handlers={ALPN: AlpnHandler(ALPN, MeshClientSession)})

    async with connect("127.0.0.1", b.port("quic"), configuration=cfg,
                       create_protocol=make) as c:
        assert isinstance(c, QuicPeer)
        c.quic.send_stream_data(open_stream_id(c, True), b"", end_stream=True)  # no key
        req = PreambleOpener().request("svc.test:7")
        held = []
        for _ in range(2):
            s = c.stream(open_stream_id(c, False), StreamMeta())
            s.write(req + b"ping")
            held.append(s)
        c.transmit()
        for s in held:  # the two within the limit work, and stay open (relayed)
            got = b""
            async with asyncio.timeout(5):
                while len(got) < 9:
                    got += await s.read(100)
            assert got == b"\x01\x03200ping"
        third = c.stream(open_stream_id(c, False), StreamMeta())
        third.write(req)
        c.transmit()
        assert await read_all(third, 100, timeout=5) == b""
        assert third.is_lost
    assert metric(b, "ugate_rejections_total", listener="quic", reason="max_streams") == 1


def _initial(dcid: bytes) -> bytes:
    """A long-header Initial with a fresh connection ID and no valid protection: it costs the
    server a lookup (and, without Retry, a connection) but can never complete."""
    body = os.urandom(1180)  # a client Initial is at least 1200 bytes
    return (bytes([0xC3]) + (1).to_bytes(4, "big") + bytes([8]) + dcid + bytes([8])
            + os.urandom(8) + b"\x00" + (0x4000 | len(body)).to_bytes(2, "big") + body)


async def _flood_during_transfer(b: object, a: object, n: int) -> bytes:
    s = await a.dial("svc.test:7")  # type: ignore[attr-defined]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    port = b.port("quic")  # type: ignore[attr-defined]

    async def flood() -> None:
        for i in range(n):
            try:
                sock.sendto(_initial(os.urandom(8)), ("127.0.0.1", port))
            except BlockingIOError:
                pass
            if i % 50 == 0:
                await asyncio.sleep(0)

    data = pattern(4 << 20, seed=3)
    try:
        got, _ = await asyncio.gather(echo_through(s, data), flood())
    finally:
        sock.close()
    return got


async def test_initial_flood_is_bounded_and_a_live_stream_goes_on(
        start_gateway: StartGateway, echo_server: tuple[str, int]) -> None:
    b = await start_gateway(config_b(echo_server, listener="max_connections = 50"))
    a = await start_gateway(gateway_a(b, b.identity.id))
    got = await _flood_during_transfer(b, a, 3000)
    assert got == pattern(4 << 20, seed=3)
    assert len(endpoint_of(b).connections) <= 50
    assert metric(b, "ugate_rejections_total", listener="quic", reason="max_connections") > 0


async def test_with_retry_a_flood_makes_no_connection_state(
        start_gateway: StartGateway, echo_server: tuple[str, int]) -> None:
    b = await start_gateway(config_b(echo_server, listener="retry = true"))
    a = await start_gateway(gateway_a(b, b.identity.id))  # aioquic's client follows Retry
    got = await _flood_during_transfer(b, a, 3000)
    assert got == pattern(4 << 20, seed=3)
    assert len(endpoint_of(b).connections) == 1  # only the dialer's: Retry answered the rest
    assert len(pool_of(a).peers) == 1
