"""Two adapters between asyncssh and core streams.

* :class:`ChannelStream`: an SSH TCP channel (``direct-tcpip`` / ``forwarded-tcpip``) as a core
  :class:`~ugate_core.Stream`, so :meth:`Gateway.relay` copies it like any socket. Channel data is
  pushed in; pausing reading stops window adjusts (the peer stalls); the channel's send buffer
  reports pause/resume writing.
* :class:`StreamTransport`: an asyncio transport over a core Stream, so an asyncssh connection
  runs over any Stream (a shared-port TCP connection with the sniffed bytes still buffered, an
  SSH channel, a stream from :meth:`Gateway.dial`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncssh

from ugate_core import Stream, StreamMeta


class ChannelStream(Stream, asyncssh.SSHTCPSession[bytes]):
    """A core Stream over one asyncssh TCP channel (this object is the channel's session)."""

    #: channel send buffer above which writers are paused
    write_high = 256 * 1024

    def __init__(self, meta: StreamMeta | None = None,
                 on_open: Callable[[ChannelStream], None] | None = None) -> None:
        Stream.__init__(self, meta)
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self._on_open = on_open
        self.on_lost: Callable[[ChannelStream], None] | None = None

    # asyncssh session callbacks
    def connection_made(self, chan: Any) -> None:
        assert isinstance(chan, asyncssh.SSHTCPChannel)
        self.chan = chan
        chan.set_write_buffer_limits(high=self.write_high)
        cb, self._on_open = self._on_open, None
        if cb is not None:
            cb(self)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._on_data(data)

    def eof_received(self) -> bool:
        self._on_eof()
        return True  # keep our sending side open: half-close

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost(exc)
        cb, self.on_lost = self.on_lost, None
        if cb is not None:
            cb(self)

    def pause_writing(self) -> None:
        self._pause_writing()

    def resume_writing(self) -> None:
        self._resume_writing()

    # Stream
    def _do_write(self, data: bytes | bytearray | memoryview) -> None:
        c = self.chan
        if c is not None and not c.is_closing():
            c.write(bytes(data))

    def _do_write_eof(self) -> None:
        c = self.chan
        if c is not None and not c.is_closing():
            c.write_eof()

    def _do_close(self) -> None:
        if self.chan is not None:
            self.chan.close()
        else:
            self._on_lost(None)

    def _do_abort(self) -> None:
        if self.chan is not None:
            self.chan.abort()
        else:
            self._on_lost(None)

    def _do_pause_reading(self) -> None:
        if self.chan is not None:
            self.chan.pause_reading()

    def _do_resume_reading(self) -> None:
        if self.chan is not None:
            self.chan.resume_reading()

    def get_write_buffer_size(self) -> int:
        return 0 if self.chan is None else self.chan.get_write_buffer_size()


class StreamTransport(asyncio.Transport):
    """An asyncio transport over a core Stream (push mode), for an asyncssh connection.

    asyncssh writes one call per SSH packet (16-32 KiB); writes made in one event-loop turn
    are joined and handed to the stream once, so a window's worth of packets costs one
    ``send()`` instead of one per packet (the single largest cost in a bulk profile).
    """

    def __init__(self, stream: Stream, protocol: asyncio.Protocol) -> None:
        extra = {
            "peername": stream.meta.remote or ("", 0),
            "sockname": stream.local_address() or ("", 0),
            "ugate_stream": stream,
        }
        super().__init__(extra)
        self._info = extra
        self.stream = stream
        self._protocol = protocol
        self._closed = False
        self._pending: list[bytes | bytearray | memoryview] | None = None

    def start(self) -> None:
        """Tell the protocol it is connected, then hand it every byte (buffered ones first)."""
        self._protocol.connection_made(self)
        self.stream.set_receiver(self)

    # core Receiver
    def data_received(self, data: bytes) -> None:
        self._protocol.data_received(data)

    def eof_received(self) -> None:
        self._protocol.eof_received()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._closed:
            self._closed = True
            self._protocol.connection_lost(exc if isinstance(exc, Exception) else None)

    # asyncio.Transport
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._info.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        p = self._pending
        if p is None:
            self._pending = [data]
            asyncio.get_running_loop().call_soon(self._flush)
        else:
            p.append(data)

    def _flush(self) -> None:
        p, self._pending = self._pending, None
        if p:
            self.stream.write(p[0] if len(p) == 1 else b"".join(p))

    def writelines(self, list_of_data: Any) -> None:
        for d in list_of_data:
            self.write(d)

    def can_write_eof(self) -> bool:
        return self.stream.can_write_eof()

    def write_eof(self) -> None:
        self._flush()
        self.stream.write_eof()

    def is_closing(self) -> bool:
        return self.stream.is_closing()

    def close(self) -> None:
        self._flush()
        self.stream.close()

    def abort(self) -> None:
        self._pending = None
        self.stream.abort()

    def pause_reading(self) -> None:
        self.stream.pause_reading()

    def resume_reading(self) -> None:
        self.stream.resume_reading()

    def is_reading(self) -> bool:
        return not self.stream._reading_paused

    def get_write_buffer_size(self) -> int:
        n = sum(len(d) for d in self._pending) if self._pending else 0
        return n + self.stream.get_write_buffer_size()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol
