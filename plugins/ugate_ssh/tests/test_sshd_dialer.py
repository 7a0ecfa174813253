"""ugate's SSH dialer against OpenSSH's sshd: pooled connection, direct-tcpip, host key check."""

from __future__ import annotations

import asyncio
import getpass
import logging
from pathlib import Path

import asyncssh
import pytest

from ugate_core import DialError, Gateway
from ugate_core.testing import StartGateway, Upstream, metric, pattern
from ugate_ssh.keys import mesh_id, public_line
from ugate_ssh.state import SshState

from .conftest import Readers, Sshd
from .test_openssh_server import body_of, http_get


async def get(gw: object, address: str, n: int) -> bytes:
    s = await gw.dial(address)  # type: ignore[attr-defined]
    s.write(http_get(f"/bytes/{n}"))
    data = b""
    while chunk := await asyncio.wait_for(s.read(), 10):
        data += chunk
    s.close()
    return body_of(data)


async def gateway_via(start_gateway: StartGateway, sshd: Sshd, peer_id: str = "",
                      ssh_extra: str = "") -> Gateway:
    """A gateway that routes 127.0.0.1 through ``sshd`` (expecting its ID, or ``peer_id``),
    and sshd started, accepting the gateway's key. ``ssh_extra``: more ``[ssh]`` lines."""
    peer_id = peer_id or mesh_id(asyncssh.read_public_key(str(sshd.host_key) + ".pub"))
    gw = await start_gateway(f"""
[admin]
listen = ""
[ssh]
user = "{getpass.getuser()}"
{ssh_extra}
[hosts."127.0.0.1"]
endpoints = ["127.0.0.1:{sshd.port}"]
protocol = "ssh"
identity = ["id:{peer_id}"]
""")
    sshd.authorized_keys.write_text(public_line(SshState.of(gw).host_key()) + "\n")
    await sshd.start()
    return gw


async def test_dialer_reaches_service_behind_sshd(
    start_gateway: StartGateway, sshd: Sshd, http_upstream: Upstream
) -> None:
    gw = await gateway_via(start_gateway, sshd)
    # several streams at once over one pooled connection
    sizes = [100, 70_000, 1 << 20, 5]
    bodies = await asyncio.gather(*(get(gw, http_upstream.address, n) for n in sizes))
    assert bodies == [pattern(n) for n in sizes]
    pool = SshState.of(gw).pool
    assert len([p for p in pool.peers.values() if p.conn is not None]) == 1
    assert metric(gw, "ugate_dials_total", dialer="ssh", result="ok") == len(sizes)
    # sshd's log shows one login with the gateway's key
    assert sshd.log.read_text().count("Accepted publickey") == 1
    # the connection drops: the next dial connects again
    for p in pool.peers.values():
        assert p.conn is not None
        p.conn.abort()
        await asyncio.wait_for(p.conn.wait_closed(), 10)
    assert await get(gw, http_upstream.address, 1234) == pattern(1234)
    assert sshd.log.read_text().count("Accepted publickey") == 2


async def test_dialer_refuses_wrong_host_key(
    start_gateway: StartGateway, sshd: Sshd, http_upstream: Upstream
) -> None:
    other = mesh_id(asyncssh.generate_private_key("ssh-ed25519"))
    gw = await gateway_via(start_gateway, sshd, other)
    with pytest.raises(DialError) as ei:
        await gw.dial(http_upstream.address)
    assert ei.value.reason == "identity"
    assert f"host key mismatch: expected id:{other}, presented id:" in str(ei.value)
    assert http_upstream.requests == []


async def test_dialer_rekeys_mid_transfer(
    start_gateway: StartGateway, sshd: Sshd, http_upstream: Upstream,
    echo_server: tuple[str, int], readers: Readers, caplog: pytest.LogCaptureFixture,
    tmp_path: Path
) -> None:
    """The dialer asks sshd for new keys every 256 KiB and sshd does the same (RekeyLimit):
    downloads and an echoed upload arrive intact, and channel data from sshd takes the short
    receive path between key exchanges."""
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    readers.rekey_bytes = 256 * 1024
    with (tmp_path / "sshd" / "sshd_config").open("a") as f:
        f.write("RekeyLimit 512K\n")
    gw = await gateway_via(start_gateway, sshd)
    n = 6 << 20
    assert await get(gw, http_upstream.address, n) == pattern(n)
    up = pattern(3 << 20, seed=2)
    s = await gw.dial(f"{echo_server[0]}:{echo_server[1]}")
    s.write(up)
    s.write_eof()
    back = b""
    while chunk := await asyncio.wait_for(s.read(), 20):
        back += chunk
    s.close()
    assert back == up
    kex = sum("Completed key exchange" in r.getMessage() for r in caplog.records)
    assert kex >= 20, kex  # (6 + 3) MiB received, 3 MiB sent: rekeys either way
    assert len(readers.made) == 1 and readers.fast > 200, \
        [(r.fast, r.handed) for r in readers.made]



async def test_dialer_upload_rekeys_on_the_short_send_path(
    start_gateway: StartGateway, sshd: Sshd, echo_server: tuple[str, int], readers: Readers,
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """An upload through the dialer goes out on the short send path while sshd (RekeyLimit)
    and the dialer (rekey_bytes) ask for new keys every 4 MiB: each key exchange goes through
    asyncssh, the data in between takes the short path, and every byte comes back."""
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    readers.rekey_bytes = 4 << 20
    with (tmp_path / "sshd" / "sshd_config").open("a") as f:
        f.write("RekeyLimit 4M\nCiphers aes128-gcm@openssh.com\n")
    gw = await gateway_via(start_gateway, sshd)
    up = pattern(24 << 20, seed=4)
    s = await gw.dial(f"{echo_server[0]}:{echo_server[1]}")
    back = bytearray()

    async def read_all() -> None:
        while chunk := await asyncio.wait_for(s.read(), 20):
            back.extend(chunk)

    reading = asyncio.ensure_future(read_all())
    for i in range(0, len(up), 100_000):
        s.write(up[i:i + 100_000])
        await s.drain()
    s.write_eof()
    await reading
    s.close()
    assert bytes(back) == up
    kex = sum("Completed key exchange" in r.getMessage() for r in caplog.records)
    assert kex >= 6, kex  # the dialer logs each; sshd does not
    assert len(readers.writers) == 1 and readers.sent_fast > 500, \
        [w.fast for w in readers.writers]
