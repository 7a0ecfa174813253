"""The rapid-reset attack (CVE-2023-44487) against the HTTP front's h2c, as the probe of
issue #16 ran it (three connections of HEADERS + RST_STREAM pairs), while curl is served:
the attackers get GOAWAY ENHANCE_YOUR_CALM after the configured number of resets, memory
stays bounded, and /metrics shows the resets and the floods."""

from __future__ import annotations

import asyncio
import time

from ugate_core.testing import (
    StartGateway,
    Upstream,
    admin_get,
    metric,
    rapid_reset,
    require_peer,
    rss_mb,
    run,
)

MAX_RESETS = 500
#: what a probe connection would send if nothing stopped it
PROBE_STREAMS = 100_000


async def test_rapid_reset_gets_goaway_and_curl_is_served(start_gateway: StartGateway,
                                                          http_upstream: Upstream) -> None:
    curl = require_peer("curl")
    gw = await start_gateway(f"""
[admin]
listen = "127.0.0.1:0"
[gateway]
h2_max_resets = {MAX_RESETS}
[listeners.web]
listen = "127.0.0.1:0"
protocols = ["http"]
mode = "reverse"
[hosts."svc.test"]
endpoints = ["{http_upstream.address}"]
""")
    port = gw.port("web")
    url = f"http://svc.test:{port}/ok"

    async def get() -> bytes:
        res = await run(curl, "-sS", "--http2-prior-knowledge", "--noproxy", "*",
                        "--connect-to", f"svc.test:{port}:127.0.0.1:{port}", "--max-time",
                        "20", url, timeout=30, check=True)
        return res.stdout

    assert await get() == b"hello /ok\n"  # warm: the lazily imported code is loaded
    before = rss_mb()
    headers = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"svc.test"),
               (b":path", b"/")]
    attacks = [rapid_reset(port, PROBE_STREAMS, headers) for _ in range(3)]
    t0 = time.monotonic()
    *results, served = await asyncio.gather(*attacks, get())
    elapsed = time.monotonic() - t0
    grown = rss_mb() - before
    assert served == b"hello /ok\n"
    for a in results:
        assert a.goaway == 0xB, a  # ENHANCE_YOUR_CALM
        assert a.sent < 10 * MAX_RESETS, a
    assert grown < 100, f"RSS grew by {grown:.0f} MiB"
    assert await get() == b"hello /ok\n"
    status, body = b"", b""
    for _ in range(100):  # the servers count when their connections end
        status, body = await admin_get(gw, "/metrics")
        if b'ugate_rejections_total{listener="web",reason="h2_flood_resets"} 3.0' in body:
            break
        await asyncio.sleep(0.05)
    assert status == 200
    assert b'ugate_rejections_total{listener="web",reason="h2_flood_resets"} 3.0' in body
    # each connection: MAX_RESETS resets, what the bucket refilled meanwhile (MAX_RESETS per
    # 10 s), and the one too many
    resets = metric(gw, "ugate_h2_resets_total", listener="web", by="peer")
    assert b"ugate_h2_resets_total" in body
    assert 3 * (MAX_RESETS + 1) <= resets <= 3 * (MAX_RESETS * (1 + elapsed / 10) + 1), resets


#: an attacker in its own process that never stops writing until it sees the end: what a
#: probe does, and what a test sharing the gateway's event loop cannot be
_WRITER = r"""
import socket, sys, time
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 10)
c = H2Connection(H2Configuration(client_side=True, header_encoding=None))
c.initiate_connection()
h = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"svc.test"), (b":path", b"/")]
end = time.monotonic() + 20
try:
    while time.monotonic() < end:
        for _ in range(200):
            sid = c.get_next_available_stream_id()
            c.send_headers(sid, h)
            c.reset_stream(sid)
        s.sendall(c.data_to_send())
        s.setblocking(False)
        try:
            data = s.recv(1 << 20)
        except BlockingIOError:
            data = None
        s.setblocking(True)
        if data == b"":
            print("eof"); break
        for ev in c.receive_data(data or b""):
            if isinstance(ev, ConnectionTerminated):
                print(f"goaway={int(ev.error_code)}"); sys.exit(0)
except OSError as e:
    print(f"error={e.__class__.__name__}")
"""


async def test_goaway_reaches_an_attacker_that_keeps_writing(
        start_gateway: StartGateway, http_upstream: Upstream) -> None:
    """The soak found the ENHANCE_YOUR_CALM GOAWAY lost in 11 of 18 attacks: closing a socket
    with the attacker's bytes unread makes the kernel reset it, and the reset drops the GOAWAY
    at the attacker's end. The gateway now lingers, reading and dropping, before it closes."""
    gw = await start_gateway(f"""
[admin]
listen = ""
[gateway]
h2_max_resets = {MAX_RESETS}
[listeners.web]
listen = "127.0.0.1:0"
protocols = ["http"]
mode = "reverse"
[hosts."svc.test"]
endpoints = ["{http_upstream.address}"]
""")
    import sys
    outs = [(await run(sys.executable, "-c", _WRITER, str(gw.port("web")), timeout=40)).stdout
            for _ in range(6)]
    assert outs == [b"goaway=11\n"] * 6, outs
