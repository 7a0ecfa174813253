"""Two ugates over QUIC (ugate-quic's ``quic`` dialer and listener): curl through SOCKS5 and
OpenSSH through a port forward on gateway A reach services behind gateway B; B dies in the
middle of a download, A reports a cut-short transfer (not a clean end) and serves on."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ugate_core import Gateway
from ugate_core.testing import (
    StartGateway,
    Upstream,
    connect_when_listening,
    free_port,
    pattern,
    require_peer,
    run,
)

pytest.importorskip("ugate_quic")
pytest.importorskip("ugate_socks")

MiB = 1 << 20


def _sshd_files(keys: Path, d: Path, port: int) -> None:
    d.mkdir()
    Path("/run/sshd").mkdir(exist_ok=True)
    (d / "authorized_keys").write_text((keys / "client.pub").read_text())
    (d / "cfg").write_text(f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {keys / 'host'}\n"
                           "UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
                           f"PidFile {d / 'pid'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n")


@pytest.fixture
async def sshd(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    """OpenSSH's sshd on loopback (as root, PEERS.md), and a client key it accepts."""
    exe = require_peer("/usr/sbin/sshd", apt="openssh-server")
    keygen = require_peer("ssh-keygen", apt="openssh-client")
    if os.geteuid() != 0:
        pytest.skip("sshd needs root to run with a temp config (PEERS.md)")
    d = tmp_path / "sshd"
    for name in ("host", "client"):
        res = await run(keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name))
        assert res.returncode == 0, res.stderr
    port = free_port()
    _sshd_files(tmp_path, d, port)
    proc = await asyncio.create_subprocess_exec(exe, "-D", "-f", str(d / "cfg"), "-E",
                                                str(d / "log"), stdin=subprocess.DEVNULL)
    try:
        _, w = await connect_when_listening("127.0.0.1", port)
        w.close()
        yield port, tmp_path / "client"
    finally:
        proc.terminate()
        await proc.wait()


def gateway_b(web: str, ssh_port: int) -> str:
    return f"""
[admin]
listen = ""
[listeners.quic]
listen = "127.0.0.1:0"
protocols = ["quic"]
[hosts."web.test"]
endpoints = ["{web}"]
[hosts."ssh.test"]
endpoints = ["127.0.0.1:{ssh_port}"]
"""


def gateway_a(b: Gateway) -> str:
    via = f'endpoints = ["127.0.0.1:{b.port("quic")}"]\nprotocol = "quic"\n' \
          f'identity = ["id:{b.identity.id}"]'
    return f"""
[admin]
listen = ""
[listeners.socks]
listen = "127.0.0.1:0"
protocols = ["socks5"]
[listeners.ssh_fwd]
listen = "127.0.0.1:0"
protocols = ["tcp"]
target = "ssh.test:22"
[hosts."web.test"]
{via}
[hosts."ssh.test"]
{via}
"""


async def test_curl_and_ssh_through_two_ugates_over_quic_then_b_dies(
        start_gateway: StartGateway, http_upstream: Upstream,
        sshd: tuple[int, Path]) -> None:
    curl = require_peer("curl")
    ssh = require_peer("ssh", apt="openssh-client")
    ssh_port, client_key = sshd
    b = await start_gateway(gateway_b(http_upstream.address, ssh_port))
    a = await start_gateway(gateway_a(b))
    socks = f"127.0.0.1:{a.port('socks')}"
    res = await run(curl, "-sS", "--max-time", "30", "--socks5-hostname", socks,
                    f"http://web.test/bytes/{2 * MiB}", timeout=40)
    assert res.returncode == 0, res.stderr
    assert res.stdout == pattern(2 * MiB)
    res = await run(ssh, "-p", str(a.port("ssh_fwd")), "-i", str(client_key),
                    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    "-o", "BatchMode=yes", "root@127.0.0.1",
                    "echo over-quic; head -c 3000000 /dev/zero | wc -c", timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"over-quic\n3000000\n"
    # B dies during a download that would take longer than the kill
    big = asyncio.create_task(run(curl, "-sS", "--max-time", "60", "--socks5-hostname", socks,
                                  "-o", "/dev/null", "-w", "%{size_download}",
                                  f"http://web.test/bytes/{256 * MiB}", timeout=70))
    await asyncio.sleep(1.5)
    await b.shutdown(0)
    res = await big
    assert res.returncode != 0  # cut short: curl sees a reset or a short body, never a clean end
    assert int(res.stdout or b"0") < 256 * MiB
    # A serves on: the next stream to B's name fails clearly, a direct one works
    res = await run(curl, "-sS", "--max-time", "20", "--socks5-hostname", socks,
                    "http://web.test/bytes/10", timeout=30)
    assert res.returncode != 0 and b"SOCKS" in res.stderr, res.stderr
    res = await run(curl, "-sS", "--max-time", "20", "--socks5-hostname", socks,
                    f"http://{http_upstream.address}/hello", timeout=30)
    assert res.returncode == 0 and res.stdout == b"hello /hello\n", res.stderr
