"""One HTTP/2 connection over a core :class:`~ugate_core.Stream`, client or server side.

h2 (python-hyper) does the framing, HPACK and the stream state machines; this module does the
I/O and the flow-control policy, for request/response exchanges (:class:`H2Exchange`):

* **receiving**: DATA is queued on its exchange and handed back to the peer (WINDOW_UPDATE, via
  ``acknowledge_received_data``) only when the consumer reads it, so a peer can be at most one
  stream window ahead of a slow consumer, and all streams together one connection window.
* **sending**: :meth:`H2Exchange.send_data` writes frames within the peer's stream and
  connection windows and waits for WINDOW_UPDATE when they are used up; it waits for the
  socket to drain when its buffer is full. Nothing buffers a whole body.
* frames the application produces are flushed once per event-loop turn (a response from each
  of 100 concurrent streams goes out in one socket write), or at once when a lot is queued.
* the headers we build are never re-validated (``validate_outbound_headers=False``): h2's
  per-header work is the hot path. What peers send is validated by h2.

h2 refuses every frame once a GOAWAY was received (its connection state becomes CLOSED). A
GOAWAY with NO_ERROR lets the streams it names finish, so the state is put back then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    InformationalResponseReceived,
    RemoteSettingsChanged,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import H2Error
from h2.exceptions import ProtocolError as H2ProtocolError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import DataFrame

from ugate_core import Stream

log = logging.getLogger("ugate.http")

Header = tuple[bytes, bytes]

#: what an HTTP/2 client sends first (RFC 9113 3.4)
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: application frames queued beyond this are written at once instead of at the turn's end
FLUSH_BYTES = 256 * 1024
#: one ``read()`` joins queued DATA up to this size
READ_JOIN = 1 << 20


def _data_body_repr(self: DataFrame) -> str:
    return f"<{len(self.data)} bytes>"


# h2 logs each received frame with an eagerly built repr(); hyperframe's DATA repr serializes
# and hex-encodes the whole payload. A short summary instead (logging only).
if "_body_repr" not in DataFrame.__dict__:
    DataFrame._body_repr = _data_body_repr  # type: ignore[method-assign,assignment]


@dataclass(frozen=True)
class H2Limits:
    """Our side of an HTTP/2 connection's settings."""

    #: initial receive window of each stream (SETTINGS_INITIAL_WINDOW_SIZE)
    stream_window: int = 1 << 20
    #: receive window of the whole connection
    connection_window: int = 16 << 20
    #: largest DATA/HEADERS frame the peer may send us (SETTINGS_MAX_FRAME_SIZE)
    max_frame_size: int = 1 << 16
    #: SETTINGS_MAX_CONCURRENT_STREAMS the peer may open (server side)
    max_streams: int = 128
    #: decoded header block bound (SETTINGS_MAX_HEADER_LIST_SIZE); beyond: connection error
    max_header_list: int = 1 << 17


class StreamResetError(ConnectionResetError):
    """The peer reset the stream (``code``), or the connection went away under it."""

    def __init__(self, message: str, code: int = ErrorCodes.CANCEL) -> None:
        super().__init__(message)
        self.code = code


class RefusedStreamError(StreamResetError):
    """The peer did not process the stream (REFUSED_STREAM, or beyond a GOAWAY): retryable."""


