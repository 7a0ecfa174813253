"""Knot DNS as the real peer: a fixture that starts knotd on 127.0.0.1 with given zones."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import dns.message
import dns.query
import dns.rdatatype
import dns.rrset
import pytest

from ugate_core.testing import free_port, require_peer, run


@dataclass
class Knot:
    """A running knotd: its port, config, and helpers around knotc/keymgr."""

    port: int
    dir: Path
    conf: Path
    proc: subprocess.Popen[bytes]
    zones: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def knotc(self, *args: str) -> str:
        res = await run("knotc", "-c", str(self.conf), *args, timeout=20, check=True)
        return res.stdout.decode()

    async def keymgr(self, *args: str) -> list[str]:
        res = await run("keymgr", "-c", str(self.conf), *args, timeout=20, check=True)
        return [ln for ln in res.stdout.decode().splitlines() if ln.strip()]

    async def set_record(self, zone: str, owner: str, ttl: int, rtype: str, data: str) -> None:
        """Replace ``owner``'s ``rtype`` records in the running zone (a transaction)."""
        await self.knotc("zone-begin", zone)
        try:
            await self.knotc("zone-unset", zone, owner, rtype)
        except AssertionError:
            pass  # nothing to remove
        await self.knotc("zone-set", zone, owner, str(ttl), rtype, data)
        await self.knotc("zone-commit", zone)

    async def queries(self) -> int:
        """Queries Knot has answered so far (mod-stats)."""
        out = await self.knotc("stats", "mod-stats.server-operation")
        for ln in out.splitlines():
            if "[query]" in ln:
                return int(ln.split("=")[1])
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


StartKnot = Callable[..., Awaitable[Knot]]

_CONF = """\
server:
  listen: 127.0.0.1@{port}
  rundir: {dir}
  user: root:root
  pidfile: {dir}/knot.pid
database:
  storage: {dir}
log:
  - target: stderr
    any: info
mod-stats:
  - id: default
template:
  - id: default
    storage: {dir}
    global-module: mod-stats/default
policy:
  - id: nsec
    algorithm: ecdsap256sha256
  - id: nsec3
    algorithm: ecdsap256sha256
    nsec3: on
    nsec3-iterations: 0
    nsec3-salt-length: 8
zone:
"""


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=f)


def _spawn_knotd(conf: Path, log: Path) -> subprocess.Popen[bytes]:
    return _spawn(["knotd", "-c", str(conf)], log)


