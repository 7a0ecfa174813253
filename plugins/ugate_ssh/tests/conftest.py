"""Fixtures for the SSH plugin's tests: OpenSSH client runs in a temporary HOME, keys made
with ``ssh-keygen``, a gateway's host key read back as a ``known_hosts`` line."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ugate_core import Gateway
from ugate_core.testing import require_peer, run
from ugate_ssh.keys import known_hosts_line
from ugate_ssh.recv import PacketReader
from ugate_ssh.send import PacketWriter
from ugate_ssh.state import SshState


def gateway_host_key_line(gw: Gateway, port: int, host: str = "127.0.0.1") -> str:
    """The ``known_hosts`` line a user writes from ``ugate id`` (the workload's SSH key)."""
    line = f"[{host}]:{port} {gw.identity.ssh_public_key()}"
    assert line == known_hosts_line(SshState.of(gw).host_key(), [f"[{host}]:{port}"])
    return line


@dataclass
class OpenSsh:
    """OpenSSH client programs with an isolated HOME and -F /dev/null."""

    home: Path
    ssh: str
    keygen: str
    keys: dict[str, Path] = field(default_factory=dict)
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)

    def key(self, name: str, kind: str = "ed25519") -> Path:
        """A new key pair ``name`` (private key path; ``.pub`` beside it)."""
        if name not in self.keys:
            p = self.home / f"id_{name}"
            subprocess.run([self.keygen, "-q", "-t", kind, "-N", "", "-C", name, "-f", str(p)],
                           check=True, timeout=30)
            self.keys[name] = p
        return self.keys[name]

    def pub(self, name: str) -> str:
        return (Path(str(self.key(name)) + ".pub")).read_text().strip()

    def known_hosts(self, line: str, name: str = "known_hosts") -> Path:
        p = self.home / name
        p.write_text(line + "\n")
        return p

    def sign(self, user_key: str, ca: str, principals: str, validity: str = "+1h",
             serial: int = 1) -> Path:
        """``ssh-keygen -s``: a user certificate for key ``user_key`` signed by key ``ca``."""
        self.key(ca)
        k = self.key(user_key)
        subprocess.run([self.keygen, "-q", "-s", str(self.key(ca)), "-I", f"{user_key}-cert",
                        "-n", principals, "-V", validity, "-z", str(serial), str(k) + ".pub"],
                       check=True, timeout=30)
        return Path(str(k) + "-cert.pub")

    def args(self, port: int, key: str, known_hosts: Path, *extra: str,
             user: str = "alice", host: str = "127.0.0.1") -> list[str]:
        return [
            self.ssh, "-F", "/dev/null", "-p", str(port), "-i", str(self.key(key)),
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
            "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5",
            "-l", user, *extra, host,
        ]

    async def run(self, argv: Sequence[str], input: bytes | None = None,
                  timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
        return await run(*argv, input=input, timeout=timeout)

    async def start(self, argv: Sequence[str]) -> asyncio.subprocess.Process:
        """A long-running ssh (``-N -L`` / ``-R``); the fixture kills it at the end."""
        p = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "HOME": str(self.home)},
        )
        self.procs.append(p)
        return p


@pytest.fixture
async def openssh(tmp_path: Path) -> AsyncIterator[OpenSsh]:
    ssh = require_peer("ssh", apt="openssh-client")
    keygen = require_peer("ssh-keygen", apt="openssh-client")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".ssh").mkdir(mode=0o700)
    o = OpenSsh(home, ssh, keygen)
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        yield o
    finally:
        for p in o.procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        if old is not None:
            os.environ["HOME"] = old
        else:
            os.environ.pop("HOME", None)


async def wait_port(port: int, timeout: float = 10.0) -> None:
    """Until something accepts on 127.0.0.1:port (an ``ssh -L`` listener)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            if loop.time() > end:
                raise AssertionError(f"nothing listens on 127.0.0.1:{port} after "
                                     f"{timeout}s") from None
            await asyncio.sleep(0.05)


@dataclass
class Sshd:
    """A real OpenSSH server on 127.0.0.1:port (started as root, per PEERS.md)."""

    port: int
    host_key: Path
    authorized_keys: Path
    log: Path
    proc: asyncio.subprocess.Process | None = None

    async def start(self, cfg: Path, sshd: str) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sshd, "-D", "-f", str(cfg), "-E", str(self.log),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await wait_port(self.port)


def _prepare_sshd(tmp_path: Path, keygen: str) -> tuple[Sshd, Path]:
    d = tmp_path / "sshd"
    d.mkdir()
    Path("/run/sshd").mkdir(exist_ok=True)
    hk = d / "host_ed25519"
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(hk)],
                   check=True, timeout=30)
    from ugate_core.testing import free_port

    s = Sshd(free_port(), hk, d / "authorized_keys", d / "log")
    s.authorized_keys.write_text("")
    cfg = d / "sshd_config"
    cfg.write_text(f"""ListenAddress 127.0.0.1
Port {s.port}
HostKey {hk}
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
PidFile {d}/pid
AuthorizedKeysFile {s.authorized_keys}
LogLevel VERBOSE
""")
    return s, cfg


@pytest.fixture
async def sshd(tmp_path: Path, openssh: OpenSsh) -> AsyncIterator[Sshd]:
    """An sshd that is not started yet: write ``authorized_keys``, then ``await start()``."""
    exe = require_peer("/usr/sbin/sshd", apt="openssh-server")
    if os.geteuid() != 0:
        pytest.skip("sshd needs root to run on a high port with a temp config (PEERS.md)")
    s, cfg = _prepare_sshd(tmp_path, openssh.keygen)
    starter = s.start

    async def start() -> None:
        await starter(cfg, exe)

    s.start = start  # type: ignore[method-assign,assignment]
    try:
        yield s
    finally:
        if s.proc is not None and s.proc.returncode is None:
            s.proc.terminate()
            try:
                await asyncio.wait_for(s.proc.wait(), 5)
            except TimeoutError:
                s.proc.kill()
                await s.proc.wait()


@dataclass
class Readers:
    """The receive-path readers and send-path writers made for SSH connections in a test
    (see ``readers``)."""

    made: list[PacketReader] = field(default_factory=list)
    writers: list[PacketWriter] = field(default_factory=list)
    #: when set, every SSH connection made asks for a new key after this many bytes sent
    rekey_bytes: int = 0

    @property
    def fast(self) -> int:
        return sum(r.fast for r in self.made)

    @property
    def sent_fast(self) -> int:
        return sum(w.fast for w in self.writers)


@pytest.fixture
def readers(monkeypatch: pytest.MonkeyPatch) -> Readers:
    """Records the :class:`PacketReader` and :class:`PacketWriter` of every SSH connection
    (server and dialer)."""
    from ugate_ssh import adapters, recv, send

    rs = Readers()

    def spy(protocol: object) -> PacketReader | None:
        if rs.rekey_bytes:
            protocol._rekey_bytes = rs.rekey_bytes  # type: ignore[attr-defined]
        r = recv.reader_for(protocol)
        if r is not None:
            rs.made.append(r)
        return r

    def spy_writer(protocol: object) -> PacketWriter | None:
        w = send.writer_for(protocol)
        if w is not None:
            rs.writers.append(w)
        return w

    monkeypatch.setattr(adapters, "reader_for", spy)
    monkeypatch.setattr(adapters, "writer_for", spy_writer)
    return rs