class H2Exchange:
    """One HTTP/2 stream carrying a request and its response.

    ``headers`` is the head received (a request on a server, the final response on a client).
    Read the peer's body with :meth:`read`; send ours with :meth:`send_headers` and
    :meth:`send_data`.
    """

    __slots__ = (
        "_chunks", "_queued", "_rx", "_tx", "conn", "error", "head", "headers", "id",
        "local_ended", "on_interim", "received", "remote_ended", "sent", "task", "trailers",
    )

    def __init__(self, conn: H2Conn, stream_id: int) -> None:
        self.conn = conn
        self.id = stream_id
        self.headers: list[Header] = []
        self.trailers: list[Header] = []
        self._chunks: deque[tuple[bytes, int]] = deque()
        self._queued = 0
        self.remote_ended = False
        self.local_ended = False
        self.error: StreamResetError | None = None
        self._rx: asyncio.Future[None] | None = None
        self._tx: asyncio.Future[None] | None = None
        #: client side: resolves to the final response head
        self.head: asyncio.Future[list[Header]] | None = None
        self.on_interim: Callable[[list[Header]], None] | None = None
        #: server side: the task answering this request (cancelled if the client resets)
        self.task: asyncio.Task[None] | None = None
        self.received = 0
        self.sent = 0

    # ------------------------------------------------------------------ events from h2
    def _feed(self, data: bytes, fc: int) -> None:
        if self.error is not None:  # reset: nobody reads any more
            if fc:
                self.conn._ack(fc, self.id)
            return
        if data:
            self._chunks.append((data, fc))
            self._queued += len(data)
            self.received += len(data)
        elif fc:
            self.conn._ack(fc, self.id)  # padding only
        self._wake_rx()

    def _end(self) -> None:
        self.remote_ended = True
        self._wake_rx()
        self.conn._maybe_forget(self)

    def _fail(self, exc: StreamResetError) -> None:
        if self.error is None:
            self.error = exc
        self.remote_ended = self.local_ended = True
        head = self.head
        if head is not None and not head.done():
            head.set_exception(exc)
            head.exception()
        self._release_chunks()
        self._wake_rx()
        self._wake_tx()
        self.conn._forget(self)

    def _wake_rx(self) -> None:
        w = self._rx
        if w is not None:
            self._rx = None
            if not w.done():
                w.set_result(None)

    def _wake_tx(self) -> None:
        w = self._tx
        if w is not None:
            self._tx = None
            if not w.done():
                w.set_result(None)

    def _release_chunks(self) -> None:
        fc = sum(c[1] for c in self._chunks)
        self._chunks.clear()
        self._queued = 0
        if fc:
            self.conn._ack(fc, self.id)

    # ------------------------------------------------------------------ receiving
    @property
    def pending(self) -> int:
        """Body bytes received and not read yet."""
        return self._queued

    async def read(self, timeout: float | None = None) -> bytes:
        """The next piece of the peer's body (queued pieces joined), ``b""`` at its end.

        Raises :class:`StreamResetError` if the stream was reset, :class:`TimeoutError` when
        nothing arrives within ``timeout`` seconds."""
        chunks = self._chunks
        while not chunks:
            if self.error is not None:
                raise self.error
            if self.remote_ended:
                return b""
            fut = asyncio.get_running_loop().create_future()
            self._rx = fut
            try:
                if timeout:
                    async with asyncio.timeout(timeout):
                        await fut
                else:
                    await fut
            finally:
                self._rx = None
        data, fc = chunks.popleft()
        if chunks and len(data) < READ_JOIN:
            parts = [data]
            size = len(data)
            while chunks and size < READ_JOIN:
                d, f = chunks.popleft()
                parts.append(d)
                size += len(d)
                fc += f
            data = b"".join(parts)
        self._queued -= len(data)
        if fc:
            self.conn._ack(fc, self.id)
        return data

    # ------------------------------------------------------------------ sending
    def _check(self) -> None:
        if self.error is not None:
            raise self.error
        if self.local_ended:
            raise StreamResetError(f"stream {self.id}: already ended")

    def send_headers(self, headers: list[Header], end: bool = False) -> None:
        """Send a head (or trailers); ``end`` ends our side of the stream."""
        self._check()
        conn = self.conn
        try:
            conn.h2.send_headers(self.id, headers, end_stream=end)
        except H2Error as e:
            raise self._gone(e) from None
        if end:
            self.local_ended = True
            conn._maybe_forget(self)
        conn._queued()

    async def send_data(self, data: bytes, end: bool = False, timeout: float | None = None
                        ) -> None:
        """Send body bytes within the flow-control windows; ``end`` ends our side.

        Waits for WINDOW_UPDATE (at most ``timeout`` seconds each time) and for the socket
        to drain. Raises :class:`StreamResetError` when the stream or connection is gone."""
        self._check()
        conn = self.conn
        h2 = conn.h2
        n = len(data)
        view = memoryview(data)
        off = 0
        try:
            while off < n:
                avail = h2.local_flow_control_window(self.id)
                if avail <= 0:
                    await self._wait_window(timeout)
                    continue
                size = min(avail, n - off)
                frame = h2.max_outbound_frame_size
                stop = off + size
                while off < stop:
                    k = min(stop - off, frame)
                    h2.send_data(self.id, view[off:off + k], end_stream=end and off + k == n)
                    off += k
                self.sent += size
                if conn._outbound() >= FLUSH_BYTES or conn.transport.write_paused:
                    conn._flush()
                    if conn.transport.write_paused:
                        await conn.drain()
                else:
                    conn._queued()  # small: goes out with this turn's other frames
                if self.error is not None:
                    raise self.error
            if end and n == 0:
                h2.end_stream(self.id)
        except H2Error as e:
            raise self._gone(e) from None
        if end:
            self.local_ended = True
            conn._maybe_forget(self)
            conn._queued()

    async def _wait_window(self, timeout: float | None) -> None:
        if self.error is not None:
            raise self.error
        fut = asyncio.get_running_loop().create_future()
        self._tx = fut
        self.conn._tx_waiting.add(self)
        try:
            if timeout:
                async with asyncio.timeout(timeout):
                    await fut
            else:
                await fut
        finally:
            self._tx = None
            self.conn._tx_waiting.discard(self)
        if self.error is not None:
            raise self.error

    def _gone(self, e: BaseException) -> StreamResetError:
        if self.error is not None:
            return self.error
        return StreamResetError(f"stream {self.id}: {e}")

    def reset(self, code: int = ErrorCodes.CANCEL) -> None:
        """Abort the stream (RST_STREAM ``code``); unread body bytes are given back."""
        conn = self.conn
        if not (self.local_ended and self.remote_ended) and not conn.closed:
            with contextlib.suppress(H2Error):
                conn.h2.reset_stream(self.id, code)
            conn._queued()
        self._fail(StreamResetError(f"stream {self.id}: reset by us ({code})", code))

    def finish(self) -> None:
        """Done with this exchange: reset it if either side is still open (NO_ERROR when our
        answer is complete and only the peer's body is left, RFC 9113 8.1)."""
        if self.local_ended and self.remote_ended:
            self.conn._forget(self)
            return
        self.reset(ErrorCodes.NO_ERROR if self.local_ended else ErrorCodes.INTERNAL_ERROR)