async def _wait_ready(port: int, zones: list[str], proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 10
    pending = list(zones)
    while pending and time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        q = dns.message.make_query(pending[0], dns.rdatatype.SOA)
        try:
            r = await asyncio.to_thread(dns.query.udp, q, "127.0.0.1", 0.3, port)
            if r.answer:
                pending.pop(0)
                continue
        except Exception:
            pass
        await asyncio.sleep(0.05)
    return not pending


@pytest.fixture
async def start_knot() -> AsyncIterator[StartKnot]:
    """``await start_knot({"test.zone": text}, signed={"test.zone": "nsec"})`` → :class:`Knot`.

    ``signed`` maps zone → Knot policy (``nsec`` or ``nsec3``): Knot generates the keys and
    signs the zone itself. Every knotd is stopped by its PID at the end of the test.
    """
    require_peer("knotd", apt="knot")
    require_peer("knotc", apt="knot")
    started: list[Knot] = []
    dirs: list[str] = []

    async def start(zones: dict[str, str], signed: dict[str, str] | None = None) -> Knot:
        signed = signed or {}
        # short path: knotd's control socket lives in rundir (sun_path is 108 bytes)
        d = Path(tempfile.mkdtemp(prefix="knot", dir="/tmp"))
        dirs.append(str(d))
        for attempt in range(3):
            port = free_port()
            text = _CONF.format(port=port, dir=d)
            for zone, body in zones.items():
                (d / f"{zone}.zone").write_text(body)
                text += f"  - domain: {zone}\n    file: {d}/{zone}.zone\n    zonefile-sync: -1\n"
                if zone in signed:
                    text += f"    dnssec-signing: on\n    dnssec-policy: {signed[zone]}\n"
            conf = d / "knot.conf"
            conf.write_text(text)
            proc = _spawn_knotd(conf, d / "knot.log")
            knot = Knot(port, d, conf, proc, list(zones))
            started.append(knot)
            if await _wait_ready(port, list(zones), proc):
                return knot
            knot.stop()
            if attempt == 2:
                raise AssertionError(f"knotd did not start: {(d / 'knot.log').read_text()}")
        raise AssertionError("unreachable")

    try:
        yield start
    finally:
        for k in started:
            k.stop()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


#: what :class:`TamperProxy` writes instead of the signed data, per type it rewrites
FORGED = {dns.rdatatype.TLSA: "3 1 1 " + "ab" * 32, dns.rdatatype.A: "127.0.0.2",
          dns.rdatatype.AAAA: "::2"}


class TamperProxy(asyncio.DatagramProtocol):
    """A UDP man-in-the-middle that rewrites answers and keeps the RRSIGs.

    ``rewrite`` holds the types it forges (:data:`FORGED`; TLSA by default, empty: it only
    forwards); with ``drop`` it answers nothing at all (a resolver that stopped answering).
    ``seen`` counts the queries that reached it.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.transport: asyncio.DatagramTransport | None = None
        self.tampered = 0
        self.seen = 0
        self.rewrite: set[int] = {dns.rdatatype.TLSA}
        self.drop = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.seen += 1
        if not self.drop:
            asyncio.get_running_loop().create_task(self._forward(data, addr))

    async def _forward(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()

        class Once(asyncio.DatagramProtocol):
            def datagram_received(self, d: bytes, a: tuple[str | Any, int]) -> None:
                if not fut.done():
                    fut.set_result(d)

        tr, _ = await loop.create_datagram_endpoint(Once, remote_addr=self.upstream)
        try:
            tr.sendto(data)
            reply = await asyncio.wait_for(fut, 2)
        finally:
            tr.close()
        msg = dns.message.from_wire(reply)
        for i, rr in enumerate(msg.answer):
            if rr.rdtype in self.rewrite:
                msg.answer[i] = dns.rrset.from_text(rr.name, rr.ttl, "IN",
                                                    dns.rdatatype.to_text(rr.rdtype),
                                                    FORGED[rr.rdtype])
                self.tampered += 1
        assert self.transport is not None
        self.transport.sendto(msg.to_wire(), addr)


@pytest.fixture
async def tamper() -> AsyncIterator[Callable[[str], Awaitable[tuple[TamperProxy, str]]]]:
    transports: list[asyncio.BaseTransport] = []

    async def start(upstream: str) -> tuple[TamperProxy, str]:
        host, port = upstream.rsplit(":", 1)
        proxy = TamperProxy((host, int(port)))
        tr, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: proxy, local_addr=("127.0.0.1", 0)
        )
        transports.append(tr)
        return proxy, f"127.0.0.1:{tr.get_extra_info('sockname')[1]}"

    yield start
    for tr in transports:
        tr.close()


@dataclass
class Unbound:
    """A running validating unbound: its port and process."""

    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


StartUnbound = Callable[..., Awaitable[Unbound]]

_UNBOUND_CONF = """\
server:
  interface: 127.0.0.1
  port: {port}
  do-ip6: no
  username: ""
  chroot: ""
  directory: "{dir}"
  pidfile: "{dir}/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 1
  num-threads: 1
  so-reuseport: no
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  trust-anchor-file: "{dir}/anchor.txt"
  ede: yes
  val-log-level: 2
  local-zone: "{zone}." nodefault
remote-control:
  control-enable: no
stub-zone:
  name: "{zone}."
  stub-addr: {stub}
"""


@pytest.fixture
async def start_unbound() -> AsyncIterator[StartUnbound]:
    """``await start_unbound("test.zone", "127.0.0.1:PORT", ds_lines)`` → :class:`Unbound`:
    a validating resolver with ``ds_lines`` as its trust anchor, asking ``stub`` for ``zone``
    and giving Extended DNS Errors (``ede: yes``) on SERVFAIL. Stopped by PID at the end."""
    require_peer("unbound", apt="unbound")
    started: list[Unbound] = []
    dirs: list[str] = []

    async def start(zone: str, stub: str, anchors: list[str]) -> Unbound:
        d = Path(tempfile.mkdtemp(prefix="unbound", dir="/tmp"))
        dirs.append(str(d))
        (d / "anchor.txt").write_text("\n".join(anchors) + "\n")
        host, sport = stub.rsplit(":", 1)
        for _attempt in range(3):
            port = free_port(kind=socket.SOCK_DGRAM)
            conf = d / "unbound.conf"
            conf.write_text(_UNBOUND_CONF.format(port=port, dir=d, zone=zone,
                                                 stub=f"{host}@{sport}"))
            log = d / "unbound.log"
            proc = _spawn(["unbound", "-d", "-c", str(conf)], log)
            ub = Unbound(port, proc, log)
            started.append(ub)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc.poll() is None:
                # unbound's built-in localhost zone: answered without asking anyone
                q = dns.message.make_query("localhost.", dns.rdatatype.A)
                try:
                    await asyncio.to_thread(dns.query.udp, q, "127.0.0.1", 0.3, port)
                    return ub
                except Exception:
                    await asyncio.sleep(0.05)
            ub.stop()
        raise AssertionError(f"unbound did not start: {(d / 'unbound.log').read_text()}")

    try:
        yield start
    finally:
        for u in started:
            u.stop()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
