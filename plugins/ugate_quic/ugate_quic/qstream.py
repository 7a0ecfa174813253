"""One QUIC stream as a :class:`ugate_core.Stream`: FIN ↔ half-close, RESET_STREAM ↔ reset.

aioquic keeps whatever is sent on a stream until the peer acknowledges it, without bound; this
adapter pauses the writer (the relay stops reading the other side) once more than
:data:`HIGH` bytes are held for the stream (:func:`ugate_quic.lib.send_buffered`), and
resumes it below :data:`LOW` after a later transmit: a peer that stops reading costs this
gateway at most about ``HIGH`` bytes per stream. The other way, a paused reader stops the
stream's receive credit (:class:`ugate_quic.lib.StreamCredit`): a peer that sends to a reader
that does not read gets at most the window (``max_stream_data``, 1 MiB) past what was taken.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ugate_core import Stream, StreamMeta

if TYPE_CHECKING:
    from .endpoint import QuicPeer

#: bytes queued on one stream before the writer is paused, and below which it resumes
HIGH = 1024 * 1024
LOW = 512 * 1024
#: application error code of a reset: the stream was cut short (HTTP/3's H3_REQUEST_CANCELLED
#: value, 0x10c, so a WebTransport peer reads it as "cancelled" too)
RESET_CODE = 0x10C


class QuicStream(Stream):
    """A bidirectional QUIC stream of :class:`~ugate_quic.endpoint.QuicPeer`'s connection."""

    __slots__ = ("_fin_in", "_gone", "peer", "prefix", "stream_id")

    def __init__(self, peer: QuicPeer, stream_id: int, meta: StreamMeta | None = None,
                 prefix: bytes = b"") -> None:
        super().__init__(meta)
        self.peer = peer
        self.stream_id = stream_id
        self._fin_in = False
        self._gone = False
        #: bytes sent before the first write (a WebTransport stream's header)
        self.prefix = prefix

    # ---------------------------------------------------------------- from the connection
    def feed(self, data: bytes, end_stream: bool) -> None:
        if data:
            self._on_data(data)
        if end_stream and not self._fin_in:
            self._fin_in = True
            self._on_eof()
            if self._eof_written:
                self._finish(None)

    def peer_reset(self, error_code: int) -> None:
        self._finish(ConnectionResetError(f"QUIC stream {self.stream_id} reset by the peer "
                                          f"(error 0x{error_code:x})"))

    def peer_stopped(self, error_code: int) -> None:
        """STOP_SENDING: the peer reads no more; answer with a reset of our sending side
        (RFC 9000 3.5). What the peer sent, up to its FIN, is still delivered: an acceptor
        that answered a refusal stops reading the request it refused, and its status must
        reach the opener."""
        self._send_reset()
        self._eof_written = True
        if self._fin_in:
            self._finish(None)

    def connection_lost(self, exc: BaseException) -> None:
        self._finish(exc)

    def check_writable(self) -> None:
        if self._write_paused and self.peer.send_buffered(self.stream_id) <= LOW:
            self._resume_writing()

    def _finish(self, exc: BaseException | None) -> None:
        if not self._gone:
            self._gone = True
            self.peer.forget(self)
        self._on_lost(exc)

    # ---------------------------------------------------------------- Stream interface
    def _send(self, data: bytes | bytearray | memoryview, fin: bool = False) -> None:
        raw = data if isinstance(data, bytes) else bytes(data)
        if self.prefix:
            raw, self.prefix = self.prefix + raw, b""
        self.peer.quic.send_stream_data(self.stream_id, raw, end_stream=fin)
        self.peer.transmit_soon()

    def _do_write(self, data: bytes | bytearray | memoryview) -> None:
        if self._gone:
            return
        self._send(data)
        if self.peer.send_buffered(self.stream_id) > HIGH:
            self._pause_writing()
            self.peer.watch(self)

    def _do_write_eof(self) -> None:
        if self._gone:
            return
        self._send(b"", fin=True)
        if self._fin_in:
            self._finish(None)

    def _do_pause_reading(self) -> None:
        self.peer.hold(self, True)

    def _do_resume_reading(self) -> None:
        self.peer.hold(self, False)

    def get_write_buffer_size(self) -> int:
        return 0 if self._gone else self.peer.send_buffered(self.stream_id)

    def _do_close(self) -> None:
        if self._gone:
            return
        if not self._eof_written:
            self._send(b"", fin=True)
        fin_in = self._fin_in
        self._finish(None)
        if not fin_in:
            # the peer may still be sending (a request we refused): no STOP_SENDING yet, it
            # would race our answer (Firefox then errors the stream's readable side, the
            # answer unread); what arrives meanwhile is dropped, with no new credit
            self.peer.linger(self.stream_id)

    def _do_abort(self) -> None:
        self._do_reset()

    def _do_reset(self) -> None:
        if self._gone:
            return
        self._send_reset()
        if not self._fin_in:
            self._stop()
        self._finish(ConnectionResetError(f"QUIC stream {self.stream_id} reset"))

    def _send_reset(self) -> None:
        if not self._gone:
            try:
                self.peer.quic.reset_stream(self.stream_id, RESET_CODE)
            except Exception:  # already finished, or the connection is gone: nothing to reset
                pass
            self.peer.transmit_soon()

    def _stop(self) -> None:
        try:
            self.peer.quic.stop_stream(self.stream_id, RESET_CODE)
        except Exception:  # the stream already ended on the peer's side
            pass
        self.peer.transmit_soon()
