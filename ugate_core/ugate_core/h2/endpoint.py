"""The asyncio side of an :class:`~ugate_core.h2.H2Codec`: one HTTP/2 connection over a core
:class:`~ugate_core.Stream`, with the I/O and flow-control policy HBONE's session and the HTTP
proxy's connections share. Subclasses say what a stream is (an :class:`H2Flow`) and what
headers, resets and GOAWAY mean to them.

* **sending**: :meth:`H2Endpoint.write` frames a stream's bytes within the peer's stream and
  connection windows; what does not fit waits in the stream's own queue and goes out as
  WINDOW_UPDATEs arrive. A stream is told to stop producing (:meth:`H2Flow._tx_pause`) while
  its queue is not empty or the socket's buffer is full, and to go on
  (:meth:`H2Flow._tx_resume`) when both have cleared. Nothing buffers a whole body.
* **receiving**: credit goes back to the peer once the application consumed the bytes. A
  stream's bytes not consumed yet (:meth:`H2Endpoint.hold`) withhold its stream-level credit,
  so the peer stops on that stream only; their connection-level credit goes back at once while
  all streams together hold at most half the connection window: a stalled stream does not
  stall the others. Updates are batched (a quarter window at a time).
* **output**: frames queued while a received chunk is processed go out in one write after it;
  :meth:`H2Endpoint.flush_soon` collects the small writes of many streams in one event-loop
  turn into one socket write. Reading pauses while control frames we owe (PING and SETTINGS
  acks, resets) pile up unread by the peer.
* a connection error by the peer (the codec raised) is recorded in ``error``; the GOAWAY the
  codec queued is flushed and the connection closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Generic, TypeVar

from ..stream import Stream
from .codec import H2Codec
from .flood import DEFAULT_LIMITS, FloodLimits
from .frames import H2ConnectionError, H2Error, H2ErrorCode, H2Setting, H2UsageError
from .handler import H2Handler

if TYPE_CHECKING:
    from ..types import ListenerContext

log = logging.getLogger("ugate.h2")

#: queued output beyond this is written at once, not at the end of the turn
FLUSH_BYTES = 256 * 1024



#: seconds a connection that sent GOAWAY goes on reading (and dropping) the peer's bytes
#: before it closes. Closing a socket with unread bytes makes the kernel send a reset, and a
#: reset makes the peer's kernel drop what it had not read yet: a rapid-reset attacker still
#: writing lost the ENHANCE_YOUR_CALM GOAWAY that way in 11 of 18 soak runs
LINGER = 1.0


class _Drop:
    """The receiver of a lingering connection: drops bytes, closes at the peer's end or at the
    deadline, then calls ``then``."""

    __slots__ = ("stream", "then", "timer")

    def __init__(self, stream: Stream, then: Callable[[], None]) -> None:
        self.stream = stream
        self.then: Callable[[], None] | None = then
        self.timer = asyncio.get_running_loop().call_later(LINGER, self.end)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> None:
        self.end()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.end()

    def end(self) -> None:
        self.timer.cancel()
        self.stream.close()
        then, self.then = self.then, None
        if then is not None:
            then()


def _linger(t: Stream, then: Callable[[], None]) -> None:
    """Close ``t`` gracefully: what is queued (a GOAWAY) goes out with a FIN where the stream
    can half-close, the peer's bytes are read and dropped until its end or :data:`LINGER`,
    then ``then()``."""
    if t.can_write_eof():
        t.write_eof()
    t.set_receiver(_Drop(t, then))

class H2Flow:
    """What an :class:`H2Endpoint` keeps per stream: DATA waiting for send windows, receive
    credit not handed back yet, which sides ended. An application's stream class derives
    from it (naming the attributes in its ``__slots__`` if it has them), calls
    :meth:`_flow_init`, and overrides the hooks."""

    sid: int
    _pending: deque[bytes | memoryview]
    _pending_len: int
    _end_queued: bool
    _local_ended: bool
    _remote_ended: bool
    _finished: bool
    _unacked: int
    _held: int
    _tx_blocked: bool

    def _flow_init(self, sid: int) -> None:
        self.sid = sid
        self._pending = deque()
        self._pending_len = 0
        self._end_queued = False
        self._local_ended = False
        self._remote_ended = False
        self._finished = False
        self._unacked = 0
        self._held = 0
        self._tx_blocked = False

    @property
    def queued(self) -> int:
        """Bytes written to this stream that the flow-control windows have not taken yet (a
        stream adapter's ``get_write_buffer_size``)."""
        return self._pending_len

    # ------------------------------------------------------------------ hooks
    def _flow_data(self, data: bytes) -> bool:
        """The peer's body bytes. True: consumed now (credit goes back); False: the
        application will report them with :meth:`H2Endpoint.consumed`."""
        return True

    def _tx_pause(self) -> None:
        """Stop producing: the stream's queue or the socket's buffer is full."""

    def _tx_resume(self) -> None:
        """Writing may go on."""


F = TypeVar("F", bound=H2Flow)


class H2Endpoint(H2Handler, Generic[F]):
    """One HTTP/2 connection over ``transport``; ``streams`` are the application's
    :class:`H2Flow` objects by stream id (the subclass adds and removes them)."""

    def __init__(self, transport: Stream, *, client: bool, settings: Mapping[int, int],
                 connection_window: int, name: str = "",
                 limits: FloodLimits = DEFAULT_LIMITS) -> None:
        self.transport = transport
        self.client = client
        self.name = name or f"{'client' if client else 'server'}-{transport.meta.id}"
        self.codec = H2Codec(self, client=client, settings=settings,
                             connection_window=connection_window, limits=limits,
                             clock=asyncio.get_running_loop().time)
        self.streams: dict[int, F] = {}
        self.closed = False
        self.goaway_sent = False
        self.goaway_received = False
        #: what ended the connection badly: ``h2_protocol_error`` (the peer broke a rule),
        #: ``h2_flood_<kind>`` (it sent more cheap frames than ``limits`` allow: GOAWAY
        #: ENHANCE_YOUR_CALM) or ``h2_internal_error`` (a bug of ours), and the detail; ""
        #: when nothing did
        self.error_reason = ""
        self.error = ""
        self._blocked: dict[F, None] = {}  # ordered set: streams with queued bytes
        self._tx_waiting: set[F] = set()  # streams told to pause because of the socket
        self._tx_paused = False
        self._dispatching = False
        self._conn_unacked = 0
        self._conn_deferred = 0
        self._held = 0
        window = self.codec.local_settings[H2Setting.INITIAL_WINDOW_SIZE]
        self._stream_step = max(window // 4, 1)
        self._conn_step = max(connection_window // 4, 1)
        self._budget = connection_window // 2
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._flush_handle: asyncio.Handle | None = None
        self._done: asyncio.Future[None] = loop.create_future()

    # ------------------------------------------------------------------ lifecycle
    def start(self, upgrade_settings: bytes | None = None) -> None:
        """Send our preface and SETTINGS, then take the transport's bytes (push mode).
        ``upgrade_settings`` (server): the ``HTTP2-Settings`` of an ``Upgrade: h2c`` request,
        which becomes stream 1 (see :meth:`H2Codec.initiate_upgrade_connection`)."""
        if upgrade_settings is not None:
            self.codec.initiate_upgrade_connection(upgrade_settings)
        else:
            self.codec.initiate_connection()
        self._flush()
        self.transport.on_resume_writing = self._tx_resumed
        self.transport.set_receiver(self)

    @property
    def usable(self) -> bool:
        """True while new streams may be opened here."""
        return not (self.closed or self.goaway_received or self.goaway_sent)

    def capacity(self) -> int:
        """How many more streams the peer lets us open now."""
        if not self.usable:
            return 0
        return max(0, self.codec.remote_max_streams - max(len(self.streams),
                                                          self.codec.open_streams))

    async def wait_closed(self) -> None:
        await asyncio.shield(self._done)

    def goaway(self, code: int = H2ErrorCode.NO_ERROR) -> None:
        """Tell the peer to open no more streams; running streams finish; then close."""
        if self.closed or self.goaway_sent:
            return
        self.goaway_sent = True
        self.codec.goaway(code)
        self._flush()
        if not self.streams or code != H2ErrorCode.NO_ERROR:
            self.close()

    def close(self, exc: BaseException | None = None) -> None:
        """Flush what is queued (a GOAWAY) and close; streams still open are lost with
        ``exc``."""
        self._shut(exc, abort=False)

    def abort(self, exc: BaseException | None = None) -> None:
        """Write what is queued and drop the connection (no waiting for the socket)."""
        self._shut(exc, abort=True)

    def _shut(self, exc: BaseException | None, *, abort: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self._dispatching = False
        self._flush()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        err = exc or ConnectionResetError(f"HTTP/2 connection {self.name} closed")
        for f in list(self.streams.values()):
            self._stream_lost(f, err)
        self.streams.clear()
        self._blocked.clear()
        self._tx_waiting.clear()
        t = self.transport
        t.set_receiver(None)
        t.on_resume_writing = None
        linger = not abort and (self.goaway_sent or self.codec.goaway_sent is not None)
        if abort:
            t.abort()
        elif linger:
            # the peer must get to read the GOAWAY (ENHANCE_YOUR_CALM, ...): wait_closed()
            # returns once it lingered, so the listener does not close the socket under it
            _linger(t, self._set_done)
        else:
            t.close()
        if not linger:
            self._set_done()
        self._closed()

    def _set_done(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def account(self, ctx: ListenerContext, protocol_error: str = "h2_protocol_error") -> None:
        """Once the connection ended (server side): add its peer-caused resets to
        ``ugate_h2_resets`` and count and log what ended it badly as a rejection (reason
        :attr:`error_reason`; ``protocol_error`` names ``h2_protocol_error``)."""
        m = ctx.gateway.metrics
        c = self.codec
        if c.resets_received:
            m.tally(m.h2_resets, ctx.name, "peer").n += c.resets_received
        if c.resets_sent:
            m.tally(m.h2_resets, ctx.name, "refused").n += c.resets_sent
        reason = self.error_reason
        if reason:
            if reason == "h2_protocol_error":
                reason = protocol_error
            ctx.reject(reason, self.error, self.transport.meta)

    # ------------------------------------------------------------------ subclass hooks
    def _stream_lost(self, f: F, exc: BaseException) -> None:
        """The connection closed under ``f``."""

    def _closed(self) -> None:
        """The connection closed (after every stream was lost)."""

    def _remote_end(self, f: F) -> None:
        """The peer ended its side of ``f`` (END_STREAM on DATA)."""

    def _local_end(self, f: F) -> None:
        """END_STREAM went out on ``f`` (its queue drained)."""

    def _protocol_error(self, e: H2ConnectionError) -> None:
        """The peer broke a connection rule (``self.error`` says how); the connection closes
        after this. A server logs it through :meth:`account` (at a bounded rate: clients
        flood), so only a client's is logged here at INFO."""
        log.log(logging.INFO if self.client else logging.DEBUG, "h2_protocol_error conn=%s "
                "error=%r", self.name, str(e))

    # ------------------------------------------------------------------ Receiver (push)
    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._dispatching = True
        try:
            self.codec.receive_data(data)
        except H2ConnectionError as e:
            flood = self.codec.flood
            self.error_reason = f"h2_flood_{flood}" if flood else "h2_protocol_error"
            self.error = f"HTTP/2 connection {self.name}: protocol error: {e}"
            self._protocol_error(e)
            self.close(ConnectionAbortedError(self.error))  # flushes the GOAWAY first
            return
        except Exception as e:  # a bug: close cleanly, never crash the loop
            log.exception("h2_internal_error conn=%s", self.name)
            self.error_reason = "h2_internal_error"
            self.error = f"HTTP/2 connection {self.name}: internal error: {e!r}"
            self.close(e)
            return
        self._dispatching = False
        self._flush()
        t = self.transport
        # control frames we owe pile up if the peer reads nothing: stop reading until it does
        if t.write_paused and t.get_write_buffer_size() > 4 * FLUSH_BYTES:
            t.pause_reading()

    def eof_received(self) -> None:
        self.close(None if not self.streams else ConnectionResetError(
            f"HTTP/2 connection {self.name}: peer closed with {len(self.streams)} streams open"))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.close(exc or ConnectionResetError(f"HTTP/2 connection {self.name} lost"))

    # ------------------------------------------------------------------ H2Handler
    def on_data(self, sid: int, data: bytes, flow_len: int, end_stream: bool) -> None:
        f = self.streams.get(sid)
        if f is None:
            self._conn_ack(flow_len)
            return
        if f._flow_data(data):
            if flow_len:
                self._conn_ack(flow_len)
                self._stream_ack(f, flow_len)
        elif flow_len:
            self.hold(f, flow_len)
        if end_stream:
            self._remote_end(f)

    def on_window(self, sid: int) -> None:
        if not self._blocked:
            return
        if sid == 0:
            self._drain_all()
        else:
            f = self.streams.get(sid)
            if f is not None and f in self._blocked:
                self._drain(f)

    def on_settings(self, changed: dict[int, int]) -> None:
        if H2Setting.INITIAL_WINDOW_SIZE in changed and self._blocked:
            self._drain_all()

    # ------------------------------------------------------------------ flow control: in
    def _conn_ack(self, n: int) -> None:
        u = self._conn_unacked + n
        if u >= self._conn_step:
            self._conn_unacked = 0
            with contextlib.suppress(H2Error):
                self.codec.window_update(0, u)
        else:
            self._conn_unacked = u

    def _stream_ack(self, f: F, n: int) -> None:
        u = f._unacked + n
        if u >= self._stream_step and not f._remote_ended and not f._finished:
            f._unacked = 0
            with contextlib.suppress(H2Error):
                self.codec.window_update(f.sid, u)
        else:
            f._unacked = u

    def hold(self, f: F, n: int) -> None:
        """``n`` bytes of credit for ``f`` wait until the application consumes them."""
        f._held += n
        self._held += n
        if self._held > self._budget:
            self._conn_deferred += n
        else:
            self._conn_ack(n)

    def consumed(self, f: F, n: int | None = None) -> None:
        """The application consumed ``n`` (default: all) of the bytes ``f`` holds."""
        held = f._held
        if n is None or n > held:
            n = held
        if not n:
            return
        f._held = held - n
        self._held -= n
        if self._conn_deferred and self._held <= self._budget:
            d, self._conn_deferred = self._conn_deferred, 0
            self._conn_ack(d)
        self._stream_ack(f, n)
        if not self._dispatching:
            self.flush_soon()

    def _forget_flow(self, f: F) -> None:
        """``f`` is finished: drop its queue, give back the connection credit it held."""
        f._finished = True
        self._blocked.pop(f, None)
        self._tx_waiting.discard(f)
        f._pending.clear()
        f._pending_len = 0
        held = f._held
        if held:
            f._held = 0
            self._held -= held
            self._conn_ack(held)  # its stream is gone; the connection window is not
            if self._conn_deferred and self._held <= self._budget:
                d, self._conn_deferred = self._conn_deferred, 0
                self._conn_ack(d)

    # ------------------------------------------------------------------ flow control: out
    def _send(self, f: F, data: bytes | bytearray | memoryview, end: bool = False) -> int:
        """Frame as much of ``data`` as the windows allow; return the bytes framed."""
        try:
            return self.codec.send_data(f.sid, data, end)
        except H2UsageError:
            return len(data)  # the stream is gone in the codec: drop

    def write(self, f: F, data: bytes | bytearray | memoryview, end: bool = False, *,
              soon: bool = False) -> None:
        """Send ``data`` on ``f`` (``end``: then END_STREAM), queueing what the windows do
        not take now. ``soon``: flush at the end of this event-loop turn, not at once."""
        if f._finished or self.closed or f._local_ended or f._end_queued:
            return
        if f._pending_len:
            if data:
                f._pending.append(bytes(data))
                f._pending_len += len(data)
        else:
            sent = self._send(f, data, end)
            if sent < len(data):
                rest = memoryview(data)[sent:]
                f._pending.append(rest)
                f._pending_len += len(rest)
                self._blocked[f] = None
            elif end:
                end = False
                f._local_ended = True
                self._local_end(f)
        if end:
            f._end_queued = True
        if soon and not (self._tx_paused or len(self.codec.out) >= FLUSH_BYTES):
            self.flush_soon()
        else:
            self._flush()
        if (f._pending_len or self._tx_paused) and not f._tx_blocked and not f._finished:
            f._tx_blocked = True
            if not f._pending_len:
                self._tx_waiting.add(f)
            f._tx_pause()

    def _drain(self, f: F) -> None:
        pending = f._pending
        while pending:
            chunk = pending[0]
            sent = self._send(f, chunk)
            f._pending_len -= sent
            if sent < len(chunk):
                pending[0] = memoryview(chunk)[sent:]
                return
            pending.popleft()
        self._blocked.pop(f, None)
        if f._end_queued:
            f._end_queued = False
            f._local_ended = True
            with contextlib.suppress(H2Error):
                self.codec.end_stream(f.sid)
            self._local_end(f)
        if f._tx_blocked and not f._finished:
            if self._tx_paused:
                self._tx_waiting.add(f)
            else:
                f._tx_blocked = False
                f._tx_resume()

    def _drain_all(self) -> None:
        for f in list(self._blocked):
            if self.codec.send_window <= 0:
                break
            self._drain(f)

    def _flush(self) -> None:
        if self._dispatching:
            return
        codec = self.codec
        if codec.out:
            t = self.transport
            t.write(codec.data_to_send())
            if t.write_paused:
                self._tx_paused = True

    def flush_soon(self) -> None:
        """Write what is queued at the end of this event-loop turn (once for every stream
        that writes in it)."""
        if self._flush_handle is None and not self.closed and not self._dispatching:
            self._flush_handle = self._loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_handle = None
        self._flush()

    def _tx_resumed(self) -> None:
        self._tx_paused = False
        self.transport.resume_reading()
        waiting = self._tx_waiting
        self._tx_waiting = set()
        for f in waiting:
            if f._tx_blocked and not f._pending_len and not f._finished:
                f._tx_blocked = False
                f._tx_resume()


__all__ = ["FLUSH_BYTES", "H2Endpoint", "H2Flow"]
