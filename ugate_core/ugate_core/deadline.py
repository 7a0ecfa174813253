"""``with Deadline(seconds):`` — what ``async with asyncio.timeout(seconds):`` does, for the
per-connection path.

``asyncio.timeout`` is an asynchronous context manager although its enter and exit never wait:
each use makes and runs two coroutines and keeps a small state machine, ~19k instructions per
use on CPython 3.11 (its timer another ~8k). A dial deadline and a handshake deadline are paid
by every connection, so they use this synchronous twin: at the deadline the current task is
cancelled, and on the way out the same rule as ``asyncio.timeout`` (``Task.uncancel()`` back
to the count seen on entry, and the exception leaving the block is ``CancelledError``) turns
that cancellation into ``TimeoutError``; a cancellation from elsewhere passes through.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

__all__ = ["Deadline"]


class Deadline:
    """``with Deadline(delay):`` inside a task: ``TimeoutError`` when the block did not end
    within ``delay`` seconds (``None``: no deadline). One use per object."""

    __slots__ = ("_cancelling", "_fired", "_handle", "_task", "delay")

    def __init__(self, delay: float | None) -> None:
        self.delay = delay
        self._fired = False
        self._handle: asyncio.TimerHandle | None = None

    def __enter__(self) -> Deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Timeout should be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        if self.delay is not None:
            loop = asyncio.get_running_loop()
            self._handle = loop.call_at(loop.time() + self.delay, self._fire)
        return self

    def _fire(self) -> None:
        self._handle = None
        self._fired = True
        self._task.cancel()

    @property
    def expired(self) -> bool:
        """Whether the deadline passed and cancelled the block."""
        return self._fired

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        h = self._handle
        if h is not None:
            self._handle = None
            h.cancel()
        if self._fired and self._task.uncancel() <= self._cancelling and \
                et is asyncio.CancelledError:
            raise TimeoutError from e
