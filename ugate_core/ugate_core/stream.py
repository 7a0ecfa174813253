"""The one byte-stream interface every protocol adapts to.

A :class:`Stream` has two ways to read:

* pull: ``await read()`` / ``readexactly()`` / ``readuntil()``, used by handshakes;
* push: ``set_receiver(r)`` hands every later chunk straight to ``r.data_received`` with no
  buffering, used by :func:`ugate_core.relay.relay` on the hot path.

Adapters (TCP, SSH channels, HTTP/2 streams, QUIC streams, ...) subclass :class:`Stream`,
implement the ``_do_*`` methods and call ``_on_data`` / ``_on_eof`` / ``_on_lost`` /
``_pause_writing`` / ``_resume_writing`` as their transport reports events.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .deadline import Deadline
from .errors import ProtocolError

_ids = itertools.count(1)
_EMPTY = b""
#: SO_LINGER on, 0 s: close() sends RST and drops unsent bytes
_LINGER0 = struct.pack("ii", 1, 0)


@dataclass(slots=True)
class StreamMeta:
    """What is known about one end of a stream. Mutable: handshakes fill it in."""

    protocol: str = ""
    listener: str = ""
    local: tuple[str, int] | None = None
    remote: tuple[str, int] | None = None
    sni: str | None = None
    alpn: str | None = None
    original_dst: tuple[str, int] | None = None
    #: Verified identity of the peer (mesh ID, SPIFFE URI, ...), ``None`` if unauthenticated.
    peer_id: str | None = None
    #: User name (SOCKS5/HTTP proxy auth, SSH login name), ``None`` if none. A protocol that
    #: verified it (a password) also sets ``extra["user_verified"] = True``: only then do
    #: ``user:<name>`` rules match (an SSH login name is the client's choice; name SSH
    #: clients by the ``id:`` of their key)
    user: str | None = None
    #: Requested destination as the client named it (``host:port``).
    target: str | None = None
    id: int = field(default_factory=_ids.__next__)  # no lambda frame per stream
    _extra: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def extra(self) -> dict[str, Any]:
        """Protocol-specific facts (``spiffe``, ``http_version``, ...); made on first use."""
        e = self._extra
        if e is None:
            e = self._extra = {}
        return e

    def copy_extra(self, other: StreamMeta) -> StreamMeta:
        """Take a copy of ``other``'s extra facts (a tunnel's streams inherit its
        connection's); returns self."""
        if other._extra:
            self._extra = dict(other._extra)
        return self

    @property
    def authenticated(self) -> bool:
        return self.peer_id is not None or self.user is not None

    def as_dict(self) -> dict[str, Any]:
        def addr(a: tuple[str, int] | None) -> str | None:
            return None if a is None else format_hostport(a[0], a[1])

        return {
            "id": self.id,
            "protocol": self.protocol,
            "listener": self.listener,
            "local": addr(self.local),
            "remote": addr(self.remote),
            "sni": self.sni,
            "alpn": self.alpn,
            "peer_id": self.peer_id,
            "user": self.user,
            "target": self.target,
        }


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Receiver(Protocol):
    """Push-mode consumer of a stream (see :meth:`Stream.set_receiver`)."""

    def data_received(self, data: bytes) -> None: ...

    def eof_received(self) -> None: ...

    def connection_lost(self, exc: BaseException | None) -> None: ...


class StreamClosedError(ConnectionError):
    """Raised by read helpers when the stream ends before the expected bytes."""


