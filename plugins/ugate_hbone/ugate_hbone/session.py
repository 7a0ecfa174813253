"""One HTTP/2 connection over a core :class:`~ugate_core.Stream`; each of its streams is an
:class:`H2Stream`, itself a core Stream, so ``gateway.relay`` moves tunnel bytes with
backpressure both ways.

Core's sans-IO codec (:class:`~ugate_core.H2Codec`) does the framing, HPACK, stream states
and checks what the peer sends; it calls this session's ``on_*`` methods. Core's
:class:`~ugate_core.H2Endpoint`, which this session is, does the I/O and the flow-control
policy (shared with the HTTP proxy's HTTP/2 connections); this module says what a stream is
(a tunnel, a core Stream) and what requests, responses, resets and GOAWAY mean for it:

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
import logging
from collections.abc import Callable, Sequence

from ugate_core import (
    H2_PREFACE,
    H2ConnectionError,
    H2Endpoint,
    H2Error,
    H2ErrorCode,
    H2FloodLimits,
    H2Setting,
    H2UsageError,
    Stream,
    StreamMeta,
    h2_code_name,
    h2_goaway_error,
    h2_refused_by_goaway,
    h2_reset_by_peer,
    h2_stream_error,
    h2_unprocessed,
)

from .h2stream import H2Stream, Header
from .settings import HboneSettings

log = logging.getLogger("ugate.hbone")

PREFACE = H2_PREFACE
#: the largest header list we accept (SETTINGS_MAX_HEADER_LIST_SIZE)
MAX_HEADER_LIST = 16384


RequestHandler = Callable[[H2Stream], None]


class H2Session(H2Endpoint[H2Stream]):
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
        limits: H2FloodLimits | None = None,
    ) -> None:
        super().__init__(transport, client=client, settings={
            H2Setting.INITIAL_WINDOW_SIZE: settings.stream_window,
            H2Setting.MAX_FRAME_SIZE: settings.max_frame_size,
            H2Setting.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
            H2Setting.MAX_CONCURRENT_STREAMS: 0 if client else settings.max_streams,
        }, connection_window=settings.connection_window, name=name,
            limits=limits or H2FloodLimits())
        self.settings = settings
        self.on_request = on_request
        self.on_idle = on_idle
        #: called when a stream ends, the peer's limits change or the connection closes
        self.on_change = on_change
        #: server: a client's stream the codec reset as malformed (RFC 9113 8.2-8.3)
        self.on_malformed: Callable[[str], None] | None = None
        #: idle deadline before the first stream (a server's handshake timeout)
        self.first_idle = first_idle
        self.remote_settings: asyncio.Future[None] = self._loop.create_future()
        self._idle_handle: asyncio.TimerHandle | None = None
        self.streams_opened = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self, upgrade_settings: bytes | None = None) -> None:
        """Send our preface and SETTINGS, then take the transport's bytes (push mode)."""
        super().start(upgrade_settings)
        self._arm_idle()

    @property
    def peer_max_streams(self) -> int:
        """The peer's SETTINGS_MAX_CONCURRENT_STREAMS."""
        return self.codec.remote_max_streams

    def close(self, exc: BaseException | None = None) -> None:
        """Close the connection (dropped at once when ``exc`` says why); streams still open
        are lost."""
        self._shut(exc, abort=exc is not None)

    def _stream_lost(self, f: H2Stream, exc: BaseException) -> None:
        self._finish(f, exc)

    def _closed(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        if not self.remote_settings.done():
            self.remote_settings.set_exception(ConnectionResetError(
                f"HTTP/2 connection {self.name} closed"))
            self.remote_settings.exception()
        self._changed()

    def _protocol_error(self, e: H2ConnectionError) -> None:
        # a server's is logged (rate-bounded) and counted by account(); a client's here
        log.log(logging.INFO if self.client else logging.DEBUG, "h2_protocol_error session=%s "
                "remote=%s error=%r", self.name, _addr(self.transport.meta), str(e))

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
        _cancel(s)
        # REFUSED_STREAM: the peer did not process it (RFC 9113 8.7): the dialer retries
        self._finish(s, h2_reset_by_peer(sid, code))

    def on_stream_error(self, sid: int, code: int, message: str) -> None:
        if self.on_malformed is not None:  # a server's: counted and logged at a bounded rate
            self.on_malformed(f"stream {sid}: {h2_code_name(code)}: {message}")
        else:
            log.info("h2_stream_error session=%s stream=%d code=%s error=%r", self.name, sid,
                     h2_code_name(code), message)
        s = self.streams.get(sid)
        if s is not None:
            _cancel(s)
            self._finish(s, h2_stream_error(sid, code, message))

    def on_settings(self, changed: dict[int, int]) -> None:
        super().on_settings(changed)
        if H2Setting.MAX_CONCURRENT_STREAMS in changed:
            self._changed()
        if not self.remote_settings.done():
            self.remote_settings.set_result(None)

    def on_goaway(self, last_sid: int, code: int, debug: bytes) -> None:
        self.goaway_received = True
        name = h2_code_name(code)
        log.info("h2_goaway_received session=%s remote=%s code=%s last_stream=%d streams=%d",
                 self.name, _addr(self.transport.meta), name, last_sid, len(self.streams))
        err = h2_goaway_error(self.name, code)
        if err is not None:
            self.close(err)
            return
        for sid, s in list(self.streams.items()):
            if h2_unprocessed(sid, last_sid, self.client):  # safe to retry
                self._finish(s, h2_refused_by_goaway(sid, last_sid))
        self._changed()
        if not self.streams:
            self.close()

    # ------------------------------------------------------------------ flow control
    def _release(self, s: H2Stream) -> None:
        """``s`` resumed reading: hand back what it held."""
        if s._held:
            self.consumed(s)
            self._flush()

    # ------------------------------------------------------------------ stream ends
    def _write_eof(self, s: H2Stream) -> None:
        if not (s._finished or s._local_ended or self.closed):
            self.write(s, b"", True)  # END_STREAM now, or once the queue drained

    def _local_end(self, s: H2Stream) -> None:
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
                self.write(s, b"", True)
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
        self.streams.pop(s.sid, None)
        self._forget_flow(s)
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
                self.write(s, body)
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


def _cancel(s: H2Stream) -> None:
    """The client reset ``s``: stop what answers it (a dial, say) now, not when it is done
    (a rapid reset would pile those up)."""
    t = s.task
    if t is not None and not t.done():
        t.cancel()


def _addr(meta: StreamMeta) -> str:
    r = meta.remote
    return "-" if r is None else (f"[{r[0]}]:{r[1]}" if ":" in r[0] else f"{r[0]}:{r[1]}")
