"""Backpressure both ways: a WebSocket client that stops reading, and an origin that stops
reading, hold a bounded number of bytes in the gateway (as core's relay tests bound it)."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect

from ugate_core.testing import StartGateway, pattern, rss_mb

from .conftest import BASE, MIB, port_of, ws_listener

TOTAL = 64 * MIB
STALL = 2.0
#: what may be in flight while one side stalls: the loopback sockets' buffers (autotuned to
#: a few MiB each way) and the gateway's high-water marks (256 KiB a side)
BOUND = 24 * MIB


async def test_stalled_websocket_client_bounds_what_the_origin_can_push(
        start_gateway: StartGateway) -> None:
    pushed = 0
    block = pattern(MIB, 5)

    async def firehose(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal pushed
        try:
            for _ in range(TOTAL // MIB):
                w.write(block)
                await w.drain()
                pushed += MIB
            w.write_eof()
            await r.read()
        finally:
            w.close()

    origin = await asyncio.start_server(firehose, "127.0.0.1", 0)
    gw = await start_gateway(BASE + ws_listener())
    target = f"127.0.0.1:{origin.sockets[0].getsockname()[1]}"
    url = f"ws://127.0.0.1:{port_of(gw)}/.well-known/ugate/ws/{target}"
    base = rss_mb()
    # the client's own queue: 4 messages, then it stops reading its socket
    async with connect(url, max_size=None, max_queue=4, compression=None) as ws:
        peak = base
        for _ in range(int(STALL / 0.05)):
            await asyncio.sleep(0.05)
            peak = max(peak, rss_mb())
        stalled_at = pushed
        assert stalled_at < BOUND, f"the origin pushed {stalled_at / MIB:.0f} MiB at a " \
            "client that read nothing"
        assert peak - base < 32, f"RSS grew {peak - base:.1f} MiB while the client stalled"
        got = 0
        async with asyncio.timeout(30):
            while True:
                m = await ws.recv()
                assert isinstance(m, bytes)
                if not m:
                    break
                got += len(m)
    origin.close()
    assert got == TOTAL and pushed == TOTAL


async def test_stalled_origin_bounds_what_the_client_can_push(
        start_gateway: StartGateway) -> None:
    received = 0
    reading = asyncio.Event()

    async def sink(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal received
        await reading.wait()
        while data := await r.read(1 << 20):
            received += len(data)
        w.write(received.to_bytes(8, "big"))
        w.write_eof()
        await w.drain()
        w.close()

    origin = await asyncio.start_server(sink, "127.0.0.1", 0, limit=1 << 16)
    gw = await start_gateway(BASE + ws_listener())
    target = f"127.0.0.1:{origin.sockets[0].getsockname()[1]}"
    url = f"ws://127.0.0.1:{port_of(gw)}/.well-known/ugate/ws/{target}"
    block = pattern(64 * 1024, 6)
    sent = 0
    async with connect(url, max_size=None, compression=None, write_limit=64 * 1024) as ws:
        async def push() -> None:
            nonlocal sent
            while sent < TOTAL:
                await ws.send(block)
                sent += len(block)
            await ws.send(b"")

        task = asyncio.create_task(push())
        await asyncio.sleep(STALL)
        assert not task.done()
        assert sent < BOUND, f"the client pushed {sent / MIB:.0f} MiB to a stalled origin"
        reading.set()
        async with asyncio.timeout(30):
            await task
            count = await ws.recv()
            assert await ws.recv() == b""
    origin.close()
    assert int.from_bytes(count, "big") == TOTAL == received
