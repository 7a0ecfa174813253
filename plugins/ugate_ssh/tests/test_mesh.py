"""Two gateways meshing over SSH: curl → SOCKS5 on A → SSH to B → B's local service.

Both directions of setting up the tunnel are covered: A dials B's SSH port; and B, with no
reachable port, stays connected to A (``[ssh] upstreams``) and A reaches B back through the
reverse forward by B's mesh name.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from ugate_core import id_of_public_key
from ugate_core.identity import load_or_create_key
from ugate_core.testing import StartGateway, Upstream, pattern, require_peer, run
from ugate_ssh.keys import fqdn_of_id
from ugate_ssh.state import SshState

pytest.importorskip("ugate_socks")


def make_ids(tmp_path: Path, n: int) -> list[str]:
    """Keys for the next ``n`` gateways of ``start_gateway`` (state0, state1, ...)."""
    ids = []
    for i in range(n):
        key, _ = load_or_create_key(tmp_path / f"state{i}" / "key.pem")
        ids.append(id_of_public_key(key))
    return ids


async def curl_socks(socks_port: int, url: str) -> bytes:
    curl = require_peer("curl")
    res = await run(curl, "-sS", "--fail", "--max-time", "20", "--socks5-hostname",
                    f"127.0.0.1:{socks_port}", url, timeout=30)
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout


async def test_two_gateways_mesh_over_ssh(
    start_gateway: StartGateway, http_upstream: Upstream, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "ugate")
    b_id, a_id = make_ids(tmp_path, 2)
    b = await start_gateway(f"""
[admin]
listen = ""
[listeners.ssh]
listen = "127.0.0.1:0"
protocols = ["ssh"]
allow_ids = ["{a_id}"]
[hosts."svc.b"]
endpoints = ["127.0.0.1"]
""")
    a = await start_gateway(f"""
[admin]
listen = ""
[listeners.socks]
listen = "127.0.0.1:0"
protocols = ["socks5"]
[hosts."svc.b"]
endpoints = ["127.0.0.1:{b.port("ssh")}"]
protocol = "ssh"
identity = ["id:{b_id}"]
""")
    assert a.identity.id == a_id and b.identity.id == b_id
    for n in (10, 1 << 20, 3):
        body = await curl_socks(a.port("socks"), f"http://svc.b:{http_upstream.port}/bytes/{n}")
        assert body == pattern(n)
    # one SSH connection carried all three streams; B saw A's verified identity
    assert caplog.text.count("ssh_auth listener=ssh") == 1
    assert f"peer_id={a_id} how=allow_id" in caplog.text


async def test_stay_connected_upstream_reaches_gateway_without_inbound_port(
    start_gateway: StartGateway, http_upstream: Upstream, tmp_path: Path,
) -> None:
    a_id, b_id = make_ids(tmp_path, 2)
    b_name = fqdn_of_id(b_id)
    a = await start_gateway(f"""
[admin]
listen = ""
[listeners.main]
listen = "127.0.0.1:0"
protocols = ["*"]
allow_ids = ["{b_id}"]
[hosts."svc.b"]
endpoints = ["{b_name}:22"]
protocol = "ssh"
""")
    # B dials out only; its ssh listener is loopback, used for its options
    b = await start_gateway(f"""
[admin]
listen = ""
[listeners.ssh]
listen = "127.0.0.1:0"
protocols = ["ssh"]
allow_ids = ["{a_id}"]
[hosts."svc.b"]
endpoints = ["127.0.0.1"]
[ssh]
upstreams = [{{ address = "127.0.0.1:{a.port("main")}", identity = "id:{a_id}" }}]
""")
    reg = SshState.of(a).reverse
    for _ in range(200):
        if reg.lookup(b_name, 22):
            break
        await asyncio.sleep(0.05)
    assert reg.lookup(b_name, 22), "B never registered its forward at A"
    for n in (100, 300_000):
        body = await curl_socks(a.port("main"), f"http://svc.b:{http_upstream.port}/bytes/{n}")
        assert body == pattern(n)
    # the upstream connection drops: B connects again by itself, and the path works again
    old = reg.lookup(b_name, 22)
    assert old is not None
    for p in SshState.of(b).pool.peers.values():
        assert p.conn is not None
        p.conn.abort()
    for _ in range(200):
        fwd = reg.lookup(b_name, 22)
        if fwd is not None and fwd is not old:
            break
        await asyncio.sleep(0.05)
    assert fwd is not None and fwd is not old, "B did not reconnect to A"
    body = await curl_socks(a.port("main"), f"http://svc.b:{http_upstream.port}/bytes/777")
    assert body == pattern(777)
