"""The receiving half of :class:`~ugate_core.h2.H2Codec`: the connection's state, the frame
parser and what each frame does to the state (RFC 9113 4-6), and the helpers both halves use."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import NoReturn

from .flood import DEFAULT_LIMITS, Bucket, FloodLimits
from .frames import (
    ACK,
    CONTINUATION,
    DATA,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    HEADER,
    MAX_MAX_FRAME,
    MAX_STREAM_ID,
    MAX_WINDOW,
    MIN_MAX_FRAME,
    PADDED,
    PING,
    PREFACE,
    PRIORITY_FLAG,
    SETTINGS,
    H2ConnectionError,
    H2Error,
    H2ErrorCode,
    H2Setting,
    frame,
    goaway,
    parse_settings,
    rst_stream,
    u32,
    window_update,
)
from .handler import LOCAL_DEFAULTS, REMOTE_DEFAULTS, H2Handler, StreamState
from .headers import Header, check_request, check_response, check_trailers
from .hpack import Hpack

_unpack_header = HEADER.unpack_from
_pack_header = HEADER.pack

_PROTOCOL = H2ErrorCode.PROTOCOL_ERROR
_FRAME_SIZE = H2ErrorCode.FRAME_SIZE_ERROR
_FLOW = H2ErrorCode.FLOW_CONTROL_ERROR
_REFUSED = H2ErrorCode.REFUSED_STREAM
_CALM = H2ErrorCode.ENHANCE_YOUR_CALM


class Receiver:
    """State and receive side of an HTTP/2 connection; :class:`H2Codec` adds sending."""

    def __init__(self, handler: H2Handler, *, client: bool,
                 settings: Mapping[int, int] | None = None,
                 connection_window: int = DEFAULT_WINDOW,
                 limits: FloodLimits = DEFAULT_LIMITS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.handler = handler
        self.client = client
        local = dict(LOCAL_DEFAULTS)
        if client:
            local[H2Setting.ENABLE_PUSH] = 0
        if settings:
            local.update(settings)
        #: the SETTINGS we announce, and the peer's (updated as they arrive)
        self.local_settings = local
        self.remote_settings = dict(REMOTE_DEFAULTS)
        self._max_in = local[H2Setting.MAX_FRAME_SIZE]
        self._init_recv = local[H2Setting.INITIAL_WINDOW_SIZE]
        self._max_streams_in = local.get(H2Setting.MAX_CONCURRENT_STREAMS, MAX_STREAM_ID)
        self._max_block = local[H2Setting.MAX_HEADER_LIST_SIZE] + 1024
        self._extended_connect = bool(local.get(H2Setting.ENABLE_CONNECT_PROTOCOL))
        self._connection_window = connection_window
        #: the peer's limits we send within
        self.max_outbound_frame_size = MIN_MAX_FRAME
        self.remote_max_streams = REMOTE_DEFAULTS[H2Setting.MAX_CONCURRENT_STREAMS]
        self._init_send = DEFAULT_WINDOW
        #: connection-level windows: what we may send, what the peer may send
        self.send_window = DEFAULT_WINDOW
        self.recv_window = DEFAULT_WINDOW
        #: frames to send: take them with :meth:`data_to_send`
        self.out = bytearray()
        self.streams: dict[int, StreamState] = {}
        self.closed = False
        #: (last stream id, code) of a GOAWAY we sent / received, or None
        self.goaway_sent: tuple[int, int] | None = None
        self.goaway_received: tuple[int, int] | None = None
        self._next_sid = 1 if client else 2
        self._peer_odd = 0 if client else 1  # parity of the stream ids the peer opens
        self.last_peer_sid = 0
        self._n_local = 0  # open streams we started / the peer started
        self._n_peer = 0
        #: streams lately closed by END_STREAM both ways: a frame there is an error (RFC 9113
        #: 5.1); frames on other closed streams (reset, refused) are ignored, since the peer may
        #: have sent them before it heard. Forgetting one only makes us lenient.
        self._ended_recent: dict[int, None] = {}
        self._hpack = Hpack(local[H2Setting.MAX_HEADER_LIST_SIZE],
                            local.get(H2Setting.HEADER_TABLE_SIZE, 4096))
        # receive state
        self._buf = bytearray()  # an incomplete frame (header, or a whole non-DATA frame)
        self._preface_left = 0 if client else len(PREFACE)
        self._got_settings = False
        self._cont_sid = 0  # a header block waits for CONTINUATION on this stream
        self._cont_end = False
        self._cont_bad = False
        self._cont_buf = bytearray()
        self._dleft = 0  # body bytes of the DATA frame being delivered
        self._dsid = 0  # ... to this stream (0: discard)
        self._dend = False
        # flood bounds (flood.py): the clock is read only for the events they count
        self._clock = clock
        now = clock()
        self._resets = Bucket(limits.resets, limits.window, now)
        self._control = Bucket(limits.control, limits.window, now)
        self._wu_per_data = limits.window_updates_per_data
        self._wu_credit = limits.control  # WINDOW_UPDATEs the peer may send: grows per DATA
        #: RST_STREAMs the peer sent on open streams, and streams we reset or refused for it
        self.resets_received = 0
        self.resets_sent = 0
        #: which bound the peer exceeded (``resets``, ``control``, ``window_update``): the
        #: codec queued GOAWAY ENHANCE_YOUR_CALM; "" while none
        self.flood = ""
        self._frame_handlers = (
            self._on_padded_data, self._on_headers, self._on_priority, self._on_rst,
            self._on_settings, self._on_push_promise, self._on_ping, self._on_goaway,
            self._on_window_update, self._on_continuation)
    # ------------------------------------------------------------------ receive
    def receive_data(self, data: bytes) -> None:
        """Parse the peer's bytes; calls the handler; raises :class:`H2ConnectionError`."""
        if self.closed:
            return
        buf = self._buf
        if buf:
            buf += data
            data = bytes(buf)
            buf.clear()
        elif type(data) is not bytes:
            data = bytes(data)
        pos = 0
        n = len(data)
        if self._preface_left:
            pos = self._check_preface(data)
        handlers = self._frame_handlers
        while pos < n:
            dleft = self._dleft
            if dleft:
                avail = n - pos
                if dleft >= avail:
                    self._dleft = dleft - avail
                    self._chunk(data if pos == 0 else data[pos:], dleft == avail)
                    return
                end = pos + dleft
                self._dleft = 0
                self._chunk(data[pos:end], True)
                pos = end
                continue
            if n - pos < 9:
                buf += data[pos:]
                return
            hi, lo, ftype, flags, sid = _unpack_header(data, pos)
            length = hi << 8 | lo
            sid &= 0x7FFFFFFF
            if not self._got_settings:
                self._check_first(data, pos, ftype, flags, length)
            if length > self._max_in:
                self._fail(_FRAME_SIZE, f"frame of {length} bytes (type {ftype}) exceeds our "
                                        f"SETTINGS_MAX_FRAME_SIZE {self._max_in}")
            if self._cont_sid and ftype != CONTINUATION:
                self._fail(_PROTOCOL, f"frame type {ftype} inside a header block of stream "
                                      f"{self._cont_sid} (CONTINUATION expected)")
            if ftype == DATA and not flags & PADDED:
                pos += 9
                self._data_start(sid, length, flags & END_STREAM)
                continue
            end = pos + 9 + length
            if end > n:
                buf += data[pos:]
                return
            payload = data[pos + 9:end]
            pos = end
            if ftype < 10:
                handlers[ftype](sid, flags, payload)
            else:  # frames of unknown types are ignored (RFC 9113 5.5), within a bound
                self._cheap(f"frame of unknown type {ftype}")
            if self.closed:
                return

    def _check_preface(self, data: bytes) -> int:
        left = self._preface_left
        k = min(left, len(data))
        start = len(PREFACE) - left
        if data[:k] != PREFACE[start:start + k]:
            self._fail(_PROTOCOL, f"not the HTTP/2 client preface (bytes {data[:k]!r})")
        self._preface_left = left - k
        return k

    def _check_first(self, data: bytes, pos: int, ftype: int, flags: int, length: int) -> None:
        if ftype != SETTINGS or flags & ACK or length % 6 or length > 6 * 64:
            self._fail(_PROTOCOL, f"the peer did not start with a SETTINGS frame (first bytes "
                                  f"{data[pos:pos + 9]!r})")
        self._got_settings = True

    def _fail(self, code: int, message: str) -> NoReturn:
        """A connection error: queue GOAWAY, stop, raise."""
        if not self.closed:
            self.closed = True
            self.out += goaway(self.last_peer_sid, code, message.encode()[:256])
            self.goaway_sent = (self.last_peer_sid, code)
        raise H2ConnectionError(message, code)

    def _flooded(self, kind: str, message: str) -> NoReturn:
        self.flood = kind
        self._fail(_CALM, message)

    def _cheap(self, what: str) -> None:
        """A frame that costs the peer nothing and us some work (flood.py's ``control``)."""
        if not self._control.take(self._clock()):
            self._flooded("control", f"{what}: more than the {self._control.burst:.0f} "
                                     "cheap frames allowed in a burst")

    def _reset_event(self, sid: int) -> None:
        """Stream ``sid`` ended by a reset the peer caused (flood.py's ``resets``)."""
        if not self._resets.take(self._clock()):
            self._flooded("resets", f"stream {sid}: more than the {self._resets.burst:.0f} "
                                    "stream resets allowed in a burst")

    def _is_idle(self, sid: int) -> bool:
        """Not opened yet by the side whose parity ``sid`` has."""
        if sid & 1 == self._peer_odd:
            return sid > self.last_peer_sid
        return sid >= self._next_sid

    def _drop(self, sid: int) -> None:
        if self.streams.pop(sid, None) is not None:
            if sid & 1 == self._peer_odd:
                self._n_peer -= 1
            else:
                self._n_local -= 1

    def _rst(self, sid: int, code: int) -> None:
        self.out += rst_stream(sid, code)
        self._drop(sid)

    def _ended(self, sid: int) -> None:
        """Both sides of ``sid`` sent END_STREAM: drop it, remember it for a while."""
        self._drop(sid)
        recent = self._ended_recent
        recent[sid] = None
        if len(recent) > 1024:
            del recent[next(iter(recent))]

    def _stream_error(self, sid: int, code: int, message: str) -> None:
        self._rst(sid, code)
        self.resets_sent += 1
        self.handler.on_stream_error(sid, code, message)
        self._reset_event(sid)

    def _closed(self, sid: int, what: str) -> None:
        """``what`` arrived on a stream that is not open: an error on an idle stream or one
        that ended normally, else ignored (see ``_ended_recent``)."""
        if not sid or self._is_idle(sid):
            self._fail(_PROTOCOL, f"{what} on {'idle ' if sid else ''}stream {sid}")
        if sid in self._ended_recent:
            self._fail(H2ErrorCode.STREAM_CLOSED, f"{what} on closed stream {sid}")
        self._cheap(f"{what} on reset stream {sid}")

    # ------------------------------------------------------------------ DATA
    def _data_start(self, sid: int, length: int, end: int) -> None:
        """A DATA frame's header: check the stream and the windows, then deliver its body as
        it arrives (:meth:`_chunk`)."""
        if not length and not end:
            self._cheap(f"empty DATA on stream {sid}")
        self._dsid = 0
        self._dend = bool(end)
        self._dleft = length
        self.recv_window -= length
        if self.recv_window < 0:
            self._fail(_FLOW, f"DATA of {length} bytes on stream {sid} exceeds the connection "
                              "window")
        s = self.streams.get(sid)
        if s is None:
            self._closed(sid, "DATA")
            self._discard(length)
        elif s.remote_closed:
            self._stream_error(sid, H2ErrorCode.STREAM_CLOSED, f"DATA on stream {sid} after "
                               "its END_STREAM")
            self._discard(length)
        elif s.rx != 2:
            self._stream_error(sid, _PROTOCOL, f"DATA on stream {sid} before its headers")
            self._discard(length)
        else:
            s.recv_window -= length
            if s.recv_window < 0:
                self._stream_error(sid, _FLOW, f"DATA of {length} bytes exceeds the window of "
                                   f"stream {sid}")
                self._discard(length)
                return
            self._dsid = sid
            if not length:
                self._dleft = 0
                self._deliver(sid, s, b"", 0)

    def _chunk(self, data: bytes, last: bool) -> None:
        sid = self._dsid
        if not sid:
            return
        s = self.streams.get(sid)
        if s is None:  # the application reset it while its frame was arriving
            self._dsid = 0
            self._discard(len(data))
            return
        if last:
            self._deliver(sid, s, data, len(data))
        else:
            self.handler.on_data(sid, data, len(data), False)

    def _deliver(self, sid: int, s: StreamState, data: bytes, flow: int) -> None:
        """The last piece of a DATA frame; ends the peer's side on END_STREAM."""
        if self._dend:
            self._remote_end(sid, s)
            self.handler.on_data(sid, data, flow, True)
        else:
            self.handler.on_data(sid, data, flow, False)

    def _discard(self, n: int) -> None:
        """Received bytes nobody will consume: hand the connection credit back now."""
        if n:
            self.recv_window += n
            self.out += window_update(0, n)

    def _on_padded_data(self, sid: int, flags: int, payload: bytes) -> None:
        pad = payload[0] if payload else -1
        if pad < 0 or pad >= len(payload):
            self._fail(_PROTOCOL, f"DATA on stream {sid}: padding {pad} does not fit in "
                                  f"{len(payload)} bytes")
        n = len(payload)
        self._data_start(sid, n, flags & END_STREAM)
        self._dleft = 0
        sid = self._dsid
        if sid and n:
            s = self.streams.get(sid)
            if s is not None:
                self._deliver(sid, s, payload[1:n - pad], n)
            else:
                self._discard(n)

    # ------------------------------------------------------------------ HEADERS
    def _on_headers(self, sid: int, flags: int, payload: bytes) -> None:
        if not sid:
            self._fail(_PROTOCOL, "HEADERS on stream 0")
        i, end = 0, len(payload)
        if flags & PADDED:
            if not payload:
                self._fail(_FRAME_SIZE, f"HEADERS on stream {sid}: no pad length")
            i, end = 1, end - payload[0]
        self_dependent = False
        if flags & PRIORITY_FLAG:
            if i + 5 <= end:
                self_dependent = u32(payload, i) & 0x7FFFFFFF == sid
            i += 5
        if end < i:
            self._fail(_PROTOCOL, f"HEADERS on stream {sid}: padding or priority longer than "
                                  "the frame")
        fragment = payload[i:end]
        end_stream = bool(flags & END_STREAM)
        if flags & END_HEADERS:
            self._header_block(sid, fragment, end_stream, self_dependent)
        else:
            if not fragment:
                self._cheap(f"empty HEADERS fragment on stream {sid}")
            self._cont_sid = sid
            self._cont_end = end_stream
            self._cont_bad = self_dependent
            self._cont_buf = bytearray(fragment)

    def _on_continuation(self, sid: int, flags: int, payload: bytes) -> None:
        if not self._cont_sid or sid != self._cont_sid:
            self._fail(_PROTOCOL, f"CONTINUATION on stream {sid} outside a header block")
        if not payload and not flags & END_HEADERS:
            self._cheap(f"empty CONTINUATION on stream {sid}")
        buf = self._cont_buf
        buf += payload
        if len(buf) > self._max_block:
            self._fail(H2ErrorCode.ENHANCE_YOUR_CALM, f"header block of stream {sid} exceeds "
                                                      f"{self._max_block} bytes")
        if flags & END_HEADERS:
            self._cont_sid = 0
            self._cont_buf = bytearray()
            self._header_block(sid, bytes(buf), self._cont_end, self._cont_bad)

    def _header_block(self, sid: int, block: bytes, end_stream: bool,
                      self_dependent: bool) -> None:
        try:  # always decode: the HPACK tables must follow every block
            headers = self._hpack.decode(block, sid)
        except H2Error as e:
            self._fail(e.code, str(e))
        if self_dependent:
            self._stream_error(sid, _PROTOCOL, f"stream {sid} depends on itself")
            return
        s = self.streams.get(sid)
        if s is None:
            if sid & 1 == self._peer_odd and sid > self.last_peer_sid:
                self._new_stream(sid, headers, end_stream, block)
            else:
                self._closed(sid, "HEADERS")
            return
        if s.remote_closed:
            self._stream_error(sid, H2ErrorCode.STREAM_CLOSED, f"HEADERS on stream {sid} "
                               "after its END_STREAM")
            return
        if s.rx == 2:
            why = check_trailers(headers)
            if why is None and not end_stream:
                why = "trailers without END_STREAM"
            if why is not None:
                self._stream_error(sid, _PROTOCOL, f"stream {sid}: {why}")
                return
            self._remote_end(sid, s)
            self.handler.on_trailers(sid, headers)
            return
        why = check_response(headers)
        if why is None and headers[0][1][:1] == b"1":
            if end_stream:
                why = "informational response with END_STREAM"
            else:
                s.rx = 1
                self.handler.on_headers(sid, headers, False)
                return
        if why is not None:
            self._stream_error(sid, _PROTOCOL, f"stream {sid}: {why}")
            return
        s.rx = 2
        if end_stream:
            self._remote_end(sid, s)
        self.handler.on_headers(sid, headers, end_stream)

    def _new_stream(self, sid: int, headers: list[Header], end_stream: bool,
                    block: bytes) -> None:
        """A request opening stream ``sid`` (server side)."""
        self.last_peer_sid = sid
        if self.goaway_sent is not None or self._n_peer >= self._max_streams_in:
            self._rst(sid, _REFUSED)
            self.resets_sent += 1
            self._reset_event(sid)
            return
        hp = self._hpack
        if block not in hp.request_ok:  # (a repeated request was checked when first seen)
            why = check_request(headers, self._extended_connect)
            if why is not None:
                self._stream_error(sid, _PROTOCOL, f"stream {sid}: {why}")
                return
            if hp.cached(block):
                hp.request_ok.add(block)
        s = StreamState(self._init_send, self._init_recv)
        s.rx = 2
        s.remote_closed = end_stream
        self.streams[sid] = s
        self._n_peer += 1
        self.handler.on_headers(sid, headers, end_stream)

    def _remote_end(self, sid: int, s: StreamState) -> None:
        s.remote_closed = True
        if s.local_closed:
            self._ended(sid)

    # ------------------------------------------------------------------ other frames
    def _on_priority(self, sid: int, flags: int, payload: bytes) -> None:
        if not sid:
            self._fail(_PROTOCOL, "PRIORITY on stream 0")
        self._cheap("PRIORITY")
        if len(payload) != 5:
            if sid in self.streams:
                self._stream_error(sid, _FRAME_SIZE, f"PRIORITY of {len(payload)} bytes")
            return
        if u32(payload) & 0x7FFFFFFF == sid and sid in self.streams:
            self._stream_error(sid, _PROTOCOL, f"stream {sid} depends on itself")

    def _on_rst(self, sid: int, flags: int, payload: bytes) -> None:
        if len(payload) != 4:
            self._fail(_FRAME_SIZE, f"RST_STREAM of {len(payload)} bytes")
        if not sid or self._is_idle(sid):
            self._fail(_PROTOCOL, f"RST_STREAM on {'idle ' if sid else ''}stream {sid}")
        if sid in self.streams:
            self._drop(sid)
            self.resets_received += 1
            self.handler.on_reset(sid, u32(payload))
            self._reset_event(sid)
        else:
            self._cheap(f"RST_STREAM on closed stream {sid}")

    def _on_settings(self, sid: int, flags: int, payload: bytes) -> None:
        if sid:
            self._fail(_PROTOCOL, f"SETTINGS on stream {sid}")
        self._cheap("SETTINGS")
        if flags & ACK:
            if payload:
                self._fail(_FRAME_SIZE, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            self._fail(_FRAME_SIZE, f"SETTINGS of {len(payload)} bytes")
        changed = self._apply_settings(parse_settings(payload))
        self.out += frame(SETTINGS, ACK, 0)
        self.handler.on_settings(changed)

    def _apply_settings(self, pairs: Iterable[tuple[int, int]]) -> dict[int, int]:
        changed: dict[int, int] = {}
        for ident, value in pairs:
            if ident == H2Setting.INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    self._fail(_FLOW, f"SETTINGS_INITIAL_WINDOW_SIZE {value} exceeds 2^31-1")
                delta = value - self._init_send
                self._init_send = value
                for s in self.streams.values():
                    s.send_window += delta
                    if s.send_window > MAX_WINDOW:
                        self._fail(_FLOW, f"SETTINGS_INITIAL_WINDOW_SIZE {value} overflows a "
                                          "stream window")
            elif ident == H2Setting.MAX_FRAME_SIZE:
                if not MIN_MAX_FRAME <= value <= MAX_MAX_FRAME:
                    self._fail(_PROTOCOL, f"SETTINGS_MAX_FRAME_SIZE {value} out of range")
                self.max_outbound_frame_size = value
            elif ident == H2Setting.MAX_CONCURRENT_STREAMS:
                self.remote_max_streams = value
            elif ident == H2Setting.HEADER_TABLE_SIZE:
                self._hpack.peer_table_size(value)
            elif ident in (H2Setting.ENABLE_PUSH, H2Setting.ENABLE_CONNECT_PROTOCOL) \
                    and value > 1:
                self._fail(_PROTOCOL, f"SETTINGS {H2Setting(ident).name} {value} is not 0 or 1")
            self.remote_settings[ident] = value
            changed[ident] = value
        return changed

    def _on_push_promise(self, sid: int, flags: int, payload: bytes) -> None:
        self._fail(_PROTOCOL, "PUSH_PROMISE: push is disabled")

    def _on_ping(self, sid: int, flags: int, payload: bytes) -> None:
        if sid:
            self._fail(_PROTOCOL, f"PING on stream {sid}")
        if len(payload) != 8:
            self._fail(_FRAME_SIZE, f"PING of {len(payload)} bytes")
        self._cheap("PING")
        if not flags & ACK:
            self.out += frame(PING, ACK, 0, payload)
        self.handler.on_ping(payload, bool(flags & ACK))

    def _on_goaway(self, sid: int, flags: int, payload: bytes) -> None:
        if sid:
            self._fail(_PROTOCOL, f"GOAWAY on stream {sid}")
        if len(payload) < 8:
            self._fail(_FRAME_SIZE, f"GOAWAY of {len(payload)} bytes")
        last = u32(payload) & 0x7FFFFFFF
        code = u32(payload, 4)
        self.goaway_received = (last, code)
        for other in [k for k in self.streams if k > last and k & 1 != self._peer_odd]:
            self._drop(other)
        self.handler.on_goaway(last, code, payload[8:])

    def _on_window_update(self, sid: int, flags: int, payload: bytes) -> None:
        if len(payload) != 4:
            self._fail(_FRAME_SIZE, f"WINDOW_UPDATE of {len(payload)} bytes")
        self._wu_credit -= 1
        if self._wu_credit < 0:
            self._flooded("window_update", f"WINDOW_UPDATE on stream {sid}: more than "
                                           f"{self._wu_per_data} per DATA frame we sent")
        inc = u32(payload) & 0x7FFFFFFF
        if not sid:
            if not inc:
                self._fail(_PROTOCOL, "WINDOW_UPDATE of 0 on the connection")
            self.send_window += inc
            if self.send_window > MAX_WINDOW:
                self._fail(_FLOW, "WINDOW_UPDATE overflows the connection window")
            self.handler.on_window(0)
            return
        s = self.streams.get(sid)
        if s is None:
            if self._is_idle(sid):
                self._fail(_PROTOCOL, f"WINDOW_UPDATE on idle stream {sid}")
            return
        if not inc:
            self._stream_error(sid, _PROTOCOL, f"WINDOW_UPDATE of 0 on stream {sid}")
            return
        s.send_window += inc
        if s.send_window > MAX_WINDOW:
            self._stream_error(sid, _FLOW, f"WINDOW_UPDATE overflows the window of stream {sid}")
            return
        self.handler.on_window(sid)

    def _local_end(self, sid: int, s: StreamState) -> None:
        s.local_closed = True
        if s.remote_closed:
            self._ended(sid)
