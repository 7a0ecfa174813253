"""Knot DNS as the real peer: a fixture that starts knotd on 127.0.0.1 with given zones."""

from __future__ import annotations

import asyncio
import shutil
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


def _spawn_knotd(conf: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as f:
        return subprocess.Popen(["knotd", "-c", str(conf)], stdout=f, stderr=f)


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


class TamperProxy(asyncio.DatagramProtocol):
    """A UDP man-in-the-middle that rewrites TLSA data in answers and keeps the RRSIGs."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.transport: asyncio.DatagramTransport | None = None
        self.tampered = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
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
            if rr.rdtype == dns.rdatatype.TLSA:
                forged = dns.rrset.from_text(rr.name, rr.ttl, "IN", "TLSA", "3 1 1 " + "ab" * 32)
                msg.answer[i] = forged
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