class Stream:
    """A bidirectional byte stream with half-close.

    Subclasses implement ``_do_write``, ``_do_write_eof``, ``_do_close``, ``_do_abort``,
    ``_do_pause_reading``, ``_do_resume_reading`` and may override ``can_write_eof`` and
    ``get_write_buffer_size``.
    """

    # slots: an idle relayed connection is mostly two of these; a subclass without its own
    # __slots__ simply gets a __dict__ again
    __slots__ = ("_buf", "_closed_fut", "_closing", "_drain_waiters", "_eof", "_eof_written",
                 "_exc", "_lost", "_reading_paused", "_receiver", "_waiter", "_write_paused",
                 "meta", "on_resume_writing", "relayed_by", "wrapped_by")

    #: pull-mode buffer above which the source is paused
    read_limit: int = 256 * 1024

    def __init__(self, meta: StreamMeta | None = None) -> None:
        self.meta = meta if meta is not None else StreamMeta()
        # pull-mode buffer: the shared empty bytes until bytes wait in it (an idle relayed
        # stream never buffers; two empty bytearrays were ~3% of its memory); one chunk
        # that came alone is kept as the bytes it came in, a bytearray once more arrive
        self._buf: bytearray | bytes = _EMPTY
        self._eof = False
        self._lost = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._receiver: Receiver | None = None
        self._reading_paused = False
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] | None = None
        self._closed_fut: asyncio.Future[None] | None = None
        self._eof_written = False
        self._closing = False
        #: called once each time the write side becomes writable again (relay backpressure)
        self.on_resume_writing: Callable[[], None] | None = None
        #: the :class:`~ugate_core.relay.Relay` that owns this stream now (it closes it)
        self.relayed_by: Any = None
        #: a stream layered on this one (TLS over it), which then owns it
        self.wrapped_by: Stream | None = None

    # ------------------------------------------------------------------ subclass interface
    def _do_write(self, data: bytes | bytearray | memoryview) -> None:
        raise NotImplementedError

    def _do_write_eof(self) -> None:
        raise NotImplementedError

    def _do_close(self) -> None:
        raise NotImplementedError

    def _do_abort(self) -> None:
        self._do_close()

    def _do_reset(self) -> None:
        """Tell the peer the stream was cut short (see :meth:`reset`); an adapter whose
        protocol has a reset implements it, the default is :meth:`_do_abort`."""
        self._do_abort()

    def _do_pause_reading(self) -> None:
        pass

    def _do_resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return 0

    def local_address(self) -> tuple[str, int] | None:
        """This end's address, as far as it is known (``meta.local``)."""
        return self.meta.local

    # ------------------------------------------------------------------ events from below
    def _on_data(self, data: bytes) -> None:
        if not data:
            return
        r = self._receiver
        if r is not None:
            r.data_received(data)
            return
        buf = self._buf
        if not buf:
            # kept as it came (a handshake read takes it whole: no copy in and out); other
            # types may be a caller's buffer that changes later
            self._buf = buf = data if type(data) is bytes else bytearray(data)
        elif type(buf) is bytes:
            self._buf = buf = bytearray(buf)
            buf += data
        else:
            buf += data  # a bytearray: in place
        self._wake()
        if len(buf) > self.read_limit:
            self.pause_reading()

    def _on_eof(self) -> None:
        if self._eof:  # uvloop may report EOF twice after resume_reading()
            return
        self._eof = True
        r = self._receiver
        if r is not None:
            r.eof_received()
        else:
            self._wake()

    def _on_lost(self, exc: BaseException | None) -> None:
        if self._lost:
            return
        self._lost = True
        if exc is not None and self._exc is None:
            self._exc = exc
        was_eof = self._eof
        self._eof = True
        r = self._receiver
        if r is not None:
            if not was_eof and exc is None:
                r.eof_received()
            r.connection_lost(exc)
        else:
            self._wake()
        ws, self._drain_waiters = self._drain_waiters, None
        for w in ws or ():
            if not w.done():
                if exc is not None:
                    w.set_exception(ConnectionResetError(str(exc)))
                else:
                    w.set_result(None)
        if self._closed_fut is not None and not self._closed_fut.done():
            self._closed_fut.set_result(None)

    def _pause_writing(self) -> None:
        self._write_paused = True

    def _resume_writing(self) -> None:
        self._write_paused = False
        ws, self._drain_waiters = self._drain_waiters, None
        for w in ws or ():
            if not w.done():
                w.set_result(None)
        cb = self.on_resume_writing
        if cb is not None:
            cb()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    # ------------------------------------------------------------------ reading
    @property
    def at_eof(self) -> bool:
        return self._eof and not self._buf

    @property
    def saw_eof(self) -> bool:
        """True once the peer half-closed (bytes may still be buffered)."""
        return self._eof

    @property
    def relaying(self) -> bool:
        """True while a relay owns this stream or a stream layered on it (TLS over this
        one): the relay closes it when it ends, so a handler returning must leave it open."""
        s: Stream | None = self
        while s is not None:
            if s.relayed_by is not None:
                return True
            s = s.wrapped_by
        return False

    @property
    def is_lost(self) -> bool:
        """True once the underlying connection is gone."""
        return self._lost

    def pause_reading(self) -> None:
        if not self._reading_paused and not self._lost:
            self._reading_paused = True
            self._do_pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and not self._lost:
            self._reading_paused = False
            self._do_resume_reading()

    def unread(self, data: bytes) -> None:
        """Put bytes back in front of the buffer (the shared-port sniffer hands them on)."""
        if data:
            self._buf = bytearray(data) + self._buf

    def buffered(self) -> int:
        return len(self._buf)

    def set_receiver(self, receiver: Receiver | None) -> None:
        """Switch to push mode: buffered bytes, then every new chunk, go to ``receiver``."""
        self._receiver = receiver
        if receiver is None:
            return
        if self._buf:
            data = bytes(self._buf)
            self._buf = _EMPTY
            receiver.data_received(data)
        if self._eof:
            receiver.eof_received()
            if self._lost:
                receiver.connection_lost(self._exc)
        elif self._reading_paused:
            self.resume_reading()

    def _wait(self) -> asyncio.Future[None]:
        """The future the next bytes, EOF or loss resolve (``await self._wait()``): a plain
        function, not a coroutine, so a read that waits makes no coroutine. A waiter left
        behind by a cancelled read is done, and :meth:`_wake` skips done waiters."""
        if self._receiver is not None:
            raise RuntimeError("read() while a receiver is set")
        if self._reading_paused and len(self._buf) <= self.read_limit:
            self.resume_reading()
        fut = self._waiter = asyncio.get_running_loop().create_future()
        return fut

    def _take(self, n: int) -> bytes:
        buf = self._buf
        if n >= len(buf):
            data = bytes(buf)  # the same object when ``buf`` is bytes
            self._buf = _EMPTY  # let the bytearray (and its capacity) go
        else:
            if type(buf) is bytes:  # the rest is taken in pieces: from a bytearray
                self._buf = buf = bytearray(buf)
            data = bytes(buf[:n])
            del buf[:n]  # type: ignore[union-attr]  # a bytearray
        if self._reading_paused and len(self._buf) <= self.read_limit // 2:
            self.resume_reading()
        return data

    async def read(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes; ``b""`` at EOF."""
        while not self._buf:
            if self._eof:
                return b""
            await self._wait()
        return self._take(n)

    async def readexactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if self._eof:
                got = len(self._buf)
                raise StreamClosedError(f"stream ended after {got} of {n} bytes")
            await self._wait()
        return self._take(n)

    async def readuntil(self, sep: bytes, limit: int) -> bytes:
        """Bytes up to and including ``sep``; ProtocolError beyond ``limit`` bytes."""
        start = 0
        while True:
            i = self._buf.find(sep, start)
            if i >= 0:
                if i + len(sep) > limit:
                    raise ProtocolError(f"line longer than {limit} bytes", "too_long")
                return self._take(i + len(sep))
            if len(self._buf) > limit:
                raise ProtocolError(f"line longer than {limit} bytes", "too_long")
            if self._eof:
                raise StreamClosedError(f"stream ended before {sep!r}")
            start = max(0, len(self._buf) - len(sep) + 1)
            await self._wait()

    async def read_some_into(self, minimum: int, deadline: float) -> bytes:
        """Wait until at least ``minimum`` bytes are buffered or EOF/deadline; peek them."""
        loop = asyncio.get_running_loop()
        while len(self._buf) < minimum and not self._eof:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                # a deadline (asyncio.timeout's job), not wait_for: on 3.11 wait_for starts a
                # task a loop turn later, and bytes arriving in between would wake nobody
                with Deadline(left):
                    await self._wait()
            except TimeoutError:
                break
        return bytes(self._buf)

    # ------------------------------------------------------------------ writing
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._eof_written or self._closing:
            return
        if data:
            self._do_write(data)

    def writelines(self, chunks: list[bytes]) -> None:
        for c in chunks:
            self.write(c)

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    async def drain(self) -> None:
        if self._lost:
            if self._exc is not None:
                raise ConnectionResetError(str(self._exc))
            return
        if not self._write_paused:
            return
        fut = asyncio.get_running_loop().create_future()
        if self._drain_waiters is None:
            self._drain_waiters = []
        self._drain_waiters.append(fut)
        await fut

    def write_eof(self) -> None:
        """Half-close: no more bytes from us; the peer may still send."""
        if self._eof_written or self._lost:
            return
        self._eof_written = True
        if self.can_write_eof():
            self._do_write_eof()
        else:
            self.close()

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._do_close()

    def abort(self) -> None:
        """Close now, dropping what is queued."""
        self._closing = True
        self._do_abort()

    def reset(self) -> None:
        """Abort so that the peer sees the stream was cut short, not a clean end: TCP RST
        (SO_LINGER 0), HTTP/2 RST_STREAM, an SSH channel closed without EOF. The relay calls
        it on both sides when one ended by a reset, was cancelled or timed out."""
        self._closing = True
        self._do_reset()

    def is_closing(self) -> bool:
        return self._closing or self._lost

    async def wait_closed(self) -> None:
        if self._lost:
            return
        if self._closed_fut is None:
            self._closed_fut = asyncio.get_running_loop().create_future()
        await self._closed_fut

    async def aclose(self, timeout: float = 5.0) -> None:
        self.close()
        try:
            await asyncio.wait_for(self.wait_closed(), timeout)
        except TimeoutError:
            self.abort()


class TcpStream(Stream, asyncio.Protocol):
    """A kernel TCP socket driven by an asyncio transport (no StreamReader copies)."""

    __slots__ = ("transport",)

    transport: asyncio.Transport | None
    #: transport write buffer above which the relay pauses the other side
    write_high: int = 256 * 1024

    def __init__(self, meta: StreamMeta | None = None) -> None:
        Stream.__init__(self, meta)
        self.transport = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # an asyncio.Transport (uvloop's are not subclasses); no typing.cast call per stream
        t: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport = t
        t.set_write_buffer_limits(high=self.write_high)
        # TCP_NODELAY: asyncio and uvloop set it on every TCP transport themselves.
        # Addresses already known (a dialer knows whom it dialed, a listener bound to one
        # address knows its own) are not asked of the kernel: on uvloop each ask builds a
        # socket object and makes a syscall, per connection. ``local_address()`` asks late.
        meta = self.meta
        if meta.remote is None:
            peer = t.get_extra_info("peername")
            # an IPv4 (host, port) is kept as is; IPv6 has flow info and scope id
            if isinstance(peer, tuple):
                meta.remote = peer if len(peer) == 2 else (str(peer[0]), int(peer[1]))

    def data_received(self, data: bytes) -> None:
        self._on_data(data)

    def eof_received(self) -> bool:
        self._on_eof()
        return True  # keep the write side open: half-close

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost(exc)

    def pause_writing(self) -> None:
        self._pause_writing()

    def resume_writing(self) -> None:
        self._resume_writing()

    # Stream
    def _do_write(self, data: bytes | bytearray | memoryview) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            t.write(data)

    def _do_write_eof(self) -> None:
        t = self.transport
        if t is not None and not t.is_closing():
            if self._eof:
                # both directions done: a normal close flushes and sends FIN
                self.close()
            else:
                t.write_eof()

    def can_write_eof(self) -> bool:
        t = self.transport
        return t is not None and t.can_write_eof()

    def _do_close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _do_abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _do_reset(self) -> None:
        t = self.transport
        if t is None:
            return
        if not self._lost:
            s = t.get_extra_info("socket")
            if s is not None:
                with contextlib.suppress(OSError, AttributeError, ValueError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)  # close → RST
        t.abort()

    def _do_pause_reading(self) -> None:
        t = self.transport
        if t is not None and t.is_reading():
            t.pause_reading()

    def _do_resume_reading(self) -> None:
        t = self.transport
        if t is not None and not t.is_reading() and not t.is_closing():
            t.resume_reading()

    def get_write_buffer_size(self) -> int:
        t = self.transport
        return 0 if t is None else t.get_write_buffer_size()

    def raw_fd(self) -> int | None:
        """The kernel stream socket's fd when the bytes on it are this stream's bytes (no TLS
        layer in between, transport open): the relay's splice fast path uses it. Else None."""
        t = self.transport
        if t is None or t.is_closing() or self._lost or self._closing:
            return None
        if t.get_extra_info("sslcontext") is not None or \
                t.get_extra_info("ssl_object") is not None:
            return None
        s = t.get_extra_info("socket")
        if s is None or getattr(s, "type", None) != socket.SOCK_STREAM:
            return None
        fd = int(s.fileno())
        return fd if fd >= 0 else None

    def set_write_buffer_limits(self, high: int, low: int | None = None) -> None:
        """Flow control of the transport: ``pause_writing`` above ``high``, resume at ``low``."""
        t = self.transport
        if t is not None and not t.is_closing():
            t.set_write_buffer_limits(high, low)

    def local_address(self) -> tuple[str, int] | None:
        """This end's address (``meta.local``), asked of the kernel the first time."""
        meta = self.meta
        if meta.local is None and self.transport is not None:
            local = self.transport.get_extra_info("sockname")
            if isinstance(local, tuple):
                meta.local = local if len(local) == 2 else (str(local[0]), int(local[1]))
        return meta.local

    def get_socket(self) -> socket.socket | None:
        t = self.transport
        if t is None:
            return None
        s = t.get_extra_info("socket")
        return s if isinstance(s, socket.socket) or hasattr(s, "fileno") else None


class MemoryStream(Stream):
    """One end of an in-memory pipe (tests, embedding, adapters)."""

    __slots__ = ("peer",)

    peer: MemoryStream | None

    def __init__(self, meta: StreamMeta | None = None) -> None:
        super().__init__(meta)
        self.peer = None

    def _do_write(self, data: bytes | bytearray | memoryview) -> None:
        if self.peer is not None and not self.peer._lost:
            self.peer._on_data(bytes(data))

    def _do_write_eof(self) -> None:
        if self.peer is not None:
            self.peer._on_eof()
            if self._eof:
                self._finish()

    def _finish(self) -> None:
        p = self.peer
        self._on_lost(None)
        if p is not None:
            p._on_lost(None)

    def _do_close(self) -> None:
        loop = asyncio.get_event_loop()
        loop.call_soon(self._finish)

    def _do_reset(self) -> None:
        p = self.peer
        self._on_lost(None)
        if p is not None:
            p._on_lost(ConnectionResetError("in-memory stream reset by its peer"))


def stream_pair(
    a: StreamMeta | None = None, b: StreamMeta | None = None
) -> tuple[MemoryStream, MemoryStream]:
    """Two connected in-memory streams: bytes written to one are read from the other."""
    x, y = MemoryStream(a), MemoryStream(b)
    x.peer, y.peer = y, x
    return x, y
