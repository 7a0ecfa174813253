"""The hot path: copy bytes both ways between two streams.

Push mode, no StreamReader: each chunk a source delivers is written straight to the other side.
When the other side's write buffer passes its high-water mark the source is paused, and resumed
when it drains, so a stalled reader caps the relay's memory. EOF in one direction is passed on
as a half-close; the relay ends when both directions ended, on the first reset, on the idle
timeout or on the total timeout.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .stream import Stream


@dataclass
class RelayStats:
    """Bytes each way and why the relay ended (``done``, ``idle``, ``timeout``, ``reset``,
    ``cancelled``); ``end`` is ``""`` while it runs. Counts are live while it runs."""

    end: str = ""
    _up: int = 0
    _down: int = 0
    _pipes: tuple[_Pipe, _Pipe] | None = None

    @property
    def up(self) -> int:
        """Bytes from ``a`` to ``b``."""
        return self._pipes[0].count if self._pipes else self._up

    @property
    def down(self) -> int:
        """Bytes from ``b`` to ``a``."""
        return self._pipes[1].count if self._pipes else self._down


class _Pipe:
    """One direction: ``src`` pushes into ``dst``."""

    __slots__ = ("count", "dst", "eof", "on_end", "src")

    def __init__(self, src: Stream, dst: Stream, on_end: _Ender) -> None:
        self.src = src
        self.dst = dst
        self.count = 0
        self.eof = False
        self.on_end = on_end

    def data_received(self, data: bytes) -> None:
        dst = self.dst
        if dst.is_lost:
            self.on_end.finish("reset")
            return
        self.count += len(data)
        dst.write(data)
        if dst.write_paused:
            self.src.pause_reading()

    def resume(self) -> None:
        self.src.resume_reading()

    def eof_received(self) -> None:
        if self.eof:
            return
        self.eof = True
        self.dst.write_eof()
        self.on_end.half_done()

    def connection_lost(self, exc: BaseException | None) -> None:
        # the source is gone both ways: nothing more can be written to it either
        self.on_end.finish("done" if exc is None and self.eof else "reset")


class _Ender:
    __slots__ = ("fut", "halves", "pipes")

    def __init__(self, fut: asyncio.Future[str]) -> None:
        self.fut = fut
        self.halves = 0
        self.pipes: tuple[_Pipe, _Pipe] | None = None

    def half_done(self) -> None:
        if self.pipes is not None and all(p.eof for p in self.pipes):
            self.finish("done")

    def finish(self, why: str) -> None:
        if not self.fut.done():
            self.fut.set_result(why)


async def relay(
    a: Stream,
    b: Stream,
    *,
    idle_timeout: float | None = None,
    total_timeout: float | None = None,
    stats: RelayStats | None = None,
) -> RelayStats:
    """Copy ``a`` ⇄ ``b`` until both directions ended; close both; return the byte counts.

    ``stats`` may be passed in to watch the counts while the relay runs (``/streams``).
    """
    loop = asyncio.get_running_loop()
    st = stats if stats is not None else RelayStats()
    fut: asyncio.Future[str] = loop.create_future()
    ender = _Ender(fut)
    ab = _Pipe(a, b, ender)
    ba = _Pipe(b, a, ender)
    ender.pipes = (ab, ba)
    st._pipes = ender.pipes
    b.on_resume_writing = ab.resume
    a.on_resume_writing = ba.resume
    idle_handle: asyncio.TimerHandle | None = None
    last = -1

    def idle_check() -> None:
        nonlocal idle_handle, last
        total = ab.count + ba.count
        if total == last:
            ender.finish("idle")
            return
        last = total
        assert idle_timeout is not None
        idle_handle = loop.call_later(idle_timeout, idle_check)

    if idle_timeout:
        last = 0
        idle_handle = loop.call_later(idle_timeout, idle_check)
    try:
        a.set_receiver(ab)
        b.set_receiver(ba)
        try:
            if total_timeout:
                st.end = await asyncio.wait_for(asyncio.shield(fut), total_timeout)
            else:
                st.end = await fut
        except TimeoutError:
            st.end = "timeout"
        except asyncio.CancelledError:
            st.end = "cancelled"
            raise
    finally:
        if idle_handle is not None:
            idle_handle.cancel()
        st._up, st._down, st._pipes = ab.count, ba.count, None
        a.set_receiver(None)
        b.set_receiver(None)
        a.on_resume_writing = None
        b.on_resume_writing = None
        if st.end == "done":
            a.close()
            b.close()
        else:
            a.abort()
            b.abort()
    return st
