"""One QUIC stream as a :class:`ugate_core.Stream`: FIN ↔ half-close, RESET_STREAM ↔ reset.

qh3 queues whatever is sent on a stream without bound; this adapter pauses the writer (the
relay stops reading the other side) once more than :data:`HIGH` bytes wait for their first
transmission on the stream (``QuicConnection.get_send_buffer_size``), and resumes it below
:data:`LOW` after the next transmit: a receiver that stops reading holds at most the peer's
flow-control window plus ``HIGH`` of this gateway's memory per stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ugate_core import Stream, StreamMeta

if TYPE_CHECKING:
    from .endpoint import QuicPeer

#: bytes queued on one stream before the writer is paused, and below which it resumes
HIGH = 256 * 1024
LOW = 64 * 1024
#: application error code of a reset: the stream was cut short (HTTP/3's H3_REQUEST_CANCELLED
#: value, 0x10c, so a WebTransport peer reads it as "cancelled" too)
RESET_CODE = 0x10C


class QuicStream(Stream):
    """A bidirectional QUIC stream of :class:`~ugate_quic.endpoint.QuicPeer`'s connection."""

    __slots__ = ("peer", "stream_id", "_fin_in", "_gone", "prefix")

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
        """STOP_SENDING: the peer reads no more; answer with a reset (RFC 9000 3.5)."""
        self._send_reset()
        self._finish(ConnectionResetError(f"QUIC stream {self.stream_id}: the peer stopped "
                                          f"reading (error 0x{error_code:x})"))

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
        if self.prefix:
            data, self.prefix = self.prefix + bytes(data), b""
        self.peer.quic.send_stream_data(self.stream_id, data, end_stream=fin)
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

    def get_write_buffer_size(self) -> int:
        return 0 if self._gone else self.peer.send_buffered(self.stream_id)

    def _do_close(self) -> None:
        if self._gone:
            return
        if not self._eof_written:
            self._send(b"", fin=True)
        if not self._fin_in:
            self._stop()
        self._finish(None)

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
            except Exception:  # noqa: BLE001 - already finished or closed: nothing to reset
                pass
            self.peer.transmit_soon()

    def _stop(self) -> None:
        try:
            self.peer.quic.stop_stream(self.stream_id, RESET_CODE)
        except Exception:  # noqa: BLE001 - the stream already ended on the peer's side
            pass
        self.peer.transmit_soon()
