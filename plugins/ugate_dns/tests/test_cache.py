"""The TTL cache: bounds, expiry on an injected clock, size limit, coalescing, errors."""

from __future__ import annotations

import asyncio

import pytest

from ugate_dns.cache import TtlCache


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_ttl_bounds_and_expiry() -> None:
    clock = Clock()
    c: TtlCache[str, int] = TtlCache(min_ttl=5, max_ttl=60, size=10, clock=clock)
    c.put("short", 1, 1)  # raised to 5
    c.put("long", 2, 86400)  # cut to 60
    clock.t += 4.9
    assert c.get("short") == 1
    clock.t += 0.2
    assert c.get("short") is None
    clock.t += 54
    assert c.get("long") == 2
    clock.t += 1
    assert c.get("long") is None
    z: TtlCache[str, int] = TtlCache(clock=clock)
    z.put("zero", 3, 0)  # ttl 0: not stored
    assert z.get("zero") is None and len(z) == 0


def test_size_limit_drops_oldest() -> None:
    c: TtlCache[int, int] = TtlCache(size=3)
    for i in range(5):
        c.put(i, i, 60)
    assert len(c) == 3 and c.get(0) is None and c.get(4) == 4


async def test_coalescing_and_errors_not_cached() -> None:
    c: TtlCache[str, str] = TtlCache()
    calls = 0
    gate = asyncio.Event()

    async def fetch() -> tuple[str, float]:
        nonlocal calls
        calls += 1
        await gate.wait()
        return "v", 30

    tasks = [asyncio.create_task(c.get_or_fetch("k", fetch)) for _ in range(20)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*tasks) == ["v"] * 20
    assert calls == 1 and c.stats.coalesced == 19
    assert await c.get_or_fetch("k", fetch) == "v" and calls == 1

    async def boom() -> tuple[str, float]:
        raise RuntimeError("server down")

    with pytest.raises(RuntimeError):
        await c.get_or_fetch("e", boom)
    assert c.get("e") is None


async def test_cancelled_caller_does_not_cancel_the_fetch() -> None:
    c: TtlCache[str, str] = TtlCache()

    async def slow() -> tuple[str, float]:
        await asyncio.sleep(0.05)
        return "late", 30

    t = asyncio.create_task(c.get_or_fetch("k", slow))
    await asyncio.sleep(0.01)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    assert await c.get_or_fetch("k", slow) == "late"  # the same fetch, finished
    assert c.stats.misses == 1
