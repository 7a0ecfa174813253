"""Per-source limits and penalties (:mod:`ugate_ssh.limits`): the table in memory, then a banner
flood from 127.0.0.2 against a real OpenSSH login from 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from ugate_core import ConfigError
from ugate_core.testing import StartGateway, Upstream, pattern
from ugate_ssh.limits import (
    AUTH_FAIL,
    AUTH_TIMEOUT,
    NO_AUTH,
    SourceLimits,
    SourceTable,
    source_of,
)
from ugate_ssh.server import parse_options

from .conftest import OpenSsh
from .test_openssh_auth import fetch, rejected, start
from .test_openssh_server import body_of

ATTACKER = "127.0.0.2"


# ------------------------------------------------------------------------------ in memory
def test_sources_are_addresses_v4_and_v6_networks() -> None:
    assert source_of(("198.51.100.7", 1)) == "198.51.100.7/32"
    assert source_of(("198.51.100.7", 1), prefix_v4=24) == "198.51.100.0/24"
    a = source_of(("2001:db8:1:2:aaaa::1", 1))
    assert a == source_of(("2001:db8:1:2:ffff::9", 2)) == "2001:db8:1:2::/64"
    assert source_of(("2001:db8:1:3::1", 1)) != a
    assert source_of(("2001:db8:1:2::1", 1), prefix_v6=128) == "2001:db8:1:2::1/128"
    assert source_of(("::ffff:198.51.100.7", 1)) == "198.51.100.7/32"
    assert source_of(("fe80::1%eth0", 1)) == "fe80::/64"
    assert source_of(None) == "-"


def test_cap_per_source_leaves_other_sources_alone() -> None:
    t = SourceTable(SourceLimits(max_per_source=2))
    for _ in range(2):
        assert t.refusal("a", 0) is None
        t.opened("a")
    r = t.refusal("a", 0)
    assert r is not None and r[0] == "max_unauthenticated_per_source"
    assert t.refusal("b", 0) is None
    t.closed("a")
    assert t.refusal("a", 0) is None
    t.closed("a")
    assert t.open == {}


def test_penalties_add_up_block_and_expire() -> None:
    t = SourceTable(SourceLimits(penalty_auth_fail=5, penalty_no_auth=1,
                                 penalty_auth_timeout=10, penalty_min=15, penalty_max=30))
    assert t.penalize("a", NO_AUTH, 0) == 0
    assert t.penalize("a", AUTH_FAIL, 0) == 0  # 6 s, below penalty_min
    assert t.refusal("a", 0) is None
    assert t.refusal("a", 7) is None  # decayed
    assert "a" not in t.penalties
    assert t.penalize("a", AUTH_TIMEOUT, 10) == 0
    assert t.penalize("a", AUTH_TIMEOUT, 11) == 19  # 9 left + 10: refused from now on
    r = t.refusal("a", 12)
    assert r is not None and r[0] == "source_penalty"
    assert t.refusal("b", 12) is None
    for _ in range(10):
        t.penalize("a", AUTH_TIMEOUT, 12)
    assert t.penalties["a"].until == 42  # capped at penalty_max
    assert t.refusal("a", 41.9) is not None
    assert t.refusal("a", 42) is None


def test_zero_turns_a_penalty_off() -> None:
    t = SourceTable(SourceLimits(penalty_no_auth=0, penalty_min=1))
    for i in range(100):
        assert t.penalize("a", NO_AUTH, i / 100) == 0
    assert t.penalties == {}


def test_penalty_table_is_bounded() -> None:
    t = SourceTable(SourceLimits(max_sources=3, penalty_auth_fail=20, penalty_min=15))
    for i in range(3):
        t.penalize(f"s{i}", AUTH_FAIL, 0)
    t.penalize("late", AUTH_FAIL, 0)  # full, nothing expired: not recorded
    assert len(t.penalties) == 3 and t.overflowed == 1
    assert t.refusal("late", 1) is None
    t.penalize("later", AUTH_FAIL, 25)  # the old ones have expired: room again
    assert "later" in t.penalties and len(t.penalties) == 3
    for i in range(10_000):
        t.penalize(f"x{i}", AUTH_FAIL, 30)
    assert len(t.penalties) == 3


def test_options_are_checked() -> None:
    s = parse_options({"max_unauthenticated_per_source": 3, "source_prefix_v6": 56,
                       "penalty_no_auth": 0}, "listeners.ssh")
    assert s.sources.max_per_source == 3 and s.sources.prefix_v6 == 56
    assert s.sources.penalty_no_auth == 0 and s.sources.penalty_min == 15
    with pytest.raises(ConfigError, match=r"source_prefix_v4.*33"):
        parse_options({"source_prefix_v4": 33}, "listeners.ssh")
    with pytest.raises(ConfigError, match=r"max_unauthenticated_per_source.*0"):
        parse_options({"max_unauthenticated_per_source": 0}, "listeners.ssh")
    with pytest.raises(ConfigError, match="did you mean 'penalty_min'"):
        parse_options({"penalty_mins": 1}, "listeners.ssh")


# --------------------------------------------------------------------------- end to end
class BannerFlood:
    """Connections from 127.0.0.2 that send an SSH banner and then nothing; opened in a loop
    (at most ``count``, a few ms apart, for at most 30 s) until stopped."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.writers: list[asyncio.StreamWriter] = []
        self.opened = 0
        self.hundred = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + 30
        for _ in range(self.count):
            if loop.time() > end:
                return
            try:
                _, w = await asyncio.open_connection("127.0.0.1", self.port,
                                                     local_addr=(ATTACKER, 0))
                w.write(b"SSH-2.0-flood\r\n")
                self.writers.append(w)
                self.opened += 1
                if self.opened >= 100:
                    self.hundred.set()
            except OSError:
                pass
            await asyncio.sleep(0.005)

    async def __aenter__(self) -> BannerFlood:
        self.task = asyncio.create_task(self._run())
        return self

    async def wait_started(self) -> None:
        """Until 100 connections are open (refused ones included)."""
        await asyncio.wait_for(self.hundred.wait(), 15)

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        for w in self.writers:
            w.close()
        for w in self.writers:
            with contextlib.suppress(OSError):
                await w.wait_closed()


