"""One HTTP/2 connection over a core :class:`~ugate_core.Stream`; each of its streams is an
:class:`H2Stream`, itself a core Stream, so ``gateway.relay`` moves tunnel bytes with
backpressure both ways.

Core's sans-IO codec (:class:`~ugate_core.H2Codec`) does the framing, HPACK, stream states
and checks what the peer sends; it calls this session's ``on_*`` methods (an
:class:`~ugate_core.H2Handler`). This module does the I/O and the flow-control policy:

* **sending**: a stream's bytes go out as DATA frames within the peer's stream and connection
  windows; what does not fit waits in the stream's own queue, and the stream reports
  ``write_paused`` (so the relay pauses the source) until WINDOW_UPDATEs drain the queue. The
  connection's socket buffer pauses every stream that writes while it is full.
* **receiving**: received bytes are handed back to the peer (WINDOW_UPDATE) once consumed; a
  stream whose reader is paused withholds its stream-level updates, so the peer stops sending
  on that stream only. Connection-level updates go out at once up to ``connection_window / 2``
  bytes held by paused streams: a stalled stream does not stall the others.
* updates are batched (a quarter window at a time); the codec never re-validates the headers
  we build ourselves.

After a GOAWAY (sent or received) running streams finish normally; new ones are refused, and
streams of ours the peer never processed (above its GOAWAY's last stream id) fail with
``ConnectionRefusedError`` so that the dialer retries them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from ugate_core import (
    H2Codec,
    H2ConnectionError,
    H2Error,
    H2ErrorCode,
    H2Handler,
    H2Setting,
    H2UsageError,
    Stream,
    StreamMeta,
)

from .h2stream import H2Stream, Header
from .settings import HboneSettings

log = logging.getLogger("ugate.hbone")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: the largest header list we accept (SETTINGS_MAX_HEADER_LIST_SIZE)
MAX_HEADER_LIST = 16384


RequestHandler = Callable[[H2Stream], None]


class H2Session(H2Handler):
    """The asyncio side of one HTTP/2 connection (client or server) over ``transport``.

    Server: ``on_request(stream)`` is called for every new request (headers in
    ``stream.headers``); it must answer with :meth:`H2Stream.respond`. Client:
    :meth:`open_stream` sends a request and returns the stream; await ``stream.response``.
    """

    def __init__(
        self,
        transport: Stream,
        settings: HboneSettings,
        *,
        client: bool,
        name: str = "",
        on_request: RequestHandler | None = None,
        on_idle: Callable[[H2Session], None] | None = None,
        on_change: Callable[[], None] | None = None,
        first_idle: float | None = None,
    ) -> None:
        self.transport = transport
        self.settings = settings
        self.client = client
        self.name = name or f"{'client' if client else 'server'}-{transport.meta.id}"
        self.on_request = on_request
        self.on_idle = on_idle
        #: called when a stream ends, the peer's limits change or the connection closes
        self.on_change = on_change
        #: idle deadline before the first stream (a server's handshake timeout)
        self.first_idle = first_idle
        self.codec = H2Codec(self, client=client, settings={
            H2Setting.INITIAL_WINDOW_SIZE: settings.stream_window,
            H2Setting.MAX_FRAME_SIZE: settings.max_frame_size,
            H2Setting.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
            H2Setting.MAX_CONCURRENT_STREAMS: 0 if client else settings.max_streams,
        }, connection_window=settings.connection_window)
        self.streams: dict[int, H2Stream] = {}
        self._blocked: dict[H2Stream, None] = {}  # ordered set: streams with queued bytes
        self._tx_waiting: set[H2Stream] = set()
        self._tx_paused = False
        self._dispatching = False
        self._conn_unacked = 0
        self._conn_deferred = 0
        self._held = 0
        self._stream_step = max(settings.stream_window // 4, 1)
        self._conn_step = max(settings.connection_window // 4, 1)
        self._budget = settings.connection_window // 2
        self.goaway_received = False
        self.goaway_sent = False
        self.closed = False
        self.error: str = ""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.remote_settings: asyncio.Future[None] = loop.create_future()
        self._done: asyncio.Future[None] = loop.create_future()
        self._idle_handle: asyncio.TimerHandle | None = None
        self.streams_opened = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Send our preface and SETTINGS, then take the transport's bytes (push mode)."""
        self.codec.initiate_connection()
        self._flush()
        self.transport.on_resume_writing = self._tx_resumed
        self.transport.set_receiver(self)
        self._arm_idle()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._done)

    @property
    def usable(self) -> bool:
        """True while new streams may be opened here."""
        return not (self.closed or self.goaway_received or self.goaway_sent)

    def capacity(self) -> int:
        """How many more streams the peer lets us open now."""
        if not self.usable:
            return 0
        return max(0, self.codec.remote_max_streams - len(self.streams))

    @property
    def peer_max_streams(self) -> int:
        """The peer's SETTINGS_MAX_CONCURRENT_STREAMS."""
        return self.codec.remote_max_streams

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
        """Close the connection; streams still open are lost."""
        if self.closed:
            return
        self.closed = True
        self._flush()
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        err = exc or ConnectionResetError(f"HTTP/2 connection {self.name} closed")
        for s in list(self.streams.values()):
            self._finish(s, err)
        if not self.remote_settings.done():
            self.remote_settings.set_exception(err)
            self.remote_settings.exception()
        self.transport.set_receiver(None)
        self.transport.on_resume_writing = None
        if exc is None:
            self.transport.close()
        else:
            self.transport.abort()
        if not self._done.done():
            self._done.set_result(None)
        self._changed()

    # ------------------------------------------------------------------ Receiver
    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._dispatching = True
        try:
            self.codec.receive_data(data)
        except H2ConnectionError as e:
            self._dispatching = False
            self.error = f"HTTP/2 protocol error: {e}"
            log.info("h2_protocol_error session=%s remote=%s error=%r", self.name,
                     _addr(self.transport.meta), str(e))
            self.close(ConnectionAbortedError(self.error))  # flushes the GOAWAY first
            return
        except Exception as e:
            log.exception("h2_session_error session=%s", self.name)
            self.error = f"internal error: {e!r}"
            self._dispatching = False
            self.close(e)
            return
        self._dispatching = False
        self._flush()

    def eof_received(self) -> None:
        self.close(None if not self.streams else ConnectionResetError(
            f"HTTP/2 connection {self.name}: peer closed with {len(self.streams)} streams open"))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.close(exc or ConnectionResetError(f"HTTP/2 connection {self.name} lost"))

    # ------------------------------------------------------------------ H2Handler
    def on_headers(self, sid: int, headers: list[Header], end_stream: bool) -> None:
        s = self.streams.get(sid)
        if s is None:
            if not self.client:
                self._on_request(sid, headers, end_stream)
            return
        if headers[0][1][:1] == b"1":
            return  # an informational response: the final one follows
        s.headers = headers
        fut = s.response
        if fut is not None and not fut.done():
            fut.set_result(headers)
        if end_stream:
            self._remote_end(s)

    def _on_request(self, sid: int, headers: list[Header], end_stream: bool) -> None:
        if self.on_request is None or self.goaway_sent:
            self.codec.reset_stream(sid, H2ErrorCode.REFUSED_STREAM)
            return
        tm = self.transport.meta
        meta = StreamMeta(protocol=tm.protocol, listener=tm.listener, local=tm.local,
                          remote=tm.remote, sni=tm.sni, alpn=tm.alpn, peer_id=tm.peer_id,
                          user=tm.user).copy_extra(tm)
        s = H2Stream(self, sid, meta)
        s.headers = headers
        self.streams[sid] = s
        self.streams_opened += 1
        self._disarm_idle()
        self.on_request(s)
        if end_stream:
            self._remote_end(s)

    def on_trailers(self, sid: int, headers: list[Header]) -> None:
        s = self.streams.get(sid)
        if s is not None:
            self._remote_end(s)

    def on_data(self, sid: int, data: bytes, flow_len: int, end_stream: bool) -> None:
        n = flow_len
        s = self.streams.get(sid)
        if s is None:
            self._conn_ack(n)
            return
        if data:
            s._on_data(data)
        if n:
            if s._reading_paused:
                s._held += n
                self._held += n
                if self._held > self._budget:
                    self._conn_deferred += n
                else:
                    self._conn_ack(n)
            else:
                self._conn_ack(n)
                self._stream_ack(s, n)
        if end_stream:
            self._remote_end(s)

    def _remote_end(self, s: H2Stream) -> None:
        if s._remote_ended or s._finished:
            return
        s._remote_ended = True
        fut = s.response
        if fut is not None and not fut.done():
            fut.set_exception(ConnectionResetError(
                f"HTTP/2 stream {s.sid} ended before a response"))
            fut.exception()
        s._on_eof()
        if s._local_ended and not s._finished:
            self._finish(s, None)

    def on_reset(self, sid: int, code: int) -> None:
        s = self.streams.get(sid)
        if s is None:
            return
        msg = f"HTTP/2 stream {sid} reset by the peer ({_code_name(code)})"
        # REFUSED_STREAM: the peer did not process it (RFC 9113 8.7): the dialer retries
        self._finish(s, ConnectionRefusedError(msg) if code == H2ErrorCode.REFUSED_STREAM
                     else ConnectionResetError(msg))

    def on_stream_error(self, sid: int, code: int, message: str) -> None:
        log.info("h2_stream_error session=%s stream=%d code=%s error=%r", self.name, sid,
                 _code_name(code), message)
        s = self.streams.get(sid)
        if s is not None:
            self._finish(s, ConnectionResetError(f"HTTP/2 stream {sid}: {message}"))

    def on_window(self, sid: int) -> None:
        if not self._blocked:
            return
        if sid == 0:
            self._drain_all()
        else:
            s = self.streams.get(sid)
            if s is not None and s in self._blocked:
                self._drain(s)

    def on_settings(self, changed: dict[int, int]) -> None:
        if H2Setting.INITIAL_WINDOW_SIZE in changed and self._blocked:
            self._drain_all()
        if H2Setting.MAX_CONCURRENT_STREAMS in changed:
            self._changed()
        if not self.remote_settings.done():
            self.remote_settings.set_result(None)

    def on_goaway(self, last_sid: int, code: int, debug: bytes) -> None:
        self.goaway_received = True
        name = _code_name(code)
        log.info("h2_goaway_received session=%s remote=%s code=%s last_stream=%d streams=%d",
                 self.name, _addr(self.transport.meta), name, last_sid, len(self.streams))
        if code != H2ErrorCode.NO_ERROR:
            self.close(ConnectionResetError(f"HTTP/2 connection {self.name}: GOAWAY {name}"))
            return
        for sid, s in list(self.streams.items()):
            if self.client and sid > last_sid:  # never processed by the peer: safe to retry
                self._finish(s, ConnectionRefusedError(
                    f"HTTP/2 stream {sid} refused by GOAWAY (last stream {last_sid})"))
        self._changed()
        if not self.streams:
            self.close()

    # ------------------------------------------------------------------ flow control: in
    def _conn_ack(self, n: int) -> None:
        u = self._conn_unacked + n
        if u >= self._conn_step:
            self._conn_unacked = 0
            with contextlib.suppress(H2Error):
                self.codec.window_update(0, u)
        else:
            self._conn_unacked = u

    def _stream_ack(self, s: H2Stream, n: int) -> None:
        u = s._unacked + n
        if u >= self._stream_step and not s._remote_ended and not s._finished:
            s._unacked = 0
            with contextlib.suppress(H2Error):
                self.codec.window_update(s.sid, u)
        else:
            s._unacked = u

    def _release(self, s: H2Stream) -> None:
        """``s`` resumed reading: hand back what it held."""
        held = s._held
        if not held:
            return
        s._held = 0
        self._held -= held
        if self._conn_deferred and self._held <= self._budget:
            d, self._conn_deferred = self._conn_deferred, 0
            self._conn_ack(d)
        self._stream_ack(s, held)
        self._flush()

    # ------------------------------------------------------------------ flow control: out
    def _send(self, s: H2Stream, data: bytes | bytearray | memoryview) -> int:
        """Frame as much of ``data`` as the windows allow; return the bytes framed."""
        try:
            return self.codec.send_data(s.sid, data)
        except H2UsageError:
            return len(data)  # the stream is gone in the codec: drop

    def _write(self, s: H2Stream, data: bytes | bytearray | memoryview) -> None:
        if s._finished or self.closed:
            return
        if s._pending_len:
            s._pending.append(bytes(data))
            s._pending_len += len(data)
        else:
            sent = self._send(s, data)
            if sent < len(data):
                rest = memoryview(data)[sent:]
                s._pending.append(rest)
                s._pending_len += len(rest)
                self._blocked[s] = None
        self._flush()
        if (s._pending_len or self._tx_paused) and not s._write_paused:
            s._pause_writing()
            if self._tx_paused and not s._pending_len:
                self._tx_waiting.add(s)

    def _drain(self, s: H2Stream) -> None:
        pending = s._pending
        while pending:
            chunk = pending[0]
            sent = self._send(s, chunk)
            s._pending_len -= sent
            if sent < len(chunk):
                pending[0] = memoryview(chunk)[sent:]
                return
            pending.popleft()
        self._blocked.pop(s, None)
        if s._end_queued:
            self._end(s)
        if s._write_paused and not s._finished:
            if self._tx_paused:
                self._tx_waiting.add(s)
            else:
                s._resume_writing()

    def _drain_all(self) -> None:
        for s in list(self._blocked):
            if self.codec.send_window <= 0:
                break
            self._drain(s)

    def _flush(self) -> None:
        if self._dispatching:
            return
        codec = self.codec
        if codec.out:
            t = self.transport
            t.write(codec.data_to_send())
            if t.write_paused:
                self._tx_paused = True

    def _tx_resumed(self) -> None:
        self._tx_paused = False
        waiting = self._tx_waiting
        self._tx_waiting = set()
        for s in waiting:
            if s._write_paused and not s._pending_len and not s._finished:
                s._resume_writing()

    # ------------------------------------------------------------------ stream ends
    def _write_eof(self, s: H2Stream) -> None:
        if s._finished or s._local_ended or self.closed:
            return
        if s._pending_len:
            s._end_queued = True
            return
        self._end(s)
        self._flush()

    def _end(self, s: H2Stream) -> None:
        s._end_queued = False
        s._local_ended = True
        with contextlib.suppress(H2Error):
            self.codec.end_stream(s.sid)
        if s._remote_ended:
            self._finish(s, None)
        elif s._close_queued:
            self._reset(s, H2ErrorCode.NO_ERROR)

    def _close_stream(self, s: H2Stream, *, graceful: bool) -> None:
        if s._finished:
            return
        if self.closed:
            self._finish(s, None)
            return
        if not graceful:
            self._reset(s, H2ErrorCode.CONNECT_ERROR if s.established else H2ErrorCode.CANCEL)
        else:
            s._close_queued = True
            if not s._local_ended and not s._end_queued:
                if s._pending_len:
                    s._end_queued = True
                else:
                    self._end(s)
            elif s._local_ended and not s._remote_ended:
                self._reset(s, H2ErrorCode.NO_ERROR)
        self._flush()

    def _reset(self, s: H2Stream, code: int) -> None:
        self.codec.reset_stream(s.sid, code)
        self._finish(s, None)

    def _stream_error(self, s: H2Stream, e: Exception) -> None:
        log.info("h2_stream_error session=%s stream=%d error=%r", self.name, s.sid, str(e))
        self._reset(s, H2ErrorCode.INTERNAL_ERROR)
        self._flush()

    def _finish(self, s: H2Stream, exc: BaseException | None) -> None:
        if s._finished:
            return
        s._finished = True
        self.streams.pop(s.sid, None)
        self._blocked.pop(s, None)
        self._tx_waiting.discard(s)
        s._pending.clear()
        s._pending_len = 0
        if s._held:
            self._held -= s._held
            self._conn_ack(s._held)  # its stream is gone; the connection window is not
            s._held = 0
            if self._conn_deferred and self._held <= self._budget:
                d, self._conn_deferred = self._conn_deferred, 0
                self._conn_ack(d)
        fut = s.response
        if fut is not None and not fut.done():
            fut.set_exception(exc if exc is not None else ConnectionResetError(
                f"HTTP/2 stream {s.sid} closed before a response"))
            fut.exception()
        s._on_lost(exc)
        self._changed()
        if not self.streams:
            if self.goaway_sent or self.goaway_received:
                self._loop.call_soon(self.close)
            else:
                self._arm_idle()

    # ------------------------------------------------------------------ client side
    def open_stream(self, headers: list[Header], meta: StreamMeta) -> H2Stream:
        """Send a request (no END_STREAM) and return its stream; await ``.response``."""
        codec = self.codec
        try:
            sid = codec.next_stream_id()
        except H2UsageError:
            self.goaway()
            raise ConnectionRefusedError(f"HTTP/2 connection {self.name}: stream ids "
                                         "exhausted") from None
        s = H2Stream(self, sid, meta)
        s.response = self._loop.create_future()
        try:
            codec.send_headers(sid, headers)
        except H2Error as e:  # e.g. the peer lowered SETTINGS_MAX_CONCURRENT_STREAMS
            raise ConnectionRefusedError(f"HTTP/2 connection {self.name}: cannot open a "
                                         f"stream: {e}") from None
        self.streams[sid] = s
        self.streams_opened += 1
        self._disarm_idle()
        self._flush()
        return s

    def _changed(self) -> None:
        cb = self.on_change
        if cb is not None:
            cb()

    # ------------------------------------------------------------------ server side
    def _respond(self, s: H2Stream, status: int, headers: Sequence[Header], body: bytes,
                 end: bool) -> None:
        if s._finished or self.closed:
            return
        hs = [(b":status", str(status).encode()), *headers]
        try:
            self.codec.send_headers(s.sid, hs, end_stream=end and not body)
            if body:
                self._write(s, body)
            if end:
                s._eof_written = True
                if body:
                    self._write_eof(s)
                else:
                    s._local_ended = True
                    if s._remote_ended:
                        self._finish(s, None)
        except H2Error as e:
            self._stream_error(s, e)
            return
        if 200 <= status < 300:
            s.established = True
        self._flush()

    # ------------------------------------------------------------------ idle
    def _arm_idle(self) -> None:
        if self._idle_handle is None and not self.closed:
            t = self.settings.idle_timeout
            if not self.streams_opened and self.first_idle is not None:
                t = self.first_idle
            self._idle_handle = self._loop.call_later(t, self._idle)

    def _disarm_idle(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None

    def _idle(self) -> None:
        self._idle_handle = None
        if self.streams or self.closed:
            return
        log.debug("h2_idle session=%s", self.name)
        if self.on_idle is not None:
            self.on_idle(self)
        self.goaway()


def _code_name(code: int) -> str:
    try:
        return H2ErrorCode(code).name
    except ValueError:
        return str(code)


def _addr(meta: StreamMeta) -> str:
    r = meta.remote
    return "-" if r is None else (f"[{r[0]}]:{r[1]}" if ":" in r[0] else f"{r[0]}:{r[1]}")
