"""A sans-IO HTTP/2 connection (RFC 9113): bytes in, handler calls out, bytes to send.

:class:`H2Codec` parses what the peer sends (:meth:`~H2Codec.receive_data`) and calls
methods of an :class:`H2Handler` for what matters to an application: headers, data, resets,
window updates, settings, pings, GOAWAY. Frames to send (:meth:`~H2Codec.send_headers`,
:meth:`~H2Codec.send_data`, ...) are appended to ``codec.out``; the I/O layer takes them with
:meth:`~H2Codec.data_to_send` and writes them. No socket, no clock, no task.

What it enforces on the peer: the client preface and a first SETTINGS frame, frame sizes
(checked at the frame header, before any body is buffered), stream-ID rules, connection and
stream flow control, CONTINUATION sequencing, SETTINGS values, and well-formed header lists
(pseudo-headers, no connection-specific headers, lowercase names). A connection error queues
GOAWAY and raises :class:`H2ConnectionError`; a stream error queues RST_STREAM and calls
:meth:`H2Handler.on_stream_error`.

What it leaves to the application: when to hand flow-control credit back
(:meth:`~H2Codec.window_update`), what to do with a GOAWAY, HTTP semantics beyond the header
checks (content-length, methods). DATA is delivered as it arrives, a frame in several pieces
when it spans reads, so a 1 MiB frame is neither buffered nor copied whole.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

from .frames import (
    CONTINUATION,
    DATA,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    HEADER,
    HEADERS,
    MAX_STREAM_ID,
    MAX_WINDOW,
    PING,
    PREFACE,
    SETTINGS,
    H2ErrorCode,
    H2UsageError,
    frame,
    goaway,
    parse_settings,
    settings_payload,
    window_update,
)
from .handler import H2Handler, StreamState
from .headers import Header
from .receive import Receiver

_pack_header = HEADER.pack


class H2Codec(Receiver):
    """One HTTP/2 connection, client or server side, without I/O.

    ``settings`` are the SETTINGS we send (:class:`H2Setting` keys; defaults
    :data:`LOCAL_DEFAULTS`); their limits apply to the peer from the start. ``connection_window``
    is our connection-level receive window (raised above 65535 by a WINDOW_UPDATE).
    """

    # ------------------------------------------------------------------ start
    def initiate_connection(self) -> None:
        """Queue our preface: (client) the magic, SETTINGS, a WINDOW_UPDATE for a larger
        connection window."""
        out = self.out
        if self.client:
            out += PREFACE
        out += frame(SETTINGS, 0, 0, settings_payload(self.local_settings))
        extra = self._connection_window - DEFAULT_WINDOW
        if extra > 0:
            out += window_update(0, extra)
            self.recv_window += extra

    def initiate_upgrade_connection(self, settings_header: bytes | None = None) -> bytes | None:
        """HTTP/1.1 ``Upgrade: h2c`` (RFC 7540 3.2). Client: returns the ``HTTP2-Settings``
        value for the request, and stream 1 is that request, sent whole. Server: pass the
        client's ``HTTP2-Settings`` value; stream 1 is its request, received whole (answer it
        with :meth:`send_headers`). Either way our preface is queued for after the 101."""
        s = StreamState(self._init_send, self._init_recv)
        self.initiate_connection()
        if self.client:
            s.local_closed = True
            self.streams[1] = s
            self._next_sid = 3
            self._n_local = 1
            payload = settings_payload(self.local_settings)
            return base64.urlsafe_b64encode(payload).rstrip(b"=")
        raw = settings_header or b""
        try:
            payload = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
        except ValueError:
            raise H2UsageError(f"HTTP2-Settings {raw[:40]!r}: not base64url") from None
        if len(payload) % 6:
            raise H2UsageError(f"HTTP2-Settings of {len(payload)} bytes: not a SETTINGS payload")
        self._apply_settings(parse_settings(payload))
        s.send_window = self._init_send
        s.remote_closed = True
        s.rx = 2
        self.streams[1] = s
        self.last_peer_sid = 1
        self._n_peer = 1
        return None

    def data_to_send(self) -> bytearray:
        """The bytes queued so far (now the caller's); the queue starts empty again."""
        out = self.out
        self.out = bytearray()
        return out
    # ------------------------------------------------------------------ send
    def next_stream_id(self) -> int:
        """The id :meth:`send_headers` opens next; :class:`H2UsageError` when none are left."""
        sid = self._next_sid
        if sid > MAX_STREAM_ID:
            raise H2UsageError("stream ids exhausted")
        return sid

    @property
    def open_streams(self) -> int:
        """Streams we opened that are not closed yet (what the peer's limit counts)."""
        return self._n_local

    def send_headers(self, sid: int, headers: Iterable[Header], end_stream: bool = False) -> None:
        """Send a header block on ``sid``: a request opening a new stream of ours, a response
        (or 1xx) on the peer's stream, or trailers (with ``end_stream``). Headers are sent
        as given, not checked; pseudo-headers must come first."""
        if self.closed:
            raise H2UsageError("the connection is closed")
        s = self.streams.get(sid)
        if s is None:
            if sid & 1 == self._peer_odd or sid < self._next_sid or sid > MAX_STREAM_ID:
                raise H2UsageError(f"stream {sid} is closed or not ours to open")
            if self.goaway_received is not None:
                raise H2UsageError(f"stream {sid}: the peer sent GOAWAY")
            if self._n_local >= self.remote_max_streams:
                raise H2UsageError(f"stream {sid}: the peer allows {self.remote_max_streams} "
                                   "concurrent streams")
            s = self.streams[sid] = StreamState(self._init_send, self._init_recv)
            self._next_sid = sid + 2
            self._n_local += 1
        elif s.local_closed:
            raise H2UsageError(f"stream {sid} already ended")
        block = self._hpack.encode(headers)
        flags = END_STREAM if end_stream else 0
        mfs = self.max_outbound_frame_size
        out = self.out
        if len(block) <= mfs:
            n = len(block)
            out += _pack_header(n >> 8, n & 0xFF, HEADERS, flags | END_HEADERS, sid)
            out += block
        else:
            out += frame(HEADERS, flags, sid, block[:mfs])
            for i in range(mfs, len(block), mfs):
                last = i + mfs >= len(block)
                out += frame(CONTINUATION, END_HEADERS if last else 0, sid, block[i:i + mfs])
        if end_stream:
            self._local_end(sid, s)

    def send_window_of(self, sid: int) -> int:
        """How many DATA bytes ``sid`` may send now (its and the connection's window)."""
        s = self.streams.get(sid)
        if s is None:
            return 0
        w = s.send_window
        return w if w < self.send_window else self.send_window

    def send_data(self, sid: int, data: bytes | bytearray | memoryview,
                  end_stream: bool = False) -> int:
        """Frame as much of ``data`` as the windows allow and return how many bytes that was;
        END_STREAM goes with the last byte, only when all of ``data`` went."""
        s = self.streams.get(sid)
        if s is None or s.local_closed:
            raise H2UsageError(f"stream {sid} is closed for sending")
        total = len(data)
        w = s.send_window
        if self.send_window < w:
            w = self.send_window
        n = total if total <= w else (w if w > 0 else 0)
        if n == 0 and total:
            return 0
        end = end_stream and n == total
        mfs = self.max_outbound_frame_size
        out = self.out
        if n <= mfs:
            out += _pack_header(n >> 8, n & 0xFF, DATA, END_STREAM if end else 0, sid)
            out += data if n == total else memoryview(data)[:n]
            self._wu_credit += self._wu_per_data  # the peer may answer it (flood.py)
        else:
            self._wu_credit += self._wu_per_data * -(-n // mfs)
            view = memoryview(data)
            off = 0
            while off < n:
                k = n - off if n - off < mfs else mfs
                off += k
                out += _pack_header(k >> 8, k & 0xFF, DATA,
                                    END_STREAM if end and off == n else 0, sid)
                out += view[off - k:off]
        s.send_window -= n
        self.send_window -= n
        if end:
            self._local_end(sid, s)
        return n

    def end_stream(self, sid: int) -> None:
        """End our side of ``sid`` (an empty DATA frame with END_STREAM)."""
        self.send_data(sid, b"", True)

    def reset_stream(self, sid: int, code: int = H2ErrorCode.CANCEL) -> None:
        """RST_STREAM ``sid`` and forget it; nothing for a stream already closed."""
        if sid in self.streams and not self.closed:
            self._rst(sid, code)

    def window_update(self, sid: int, n: int) -> None:
        """Hand ``n`` bytes of receive credit back on ``sid`` (0: the connection)."""
        if n <= 0 or self.closed:
            return
        if sid:
            s = self.streams.get(sid)
            if s is None or s.remote_closed:
                return  # the peer sends nothing more there
            if s.recv_window + n > MAX_WINDOW:
                raise H2UsageError(f"WINDOW_UPDATE of {n} overflows the window of stream {sid}")
            s.recv_window += n
        else:
            if self.recv_window + n > MAX_WINDOW:
                raise H2UsageError(f"WINDOW_UPDATE of {n} overflows the connection window")
            self.recv_window += n
        self.out += window_update(sid, n)

    def ping(self, data: bytes = bytes(8)) -> None:
        """Send a PING (8 bytes of ``data``); its ACK reaches :meth:`H2Handler.on_ping`."""
        if len(data) != 8:
            raise H2UsageError(f"PING data of {len(data)} bytes (8 needed)")
        self.out += frame(PING, 0, 0, data)

    def goaway(self, code: int = H2ErrorCode.NO_ERROR, debug: bytes = b"",
               last_sid: int | None = None) -> None:
        """Tell the peer we process no streams it opens above ``last_sid`` (default: the last
        it opened). Streams at or below it may finish; new ones are refused."""
        if self.closed:
            return
        last = self.last_peer_sid if last_sid is None else last_sid
        self.goaway_sent = (last, code)
        self.out += goaway(last, code, debug)


__all__ = ["H2Codec", "H2Handler"]
