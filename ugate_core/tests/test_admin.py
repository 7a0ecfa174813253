"""The admin endpoint: metrics, health, plugins, live streams, routes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ugate_core import ConfigError, loads
from ugate_core.gateway import Gateway
from ugate_core.testing import StartGateway, metric, require_peer, run


async def get(gw: Gateway, path: str) -> tuple[int, bytes]:
    r, w = await asyncio.open_connection("127.0.0.1", gw.port("admin"))
    w.write(f"GET {path} HTTP/1.1\r\nHost: localhost:{gw.port('admin')}\r\n\r\n".encode())
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
    w.write(f"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
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


# ------------------------------------------------------------------ who may ask (curl)
async def curl(*args: str) -> tuple[int, str, str]:
    """(status, headers, body) of one curl request."""
    res = await run(require_peer("curl"), "-sS", "--max-time", "10", "-D", "-", *args)
    head, _, body = res.stdout.decode("latin-1").partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 "), res.stderr
    return int(head.split()[1]), head, body


async def test_wrong_host_is_refused_on_every_path(start_gateway: StartGateway) -> None:
    """DNS rebinding: a page whose name resolves to 127.0.0.1 sends its own name as Host."""
    gw = await start_gateway('[admin]\nlisten = "127.0.0.1:0"\n')
    port = gw.port("admin")
    base = f"http://127.0.0.1:{port}"
    for path in ("/metrics", "/config", "/healthz", "/streams"):
        status, _, _ = await curl("--resolve", f"evil.example:{port}:127.0.0.1",
                                  f"http://evil.example:{port}{path}")
        assert status == 421, path
    assert (await curl("-H", f"Host: 127.0.0.1:{port + 1}", f"{base}/metrics"))[0] == 421
    assert (await curl("-H", "Host:", f"{base}/metrics"))[0] == 421  # no Host at all
    assert metric(gw, "ugate_rejections_total", listener="admin", reason="host") == 6
    # what a Prometheus scraper or a person sends: <addr>:<port>, localhost, [::1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}",
                 f"[::1]:{port}"):
        status, _, body = await curl("-H", f"Host: {host}", f"{base}/metrics")
        assert status == 200, host
        assert 'ugate_rejections_total{listener="admin",reason="host"} 6.0' in body


async def test_token_is_required_when_configured(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    tok = tmp_path / "admin.token"
    tok.write_text("s3cret-token-1\n")
    tok.chmod(0o600)
    gw = await start_gateway(f'[admin]\nlisten = "127.0.0.1:0"\ntoken_file = "{tok}"\n')
    url = f"http://127.0.0.1:{gw.port('admin')}/config"
    status, head, _ = await curl(url)
    assert status == 401 and 'WWW-Authenticate: Bearer realm="ugate-admin"' in head
    assert (await curl("-H", "Authorization: Bearer wrong", url))[0] == 401
    assert (await curl("-u", "admin:s3cret-token-1", url))[0] == 401  # Basic is not a token
    status, _, body = await curl("-H", "Authorization: Bearer s3cret-token-1", url)
    assert status == 200
    assert json.loads(body)["config"]["admin"]["token_file"] == str(tok)
    assert "s3cret-token-1" not in body
    # the Host check comes first: a rebinding page with the token still gets nothing
    assert (await curl("-H", "Host: evil.example", "-H", "Authorization: Bearer s3cret-token-1",
                       url))[0] == 421
    # a new token takes effect without a restart; the old one stops working
    tok.write_text("s3cret-token-2-longer\n")
    assert (await curl("-H", "Authorization: Bearer s3cret-token-1", url))[0] == 401
    assert (await curl("-H", "Authorization: Bearer s3cret-token-2-longer", url))[0] == 200
    # an unusable token file refuses everything
    tok.unlink()
    assert (await curl("-H", "Authorization: Bearer s3cret-token-2-longer", url))[0] == 401
    assert metric(gw, "ugate_rejections_total", listener="admin", reason="unauthorized") == 5


def test_beyond_loopback_needs_allow_remote_and_a_token(tmp_path: Path) -> None:
    tok = tmp_path / "t"
    tok.write_text("x" * 32)
    tok.chmod(0o600)
    for admin, want in [
        ('listen = "0.0.0.0:15000"', "allow_remote"),
        ('listen = "[::]:15000"', "allow_remote"),
        ('listen = "10.1.2.3:15000"\ntoken_file = "T"', "allow_remote"),
        ('listen = "0.0.0.0:15000"\nallow_remote = true', "token_file is not set"),
    ]:
        cfg = tmp_path / "c.toml"
        cfg.write_text(f"[admin]\n{admin}\n")
        res = subprocess.run([sys.executable, "-m", "ugate_core.cli", "config", "check",
                              str(cfg)], capture_output=True, timeout=60)
        err = res.stderr.decode()
        assert res.returncode == 2, admin
        assert err.startswith("ugate: config error: admin.listen: ") and want in err, err
        assert err.count("\n") == 1, err
    ok = loads(f'[admin]\nlisten = "0.0.0.0:15000"\nallow_remote = true\ntoken_file = "{tok}"\n'
               'allowed_hosts = ["gw1.example", "::1", "10.0.0.7"]\n')
    assert ok.admin.allowed_hosts == ("gw1.example", "[::1]", "10.0.0.7")
    with pytest.raises(ConfigError, match=r"admin.allowed_hosts\[0\]: 'gw1:80'"):
        loads('[admin]\nallowed_hosts = ["gw1:80"]\n')
    with pytest.raises(ConfigError, match=r"admin\.token_file: .*cannot read"):
        Gateway(loads(f'[admin]\ntoken_file = "{tmp_path}/missing"\n')).check()


def test_wildcard_bind_accepts_ip_literals_not_names() -> None:
    """Bound to 0.0.0.0 a scraper sends the pod's address as Host: any IP literal with the
    port passes, a name passes only if it is listed (the server's attributes as start() sets
    them for a wildcard bind; binding beyond loopback is not done in tests)."""
    from ugate_core.admin import AdminServer

    gw = Gateway(loads('[admin]\nlisten = ""\n'))
    adm = AdminServer(gw)
    adm._ports = frozenset({15000})
    adm._hosts = frozenset({"0.0.0.0", "localhost", "127.0.0.1", "[::1]", "gw1.example"})
    adm._any_ip = True
    for ok in ("10.1.2.3:15000", "[fd00::7]:15000", "gw1.example:15000", "GW1.example:15000"):
        assert adm.host_ok(ok), ok
    for bad in ("evil.example:15000", "10.1.2.3:15001", "10.1.2.3", "gw1.example",
                "10.1.2.3:15000:1", "[fd00::7:15000", "", "10.1.2.3:+15000"):
        assert not adm.host_ok(bad), bad
    adm._any_ip = False
    assert not adm.host_ok("10.1.2.3:15000")
