"""A :class:`~ugate_core.Stream` over a message transport (WebSocket, WebRTC data channel).

One stream is one socket or channel (the destination is in the URL path or the channel label,
or in a :mod:`preamble <ugate_core.preamble>`). The mapping, both ways:

* bytes written become binary messages of at most ``max_message`` bytes (a larger write is
  split; message boundaries carry no meaning);
* an **empty** binary message is a half-close (FIN): :meth:`Stream.write_eof` sends one, and
  one received is the stream's EOF;
* a transport close is a full close. A close that comes before the peer's FIN means the stream
  was cut short (a reset), never a clean end; a message after the peer's FIN, or one larger than
  ``max_message``, is a protocol error (``error``) that closes the transport with its reason.

Backpressure: after each write, a transport whose buffered amount is above ``high_water``
pauses writing (the relay then pauses the other side's source); the transport's drain callback,
called once its buffered amount fell to ``low_water`` or below, resumes it. So a peer that stops
reading (a stalled browser tab) holds at most ``high_water`` plus one write (for the relay, one
source chunk: at most 256 KiB from an asyncio TCP socket) in the gateway.

The transport is anything that fits :class:`MessageTransport`; :func:`message_stream_pair` gives
two in-memory ends for tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

from .errors import ProtocolError
from .stream import Stream, StreamMeta

log = logging.getLogger("ugate.message_stream")

#: default largest message, both ways: WebSocket peers take it; WebRTC data channels should
#: use 16 KiB (what every browser's SCTP stack delivers whole)
MAX_MESSAGE = 64 * 1024
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class MessageTransport(Protocol):
    """What :class:`MessageStream` needs of a message transport (an ``RTCDataChannel`` or a
    WebSocket connection, adapted)."""

    def send(self, message: bytes) -> None:
        """Queue one binary message (``b""`` included: it is the FIN)."""

    @property
    def buffered_amount(self) -> int:
        """Bytes queued by :meth:`send` and not yet handed to the network."""

    def close(self, error: str | None = None) -> None:
        """Close: ``None`` after queued messages (a clean close), else at once, telling the
        peer it was cut short (WebSocket 1011 with ``error`` as its reason, a data channel
        simply closes). Calls ``on_close`` when done; idempotent."""

    def set_handlers(self, on_message: Callable[[bytes], None],
                     on_close: Callable[[BaseException | None], None],
                     on_drain: Callable[[], None], low_water: int) -> None:
        """Deliver each received binary message to ``on_message``; call ``on_close(exc)``
        once when the transport closed (``exc`` for a failure, ``None`` for a close); call
        ``on_drain()`` when :attr:`buffered_amount` fell to ``low_water`` or below
        (``bufferedAmountLowThreshold``)."""

    def pause_reading(self) -> None:
        """Stop delivering messages for now (may do nothing where the transport cannot)."""

    def resume_reading(self) -> None:
        """Deliver messages again."""


class MessageStream(Stream):
    """A :class:`Stream` over a :class:`MessageTransport` (see the module docstring)."""

    __slots__ = ("_fin_sent", "error", "high_water", "low_water", "max_message", "transport")

    def __init__(self, transport: MessageTransport, meta: StreamMeta | None = None, *,
                 max_message: int = MAX_MESSAGE, high_water: int = HIGH_WATER,
                 low_water: int = LOW_WATER) -> None:
        super().__init__(meta)
        if max_message < 1 or not 0 <= low_water <= high_water:
            raise ValueError(f"message stream: max_message {max_message}, low_water "
                             f"{low_water}, high_water {high_water}: need max_message >= 1 "
                             "and 0 <= low_water <= high_water")
        self.transport = transport
        self.max_message = max_message
        self.high_water = high_water
        self.low_water = low_water
        #: the protocol error that closed the stream (oversized message, bytes after FIN)
        self.error: ProtocolError | None = None
        self._fin_sent = False
        transport.set_handlers(self._message, self._closed, self._drained, low_water)

    # ------------------------------------------------------------------ from the transport
    def _message(self, data: bytes) -> None:
        if self._lost or self.error is not None:
            return
        if len(data) > self.max_message:
            self._fail(f"message of {len(data)} bytes over the limit of {self.max_message}",
                       "message_too_large")
        elif self._eof:
            self._fail(f"message of {len(data)} bytes after the end-of-stream message",
                       "message_after_fin")
        elif data:
            self._on_data(bytes(data))
        else:
            self._on_eof()
            if self._fin_sent:  # both directions done: close like TCP after two FINs
                self.close()

    def _closed(self, exc: BaseException | None) -> None:
        if exc is None and not self._eof and not self._closing:
            # the peer closed before its FIN: the stream was cut short
            exc = ConnectionResetError("message transport closed before its end-of-stream "
                                       "message")
        self._on_lost(exc)

    def _drained(self) -> None:
        if self._write_paused and self.transport.buffered_amount <= self.low_water:
            self._resume_writing()

    def _fail(self, message: str, reason: str) -> None:
        err = self.error = ProtocolError(f"message stream {self.meta.id}: {message}", reason)
        log.info("message_stream_error stream=%d reason=%s detail=%r", self.meta.id, reason,
                 message)
        self._closing = True
        self.transport.close(str(err))
        self._on_lost(err)

    # ------------------------------------------------------------------ Stream
    def _do_write(self, data: bytes | bytearray | memoryview) -> None:
        if self._lost:
            return
        t, n = self.transport, self.max_message
        if len(data) <= n:
            t.send(bytes(data))
        else:
            mv = memoryview(data)
            for i in range(0, len(mv), n):
                t.send(bytes(mv[i : i + n]))
        if not self._write_paused and t.buffered_amount > self.high_water:
            self._pause_writing()

    def _do_write_eof(self) -> None:
        if self._lost:
            return
        self._fin_sent = True
        self.transport.send(b"")
        if self._eof:
            self.close()

    def _do_close(self) -> None:
        self.transport.close()

    def _do_abort(self) -> None:
        self.transport.close("aborted")

    def _do_reset(self) -> None:
        self.transport.close("reset")

    def _do_pause_reading(self) -> None:
        self.transport.pause_reading()

    def _do_resume_reading(self) -> None:
        self.transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self.transport.buffered_amount


class MemoryMessageTransport:
    """One end of an in-memory message transport (tests): messages are delivered on the next
    loop turns while the receiving end reads; ``buffered_amount`` counts the bytes the peer has
    not taken yet, so a peer that pauses reading is a stalled consumer."""

    def __init__(self) -> None:
        self.peer: MemoryMessageTransport | None = None
        self.queue: deque[bytes | None] = deque()  # None: the close, after the messages
        self._buffered = 0
        #: every message sent, in order (tests read it)
        self.sent: list[bytes] = []
        #: the largest ``buffered_amount`` seen
        self.max_buffered = 0
        self.reading = True
        self.closed = False
        self.close_error: str | None = None
        self._scheduled = False
        self._on_message: Callable[[bytes], None] = lambda _m: None
        self._on_close: Callable[[BaseException | None], None] = lambda _e: None
        self._on_drain: Callable[[], None] = lambda: None
        self._low = 0
        self._close_reported = False

    def set_handlers(self, on_message: Callable[[bytes], None],
                     on_close: Callable[[BaseException | None], None],
                     on_drain: Callable[[], None], low_water: int) -> None:
        self._on_message, self._on_close, self._on_drain = on_message, on_close, on_drain
        self._low = low_water

    @property
    def buffered_amount(self) -> int:
        return self._buffered

    def send(self, message: bytes) -> None:
        if self.closed:
            return
        self.sent.append(message)
        self.queue.append(message)
        self._buffered += len(message)
        self.max_buffered = max(self.max_buffered, self._buffered)
        self._schedule()

    def close(self, error: str | None = None) -> None:
        if self._close_reported or (self.closed and (error is None or self.close_error)):
            return  # an abort after a clean close still waiting for the peer goes on
        self.closed = True
        self.close_error = error
        if error is not None:
            self.queue.clear()  # cut short: what is queued is dropped
            self._buffered = 0
        self.queue.append(None)
        self._schedule()

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True
        if self.peer is not None:
            self.peer._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._deliver)

    def _deliver(self) -> None:
        """Hand queued messages to the peer while it reads."""
        self._scheduled = False
        p = self.peer
        was_above = self._buffered > self._low
        while self.queue and p is not None and (p.reading or self.queue[0] is None):
            m = self.queue.popleft()
            if m is None:
                self._report_close(None)
                if not p.closed:
                    p.closed = True
                    p.queue.clear()
                    p._buffered = 0
                p._report_close(None if self.close_error is None
                                else ConnectionResetError(self.close_error))
                break
            self._buffered -= len(m)
            p._on_message(m)
        if was_above and self._buffered <= self._low:
            self._on_drain()

    def _report_close(self, exc: BaseException | None) -> None:
        if not self._close_reported:
            self._close_reported = True
            self._on_close(exc)


def message_stream_pair(meta_a: StreamMeta | None = None, meta_b: StreamMeta | None = None,
                        **kw: int) -> tuple[MessageStream, MessageStream]:
    """Two :class:`MessageStream` ends over a :class:`MemoryMessageTransport` pair (tests);
    ``kw`` are ``MessageStream``'s limits, for both ends."""
    ta, tb = MemoryMessageTransport(), MemoryMessageTransport()
    ta.peer, tb.peer = tb, ta
    return MessageStream(ta, meta_a, **kw), MessageStream(tb, meta_b, **kw)
