"""The rapid-reset attack (CVE-2023-44487) against hbonec, as the probe of issue #16 ran it
(three connections of CONNECT HEADERS + RST_STREAM pairs), while another client's tunnel
carries bytes: GOAWAY ENHANCE_YOUR_CALM after the configured number of resets, bounded
memory, and the resets and floods on /metrics."""

from __future__ import annotations

import asyncio
import time

from ugate_core.testing import StartGateway, admin_get, metric, rapid_reset, rss_mb

from .conftest import H2Connect

MAX_RESETS = 500
PROBE_STREAMS = 100_000


async def test_rapid_reset_gets_goaway_and_tunnels_go_on(
        start_gateway: StartGateway, h2_client: H2Connect,
        echo_server: tuple[str, int]) -> None:
    gw = await start_gateway(f"""
[admin]
listen = "127.0.0.1:0"
[gateway]
h2_max_resets = {MAX_RESETS}
[listeners.h]
listen = "127.0.0.1:0"
protocols = ["hbonec"]
""")
    port = gw.port("h")
    target = f"{echo_server[0]}:{echo_server[1]}"
    good = await h2_client(port)
    s = good.request(target)
    assert await good.response(s) == 200  # warm, and a tunnel open through the attack

    async def use_tunnel() -> bytes:
        out = b""
        for i in range(20):
            await good.send(s, b"%d," % i)
            out = await good.read_until(s, len(b"".join(b"%d," % j for j in range(i + 1))))
            await asyncio.sleep(0.01)
        return out

    before = rss_mb()
    headers = [(b":method", b"CONNECT"), (b":authority", target.encode())]
    t0 = time.monotonic()
    *results, echoed = await asyncio.gather(
        *(rapid_reset(port, PROBE_STREAMS, headers) for _ in range(3)), use_tunnel())
    elapsed = time.monotonic() - t0
    grown = rss_mb() - before
    assert echoed == b"".join(b"%d," % j for j in range(20))
    for a in results:
        assert a.goaway == 0xB, a  # ENHANCE_YOUR_CALM
        assert a.sent < 10 * MAX_RESETS, a
    assert grown < 100, f"RSS grew by {grown:.0f} MiB"
    s2 = good.request(target)  # the good client's connection goes on
    assert await good.response(s2) == 200
    want = b'ugate_rejections_total{listener="h",reason="h2_flood_resets"} 3.0'
    body = b""
    for _ in range(100):  # the server counts when a connection ends
        _, body = await admin_get(gw, "/metrics")
        if want in body:
            break
        await asyncio.sleep(0.05)
    assert want in body
    resets = metric(gw, "ugate_h2_resets_total", listener="h", by="peer")
    assert 3 * (MAX_RESETS + 1) <= resets <= 3 * (MAX_RESETS * (1 + elapsed / 10) + 1), resets
