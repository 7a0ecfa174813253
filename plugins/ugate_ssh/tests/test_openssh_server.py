"""ugate's SSH server against the OpenSSH client: -W, -L, host key pinning, refusals."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import pytest

from ugate_core.testing import StartGateway, Upstream, free_port, metric, pattern, run

from .conftest import OpenSsh, Readers, gateway_host_key_line, wait_port


def http_get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: upstream\r\nConnection: close\r\n\r\n".encode()


def body_of(resp: bytes) -> bytes:
    head, _, body = resp.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return body


async def gateway(start_gateway: StartGateway, openssh: OpenSsh, extra: str = "") -> tuple:
    alice = openssh.pub("alice")
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.main]
listen = "127.0.0.1:0"
protocols = ["*"]
authorized_keys = ["{alice}"]
{extra}
""")
    port = gw.port("main")
    kh = openssh.known_hosts(gateway_host_key_line(gw, port))
    return gw, port, kh


async def test_ssh_W_reaches_http_upstream_with_pinned_host_key(
    start_gateway: StartGateway, openssh: OpenSsh, http_upstream: Upstream
) -> None:
    gw, port, kh = await gateway(start_gateway, openssh)
    n = 300_000
    res = await openssh.run(
        openssh.args(port, "alice", kh, "-W", http_upstream.address),
        input=http_get(f"/bytes/{n}"),
    )
    assert res.returncode == 0, res.stderr.decode()
    assert body_of(res.stdout) == pattern(n)
    assert metric(gw, "ugate_connections_total", listener="main", protocol="ssh") == 1


async def test_known_hosts_line_from_ugate_id_cli(
    start_gateway: StartGateway, openssh: OpenSsh, http_upstream: Upstream, tmp_path: Path
) -> None:
    """The user's path: ``ugate id --json`` prints the key; it pins the gateway's host key."""
    gw, port, _ = await gateway(start_gateway, openssh)
    ugate = Path(sys.executable).with_name("ugate")
    res = await run(str(ugate), "id", "--json", "--state-dir", str(gw.state_dir), timeout=30)
    assert res.returncode == 0, res.stderr.decode()
    info = json.loads(res.stdout)
    kh = openssh.known_hosts(f"[127.0.0.1]:{port} {info['ssh_public_key']}", "kh_cli")
    res = await openssh.run(openssh.args(port, "alice", kh, "-W", http_upstream.address),
                            input=http_get("/bytes/999"))
    assert res.returncode == 0, res.stderr.decode()
    assert body_of(res.stdout) == pattern(999)
    assert info["id"] == gw.identity.id


async def test_wrong_known_hosts_line_fails(
    start_gateway: StartGateway, openssh: OpenSsh, http_upstream: Upstream
) -> None:
    _gw, port, _ = await gateway(start_gateway, openssh)
    other = openssh.pub("someone-else")  # a key the gateway does not have
    alg, b64 = other.split()[:2]
    bad = openssh.known_hosts(f"[127.0.0.1]:{port} {alg} {b64}", "bad_known_hosts")
    res = await openssh.run(openssh.args(port, "alice", bad, "-W", http_upstream.address),
                            input=http_get("/x"))
    assert res.returncode == 255
    assert b"Host key verification failed" in res.stderr or \
        b"HOST IDENTIFICATION HAS CHANGED" in res.stderr, res.stderr.decode()
    assert res.stdout == b""


async def test_ssh_L_forwards_local_port(
    start_gateway: StartGateway, openssh: OpenSsh, http_upstream: Upstream
) -> None:
    _gw, port, kh = await gateway(start_gateway, openssh)
    lport = free_port()
    await openssh.start(openssh.args(
        port, "alice", kh, "-N", "-o", "ExitOnForwardFailure=yes",
        "-L", f"127.0.0.1:{lport}:{http_upstream.address}"))
    await wait_port(lport)
    for n in (10, 1 << 20):
        r, w = await asyncio.open_connection("127.0.0.1", lport)
        w.write(http_get(f"/bytes/{n}"))
        resp = await asyncio.wait_for(r.read(), 20)
        w.close()
        assert body_of(resp) == pattern(n)


