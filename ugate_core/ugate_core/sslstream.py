"""TLS over any :class:`Stream`, with ``ssl.MemoryBIO``.

Why not ``loop.start_tls``: on the shared port the sniffer has already read the ClientHello
into the stream's buffer, and asyncio's TLS transport cannot be handed bytes that were read
before it existed. A memory-BIO TLS object takes its input from wherever it comes — the
buffered ClientHello, a TCP socket, an SSH channel or an HTTP/2 stream — and stays in push mode,
so the relay's backpressure works through it. It is the same design as asyncio's and uvloop's
own TLS transports (an ``SSLObject`` between two memory BIOs).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl

from .errors import ProtocolError
from .stream import Stream

_CHUNK = 256 * 1024


class SslStream(Stream):
    """The plaintext side of TLS running over ``inner``.

    Create, then ``await handshake(timeout)``; after that it is a normal Stream. ``meta``
    starts as a copy of the inner stream's (addresses, listener) with ``alpn`` set by the
    handshake.
    """

    def __init__(
        self,
        inner: Stream,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
    ) -> None:
        meta = dataclasses.replace(inner.meta)
        super().__init__(meta)
        self.inner = inner
        inner.wrapped_by = self
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.ssl = context.wrap_bio(self._in, self._out, server_side, server_hostname)
        self._handshaken = False
        self._shut = False

    # -------------------------------------------------------------------- handshake
    async def handshake(self, timeout: float) -> None:
        """Run the TLS handshake on the inner stream's pull API; then switch to push mode."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    self.ssl.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._flush()
                    data = await self.inner.read(_CHUNK)
                    if not data:
                        self._in.write_eof()
                        raise ConnectionResetError("peer closed during the TLS handshake") from None
                    self._in.write(data)
                except ssl.SSLError as e:
                    self._flush()  # the alert, so the peer learns why
                    raise ProtocolError(f"TLS handshake failed: {e.reason or e}",
                                        "tls_handshake") from None
        self._flush()
        self._handshaken = True
        self.meta.alpn = self.ssl.selected_alpn_protocol()
        self.inner.on_resume_writing = self._resume_writing
        self.inner.set_receiver(self)
        # application data that arrived with the last handshake flight
        self._decrypt()

    def peer_certificate(self) -> bytes | None:
        """DER of the peer's leaf certificate, if it sent one."""
        return self.ssl.getpeercert(binary_form=True)

    # -------------------------------------------------------------------- inner receiver
    def data_received(self, data: bytes) -> None:
        self._in.write(data)
        self._decrypt()

    def eof_received(self) -> None:
        self._in.write_eof()
        self._decrypt()
        self._on_eof()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._on_lost(exc)

    def _decrypt(self) -> None:
        while True:
            try:
                chunk = self.ssl.read(_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify: TLS's EOF
                self._on_eof()
                break
            except ssl.SSLError:
                self._flush()
                self.inner.abort()
                break
            if not chunk:
                self._on_eof()
                break
            self._on_data(chunk)
        self._flush()  # TLS 1.3 tickets, key updates

    def _flush(self) -> None:
        if self._out.pending:
            self.inner.write(self._out.read())
            if self.inner.write_paused:
                self._pause_writing()

    # -------------------------------------------------------------------- Stream interface
    def _do_write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = self.ssl.write(view[:_CHUNK])
            view = view[n:]
        self._flush()

    def can_write_eof(self) -> bool:
        return True

    def _do_write_eof(self) -> None:
        # TLS half-close: close_notify ends our direction; the peer may still send (TLS 1.3)
        if not self._shut:
            self._shut = True
            try:
                self.ssl.unwrap()
            except (ssl.SSLWantReadError, ssl.SSLError):
                pass
            self._flush()
            if self._eof:
                self.inner.close()

    def _do_close(self) -> None:
        if not self._shut and self._handshaken:
            self._do_write_eof()
        self.inner.close()

    def _do_abort(self) -> None:
        self.inner.abort()

    def _do_reset(self) -> None:
        self.inner.reset()

    def _do_pause_reading(self) -> None:
        self.inner.pause_reading()

    def _do_resume_reading(self) -> None:
        self.inner.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self.inner.get_write_buffer_size()

    async def wait_closed(self) -> None:
        await self.inner.wait_closed()
