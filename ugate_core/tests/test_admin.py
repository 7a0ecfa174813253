"""The admin endpoint: metrics, health, plugins, live streams, routes."""

from __future__ import annotations

import asyncio
import json

from ugate_core.gateway import Gateway
from ugate_core.testing import StartGateway


async def get(gw: Gateway, path: str) -> tuple[int, bytes]:
    r, w = await asyncio.open_connection("127.0.0.1", gw.port("admin"))
    w.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await asyncio.wait_for(r.read(-1), 5)
    w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_admin_endpoints(start_gateway: StartGateway, echo_server: tuple[str, int]) -> None:
    gw = await start_gateway(f"""
[admin]
listen = "127.0.0.1:0"
[listeners.fwd]
listen = "127.0.0.1:0"
protocols = ["tcp"]
target = "echo.test:{echo_server[1]}"
[hosts."echo.test"]
endpoints = ["{echo_server[0]}"]
""")
    assert await get(gw, "/healthz") == (200, b"ok\n")
    assert await get(gw, "/readyz") == (200, b"ready\n")
    status, body = await get(gw, "/plugins")
    assert status == 200
    plugins = json.loads(body)
    assert plugins["plugins"][0]["name"] == "core"
    assert "tcp" in plugins["listener_types"]
    # a live stream shows on /streams with its byte counts
    r, w = await asyncio.open_connection("127.0.0.1", gw.port("fwd"))
    w.write(b"x" * 1000)
    assert await r.readexactly(1000) == b"x" * 1000
    status, body = await get(gw, "/streams")
    (s,) = json.loads(body)
    assert s["listener"] == "fwd"
    assert (s["bytes_up"], s["bytes_down"]) == (1000, 1000)
    assert s["upstream"]["target"] == f"echo.test:{echo_server[1]}"
    w.close()
    status, body = await get(gw, "/metrics")
    text = body.decode()
    assert 'ugate_connections_total{listener="fwd",protocol="tcp"} 1.0' in text
    assert "ugate_plugins_loaded" in text
    assert (await get(gw, "/nope"))[0] == 404
    status, body = await get(gw, "/routes")
    assert status == 200
    (route,) = json.loads(body)
    assert (route["name"], route["source"], route["endpoints"]) == (
        "echo.test", "local", ["127.0.0.1"])


async def test_readyz_goes_503_during_shutdown(start_gateway: StartGateway) -> None:
    gw = await start_gateway('[admin]\nlisten = "127.0.0.1:0"\n')
    assert gw.ready
    port = gw.port("admin")
    gw.ready = False  # what shutdown does first
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /readyz HTTP/1.1\r\n\r\n")
    assert (await r.read(-1)).startswith(b"HTTP/1.1 503")
    w.close()


def test_tallies_are_exact_at_every_reading() -> None:
    """A Tally's plain additions show in the counter whenever the registry is read: by
    get_sample_value (what tests use) and by the /metrics text."""
    from ugate_core.metrics import Metrics

    m = Metrics()
    t = m.tally(m.bytes, "web", "down")
    assert m.tally(m.bytes, "web", "down") is t
    t.n += 5
    t.n += 7
    assert m.registry.get_sample_value("ugate_relay_bytes_total",
                                       {"listener": "web", "direction": "down"}) == 12
    assert t.n == 0  # folded
    t.n += 1
    m.child(m.bytes, "web", "down").inc(2)  # the same child, also counted directly
    assert b'ugate_relay_bytes_total{direction="down",listener="web"} 15.0' in m.render()
