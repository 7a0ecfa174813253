"""The hot path: copy bytes both ways between two streams.

Every direction starts on the **copy path**: push mode, no StreamReader; each chunk a source
delivers is written straight to the other side. When the other side's write buffer passes its
high-water mark the source is paused, and resumed when it drains, so a stalled reader caps the
relay's memory. This path works for every :class:`~ugate_core.stream.Stream` and is the cheapest
to set up (best connections per second).

Where both ends are plain kernel sockets (:class:`~ugate_core.stream.TcpStream` with no TLS in
between) a direction that has carried :attr:`RelaySettings.splice_after` bytes moves to the
**splice path** (:mod:`ugate_core.splice`): its source is paused, the destination's write buffer
is let drain, then the kernel moves the bytes socket → pipe → socket. Each direction switches
on its own; the other may stay on the copy path.

EOF in one direction is passed on as a half-close; the relay ends when both directions ended,
on the first reset, on the idle timeout or on the total timeout. Ended any way but by EOF both
ways, it resets both streams (:meth:`Stream.reset`: TCP RST, RST_STREAM, ...), so that a
client reading to the end of a close-delimited stream knows it was cut short; nothing of this
runs per chunk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from . import splice as _splice
from .stream import Stream, TcpStream

log = logging.getLogger("ugate.relay")

_MODES = ("auto", "off", "always")


@dataclass
class RelaySettings:
    """How :func:`relay` picks its path (process-wide; tests and ``bench/`` change it).

    ``splice``: ``auto`` moves a direction to splice after ``splice_after`` bytes, ``always``
    from its first byte, ``off`` never. Defaults come from the environment variables
    ``UGATE_SPLICE`` and ``UGATE_SPLICE_AFTER``.
    """

    splice: str = "auto"
    splice_after: int = 1 << 20
    #: ``auto`` switches on a chunk at least this large: a read that big means bytes queue up
    #: (a bulk flow); chatty flows of small messages stay on the copy path, which answers
    #: them with less latency than a splice round
    splice_chunk: int = 32 * 1024

    @classmethod
    def from_env(cls) -> RelaySettings:
        mode = os.environ.get("UGATE_SPLICE", "auto").strip().lower() or "auto"
        if mode not in _MODES:
            raise ValueError(f"UGATE_SPLICE={mode!r}: not one of {', '.join(_MODES)}")
        after = os.environ.get("UGATE_SPLICE_AFTER", "").strip()
        try:
            n = int(after) if after else 1 << 20
        except ValueError:
            raise ValueError(f"UGATE_SPLICE_AFTER={after!r}: not a byte count") from None
        if n < 0:
            raise ValueError(f"UGATE_SPLICE_AFTER={after!r}: not a byte count")
        return cls(mode, n)


settings = RelaySettings.from_env()


@dataclass(slots=True)
class RelayStats:
    """Bytes each way and why the relay ended (``done``, ``idle``, ``timeout``, ``reset``,
    ``cancelled``); ``end`` is ``""`` while it runs. Counts are live while it runs.
    ``spliced`` counts the directions that moved to the splice path."""

    end: str = ""
    spliced: int = 0
    _up: int = 0
    _down: int = 0
    _pipes: tuple[_Pipe, _Pipe] | None = None

    @property
    def up(self) -> int:
        """Bytes from ``a`` to ``b``."""
        return self._pipes[0].total if self._pipes else self._up

    @property
    def down(self) -> int:
        """Bytes from ``b`` to ``a``."""
        return self._pipes[1].total if self._pipes else self._down


# direction states
_COPY, _SWITCHING, _SPLICE = 0, 1, 2


class _Pipe:
    """One direction: ``src`` pushes into ``dst`` (copy path), or a splice moves it."""

    __slots__ = ("count", "dst", "eof", "relay", "spl", "src", "state", "switch_at")

    def __init__(self, src: Stream, dst: Stream, relay: Relay, switch_at: int | None) -> None:
        self.src = src
        self.dst = dst
        self.count = 0
        self.eof = False
        self.relay = relay
        self.state = _COPY
        self.switch_at = switch_at
        self.spl: _splice.SpliceDirection | None = None

    @property
    def total(self) -> int:
        spl = self.spl
        return self.count if spl is None else self.count + spl.count

    # Receiver (copy path)
    def data_received(self, data: bytes) -> None:
        dst = self.dst
        if dst.is_lost:
            self.relay.finish("reset")
            return
        if self.state == _SPLICE:
            # someone resumed a spliced source: these bytes cannot be ordered any more
            log.error("relay_error reason=read_while_spliced bytes=%d", len(data))
            self.relay.finish("reset")
            return
        self.count += len(data)
        dst.write(data)  # ``data`` is never reused: uvloop may keep a reference to it
        if self.switch_at is not None and self.count >= self.switch_at and \
                len(data) >= settings.splice_chunk:
            self.switch_at = None
            self.relay.begin_splice(self)
        elif dst.write_paused:
            self.src.pause_reading()

    def resume(self) -> None:
        """``dst`` drained below its low-water mark (or emptied, while switching)."""
        if self.state == _COPY:
            self.src.resume_reading()
        elif self.state == _SWITCHING:
            self.relay.try_splice(self)

    def eof_received(self) -> None:
        if self.eof:
            return
        self.eof = True
        self.dst.write_eof()
        self.relay.half_done()

    def connection_lost(self, exc: BaseException | None) -> None:
        # the source is gone both ways: nothing more can be written to it either
        self.relay.finish("done" if exc is None and self.eof else "reset")

    # splice path callbacks
    def spliced_eof(self) -> None:
        self.eof = True
        self.relay.half_done()

    def spliced_error(self, exc: OSError) -> None:
        self.relay.finish("reset")


class Relay:
    """A running relay, as :func:`start_relay` returns it: :attr:`stats` are live;
    :meth:`cancel` ends it (``end == "cancelled"``). It ends on its own when both directions
    reached EOF, on a reset or on a timeout; then both streams are closed and ``on_done`` is
    called once with the final :class:`RelayStats`."""

    __slots__ = ("a", "b", "idle", "loop", "moved", "on_done", "pipes", "seen", "socks",
                 "spliced", "stats", "total_handle")

    def __init__(self, loop: asyncio.AbstractEventLoop, a: Stream, b: Stream, stats: RelayStats,
                 on_done: Callable[[RelayStats], None] | None) -> None:
        self.loop = loop
        self.a = a
        self.b = b
        self.stats = stats
        self.on_done = on_done
        self.socks: dict[int, socket.socket] | None = None  # dup'd fds while splicing
        self.spliced = 0
        self.seen = 0  # idle sweeper: byte count last seen, and when it last moved
        self.moved = 0.0
        #: the idle sweeper this relay is registered with (``idle_timeout``)
        self.idle: _IdleSweeper | None = None
        self.total_handle: asyncio.TimerHandle | None = None
        self.pipes = (_Pipe(a, b, self, None), _Pipe(b, a, self, None))

    def cancel(self) -> None:
        self.finish("cancelled")

    def arm(self) -> None:
        """Let each direction move to splice (called once both receivers are set:
        ``set_receiver`` resumes a paused source after handing over its buffer, so a switch
        begun inside it would be undone)."""
        mode = settings.splice
        if mode == "off" or not _splice.AVAILABLE or not _pure_tcp(self.a) \
                or not _pure_tcp(self.b):
            return
        if mode == "always":
            for p in self.pipes:
                self.begin_splice(p)
        else:  # the fds are checked at the switch: most connections never get there
            for p in self.pipes:
                p.switch_at = settings.splice_after

    def half_done(self) -> None:
        if self.pipes[0].eof and self.pipes[1].eof:
            self.finish("done")

    def finish(self, why: str) -> None:
        """End the relay now: stop both directions, close both streams, report."""
        st = self.stats
        if st.end:
            return
        st.end = why
        sw = self.idle
        if sw is not None:
            self.idle = None
            sw.discard(self)
        if self.total_handle is not None:
            self.total_handle.cancel()
            self.total_handle = None
        ab, ba = self.pipes
        st._up, st._down, st._pipes = ab.total, ba.total, None
        st.spliced = self.spliced
        if self.socks is not None or ab.spl is not None or ba.spl is not None:
            self.stop_splicing()
        a, b = self.a, self.b
        a.set_receiver(None)
        b.set_receiver(None)
        a.on_resume_writing = None
        b.on_resume_writing = None
        a.relayed_by = b.relayed_by = None
        try:  # not contextlib.suppress: no object per relay
            if why == "done":
                a.close()
                b.close()
            else:  # cut short: each peer must see a reset (TCP RST, RST_STREAM), not an end
                a.reset()
                b.reset()
        except Exception:
            pass
        cb, self.on_done = self.on_done, None
        if cb is not None:
            try:
                cb(st)
            except Exception:  # a transport callback is no place to raise
                log.exception("relay on_done callback failed")

    # ---------------------------------------------------------------- copy → splice
    def begin_splice(self, p: _Pipe) -> None:
        if p.state != _COPY or p.eof or self.stats.end:
            return
        p.state = _SWITCHING
        p.src.pause_reading()
        self.try_splice(p)

    def try_splice(self, p: _Pipe) -> None:
        """Start splicing ``p`` once every byte the copy path gave ``dst`` has left."""
        if p.state != _SWITCHING or self.stats.end:
            return
        src, dst = p.src, p.dst
        if dst.is_lost or src.is_lost:
            self.finish("reset")
            return
        assert isinstance(src, TcpStream) and isinstance(dst, TcpStream)
        if dst.get_write_buffer_size():
            # resume_writing (→ p.resume → here) fires once the buffer is empty
            dst.set_write_buffer_limits(0)
            return
        s_fd, d_fd = _raw_fd(src), _raw_fd(dst)
        if s_fd is None or d_fd is None or src.buffered():
            # the streams changed under us (closing): stay on the copy path
            self._back_to_copy(p, dst)
            return
        try:
            s_sock, d_sock = self._sock(src, s_fd), self._sock(dst, d_fd)
            spl = _splice.SpliceDirection(self.loop, s_sock, d_sock, p.spliced_eof,
                                          p.spliced_error)
        except OSError:  # out of fds or pipes: stay on the copy path
            self._back_to_copy(p, dst)
            return
        p.state = _SPLICE
        p.spl = spl
        self.spliced += 1
        spl.start()

    @staticmethod
    def _back_to_copy(p: _Pipe, dst: TcpStream) -> None:
        p.state = _COPY
        dst.set_write_buffer_limits(TcpStream.write_high)
        p.src.resume_reading()

    def _sock(self, s: Stream, fd: int) -> socket.socket:
        if self.socks is None:
            self.socks = {}
        sk = self.socks.get(id(s))
        if sk is None:
            sk = self.socks[id(s)] = _splice.dup_socket(fd)
        return sk

    def stop_splicing(self) -> None:
        for p in self.pipes:
            if p.spl is not None:
                p.spl.stop()
        if self.socks:
            for sk in self.socks.values():
                sk.close()
        self.socks = None


def _pure_tcp(s: Stream) -> bool:
    """A TcpStream whose class leaves the bytes alone (a subclass may transform them)."""
    cls = type(s)
    pure = _PURE.get(cls)
    if pure is None:  # asked per relay, twice: the answer is the class's
        pure = _PURE[cls] = issubclass(cls, TcpStream) and \
            cls.data_received is TcpStream.data_received and cls._do_write is \
            TcpStream._do_write and cls._on_data is Stream._on_data
    return pure


_PURE: dict[type[Stream], bool] = {}


def _raw_fd(s: Stream) -> int | None:
    """The socket fd of a plain TcpStream, or None."""
    return s.raw_fd() if _pure_tcp(s) else None  # type: ignore[attr-defined]


class _IdleSweeper:
    """Ends idle relays: one timer per loop and idle timeout value, not one per relay (a timer
    handle and a closure per connection were a tenth of an idle connection's memory).

    A relay is idle once its byte counts have not moved for ``timeout`` seconds; the sweep runs
    every ``timeout / 4`` (at most 30 s), so it ends between ``timeout`` and ``1.25 timeout``.
    """

    __slots__ = ("handle", "key", "loop", "period", "relays", "timeout")
    _all: dict[tuple[int, float], _IdleSweeper] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.key = (id(loop), timeout)
        self.period = min(max(timeout / 4, 0.005), 30.0)
        self.relays: set[Relay] = set()
        self.handle: asyncio.TimerHandle | None = None

    @classmethod
    def add(cls, loop: asyncio.AbstractEventLoop, timeout: float, r: Relay) -> None:
        sw = cls._all.get((id(loop), timeout))
        if sw is None or sw.loop is not loop:
            sw = cls._all[(id(loop), timeout)] = cls(loop, timeout)
        r.seen, r.moved = 0, loop.time()
        r.idle = sw
        sw.relays.add(r)
        if sw.handle is None:
            sw.handle = loop.call_later(sw.period, sw.sweep)

    def discard(self, r: Relay) -> None:
        """``r`` ended (the relay keeps its sweeper: no lookup per relay). The sweeper stays
        when its last relay ended: the next sweep drops it if no relay came meanwhile, so
        connections one after the other do not make and cancel a sweeper and timer each."""
        self.relays.discard(r)

    def sweep(self) -> None:
        self.handle = None
        now = self.loop.time()
        for r in [*self.relays]:
            total = r.pipes[0].total + r.pipes[1].total
            if total != r.seen:
                r.seen, r.moved = total, now
            elif now - r.moved >= self.timeout:
                r.finish("idle")
        if self.relays:
            self.handle = self.loop.call_later(self.period, self.sweep)
        elif self._all.get(self.key) is self:
            del self._all[self.key]


def start_relay(
    a: Stream,
    b: Stream,
    *,
    idle_timeout: float | None = None,
    total_timeout: float | None = None,
    stats: RelayStats | None = None,
    on_done: Callable[[RelayStats], None] | None = None,
) -> Relay:
    """Start copying ``a`` ⇄ ``b`` and return at once; the relay runs on transport callbacks.

    No task or coroutine stays behind for the life of the connection (an idle relayed
    connection costs only its objects). ``on_done(stats)`` is called once when it ended, after
    both streams were closed; see :func:`relay` for the meaning of ``stats.end``.
    """
    loop = asyncio.get_running_loop()
    st = stats if stats is not None else RelayStats()
    r = Relay(loop, a, b, st, on_done)
    ab, ba = r.pipes
    st._pipes = r.pipes
    b.on_resume_writing = ab.resume
    a.on_resume_writing = ba.resume
    if total_timeout:
        r.total_handle = loop.call_later(total_timeout, r.finish, "timeout")
    if idle_timeout:
        _IdleSweeper.add(loop, idle_timeout, r)
    # handing over buffered bytes and an EOF may end the relay right here
    a.relayed_by = b.relayed_by = r
    a.set_receiver(ab)
    if not st.end:
        b.set_receiver(ba)
    if not st.end:
        r.arm()
    return r


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
    ``end`` says why it ended: ``done`` (both directions reached EOF), ``idle`` (no byte
    either way for ``idle_timeout`` seconds; noticed within a quarter of it), ``timeout``
    (``total_timeout`` passed), ``reset`` (an error on either side) or ``cancelled`` (the
    awaiting task was cancelled). :func:`start_relay` is the same without a task to await.
    """
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def done(_st: RelayStats) -> None:
        if not fut.done():
            fut.set_result(None)

    r = start_relay(a, b, idle_timeout=idle_timeout, total_timeout=total_timeout, stats=stats,
                    on_done=done)
    try:
        await fut
    except asyncio.CancelledError:
        r.finish("cancelled")
        raise
    return r.stats
