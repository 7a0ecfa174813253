"""One HTTP/2 connection over a core :class:`~ugate_core.Stream`, client or server side,
carrying request/response exchanges (:class:`H2Exchange`).

Core's sans-IO codec (:class:`~ugate_core.H2Codec`) does the framing, HPACK, stream states and
the checks of what the peer sends; core's :class:`~ugate_core.H2Endpoint` the I/O and the
flow-control policy (the one HBONE's tunnels use):

* **receiving**: DATA is queued on its exchange; its stream-level credit goes back to the peer
  only when the consumer reads it, so a peer is at most one stream window ahead of a slow
  consumer. Connection-level credit goes back at once while all streams together hold at most
  half the connection window, so one stalled stream does not stall the others.
* **sending**: :meth:`H2Exchange.send_data` frames what the peer's windows allow and waits
  (for WINDOW_UPDATE, or for the socket to drain) until the rest went out; the sync
  :meth:`H2Exchange.write` queues it instead and reports through ``on_writable``. Nothing
  buffers a whole body.
* small frames of many streams in one event-loop turn go out in one socket write.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ugate_core import (
    H2_PREFACE,
    H2Endpoint,
    H2Error,
    H2ErrorCode,
    H2FloodLimits,
    H2Flow,
    H2Setting,
    H2StreamRefused,
    H2StreamReset,
    Stream,
    h2_code_name,
    h2_goaway_error,
    h2_refused_by_goaway,
    h2_reset_by_peer,
    h2_stream_error,
    h2_unprocessed,
)

__all__ = ["PREFACE", "H2Conn", "H2Exchange", "H2Limits", "Header", "RefusedStreamError",
           "StreamResetError"]

Header = tuple[bytes, bytes]

#: what an HTTP/2 client sends first (RFC 9113 3.4)
PREFACE = H2_PREFACE
#: body pieces smaller than this go out with the turn's other frames (one socket write)
SMALL = 256 * 1024

#: one ``read()`` joins queued DATA up to this size
READ_JOIN = 1 << 20


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
    #: the peer's resets and cheap frames allowed (core's ``[gateway] h2_max_*``)
    flood: H2FloodLimits = field(default_factory=H2FloodLimits)
    #: server side: offer RFC 8441 extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL = 1)
    connect_protocol: bool = False


#: core's one mapping of RST_STREAM and GOAWAY to errors (:mod:`ugate_core.h2`), under the
#: names this plugin's modules use
StreamResetError = H2StreamReset
RefusedStreamError = H2StreamRefused


class H2Exchange(H2Flow):
    """One HTTP/2 stream carrying a request and its response.

    ``headers`` is the head received (a request on a server, the final response on a client).
    Read the peer's body with :meth:`read`; send ours with :meth:`send_headers` and
    :meth:`send_data` (or :meth:`write` from callbacks).
    """

    __slots__ = (
        "_chunks", "_end_queued", "_finished", "_held", "_local_ended", "_pending",
        "_pending_len", "_queued", "_remote_ended", "_rx", "_tx", "_tx_blocked", "_unacked",
        "conn", "error", "head", "headers", "on_fail", "on_finish", "on_interim", "on_writable",
        "received",
        "sid", "task", "trailers",
    )

    def __init__(self, conn: H2Conn, sid: int) -> None:
        self._flow_init(sid)
        self.conn = conn
        self.headers: list[Header] = []
        self.trailers: list[Header] = []
        self._chunks: deque[tuple[bytes, int]] = deque()
        self._queued = 0
        self.error: StreamResetError | None = None
        self._rx: asyncio.Future[None] | None = None
        self._tx: asyncio.Future[None] | None = None
        #: client side: resolves to the final response head
        self.head: asyncio.Future[list[Header]] | None = None
        self.on_interim: Callable[[list[Header]], None] | None = None
        #: server side: the task answering this request (cancelled if the client resets)
        self.task: asyncio.Task[None] | None = None
        #: called once when the stream fails (reset, connection lost) for its owner
        self.on_fail: Callable[[StreamResetError], None] | None = None
        #: called when :meth:`write`'s queue has drained (the sync writer may go on)
        self.on_writable: Callable[[], None] | None = None
        #: called once when the connection forgets the stream (ended both ways, or failed)
        self.on_finish: Callable[[], None] | None = None
        self.received = 0

    def __repr__(self) -> str:
        return f"<H2Exchange {self.sid} of {self.conn.name}>"

    @property
    def remote_ended(self) -> bool:
        return self._remote_ended

    @property
    def local_ended(self) -> bool:
        return self._local_ended

    @property
    def blocked(self) -> bool:
        """What :meth:`write` queued has not all gone out yet (wait for ``on_writable``)."""
        return self._tx_blocked

    @property
    def ending(self) -> bool:
        """Our side ended, or ends once the queued bytes went out."""
        return self._local_ended or self._end_queued

    # ------------------------------------------------------------------ from the connection
    def _flow_data(self, data: bytes) -> bool:
        if self.error is not None or not data:  # reset: nobody reads any more
            return True
        self._chunks.append((data, len(data)))
        self._queued += len(data)
        self.received += len(data)
        self._wake_rx()
        return False

    def _tx_resume(self) -> None:
        self._wake_tx()
        cb = self.on_writable
        if cb is not None:
            cb()

    def _end(self) -> None:
        self._remote_ended = True
        self._wake_rx()
        self.conn._maybe_forget(self)

    def _fail(self, exc: StreamResetError) -> None:
        if self.error is None:
            self.error = exc
        self._remote_ended = self._local_ended = True
        head = self.head
        if head is not None and not head.done():
            head.set_exception(exc)
            head.exception()
        self._chunks.clear()
        self._queued = 0
        conn = self.conn
        conn._forget(self)
        self._wake_rx()
        self._wake_tx()
        cb, self.on_fail = self.on_fail, None
        if cb is not None:
            cb(exc)

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

    async def _wait(self, fut: asyncio.Future[None], timeout: float | None) -> None:
        timer = None if not timeout else asyncio.get_running_loop().call_later(
            timeout, _expire, fut)
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()

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
            if self._remote_ended:
                return b""
            fut = self._rx = asyncio.get_running_loop().create_future()
            try:
                await self._wait(fut, timeout)
            finally:
                self._rx = None
        data = chunks.popleft()[0]
        if chunks and len(data) < READ_JOIN:
            parts = [data]
            size = len(data)
            while chunks and size < READ_JOIN:
                d = chunks.popleft()[0]
                parts.append(d)
                size += len(d)
            data = b"".join(parts)
        self._queued -= len(data)
        # all read: what is still held is padding, handed back with the rest
        self.conn.consumed(self, len(data) if chunks else None)
        return data

    # ------------------------------------------------------------------ sending
    def _check(self) -> None:
        if self.error is not None:
            raise self.error
        if self._local_ended or self._end_queued:
            raise StreamResetError(f"stream {self.sid}: already ended")

    def send_headers(self, headers: list[Header], end: bool = False) -> None:
        """Send a head (or 1xx, or trailers); ``end`` ends our side of the stream. Trailers
        after :meth:`write` wait until the queue drained (see ``on_writable``)."""
        self._check()
        conn = self.conn
        try:
            conn.codec.send_headers(self.sid, headers, end)
        except H2Error as e:
            raise self._gone(e) from None
        conn.flush_soon()
        if end:
            self._local_ended = True
            conn._maybe_forget(self)

    def write(self, data: bytes | bytearray | memoryview, end: bool = False) -> bool:
        """Send body bytes from a callback; what the windows do not take now is queued.
        Returns False when the queue is not empty (or the socket full): stop writing until
        ``on_writable`` is called."""
        self._check()
        self.conn.write(self, data, end, soon=len(data) < SMALL)
        return not self._tx_blocked

    async def send_data(self, data: bytes, end: bool = False, timeout: float | None = None
                        ) -> None:
        """Send body bytes within the flow-control windows; ``end`` ends our side.

        Waits until the windows took all of it and the socket drained (at most ``timeout``
        seconds: then :class:`TimeoutError`). Raises :class:`StreamResetError` when the stream
        or connection is gone."""
        self._check()
        self.conn.write(self, data, end, soon=len(data) < SMALL)
        if self._tx_blocked:
            fut = self._tx = asyncio.get_running_loop().create_future()
            try:
                await self._wait(fut, timeout)
            finally:
                self._tx = None
        if self.error is not None:
            raise self.error

    def _gone(self, e: BaseException) -> StreamResetError:
        if self.error is not None:
            return self.error
        return StreamResetError(f"stream {self.sid}: {e}")

    def reset(self, code: int = H2ErrorCode.CANCEL) -> None:
        """Abort the stream (RST_STREAM ``code``); unread body bytes are given back."""
        conn = self.conn
        if not (self._local_ended and self._remote_ended) and not conn.closed:
            conn.codec.reset_stream(self.sid, code)
            conn.flush_soon()
        self._fail(StreamResetError(f"stream {self.sid}: reset by us "
                                    f"({h2_code_name(code)})", code))

    def task_done(self) -> None:
        """The task that answered this exchange ended, the stream lives on (a tunnel): it is
        forgotten once both sides ended (maybe already)."""
        self.task = None
        self.conn._maybe_forget(self)

    def finish(self) -> None:
        """Done with this exchange: reset it if either side is still open (NO_ERROR when our
        answer is complete and only the peer's body is left, RFC 9113 8.1)."""
        self.task = None
        if self._local_ended and self._remote_ended:
            self.conn._forget(self)
            return
        self.reset(H2ErrorCode.NO_ERROR if self._local_ended else H2ErrorCode.INTERNAL_ERROR)


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


RequestHandler = Callable[[H2Exchange], None]


class H2Conn(H2Endpoint[H2Exchange]):
    """One HTTP/2 connection over ``transport`` (push mode).

    Server: ``on_request(exchange)`` is called for each new request. Client:
    :meth:`open` sends a request head and returns the exchange; await ``exchange.head``.
    ``on_close(conn)`` runs once when the connection ends; ``on_idle(conn)`` each time its
    last stream closes; ``on_malformed(message)`` for a request the codec refused (reset).
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
        super().__init__(transport, client=client, settings={
            H2Setting.INITIAL_WINDOW_SIZE: limits.stream_window,
            H2Setting.MAX_FRAME_SIZE: limits.max_frame_size,
            H2Setting.MAX_HEADER_LIST_SIZE: limits.max_header_list,
            H2Setting.MAX_CONCURRENT_STREAMS: 0 if client else limits.max_streams,
            **({H2Setting.ENABLE_CONNECT_PROTOCOL: 1} if limits.connect_protocol
               and not client else {}),
        }, connection_window=limits.connection_window,
            name=name or f"{'client' if client else 'server'}-{transport.meta.id}",
            limits=limits.flood)
        self.limits = limits
        self.on_request = on_request
        self.on_idle: Callable[[H2Conn], None] | None = None
        self.on_close: Callable[[H2Conn], None] | None = None
        self.on_malformed: Callable[[str], None] | None = None
        #: the peer half-closed the transport: no new streams, close when idle
        self.peer_eof = False
        #: True once the peer's SETTINGS arrived (the handshake is done)
        self.settled = False
        self.requests = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self, upgrade_settings: bytes | None = None) -> H2Exchange | None:  # type: ignore[override]
        """Send our preface and SETTINGS and start reading. ``upgrade_settings`` (server):
        the client's ``HTTP2-Settings`` after an ``Upgrade: h2c``; the upgraded request is
        then stream 1, returned here (its head is the caller's to fill in)."""
        super().start(upgrade_settings)
        if upgrade_settings is None:
            return None
        ex = H2Exchange(self, 1)
        ex._remote_ended = True
        self.streams[1] = ex
        self.requests += 1
        return ex

    @property
    def usable(self) -> bool:
        """New streams may be opened here."""
        return not (self.closed or self.goaway_received or self.goaway_sent or self.peer_eof)

    def _stream_lost(self, f: H2Exchange, exc: BaseException) -> None:
        f._fail(exc if isinstance(exc, StreamResetError) else StreamResetError(str(exc)))

    def _closed(self) -> None:
        cb, self.on_close = self.on_close, None
        if cb is not None:
            cb(self)

    # ------------------------------------------------------------------ client side
    def open(self, headers: list[Header], end: bool) -> H2Exchange:
        """Send a request head on a new stream (caller checked :meth:`capacity`)."""
        codec = self.codec
        sid = codec.next_stream_id()
        codec.send_headers(sid, headers, end)
        ex = H2Exchange(self, sid)
        ex.head = self._loop.create_future()
        ex._local_ended = end
        self.streams[sid] = ex
        self.requests += 1
        self.flush_soon()
        return ex

    # ------------------------------------------------------------------ Receiver (push)
    def eof_received(self) -> None:
        """The peer sends no more: streams still waiting for its bytes fail, the others may
        finish their answers; then the connection closes."""
        if self.closed:
            return
        self.peer_eof = True
        err = StreamResetError(f"HTTP/2 connection {self.name}: peer closed")
        for ex in list(self.streams.values()):
            if not ex._remote_ended:
                ex._fail(err)
        if not self.streams:
            self.close(err)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.close(StreamResetError(f"HTTP/2 connection {self.name} lost: {exc or 'closed'}"))

    # ------------------------------------------------------------------ codec events
    def on_headers(self, sid: int, headers: list[Header], end_stream: bool) -> None:
        ex = self.streams.get(sid)
        if ex is None:
            if not self.client:
                self._on_request(sid, headers, end_stream)
            return
        if headers[0][1][:1] == b"1":  # informational: the final response follows
            if ex.on_interim is not None:
                ex.on_interim(headers)
            return
        ex.headers = headers
        head = ex.head
        if head is not None and not head.done():
            head.set_result(headers)
        if end_stream:
            ex._end()

    def _on_request(self, sid: int, headers: list[Header], end_stream: bool) -> None:
        ex = H2Exchange(self, sid)
        ex.headers = headers
        ex._remote_ended = end_stream
        self.streams[sid] = ex
        self.requests += 1
        if self.on_request is not None and not self.goaway_sent:
            self.on_request(ex)
        else:
            ex.reset(H2ErrorCode.REFUSED_STREAM)

    def on_trailers(self, sid: int, headers: list[Header]) -> None:
        ex = self.streams.get(sid)
        if ex is not None:
            ex.trailers = headers
            ex._end()

    def _remote_end(self, f: H2Exchange) -> None:
        f._end()

    def _local_end(self, f: H2Exchange) -> None:
        self._maybe_forget(f)

    def on_reset(self, sid: int, code: int) -> None:
        ex = self.streams.get(sid)
        if ex is None:
            return
        ex._fail(h2_reset_by_peer(sid, code))
        t = ex.task
        if t is not None and not t.done():
            t.cancel()

    def on_stream_error(self, sid: int, code: int, message: str) -> None:
        ex = self.streams.get(sid)
        if ex is not None:
            ex._fail(h2_stream_error(sid, code, message))
            t = ex.task
            if t is not None and not t.done():
                t.cancel()
        elif self.on_malformed is not None:
            self.on_malformed(message)

    def on_settings(self, changed: dict[int, int]) -> None:
        self.settled = True
        super().on_settings(changed)

    def on_goaway(self, last_sid: int, code: int, debug: bytes) -> None:
        self.goaway_received = True
        err = h2_goaway_error(self.name, code)
        if err is not None:
            self.close(err)
            return
        for sid, ex in list(self.streams.items()):
            if h2_unprocessed(sid, last_sid, self.client):
                ex._fail(h2_refused_by_goaway(sid, last_sid))
        if not self.streams:
            self.close()

    # ------------------------------------------------------------------ bookkeeping
    def _maybe_forget(self, ex: H2Exchange) -> None:
        if ex._local_ended and ex._remote_ended and ex.task is None:
            self._forget(ex)

    def _forget(self, ex: H2Exchange) -> None:
        if self.streams.get(ex.sid) is ex:
            del self.streams[ex.sid]
            self._forget_flow(ex)
            cb, ex.on_finish = ex.on_finish, None
            if cb is not None:
                cb()
            if not self.streams and not self.closed:
                if self.goaway_received or self.peer_eof or self.goaway_sent:
                    self.close()
                elif self.on_idle is not None:
                    self.on_idle(self)
