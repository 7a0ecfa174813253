"""A TTL cache with bounds, size limit and coalescing of identical in-flight lookups.

Time comes from ``clock`` (monotonic seconds), so expiry is testable without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    coalesced: int = 0


class TtlCache(Generic[K, V]):
    """Values live ``ttl`` seconds, clamped to ``[min_ttl, max_ttl]``; at most ``size`` entries
    (the oldest go first). :meth:`get_or_fetch` runs one fetch per key at a time: callers that
    ask while it runs share its result (or its error), and an error is not cached."""

    def __init__(
        self, min_ttl: float = 0.0, max_ttl: float = 3600.0, size: int = 10000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.size = size
        self.clock = clock
        self.stats = CacheStats()
        self._data: dict[K, tuple[float, V]] = {}
        self._inflight: dict[K, asyncio.Task[tuple[V, float | None]]] = {}

    def __len__(self) -> int:
        return len(self._data)

    def clamp(self, ttl: float) -> float:
        return min(max(ttl, self.min_ttl), self.max_ttl)

    def get(self, key: K) -> V | None:
        hit = self._data.get(key)
        if hit is None:
            return None
        if hit[0] <= self.clock():
            del self._data[key]
            return None
        return hit[1]

    def put(self, key: K, value: V, ttl: float) -> None:
        ttl = self.clamp(ttl)
        if ttl <= 0:
            self._data.pop(key, None)
            return
        self._data.pop(key, None)
        self._data[key] = (self.clock() + ttl, value)
        while len(self._data) > self.size:
            del self._data[next(iter(self._data))]

    def clear(self) -> None:
        self._data.clear()

    async def get_or_fetch(
        self, key: K, fetch: Callable[[], Awaitable[tuple[V, float | None]]]
    ) -> V:
        """The cached value, else the result of ``fetch() -> (value, ttl)``, stored for ttl
        (``None``: not stored at all, whatever ``min_ttl`` says).

        The fetch runs in its own task: a caller that is cancelled (its deadline passed)
        does not cancel it for the others.
        """
        v = self.get(key)
        if v is not None:
            self.stats.hits += 1
            return v
        task = self._inflight.get(key)
        if task is None:
            self.stats.misses += 1

            async def run() -> tuple[V, float | None]:
                try:
                    value, ttl = await fetch()
                    if ttl is not None:
                        self.put(key, value, ttl)
                    return value, ttl
                finally:
                    self._inflight.pop(key, None)

            task = asyncio.get_running_loop().create_task(run())
            task.add_done_callback(_retrieve)
            self._inflight[key] = task
        else:
            self.stats.coalesced += 1
        value, _ = await asyncio.shield(task)
        return value


def _retrieve(task: asyncio.Task[object]) -> None:
    """Mark a fetch's error as seen: its waiters may all have been cancelled."""
    if not task.cancelled():
        task.exception()
