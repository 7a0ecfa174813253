"""Server-speaks-first clients on the embedded default's shared port: ``ssh-keyscan`` sends
nothing until it sees the SSH banner, so the port must offer ssh to a silent client."""

from __future__ import annotations

import time

from ugate_core import Gateway
from ugate_core.config import default_text
from ugate_core.testing import StartGateway, metric, require_peer, run


async def embedded_default(start_gateway: StartGateway) -> Gateway:
    text = default_text()
    for fixed in ('"127.0.0.1:15008"', '"127.0.0.1:15000"'):
        assert fixed in text, fixed
        text = text.replace(fixed, '"127.0.0.1:0"')  # never a fixed port in a test
    return await start_gateway(text)


async def test_ssh_keyscan_prints_the_workload_key_on_the_embedded_default(
    start_gateway: StartGateway,
) -> None:
    keyscan = require_peer("ssh-keyscan", "openssh-client")
    gw = await embedded_default(start_gateway)
    port = gw.port("main")
    t0 = time.monotonic()
    res = await run(keyscan, "-T", "5", "-p", str(port), "127.0.0.1", timeout=30)
    took = time.monotonic() - t0
    lines = [ln for ln in res.stdout.decode().splitlines() if not ln.startswith("#")]
    assert lines == [f"[127.0.0.1]:{port} {gw.identity.ssh_public_key()}"], \
        (res.stdout, res.stderr)
    assert took < 5, f"ssh-keyscan took {took:.1f}s: the banner must come before its timeout"
    assert metric(gw, "ugate_connections_total", listener="main", protocol="ssh") >= 1


async def test_default_none_keeps_silent_clients_refused(start_gateway: StartGateway) -> None:
    keyscan = require_peer("ssh-keyscan", "openssh-client")
    gw = await start_gateway("""
[admin]
listen = ""
[listeners.main]
listen = "127.0.0.1:0"
protocols = ["*"]
sniff_timeout = 0.5
default = "none"
""")
    port = gw.port("main")
    res = await run(keyscan, "-T", "3", "-p", str(port), "127.0.0.1", timeout=30)
    assert not [ln for ln in res.stdout.decode().splitlines() if not ln.startswith("#")]
    assert metric(gw, "ugate_rejections_total", listener="main", reason="sniff_timeout") >= 1
