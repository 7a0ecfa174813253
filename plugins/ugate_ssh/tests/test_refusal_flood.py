"""A flood of refused SSH logins (issue #16: 27 MB of log in 30 s) writes a bounded number
of log lines, from ugate and from asyncssh, while every refusal is counted."""

from __future__ import annotations

import asyncio
import logging

import asyncssh
import pytest

from ugate_core.testing import StartGateway, metric

N = 200
BURST = 5


async def test_refused_logins_log_a_bounded_number_of_lines(
        start_gateway: StartGateway, caplog: pytest.LogCaptureFixture) -> None:
    allowed = asyncssh.generate_private_key("ssh-ed25519")
    mallory = asyncssh.generate_private_key("ssh-ed25519")
    gw = await start_gateway(f"""
[admin]
listen = ""
[gateway]
reject_log_burst = {BURST}
reject_log_window = 60.0
[listeners.ssh]
listen = "127.0.0.1:0"
protocols = ["ssh"]
authorized_keys = ["{allowed.export_public_key().decode().strip()}"]
max_unauthenticated_per_source = 64   # this flood is about log lines, not the per-source caps
penalty_auth_fail = 0
""")
    port = gw.port("ssh")
    caplog.set_level(logging.INFO)  # everything a deployment at INFO writes
    caplog.clear()

    async def login() -> None:
        with pytest.raises(asyncssh.PermissionDenied):
            async with asyncssh.connect("127.0.0.1", port, username="mallory",
                                        client_keys=[mallory], known_hosts=None,
                                        agent_path=None, connect_timeout=20):
                pass

    for _ in range(N // 20):
        await asyncio.gather(*(login() for _ in range(20)))
    for _ in range(100):
        if metric(gw, "ugate_rejections_total", listener="ssh",
                  reason="auth_unknown_key") >= N:
            break
        await asyncio.sleep(0.05)
    assert metric(gw, "ugate_rejections_total", listener="ssh", reason="auth_unknown_key") == N
    gw.refusal_log.flush()
    server_lines = [r.getMessage() for r in caplog.records
                    if r.name.startswith("ugate") or (r.name.startswith("asyncssh")
                                                      and "server" in r.getMessage().lower())]
    refused = [m for m in server_lines if m.startswith("rejected listener=ssh")]
    assert len(refused) == BURST + 1, refused
    assert refused[-1] == ("rejected listener=ssh reason=auth_unknown_key ... and "
                           f"{N - BURST} more like this in the last "
                           f"{refused[-1].rsplit(' ', 2)[-2]} s")
    assert len(server_lines) <= BURST + 1 + 5, server_lines[:40]
