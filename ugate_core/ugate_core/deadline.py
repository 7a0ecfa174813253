"""``with Deadline(seconds):`` — what ``async with asyncio.timeout(seconds):`` does, for the
per-connection path.

``asyncio.timeout`` is an asynchronous context manager although its enter and exit never wait:
each use makes and runs two coroutines and keeps a small state machine, ~19k instructions per
use on CPython 3.11 (its timer another ~8k). A dial deadline and a handshake deadline are paid
by every connection, so they use this synchronous twin: at the deadline the current task is
cancelled, and on the way out the same rule as ``asyncio.timeout`` (``Task.uncancel()`` back
to the count seen on entry, and the exception leaving the block is ``CancelledError``) turns
that cancellation into ``TimeoutError``; a cancellation from elsewhere passes through.

The deadlines of a loop share one timer (:class:`_Clock`): a uvloop timer made and cancelled
per deadline was 10k of the 17k instructions a deadline cost, and almost every deadline ends
well before it is due. A deadline that ended stays in the clock's heap, marked done, until the
clock's timer passes it or the heap is compacted (when more than half of it is done).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import weakref
from types import TracebackType

__all__ = ["Deadline"]

_get_running_loop = asyncio.get_running_loop
_current_task = asyncio.current_task
_heappush = heapq.heappush


class _Clock:
    """One loop's pending deadlines: a heap by due time and the one timer armed for its
    earliest entry."""

    __slots__ = ("armed", "dead", "handle", "heap", "loop", "seq")
    #: by ``id(loop)``; a clock refers to its loop weakly, so a closed loop with deadlines
    #: still pending is not kept alive (its id, once reused, gets a new clock)
    _all: dict[int, _Clock] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)
        self.heap: list[tuple[float, int, Deadline]] = []
        self.seq = itertools.count()
        self.dead = 0  # entries in the heap whose deadline ended
        self.handle: asyncio.TimerHandle | None = None
        self.armed = 0.0  # when the timer fires

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Clock:
        c = cls._all.get(id(loop))
        if c is None or c.loop() is not loop:
            c = cls._all[id(loop)] = cls(loop)
        return c

    def arm(self, when: float) -> None:
        """Fire at ``when`` (earlier than the timer armed now, or none is)."""
        if self.handle is not None:
            self.handle.cancel()
        loop = self.loop()
        if loop is not None:
            self.armed = when
            self.handle = loop.call_at(when, self.tick)

    def compact(self) -> None:
        """Drop the ended deadlines (more than half of the heap)."""
        heap = self.heap
        heap[:] = [e for e in heap if e[2]._clock is not None]
        heapq.heapify(heap)
        self.dead = 0

    def tick(self) -> None:
        self.handle = None
        loop = self.loop()
        if loop is None:
            return
        heap = self.heap
        now = loop.time()
        while heap and heap[0][0] <= now:
            d = heapq.heappop(heap)[2]
            if d._clock is None:
                self.dead -= 1
            else:
                d._fire()
        while heap and heap[0][2]._clock is None:  # the next one that can still fire
            heapq.heappop(heap)
            self.dead -= 1
        if heap:
            self.arm(heap[0][0])
        elif self._all.get(id(loop)) is self:
            del self._all[id(loop)]


class Deadline:
    """``with Deadline(delay):`` inside a task: ``TimeoutError`` when the block did not end
    within ``delay`` seconds (``None``: no deadline). One use per object."""

    __slots__ = ("_cancelling", "_clock", "_fired", "_task", "delay")

    def __init__(self, delay: float | None) -> None:
        self.delay = delay
        self._fired = False
        #: the clock that holds this deadline while it is pending
        self._clock: _Clock | None = None

    def __enter__(self) -> Deadline:
        loop = _get_running_loop()
        task = _current_task(loop)
        if task is None:
            raise RuntimeError("Timeout should be used inside a task")
        self._task: asyncio.Task[object] | None = task
        self._cancelling = task.cancelling()
        if self.delay is not None:
            # _Clock.of and a push, inline: this runs once or twice per connection
            c = _clocks.get(id(loop))
            if c is None or c.loop() is not loop:
                c = _Clock.of(loop)
            self._clock = c
            when = loop.time() + self.delay
            _heappush(c.heap, (when, next(c.seq), self))
            if c.handle is None or when < c.armed:
                c.arm(when)
        return self

    def _fire(self) -> None:
        self._clock = None
        self._fired = True
        t = self._task
        if t is not None:
            t.cancel()

    @property
    def expired(self) -> bool:
        """Whether the deadline passed and cancelled the block."""
        return self._fired

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        c = self._clock
        if c is not None:  # ended before it was due: stays in the heap, marked
            self._clock = None
            c.dead += 1
            if c.dead > 64 and c.dead * 2 > len(c.heap):
                c.compact()
        task, self._task = self._task, None  # the heap may keep this object a while
        if self._fired and task is not None and task.uncancel() <= self._cancelling and \
                et is asyncio.CancelledError:
            raise TimeoutError from e


_clocks = _Clock._all