RequestHandler = Callable[[H2Exchange], None]


class H2Conn:
    """The asyncio side of one HTTP/2 connection over ``transport`` (push mode).

    Server: ``on_request(exchange)`` is called for each new request. Client:
    :meth:`open` sends a request head and returns the exchange; await ``exchange.head``.
    ``on_close(conn)`` runs once when the connection ends; ``on_idle(conn)`` each time its
    last stream closes.
    """

    def __init__(
        self,
        transport: Stream,
        limits: H2Limits,
        *,
        client: bool,
        name: str = "",
        on_request: RequestHandler | None = None,
    ) -> None:
        self.transport = transport
        self.limits = limits
        self.client = client
        self.name = name or f"{'client' if client else 'server'}-{transport.meta.id}"
        self.on_request = on_request
        self.on_idle: Callable[[H2Conn], None] | None = None
        self.on_close: Callable[[H2Conn], None] | None = None
        #: set on a connection-level protocol error by the peer: (reason, detail)
        self.error: tuple[str, str] | None = None
        config = H2Configuration(
            client_side=client,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            validate_inbound_headers=True,
            normalize_inbound_headers=False,
        )
        h2 = self.h2 = H2Connection(config)
        values: dict[SettingCodes, int] = {
            SettingCodes.INITIAL_WINDOW_SIZE: limits.stream_window,
            SettingCodes.MAX_FRAME_SIZE: limits.max_frame_size,
            SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list,
            SettingCodes.MAX_CONCURRENT_STREAMS: 0 if client else limits.max_streams,
        }
        if client:
            values[SettingCodes.ENABLE_PUSH] = 0
        h2.local_settings = Settings(client=client, initial_values=values)
        # initial values count as acknowledged in h2: apply their local effects now
        h2.max_inbound_frame_size = limits.max_frame_size
        h2.decoder.max_header_list_size = limits.max_header_list
        self.streams: dict[int, H2Exchange] = {}
        self._tx_waiting: set[H2Exchange] = set()
        self._flush_handle: asyncio.Handle | None = None
        self.goaway_received = False
        self.goaway_sent = False
        #: the peer half-closed the transport: no new streams, close when idle
        self.peer_eof = False
        self.closed = False
        #: True once the peer's SETTINGS arrived (the handshake is done)
        self.settled = False
        self.requests = 0
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._done: asyncio.Future[None] = loop.create_future()
        self._handlers: dict[type, Callable[[Any], None]] = {
            DataReceived: self._on_data,
            RequestReceived: self._on_request,
            ResponseReceived: self._on_response,
            InformationalResponseReceived: self._on_interim,
            TrailersReceived: self._on_trailers,
            StreamEnded: self._on_end,
            StreamReset: self._on_reset,
            WindowUpdated: self._on_window,
            RemoteSettingsChanged: self._on_settings,
            ConnectionTerminated: self._on_goaway,
        }

    # ------------------------------------------------------------------ lifecycle
    def start(self, upgrade_settings: bytes | None = None) -> H2Exchange | None:
        """Send our preface and SETTINGS and start reading. ``upgrade_settings`` (server):
        the client's ``HTTP2-Settings`` after an ``Upgrade: h2c``; the upgraded request is
        then stream 1, returned here (its head is the caller's to fill in)."""
        h2 = self.h2
        ex: H2Exchange | None = None
        if upgrade_settings is not None:
            h2.initiate_upgrade_connection(upgrade_settings)
            ex = H2Exchange(self, 1)
            ex.remote_ended = True
            self.streams[1] = ex
            self.requests += 1
        else:
            h2.initiate_connection()
        extra = self.limits.connection_window - 65535
        if extra > 0:
            h2.increment_flow_control_window(extra)
        self._flush()
        self.transport.on_resume_writing = self._resumed
        self.transport.set_receiver(self)
        return ex

    @property
    def usable(self) -> bool:
        """New streams may be opened here."""
        return not (self.closed or self.goaway_received or self.goaway_sent or self.peer_eof)

    def capacity(self) -> int:
        """How many more streams the peer lets us open now."""
        if not self.usable:
            return 0
        return max(0, self.h2.remote_settings.max_concurrent_streams - len(self.streams))

    async def wait_closed(self) -> None:
        await asyncio.shield(self._done)

    def goaway(self, code: int = ErrorCodes.NO_ERROR) -> None:
        """Tell the peer to open no more streams (and close if none is running)."""
        if self.closed or self.goaway_sent:
            return
        self.goaway_sent = True
        state = self.h2.state_machine.state
        with contextlib.suppress(H2Error):
            self.h2.close_connection(code)
        if code == ErrorCodes.NO_ERROR and state != ConnectionState.CLOSED:
            self.h2.state_machine.state = state  # running streams may finish
        self._flush()
        if not self.streams or code != ErrorCodes.NO_ERROR:
            self.close()

    def close(self, exc: StreamResetError | None = None) -> None:
        """Close the connection; streams still open fail with ``exc``."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self._flush()
        self.transport.close()
        self._lost(exc)

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.abort()
            self._lost(None)

    def _lost(self, exc: StreamResetError | None) -> None:
        err = exc or StreamResetError(f"HTTP/2 connection {self.name} closed")
        for ex in list(self.streams.values()):
            ex._fail(err)
        self.streams.clear()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._done.done():
            self._done.set_result(None)
        cb, self.on_close = self.on_close, None
        if cb is not None:
            cb(self)

    # ------------------------------------------------------------------ client side
    def open(self, headers: list[Header], end: bool) -> H2Exchange:
        """Send a request head on a new stream (caller checked :meth:`capacity`)."""
        h2 = self.h2
        sid = h2.get_next_available_stream_id()
        ex = H2Exchange(self, sid)
        ex.head = self._loop.create_future()
        self.streams[sid] = ex
        self.requests += 1
        h2.send_headers(sid, headers, end_stream=end)
        ex.local_ended = end
        self._queued()
        return ex

    # ------------------------------------------------------------------ Receiver (push)
    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events = self.h2.receive_data(data)
        except H2ProtocolError as e:
            self._protocol_error("h2_protocol_error", e)
            return
        except Exception as e:  # a bug or an h2 corner: close cleanly, never crash the loop
            log.warning("h2_internal_error conn=%s error=%r", self.name, e)
            self._protocol_error("h2_internal_error", e)
            return
        # h2 checks a frame's length only once all of it arrived: a peer announcing a 16 MiB
        # frame would be buffered first. Refuse it from its 9-byte header.
        pending = getattr(self.h2.incoming_buffer, "_data", b"")
        if len(pending) >= 9:
            size = int.from_bytes(pending[:3], "big")
            if size > self.limits.max_frame_size:
                with contextlib.suppress(H2Error):
                    self.h2.close_connection(ErrorCodes.FRAME_SIZE_ERROR)
                self._protocol_error("h2_protocol_error", H2ProtocolError(
                    f"frame of {size} bytes announced; SETTINGS_MAX_FRAME_SIZE is "
                    f"{self.limits.max_frame_size}"))
                return
        handlers = self._handlers
        for ev in events:
            h = handlers.get(type(ev))
            if h is not None:
                h(ev)
        if self.closed:
            return
        self._flush()
        t = self.transport
        # control frames we owe (PING/SETTINGS acks, resets) pile up if the peer reads
        # nothing: stop reading until it does
        if t.write_paused and t.get_write_buffer_size() > 4 * FLUSH_BYTES:
            t.pause_reading()

    def eof_received(self) -> None:
        """The peer sends no more: streams still waiting for its bytes fail, the others may
        finish their answers; then the connection closes."""
        if self.closed:
            return
        self.peer_eof = True
        err = StreamResetError(f"HTTP/2 connection {self.name}: peer closed")
        for ex in list(self.streams.values()):
            if not ex.remote_ended:
                ex._fail(err)
        if not self.streams:
            self.close(err)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.closed:
            self.closed = True
            self._lost(StreamResetError(f"HTTP/2 connection {self.name} lost: {exc or 'closed'}"))

    def _protocol_error(self, reason: str, e: BaseException) -> None:
        detail = f"HTTP/2 connection {self.name}: {e or type(e).__name__}"
        self.error = (reason, detail)
        self.close(StreamResetError(detail, ErrorCodes.PROTOCOL_ERROR))

    # ------------------------------------------------------------------ h2 events
    def _on_request(self, ev: RequestReceived) -> None:
        sid = ev.stream_id
        ex = H2Exchange(self, sid)
        ex.headers = ev.headers
        self.streams[sid] = ex
        self.requests += 1
        if ev.stream_ended is not None:
            ex.remote_ended = True
        if self.on_request is not None and not self.goaway_sent:
            self.on_request(ex)
        else:
            ex.reset(ErrorCodes.REFUSED_STREAM)

    def _on_response(self, ev: ResponseReceived) -> None:
        ex = self.streams.get(ev.stream_id)
        if ex is None:
            return
        ex.headers = ev.headers
        if ev.stream_ended is not None:
            ex.remote_ended = True
        head = ex.head
        if head is not None and not head.done():
            head.set_result(ev.headers)

    def _on_interim(self, ev: InformationalResponseReceived) -> None:
        ex = self.streams.get(ev.stream_id)
        if ex is not None and ex.on_interim is not None:
            ex.on_interim(ev.headers)

    def _on_trailers(self, ev: TrailersReceived) -> None:
        ex = self.streams.get(ev.stream_id)
        if ex is not None:
            ex.trailers = ev.headers

    def _on_data(self, ev: DataReceived) -> None:
        ex = self.streams.get(ev.stream_id)
        if ex is None:
            if ev.flow_controlled_length:
                self._ack(ev.flow_controlled_length, ev.stream_id)
            return
        ex._feed(ev.data, ev.flow_controlled_length)

    def _on_end(self, ev: StreamEnded) -> None:
        ex = self.streams.get(ev.stream_id)
        if ex is not None:
            ex._end()

    def _on_reset(self, ev: StreamReset) -> None:
        ex = self.streams.get(ev.stream_id)
        if ex is None:
            return
        code = int(ev.error_code) if ev.error_code is not None else ErrorCodes.CANCEL
        cls = RefusedStreamError if code == ErrorCodes.REFUSED_STREAM else StreamResetError
        name = ErrorCodes(code).name if code in ErrorCodes._value2member_map_ else str(code)
        ex._fail(cls(f"stream {ex.id} reset by the peer ({name})", code))
        t = ex.task
        if t is not None and not t.done():
            t.cancel()

    def _on_window(self, ev: WindowUpdated) -> None:
        if ev.stream_id:
            ex = self.streams.get(ev.stream_id)
            if ex is not None:
                ex._wake_tx()
        else:
            for ex in list(self._tx_waiting):
                ex._wake_tx()

    def _on_settings(self, ev: RemoteSettingsChanged) -> None:
        self.settled = True
        if SettingCodes.INITIAL_WINDOW_SIZE in ev.changed_settings:
            for ex in list(self._tx_waiting):
                ex._wake_tx()

    def _on_goaway(self, ev: ConnectionTerminated) -> None:
        self.goaway_received = True
        last = ev.last_stream_id or 0
        code = ev.error_code if ev.error_code is not None else ErrorCodes.NO_ERROR
        if code != ErrorCodes.NO_ERROR:
            self.close(StreamResetError(f"HTTP/2 connection {self.name}: GOAWAY {code!s}",
                                        int(code)))
            return
        self.h2.state_machine.state = ConnectionState.SERVER_OPEN if not self.client \
            else ConnectionState.CLIENT_OPEN
        for sid, ex in list(self.streams.items()):
            if sid > last and (sid % 2 == 1) == self.client:
                ex._fail(RefusedStreamError(f"stream {sid} not processed (GOAWAY)",
                                            ErrorCodes.REFUSED_STREAM))
        if not self.streams:
            self.close()

    # ------------------------------------------------------------------ bookkeeping
    def _ack(self, fc: int, sid: int) -> None:
        if self.closed:
            return
        with contextlib.suppress(H2Error):
            self.h2.acknowledge_received_data(fc, sid)
        self._queued()

    def _maybe_forget(self, ex: H2Exchange) -> None:
        if ex.local_ended and ex.remote_ended and ex.task is None:
            self._forget(ex)

    def _forget(self, ex: H2Exchange) -> None:
        if self.streams.get(ex.id) is ex:
            del self.streams[ex.id]
            self._tx_waiting.discard(ex)
            if not self.streams:
                if self.goaway_received or self.peer_eof or (self.goaway_sent
                                                             and not self.closed):
                    self.close()
                elif self.on_idle is not None and not self.closed:
                    self.on_idle(self)

    def _queued(self) -> None:
        """Frames were queued by the application: flush them at the end of this turn."""
        if self._flush_handle is None and not self.closed:
            self._flush_handle = self._loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_handle = None
        self._flush()

    def _outbound(self) -> int:
        """Bytes h2 has serialized and not handed to us yet."""
        buf = getattr(self.h2, "_data_to_send", None)
        return FLUSH_BYTES if buf is None else len(buf)

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.transport.write(data)

    async def drain(self) -> None:
        try:
            await self.transport.drain()
        except ConnectionError as e:
            raise StreamResetError(f"HTTP/2 connection {self.name}: {e}") from None

    def _resumed(self) -> None:
        self.transport.resume_reading()
