"""The built-in tcp forward listener: bytes, half-close, metrics, streams."""

from __future__ import annotations

import asyncio

import pytest

from ugate_core.testing import StartGateway, metric, pattern


async def test_forward_bytes_both_ways_and_half_close(
    start_gateway: StartGateway, echo_server: tuple[str, int]
) -> None:
    host, port = echo_server
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.fwd]
listen = "127.0.0.1:0"
protocols = ["tcp"]
target = "{host}:{port}"
""")
    r, w = await asyncio.open_connection("127.0.0.1", gw.port("fwd"))
    data = pattern(3 << 20, seed=1)
    w.write(data)
    w.write_eof()  # half-close: the echo of every byte must still come back
    got = await asyncio.wait_for(r.read(-1), 20)
    assert got == data
    w.close()
    for _ in range(100):
        if metric(gw, "ugate_streams_total", listener="fwd", end="done"):
            break
        await asyncio.sleep(0.02)
    assert metric(gw, "ugate_relay_bytes_total", listener="fwd", direction="up") == len(data)
    assert metric(gw, "ugate_relay_bytes_total", listener="fwd", direction="down") == len(data)


async def test_forward_refused_target_closes_client(start_gateway: StartGateway) -> None:
    from ugate_core.testing import free_port

    dead = free_port()
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.fwd]
listen = "127.0.0.1:0"
protocols = ["tcp"]
target = "127.0.0.1:{dead}"
""")
    r, w = await asyncio.open_connection("127.0.0.1", gw.port("fwd"))
    assert await asyncio.wait_for(r.read(), 5) == b""
    w.close()
    assert metric(gw, "ugate_dial_errors_total", reason="refused") == 1


def _fwd_config(host: str, port: int, extra: str = "") -> str:
    return f"""
[admin]
listen = ""
[gateway]
{extra}
[listeners.fwd]
listen = "127.0.0.1:0"
protocols = ["tcp"]
target = "{host}:{port}"
"""


async def _echo_once(r: asyncio.StreamReader, w: asyncio.StreamWriter, data: bytes) -> None:
    w.write(data)
    await w.drain()
    assert await asyncio.wait_for(r.readexactly(len(data)), 5) == data


async def test_relayed_connection_keeps_no_task(
    start_gateway: StartGateway, echo_server: tuple[str, int]
) -> None:
    """The handler hands the streams to the relay and ends: an idle relayed connection is
    objects only, still on /streams, and closed and counted when the client leaves."""
    gw = await start_gateway(_fwd_config(*echo_server))
    conns = [await asyncio.open_connection("127.0.0.1", gw.port("fwd")) for _ in range(5)]
    for r, w in conns:
        await _echo_once(r, w, b"ping")
    await asyncio.sleep(0.05)
    assert [t for t in gw._tasks if not t.done()] == []
    assert len(gw.streams) == 5
    assert {rec.stats.end for rec in gw.streams.values()} == {""}
    assert all(rec.stats.up == 4 and rec.stats.down == 4 for rec in gw.streams.values())
    for r, w in conns:
        w.write_eof()
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()
    for _ in range(100):
        if not gw.streams:
            break
        await asyncio.sleep(0.02)
    assert gw.streams == {}
    assert metric(gw, "ugate_streams_total", listener="fwd", end="done") == 5
    assert metric(gw, "ugate_streams_active", listener="fwd") == 0
    assert gw.listeners["fwd"].active == 0


async def test_max_connections_counts_relayed_connections(
    start_gateway: StartGateway, echo_server: tuple[str, int]
) -> None:
    gw = await start_gateway(_fwd_config(*echo_server, "max_connections = 2"))
    held = [await asyncio.open_connection("127.0.0.1", gw.port("fwd")) for _ in range(2)]
    for r, w in held:
        await _echo_once(r, w, b"x")
    # both handlers ended long ago; the sockets still count
    r3, w3 = await asyncio.open_connection("127.0.0.1", gw.port("fwd"))
    assert await asyncio.wait_for(r3.read(), 5) == b""
    w3.close()
    assert metric(gw, "ugate_rejections_total", listener="fwd", reason="max_connections") == 1
    r, w = held.pop()
    w.close()
    for _ in range(100):
        if gw.listeners["fwd"].active == 1:
            break
        await asyncio.sleep(0.02)
    r4, w4 = await asyncio.open_connection("127.0.0.1", gw.port("fwd"))
    await _echo_once(r4, w4, b"again")
    for _, w in [*held, (r4, w4)]:
        w.close()


async def test_shutdown_drains_then_ends_task_less_relays(
    start_gateway: StartGateway, echo_server: tuple[str, int]
) -> None:
    gw = await start_gateway(_fwd_config(*echo_server))
    r, w = await asyncio.open_connection("127.0.0.1", gw.port("fwd"))
    await _echo_once(r, w, b"before")
    stop = asyncio.create_task(gw.shutdown(0.5))
    await asyncio.sleep(0.1)
    await _echo_once(r, w, b"during the drain")  # still relayed while draining
    assert not stop.done()
    await asyncio.wait_for(stop, 5)  # the deadline passes: the relay is ended
    with pytest.raises(ConnectionResetError):  # cut short: a reset, not a clean end (#16)
        await asyncio.wait_for(r.read(), 5)
    w.close()
    assert gw.streams == {}
    assert metric(gw, "ugate_streams_total", listener="fwd", end="cancelled") == 1
