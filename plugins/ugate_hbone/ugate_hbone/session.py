"""One HTTP/2 connection over a core :class:`~ugate_core.Stream`; each of its streams is an
:class:`H2Stream`, itself a core Stream, so ``gateway.relay`` moves tunnel bytes with
backpressure both ways.

h2 (python-hyper) does the framing, HPACK and the state machines; this module does the I/O
and the flow-control policy:

* **sending**: a stream's bytes go out as DATA frames within the peer's stream and connection
  windows; what does not fit waits in the stream's own queue, and the stream reports
  ``write_paused`` (so the relay pauses the source) until WINDOW_UPDATEs drain the queue. The
  connection's socket buffer pauses every stream that writes while it is full.
* **receiving**: received bytes are handed back to the peer (WINDOW_UPDATE) once consumed; a
  stream whose reader is paused withholds its stream-level updates, so the peer stops sending
  on that stream only. Connection-level updates go out at once up to ``connection_window / 2``
  bytes held by paused streams: a stalled stream does not stall the others.
* updates are batched (a quarter window at a time) and we never re-validate the headers we
  build ourselves (``validate_outbound_headers=False``): h2's per-frame cost is the hot path.

h2 cannot finish streams after a GOAWAY (its connection state machine refuses every frame once
one was sent or received): :meth:`H2Session.goaway` and a received GOAWAY put it back into the
open state so that streams already running end normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from h2.config import H2Configuration
from h2.connection import ConnectionState, H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import H2Error, NoAvailableStreamIDError
from h2.exceptions import ProtocolError as H2ProtocolError
from h2.settings import SettingCodes, Settings

from ugate_core import Stream, StreamMeta

from . import _h2fast  # noqa: F401  (cheap DATA frame repr: see the module)
from .h2stream import H2Stream, Header
from .settings import HboneSettings

log = logging.getLogger("ugate.hbone")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: the largest header list we accept (SETTINGS_MAX_HEADER_LIST_SIZE)
MAX_HEADER_LIST = 16384


RequestHandler = Callable[[H2Stream], None]


class H2Session:
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
            SettingCodes.INITIAL_WINDOW_SIZE: settings.stream_window,
            SettingCodes.MAX_FRAME_SIZE: settings.max_frame_size,
            SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
            SettingCodes.MAX_CONCURRENT_STREAMS: 0 if client else settings.max_streams,
        }
        if client:
            values[SettingCodes.ENABLE_PUSH] = 0
        h2.local_settings = Settings(client=client, initial_values=values)
        # initial values are never "acknowledged" in h2: apply their local effects here
        h2.max_inbound_frame_size = settings.max_frame_size
        h2.decoder.max_header_list_size = MAX_HEADER_LIST
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
        # frame boundaries of the peer's bytes (see _scan): preface left, body left, header
        self._skip = 0 if client else len(PREFACE)
        self._left = 0
        self._hdr = b""
        self._first_frame = True
        self._max_in = settings.max_frame_size
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
        self._handlers: dict[type, Callable[[Any], None]] = {
            DataReceived: self._on_data_event,
            RequestReceived: self._on_request_event,
            ResponseReceived: self._on_response_event,
            StreamEnded: self._on_end_event,
            StreamReset: self._on_reset_event,
            WindowUpdated: self._on_window_event,
            RemoteSettingsChanged: self._on_settings_event,
            ConnectionTerminated: self._on_goaway_event,
        }

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Send our preface and SETTINGS, then take the transport's bytes (push mode)."""
        h2 = self.h2
        h2.initiate_connection()
        extra = self.settings.connection_window - 65535
        if extra > 0:
            h2.increment_flow_control_window(extra)
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
        limit = self.h2.remote_settings.max_concurrent_streams
        return max(0, limit - len(self.streams))

    def goaway(self, code: ErrorCodes = ErrorCodes.NO_ERROR) -> None:
        """Tell the peer to open no more streams; running streams finish; then close."""
        if self.closed or self.goaway_sent:
            return
        self.goaway_sent = True
        state = self.h2.state_machine.state
        with contextlib.suppress(H2Error):
            self.h2.close_connection(code)
        if code == ErrorCodes.NO_ERROR and state != ConnectionState.CLOSED:
            self.h2.state_machine.state = state  # let running streams finish (see module doc)
        self._flush()
        if not self.streams or code != ErrorCodes.NO_ERROR:
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
        if not self._scan(data):
            return
        try:
            events = self.h2.receive_data(data)
        except H2ProtocolError as e:
            self.error = f"HTTP/2 protocol error: {e}"
            log.info("h2_protocol_error session=%s remote=%s error=%r", self.name,
                     _addr(self.transport.meta), str(e))
            self.close(ConnectionAbortedError(self.error))
            return
        handlers = self._handlers
        self._dispatching = True
        try:
            for ev in events:
                h = handlers.get(type(ev))
                if h is not None:
                    h(ev)
        except Exception as e:
            log.exception("h2_session_error session=%s", self.name)
            self.error = f"internal error: {e!r}"
            self._dispatching = False
            self.close(e)
            return
        self._dispatching = False
        self._flush()

    def _scan(self, data: bytes) -> bool:
        """Check each frame header as it arrives: the first frame must be SETTINGS (RFC 9113
        3.4) and none may exceed our SETTINGS_MAX_FRAME_SIZE. h2 checks a frame's length only
        once the whole claimed body is buffered (up to 16 MiB; an HTTP/1.1 answer reads as a
        4.7 MB frame). False (and the connection closed) on a violation."""
        i, n = 0, len(data)
        if self._skip:  # the client's preface: h2 checks it
            i = min(self._skip, n)
            self._skip -= i
        while i < n:
            left = self._left
            if left:
                if left >= n - i:
                    self._left = left - (n - i)
                    return True
                i += left
                self._left = 0
            hdr = self._hdr
            need = 9 - len(hdr)
            if need > n - i:
                self._hdr = hdr + data[i:]
                return True
            h = hdr + data[i:i + need] if hdr else data[i:i + 9]
            self._hdr = b""
            i += need
            length = (h[0] << 16) | (h[1] << 8) | h[2]
            if self._first_frame:
                self._first_frame = False
                if h[3] != 0x4 or length % 6 or length > 6 * 64:
                    return self._bad(f"the peer did not start with a SETTINGS frame (first "
                                     f"bytes {bytes(h)!r})")
            if length > self._max_in:
                return self._bad(f"frame of {length} bytes (type {h[3]}) exceeds our "
                                 f"SETTINGS_MAX_FRAME_SIZE {self._max_in}")
            self._left = length
        return True

    def _bad(self, why: str) -> bool:
        self.error = f"HTTP/2 protocol error: {why}"
        log.info("h2_protocol_error session=%s remote=%s error=%r", self.name,
                 _addr(self.transport.meta), self.error)
        with contextlib.suppress(H2Error):
            self.h2.close_connection(ErrorCodes.PROTOCOL_ERROR
                                     if "SETTINGS frame" in why else ErrorCodes.FRAME_SIZE_ERROR)
        self.close(ConnectionAbortedError(self.error))
        return False

    def eof_received(self) -> None:
        self.close(None if not self.streams else ConnectionResetError(
            f"HTTP/2 connection {self.name}: peer closed with {len(self.streams)} streams open"))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.close(exc or ConnectionResetError(f"HTTP/2 connection {self.name} lost"))

    # ------------------------------------------------------------------ events
    def _on_request_event(self, ev: RequestReceived) -> None:
        sid = ev.stream_id
        if self.on_request is None or self.goaway_sent:
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        tm = self.transport.meta
        meta = StreamMeta(protocol=tm.protocol, listener=tm.listener, local=tm.local,
                          remote=tm.remote, sni=tm.sni, alpn=tm.alpn, peer_id=tm.peer_id,
                          user=tm.user).copy_extra(tm)
        s = H2Stream(self, sid, meta)
        s.headers = list(ev.headers)
        self.streams[sid] = s
        self.streams_opened += 1
        self._disarm_idle()
        self.on_request(s)

    def _on_response_event(self, ev: ResponseReceived) -> None:
        s = self.streams.get(ev.stream_id)
        if s is None:
            return
        s.headers = list(ev.headers)
        fut = s.response
        if fut is not None and not fut.done():
            fut.set_result(s.headers)

    def _on_data_event(self, ev: DataReceived) -> None:
        n = ev.flow_controlled_length
        s = self.streams.get(ev.stream_id)
        if s is None:
            self._conn_ack(n)
            return
        s._on_data(ev.data)
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

    def _on_end_event(self, ev: StreamEnded) -> None:
        s = self.streams.get(ev.stream_id)
        if s is None or s._remote_ended:
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

    def _on_reset_event(self, ev: StreamReset) -> None:
        s = self.streams.get(ev.stream_id)
        if s is None:
            return
        code = _code_name(ev.error_code)
        msg = f"HTTP/2 stream {s.sid} reset by the peer ({code})"
        # REFUSED_STREAM: the peer did not process it (RFC 9113 8.7): the dialer retries
        self._finish(s, ConnectionRefusedError(msg) if ev.error_code == ErrorCodes.REFUSED_STREAM
                     else ConnectionResetError(msg))

    def _on_window_event(self, ev: WindowUpdated) -> None:
        if not self._blocked:
            return
        if ev.stream_id == 0:
            self._drain_all()
        else:
            s = self.streams.get(ev.stream_id)
            if s is not None and s in self._blocked:
                self._drain(s)

    def _on_settings_event(self, ev: RemoteSettingsChanged) -> None:
        changed = ev.changed_settings
        if SettingCodes.INITIAL_WINDOW_SIZE in changed and self._blocked:
            self._drain_all()
        if SettingCodes.MAX_CONCURRENT_STREAMS in changed:
            self._changed()
        if not self.remote_settings.done():
            self.remote_settings.set_result(None)

    def _on_goaway_event(self, ev: ConnectionTerminated) -> None:
        self.goaway_received = True
        last = ev.last_stream_id if ev.last_stream_id is not None else 0
        code = _code_name(ev.error_code)
        log.info("h2_goaway_received session=%s remote=%s code=%s last_stream=%d streams=%d",
                 self.name, _addr(self.transport.meta), code, last, len(self.streams))
        if ev.error_code != ErrorCodes.NO_ERROR:
            self.close(ConnectionResetError(f"HTTP/2 connection {self.name}: GOAWAY {code}"))
            return
        # h2 closed its state machine: reopen it so running streams can finish
        self.h2.state_machine.state = (ConnectionState.CLIENT_OPEN if self.client
                                       else ConnectionState.SERVER_OPEN)
        for sid, s in list(self.streams.items()):
            if self.client and sid > last:  # never processed by the peer: safe to retry
                self._finish(s, ConnectionRefusedError(
                    f"HTTP/2 stream {sid} refused by GOAWAY (last stream {last})"))
        self._changed()
        if not self.streams:
            self.close()

    # ------------------------------------------------------------------ flow control: in
    def _conn_ack(self, n: int) -> None:
        u = self._conn_unacked + n
        if u >= self._conn_step:
            self._conn_unacked = 0
            with contextlib.suppress(H2Error):
                self.h2.increment_flow_control_window(u)
        else:
            self._conn_unacked = u

    def _stream_ack(self, s: H2Stream, n: int) -> None:
        u = s._unacked + n
        if u >= self._stream_step and not s._remote_ended and not s._finished:
            s._unacked = 0
            with contextlib.suppress(H2Error, KeyError):
                self.h2.increment_flow_control_window(u, s.sid)
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
        h2 = self.h2
        sid = s.sid
        try:
            window = h2.local_flow_control_window(sid)
        except H2Error:
            return len(data)  # the stream is gone in h2: drop
        if window <= 0:
            return 0
        total = len(data)
        n = window if window < total else total
        mfs = h2.max_outbound_frame_size
        if n <= mfs:
            h2.send_data(sid, data if n == total and isinstance(data, bytes)
                         else memoryview(data)[:n])
            return n
        view = memoryview(data)
        off = 0
        while off < n:
            k = min(mfs, n - off)
            h2.send_data(sid, view[off:off + k])
            off += k
        return n

    def _write(self, s: H2Stream, data: bytes | bytearray | memoryview) -> None:
        if s._finished or self.closed:
            return
        if s._pending_len:
            s._pending.append(bytes(data))
            s._pending_len += len(data)
        else:
            try:
                sent = self._send(s, data)
            except H2Error as e:
                self._stream_error(s, e)
                return
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
        try:
            while pending:
                chunk = pending[0]
                sent = self._send(s, chunk)
                s._pending_len -= sent
                if sent < len(chunk):
                    pending[0] = memoryview(chunk)[sent:]
                    return
                pending.popleft()
        except H2Error as e:
            self._stream_error(s, e)
            return
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
            if self.h2.outbound_flow_control_window <= 0:
                break
            self._drain(s)

    def _flush(self) -> None:
        if self._dispatching:
            return
        data = self.h2.data_to_send()
        if data:
            t = self.transport
            t.write(data)
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
        try:
            self.h2.end_stream(s.sid)
        except H2Error:
            pass
        if s._remote_ended:
            self._finish(s, None)
        elif s._close_queued:
            self._reset(s, ErrorCodes.NO_ERROR)

    def _close_stream(self, s: H2Stream, *, graceful: bool) -> None:
        if s._finished:
            return
        if self.closed:
            self._finish(s, None)
            return
        if not graceful:
            self._reset(s, ErrorCodes.CONNECT_ERROR if s.established else ErrorCodes.CANCEL)
        else:
            s._close_queued = True
            if not s._local_ended and not s._end_queued:
                if s._pending_len:
                    s._end_queued = True
                else:
                    self._end(s)
            elif s._local_ended and not s._remote_ended:
                self._reset(s, ErrorCodes.NO_ERROR)
        self._flush()

    def _reset(self, s: H2Stream, code: ErrorCodes) -> None:
        with contextlib.suppress(H2Error, KeyError):
            self.h2.reset_stream(s.sid, code)
        self._finish(s, None)

    def _stream_error(self, s: H2Stream, e: Exception) -> None:
        log.info("h2_stream_error session=%s stream=%d error=%r", self.name, s.sid, str(e))
        self._reset(s, ErrorCodes.INTERNAL_ERROR)
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
        h2 = self.h2
        try:
            sid = h2.get_next_available_stream_id()
        except NoAvailableStreamIDError:
            self.goaway()
            raise ConnectionRefusedError(f"HTTP/2 connection {self.name}: stream ids "
                                         "exhausted") from None
        s = H2Stream(self, sid, meta)
        s.response = self._loop.create_future()
        try:
            h2.send_headers(sid, headers)
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
            self.h2.send_headers(s.sid, hs, end_stream=end and not body)
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


def _code_name(code: Any) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return str(code)


def _addr(meta: StreamMeta) -> str:
    r = meta.remote
    return "-" if r is None else (f"[{r[0]}]:{r[1]}" if ":" in r[0] else f"{r[0]}:{r[1]}")
