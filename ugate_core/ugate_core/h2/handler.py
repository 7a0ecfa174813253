"""What :class:`~ugate_core.h2.H2Codec` tells its application (:class:`H2Handler`), the
state it keeps per stream, and the SETTINGS it starts from."""

from __future__ import annotations

from .frames import DEFAULT_WINDOW, MIN_MAX_FRAME, H2Setting
from .headers import Header

#: SETTINGS values before the peer's first SETTINGS frame (RFC 9113 6.5.2); MAX_CONCURRENT
#: starts at 100 rather than "unlimited", as nghttp2 does
REMOTE_DEFAULTS: dict[int, int] = {
    H2Setting.HEADER_TABLE_SIZE: 4096, H2Setting.ENABLE_PUSH: 1,
    H2Setting.MAX_CONCURRENT_STREAMS: 100, H2Setting.INITIAL_WINDOW_SIZE: DEFAULT_WINDOW,
    H2Setting.MAX_FRAME_SIZE: MIN_MAX_FRAME, H2Setting.MAX_HEADER_LIST_SIZE: 1 << 31,
    H2Setting.ENABLE_CONNECT_PROTOCOL: 0,
}
#: our SETTINGS unless the caller gives others
LOCAL_DEFAULTS: dict[int, int] = {
    H2Setting.MAX_CONCURRENT_STREAMS: 100, H2Setting.INITIAL_WINDOW_SIZE: DEFAULT_WINDOW,
    H2Setting.MAX_FRAME_SIZE: MIN_MAX_FRAME, H2Setting.MAX_HEADER_LIST_SIZE: 65536,
}


class H2Handler:
    """What an :class:`H2Codec` tells its application. Subclass it and override what you need;
    every method does nothing here. The codec's state is up to date when a method is called,
    and a method may call the codec back (send, reset, update windows)."""

    def on_headers(self, sid: int, headers: list[Header], end_stream: bool) -> None:
        """A request (server: ``sid`` is a new stream), a response, or an informational
        (1xx) response before the final one (client). The list passed the header checks."""

    def on_trailers(self, sid: int, headers: list[Header]) -> None:
        """A trailer section: the peer's side of the stream ends with it."""

    def on_data(self, sid: int, data: bytes, flow_len: int, end_stream: bool) -> None:
        """Body bytes of ``sid``. ``flow_len`` (``len(data)`` plus any padding) is the
        flow-control credit to hand back with :meth:`H2Codec.window_update` once the bytes are
        consumed, on the stream and on the connection (sid 0). One DATA frame may arrive in
        several calls; ``end_stream`` is set on the last."""

    def on_reset(self, sid: int, code: int) -> None:
        """The peer reset ``sid`` (RST_STREAM); the codec forgot the stream."""

    def on_stream_error(self, sid: int, code: int, message: str) -> None:
        """The peer broke a rule on ``sid`` alone: RST_STREAM(``code``) is queued and the codec
        forgot the stream (``sid`` may be one the handler never saw)."""

    def on_window(self, sid: int) -> None:
        """The peer gave send credit on ``sid`` (0: the connection)."""

    def on_settings(self, changed: dict[int, int]) -> None:
        """The peer's SETTINGS frame (already applied and acknowledged): every value in it."""

    def on_ping(self, data: bytes, ack: bool) -> None:
        """A PING (its ACK is already queued) or the ACK of ours."""

    def on_goaway(self, last_sid: int, code: int, debug: bytes) -> None:
        """The peer opens no more streams and processed none of ours above ``last_sid``:
        the codec forgot those (retry them elsewhere). Streams at or below it may finish."""


class StreamState:
    """Where one stream stands: windows both ways, which sides ended, headers seen."""

    __slots__ = ("local_closed", "recv_window", "remote_closed", "rx", "send_window")

    def __init__(self, send_window: int, recv_window: int) -> None:
        self.send_window = send_window
        self.recv_window = recv_window
        self.local_closed = False
        self.remote_closed = False
        self.rx = 0  # header blocks received: 0 none, 1 informational only, 2 final
