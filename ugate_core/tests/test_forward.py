"""The built-in tcp forward listener: bytes, half-close, metrics, streams."""

from __future__ import annotations

import asyncio

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
