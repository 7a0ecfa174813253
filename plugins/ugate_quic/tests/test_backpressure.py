"""A receiver that stops reading must not grow memory: QUIC credit follows what was taken
(lib.StreamCredit), and a stream's writer pauses above qstream.HIGH."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ugate_core.testing import StartGateway, pattern
from ugate_quic.mesh import pool_of

from .test_mesh import gateway_a, read_all

MiB = 1 << 20
TOTAL = 24 * MiB


@pytest.fixture
async def blaster() -> AsyncIterator[tuple[int, list[int]]]:
    """A TCP origin that writes TOTAL bytes as fast as the socket takes them; ``sent[0]`` is
    how many it handed to the kernel so far."""
    sent = [0]
    data = pattern(TOTAL)

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        for i in range(0, TOTAL, 65536):
            w.write(data[i:i + 65536])
            await w.drain()
            sent[0] = i + 65536
        w.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield srv.sockets[0].getsockname()[1], sent
    srv.close()


async def test_stalled_reader_bounds_what_the_origin_can_push(
        start_gateway: StartGateway, blaster: tuple[int, list[int]]) -> None:
    port, sent = blaster
    b = await start_gateway(f"""
[admin]
listen = ""
[listeners.quic]
listen = "127.0.0.1:0"
protocols = ["quic"]
[hosts."svc.test"]
endpoints = ["127.0.0.1:{port}"]
""")
    a = await start_gateway(gateway_a(b, b.identity.id))
    s = await a.dial("svc.test:1")
    await asyncio.sleep(2.0)  # nobody reads: everything in the path fills up and stops
    stalled_at = sent[0]
    await asyncio.sleep(0.5)
    assert sent[0] == stalled_at  # it stopped, not just slowed
    # what the origin got rid of sits in: the kernel's socket buffers (a few MiB on
    # loopback), B's stream buffer (HIGH), the peer's window (1 MiB), A's read buffer
    assert stalled_at <= 12 * MiB, stalled_at
    assert s.buffered() <= 2 * MiB, s.buffered()
    peer = next(iter(pool_of(a).peers.values()))
    quic_stream = peer.quic._streams[0]
    assert quic_stream.max_stream_data_local <= s.buffered() + 2 * MiB
    # and it all still arrives, byte for byte, once read
    got = await read_all(s, TOTAL + 1, timeout=60)
    assert len(got) == TOTAL and got == pattern(TOTAL)