async def test_banner_flood_from_one_source_does_not_lock_out_another(
    start_gateway: StartGateway, openssh: OpenSsh, http_upstream: Upstream,
) -> None:
    """Issue #16: 64 banner-only connections used to fill ``max_unauthenticated`` for
    everyone. Now 127.0.0.2 gets its 10 and every further one is refused, while 127.0.0.1
    logs in with OpenSSH mid-flood."""
    gw, port, kh = await start(start_gateway, openssh,
                               f'authorized_keys = ["{openssh.pub("alice")}"]')
    async with BannerFlood(port, count=3000) as flood:
        await flood.wait_started()
        assert flood.task is not None and not flood.task.done()  # still flooding
        rc, out, err = await fetch(openssh, port, "alice", kh, http_upstream, n=5000)
        assert rc == 0, err.decode()
        assert body_of(out) == pattern(5000)
        assert not flood.task.done()
    assert await rejected(gw, "max_unauthenticated_per_source") >= 90
    assert await rejected(gw, "max_unauthenticated") == 0


async def test_without_the_cap_per_source_the_same_flood_locks_everyone_out(
    start_gateway: StartGateway, openssh: OpenSsh, http_upstream: Upstream,
) -> None:
    """The control for the test above: the flood it runs is enough to lock out a login when
    one source may take every slot (what one global count did)."""
    gw, port, kh = await start(start_gateway, openssh,
                               "max_unauthenticated_per_source = 64\n"
                               f'authorized_keys = ["{openssh.pub("alice")}"]')
    async with BannerFlood(port, count=300) as flood:
        await flood.wait_started()
        rc, _, _ = await fetch(openssh, port, "alice", kh, http_upstream)
        assert rc == 255
    assert await rejected(gw, "max_unauthenticated") >= 1


async def test_a_source_that_keeps_failing_is_refused_for_a_while(
    start_gateway: StartGateway, openssh: OpenSsh, http_upstream: Upstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "ugate")
    gw, port, kh = await start(start_gateway, openssh,
                               "auth_timeout = 0.3\npenalty_auth_timeout = 10\n"
                               f'authorized_keys = ["{openssh.pub("alice")}"]')

    async def silent() -> bytes:
        r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACKER, 0))
        w.write(b"SSH-2.0-silent\r\n")
        try:
            return await asyncio.wait_for(r.read(), 5)
        except ConnectionResetError:  # refused: aborted by the gateway
            return b""
        finally:
            w.close()

    # two connections past the login deadline: 20 s of penalty, above penalty_min (15 s)
    for _ in range(2):
        assert (await silent()).startswith(b"SSH-2.0-ugate")
    assert await rejected(gw, "auth_timeout") == 2
    assert await silent() == b""  # refused at once, before the server's banner
    assert await rejected(gw, "source_penalty") == 1
    assert "ssh_source_penalty listener=ssh source=127.0.0.2/32 seconds=20" in caplog.text
    rc, out, err = await fetch(openssh, port, "alice", kh, http_upstream)
    assert rc == 0, err.decode()
    assert body_of(out) == pattern(1000)
