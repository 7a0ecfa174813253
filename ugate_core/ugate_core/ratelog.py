"""Log lines at a bounded rate per kind of event: refusals come in floods.

Every refusal is counted exactly on ``/metrics`` (``ugate_rejections_total``) and logged —
but a client that opens 10,000 connections a second must not write 10,000 lines a second
(SSH refusals once wrote 27 MB of log in 30 s). :class:`RateLog` logs the first ``burst``
events of a key (``listener``, ``reason``) in each ``window`` seconds, then counts the rest
and sums them up in one line when the window ends::

    rejected listener=ssh reason=auth_failed client=10.0.0.7:40112 detail='...'
    ... (9 more lines for the first 10 events)
    rejected listener=ssh reason=auth_failed ... and 9,990 more like this in the last 10 s

So a key writes at most ``burst + 1`` lines per window, whatever the rate. The summary is
written by a timer on the running loop when the window ends (or, without a loop, with the
key's next event), so the last burst of a flood is not left unsaid.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable


class _Key:
    __slots__ = ("label", "level", "logged", "start", "suppressed", "timer")

    def __init__(self, start: float, label: str, level: int) -> None:
        self.start = start
        self.label = label
        self.level = level
        self.logged = 0
        self.suppressed = 0
        self.timer: asyncio.TimerHandle | None = None


class RateLog:
    """``log(key, label, level, msg, *args)``: ``msg % args`` to ``logger`` for the first
    ``burst`` events of ``key`` in a ``window``, then one summary line naming ``label`` with
    the number left out. Keys are few (a listener and a reason, from config and code, never
    from clients); beyond ``max_keys`` the oldest are summed up and forgotten."""

    def __init__(self, logger: logging.Logger, burst: int = 10, window: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 4096) -> None:
        if burst < 1 or window <= 0:
            raise ValueError(f"RateLog: burst {burst} and window {window} must be positive")
        self.logger = logger
        self.burst = burst
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._keys: dict[Hashable, _Key] = {}
        #: events left out of the log so far (every key)
        self.suppressed = 0

    def log(self, key: Hashable, label: str, level: int, msg: str, *args: object) -> bool:
        """Log one event of ``key``, or count it for the summary; True when it was logged."""
        now = self.clock()
        k = self._keys.get(key)
        if k is not None and now - k.start >= self.window:
            self._summarize(key)
            k = None
        if k is None:
            if len(self._keys) >= self.max_keys:
                self._summarize(next(iter(self._keys)))
            k = self._keys[key] = _Key(now, label, level)
        if k.logged < self.burst:
            k.logged += 1
            self.logger.log(level, msg, *args)
            return True
        k.suppressed += 1
        self.suppressed += 1
        if k.timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                pass  # summed up with the key's next event
            else:
                k.timer = loop.call_later(k.start + self.window - now, self._summarize, key)
        return False

    def flush(self) -> None:
        """Write every pending summary now (at shutdown)."""
        for key in list(self._keys):
            self._summarize(key)

    def _summarize(self, key: Hashable) -> None:
        k = self._keys.pop(key, None)
        if k is None:
            return
        if k.timer is not None:
            k.timer.cancel()
        if k.suppressed:
            span = min(self.clock() - k.start, self.window)
            self.logger.log(k.level, "%s ... and %s more like this in the last %.0f s",
                            k.label, f"{k.suppressed:,}", max(span, 1.0))


__all__ = ["RateLog"]