async def test_ssh_W_half_close_echo(
    start_gateway: StartGateway, openssh: OpenSsh, echo_server: tuple[str, int]
) -> None:
    """ssh's stdin EOF becomes a channel EOF, then a TCP half-close; the echo still comes back
    in full and then the upstream's FIN ends ssh."""
    _gw, port, kh = await gateway(start_gateway, openssh)
    data = pattern(1 << 20, seed=7)
    res = await openssh.run(openssh.args(port, "alice", kh, "-W",
                                         f"{echo_server[0]}:{echo_server[1]}"), input=data)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == data


async def test_ssh_W_rekeying_both_ways(
    start_gateway: StartGateway, openssh: OpenSsh, echo_server: tuple[str, int],
    readers: Readers, caplog: pytest.LogCaptureFixture
) -> None:
    """OpenSSH asks for new keys every 256 KiB (RekeyLimit) and so does ugate (rekey_bytes):
    4 MiB echoed through ``-W`` come back intact; between key exchanges the gateway takes
    channel data on the short receive path."""
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    readers.rekey_bytes = 256 * 1024
    _gw, port, kh = await gateway(start_gateway, openssh)
    data = pattern(4 << 20, seed=11)
    for cipher in ("aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"):
        res = await openssh.run(openssh.args(
            port, "alice", kh, "-c", cipher, "-o", "RekeyLimit=256K",
            "-W", f"{echo_server[0]}:{echo_server[1]}"), input=data, timeout=60)
        assert res.returncode == 0, res.stderr.decode()
        assert res.stdout == data
    kex = sum("Completed key exchange" in r.getMessage() for r in caplog.records)
    assert kex >= 2 * 10, kex
    assert len(readers.made) == 2 and all(r.fast > 50 for r in readers.made), \
        [(r.fast, r.handed) for r in readers.made]


async def test_ssh_W_download_rekeying_on_the_short_send_path(
    start_gateway: StartGateway, openssh: OpenSsh, http_upstream: Upstream,
    readers: Readers, caplog: pytest.LogCaptureFixture
) -> None:
    """A download through ugate's server: its data goes out on the short send path, while
    OpenSSH (RekeyLimit) and ugate (rekey_bytes) both ask for new keys every 1 MiB."""
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    readers.rekey_bytes = 1 << 20
    _gw, port, kh = await gateway(start_gateway, openssh)
    n = 12 << 20
    for cipher in ("aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes128-ctr"):
        res = await openssh.run(openssh.args(
            port, "alice", kh, "-c", cipher, "-o", "RekeyLimit=1M",
            "-W", http_upstream.address), input=http_get(f"/bytes/{n}"), timeout=60)
        assert res.returncode == 0, res.stderr.decode()
        assert body_of(res.stdout) == pattern(n)
    kex = sum("Completed key exchange" in r.getMessage() for r in caplog.records)
    assert kex >= 3 * 8, kex
    assert len(readers.writers) == 3 and all(w.fast > 100 for w in readers.writers), \
        [w.fast for w in readers.writers]


async def test_max_channels_per_connection(start_gateway: StartGateway,
                                           echo_server: tuple[str, int]) -> None:
    import asyncssh

    from ugate_ssh.keys import public_line

    key = asyncssh.generate_private_key("ssh-ed25519")
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.ssh]
listen = "127.0.0.1:0"
protocols = ["ssh"]
max_channels = 2
authorized_keys = ["{public_line(key)}"]
""")
    async with asyncssh.connect("127.0.0.1", gw.port("ssh"), username="u", client_keys=[key],
                                known_hosts=None, config=[], agent_path=None) as conn:
        opened = [await conn.open_connection(*echo_server) for _ in range(2)]
        with pytest.raises(asyncssh.ChannelOpenError, match="too many channels"):
            await conn.open_connection(*echo_server)
        r, w = opened[0]
        w.write(b"ping")
        assert await r.readexactly(4) == b"ping"
        w.close()  # a slot frees up once a channel ends
        for _ in range(100):
            try:
                third = await conn.open_connection(*echo_server)
                break
            except asyncssh.ChannelOpenError:
                await asyncio.sleep(0.02)
        third[1].close()
    assert metric(gw, "ugate_rejections_total", listener="ssh", reason="max_channels") >= 1
