"""A WebSocket as a core :class:`~ugate_core.MessageTransport`: websockets' sans-IO
``Protocol`` over a byte :class:`~ugate_core.Stream` (a TCP or TLS connection, an HTTP/2
stream of an RFC 8441 CONNECT), so that :class:`~ugate_core.MessageStream` makes the WebSocket
one ugate stream.

* Binary messages are delivered whole (fragments joined, at most ``max_message`` bytes:
  larger closes with 1009); a text message closes with 1003 (this endpoint carries bytes).
* ``buffered_amount`` is the byte stream's write buffer, and ``on_drain`` comes from its
  ``on_resume_writing``: a client that stops reading pauses the relay behind it.
* Pings are answered by the protocol; ``idle_timeout`` seconds without a frame either way
  closes with 1001.
* Once a close frame was sent, the peer has ``CLOSE_TIMEOUT`` seconds to answer before the
  connection is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from websockets.exceptions import PayloadTooBig
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import Protocol, State

from ugate_core import MessageStream, ProtocolError, Stream, StreamMeta

log = logging.getLogger("ugate.ws")
#: the websockets protocol objects' own logger: they log every connection's close at INFO,
#: which ugate's ``stream_closed`` line already says; warnings and errors still pass
#: (an embedding program that sets this logger's level gets the rest back)
FRAMES_LOG = logging.getLogger("ugate.ws.frames")
if FRAMES_LOG.level == logging.NOTSET:
    FRAMES_LOG.setLevel(logging.WARNING)

CLOSE_TIMEOUT = 5.0
#: ``buffered_amount`` of a byte stream that is write-paused but reports no buffer size
PAUSED_AMOUNT = 1 << 40

#: close code -> the reason name used on metrics and logs
REASONS = {
    CloseCode.UNSUPPORTED_DATA: "text_message",
    CloseCode.MESSAGE_TOO_BIG: "message_too_large",
    CloseCode.PROTOCOL_ERROR: "ws_protocol_error",
    CloseCode.GOING_AWAY: "idle_timeout",
}


def message_stream(transport: WsTransport, meta: StreamMeta, max_message: int) -> MessageStream:
    """The :class:`MessageStream` over ``transport``; it owns the byte stream below
    (``Stream.wrapped_by``), so a listener does not close that when its handler returns."""
    ms = MessageStream(transport, meta, max_message=max_message)
    transport.stream.wrapped_by = ms
    return ms


class WsTransport:
    """One WebSocket, open (the handshake is done), over ``stream``."""

    def __init__(self, stream: Stream, proto: Protocol, *, max_message: int,
                 idle_timeout: float, on_error: Callable[[str, str], None] | None = None,
                 early: list[Frame] | None = None) -> None:
        self.stream = stream
        self.proto = proto
        self.max_message = max_message
        self.idle_timeout = idle_timeout
        #: called once with (reason, detail) when the WebSocket fails (counted by the caller)
        self.on_error = on_error
        self._frags: list[bytes] = []
        self._frag_len = 0
        self._reported = False
        self._low = 0
        self._on_message: Callable[[bytes], None] = lambda _m: None
        self._on_close: Callable[[BaseException | None], None] = lambda _e: None
        self._on_drain: Callable[[], None] = lambda: None
        self._loop = asyncio.get_running_loop()
        self._active = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._error: BaseException | None = None
        #: frames that came with the handshake's answer, delivered once handlers are set
        self._early = early or []

    # ------------------------------------------------------------------ MessageTransport
    def set_handlers(self, on_message: Callable[[bytes], None],
                     on_close: Callable[[BaseException | None], None],
                     on_drain: Callable[[], None], low_water: int) -> None:
        self._on_message, self._on_close, self._on_drain = on_message, on_close, on_drain
        self._low = low_water
        self.stream.on_resume_writing = self._drained
        self._timer = self._loop.call_later(self.idle_timeout, self._idle)
        early, self._early = self._early, []
        self._process(early)  # also what the handshake's answer brought (a protocol error)
        if not self._reported:
            self.stream.set_receiver(self)

    @property
    def buffered_amount(self) -> int:
        n = self.stream.get_write_buffer_size()
        if not n and self.stream.write_paused:
            # a stream that queues elsewhere and only says it is paused (an HTTP/2 tunnel
            # queues in its connection): count it as full, so the message stream pauses too
            return PAUSED_AMOUNT
        return n

    def send(self, message: bytes) -> None:
        if self.proto.state is State.OPEN:
            self._active = self._loop.time()
            self.proto.send_binary(message)
            self._flush()

    def close(self, error: str | None = None) -> None:
        if self._reported:
            return
        if error is None:
            if self.proto.state is State.OPEN:
                self.proto.send_close(CloseCode.NORMAL_CLOSURE)
                self._flush()
                self._arm_close_timer()
            return
        self._fail(CloseCode.INTERNAL_ERROR, error, None)

    def pause_reading(self) -> None:
        self.stream.pause_reading()

    def resume_reading(self) -> None:
        self.stream.resume_reading()

    # ------------------------------------------------------------------ Receiver
    def data_received(self, data: bytes) -> None:
        self._active = self._loop.time()
        self.proto.receive_data(data)
        self._process()

    def eof_received(self) -> None:
        self.proto.receive_eof()
        self._process()

    def connection_lost(self, exc: BaseException | None) -> None:
        if exc is None and self._error is None and not self._clean():
            exc = ConnectionResetError(self._why_closed())
        self._report(self._error or exc)

    # ------------------------------------------------------------------ internals
    def _clean(self) -> bool:
        rcvd = self.proto.close_rcvd
        return rcvd is not None and rcvd.code in (CloseCode.NORMAL_CLOSURE,
                                                  CloseCode.GOING_AWAY)

    def _why_closed(self) -> str:
        rcvd = self.proto.close_rcvd
        if rcvd is None:
            return "WebSocket connection closed without a close frame"
        return f"WebSocket closed by the peer with {int(rcvd.code)} {rcvd.reason!r}"

    def _process(self, events: Sequence[object] | None = None) -> None:
        for ev in self.proto.events_received() if events is None else events:
            if not isinstance(ev, Frame):
                continue
            op = ev.opcode
            if op is Opcode.TEXT:
                self._fail(CloseCode.UNSUPPORTED_DATA, "text messages are not accepted: "
                           "this endpoint carries binary messages only", "text_message")
                return
            if op is Opcode.BINARY or op is Opcode.CONT:
                self._frame(ev)
            elif op is Opcode.CLOSE:
                self._arm_close_timer()
        exc = self.proto.parser_exc
        if exc is not None and self._error is None:
            code = (CloseCode.MESSAGE_TOO_BIG if isinstance(exc, PayloadTooBig)
                    else CloseCode.PROTOCOL_ERROR)
            reason = REASONS[code]
            self._error = ProtocolError(f"WebSocket: {exc}", reason)
            if self.on_error is not None:
                self.on_error(reason, str(exc))
            self._arm_close_timer()
        self._flush()

    def _frame(self, ev: Frame) -> None:
        if ev.fin and not self._frags:
            if self._reported:
                return
            self._on_message(bytes(ev.data))
            return
        self._frag_len += len(ev.data)
        if self._frag_len > self.max_message:
            self._fail(CloseCode.MESSAGE_TOO_BIG, f"message over {self.max_message} bytes",
                       "message_too_large")
            return
        self._frags.append(bytes(ev.data))
        if ev.fin:
            data = b"".join(self._frags)
            self._frags, self._frag_len = [], 0
            self._on_message(data)

    def _flush(self) -> None:
        s = self.stream
        for d in self.proto.data_to_send():
            if d:
                s.write(d)
            elif not s.is_closing():
                s.write_eof()
        if self.proto.state is State.CLOSED or (self.proto.close_expected()
                                                and self.proto.state is State.CLOSING
                                                and self.proto.close_rcvd is not None
                                                and self.proto.close_sent is not None):
            s.close()

    def _fail(self, code: int, message: str, reason: str | None) -> None:
        if self._error is None:
            self._error = (ProtocolError(f"WebSocket: {message}", reason) if reason
                           else ConnectionResetError(f"WebSocket closed: {message}"))
            if reason and self.on_error is not None:
                self.on_error(reason, message)
        if self.proto.state is State.OPEN:
            self.proto.fail(code, message[:120])
        self._flush()
        self.stream.close()
        self._arm_close_timer()
        self._report(self._error)

    def _report(self, exc: BaseException | None) -> None:
        for t in (self._timer, self._close_timer):
            if t is not None:
                t.cancel()
        if self._reported:
            return
        self._reported = True
        self._on_close(exc)

    def _arm_close_timer(self) -> None:
        if self._close_timer is None:
            self._close_timer = self._loop.call_later(CLOSE_TIMEOUT, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self.stream.abort()
        self._report(self._error or ConnectionResetError("WebSocket close handshake timed out"))

    def _idle(self) -> None:
        self._timer = None
        if self._reported:
            return
        left = self._active + self.idle_timeout - self._loop.time()
        if left > 0:
            self._timer = self._loop.call_later(left, self._idle)
            return
        self._fail(CloseCode.GOING_AWAY, f"idle for {self.idle_timeout:g} s", "idle_timeout")

    def _drained(self) -> None:
        if self.buffered_amount <= self._low:
            self._on_drain()
