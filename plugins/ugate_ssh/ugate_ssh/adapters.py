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

from .recv import reader_for
from .send import PacketWriter, writer_for


class ChannelStream(Stream, asyncssh.SSHTCPSession[bytes]):
    """A core Stream over one asyncssh TCP channel (this object is the channel's session).

    Received data is joined per event-loop turn: asyncssh delivers one call per SSH packet
    (up to 32 KiB), several per read of the connection, and a relay would make one ``send()``
    of each; joined, a read's worth of packets costs one (the largest cost of a client-side
    download profile). The delay is the rest of the current turn.
    """

    #: channel send buffer above which writers are paused
    write_high = 256 * 1024

    def __init__(self, meta: StreamMeta | None = None,
                 on_open: Callable[[ChannelStream], None] | None = None) -> None:
        Stream.__init__(self, meta)
        self.chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self._on_open = on_open
        self.on_lost: Callable[[ChannelStream], None] | None = None
        self._rx: list[bytes] | None = None
        self.writer: PacketWriter | None = None

    # asyncssh session callbacks
    def connection_made(self, chan: Any) -> None:
        assert isinstance(chan, asyncssh.SSHTCPChannel)
        self.chan = chan
        chan.set_write_buffer_limits(high=self.write_high)
        w = chan.get_extra_info("ugate_ssh_writer")
        if isinstance(w, PacketWriter) and w.attach(chan):
            self.writer = w
        cb, self._on_open = self._on_open, None
        if cb is not None:
            cb(self)

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        rx = self._rx
        if rx is None:
            self._rx = [data]
            asyncio.get_running_loop().call_soon(self._deliver)
        else:
            rx.append(data)

    def _deliver(self) -> None:
        rx, self._rx = self._rx, None
        if rx:
            self._on_data(rx[0] if len(rx) == 1 else b"".join(rx))

    def eof_received(self) -> bool:
        self._deliver()
        self._on_eof()
        return True  # keep our sending side open: half-close

    def connection_lost(self, exc: Exception | None) -> None:
        self._deliver()
        if exc is None and not self._eof and not self._closing:  # the peer aborted it
            exc = ConnectionResetError("SSH channel closed without EOF")
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
            if self.writer is not None:
                self.writer.write(c, data)
            else:
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


#: asyncssh parser state StreamTransport reads to feed it one packet at a time (asyncssh 2.x)
_PARSER_STATE = ("_recv_handler", "_recv_pkthdr", "_recv_packet", "_recv_blocksize", "_pktlen",
                 "_recv_macsize", "_inpbuf")


class StreamTransport(asyncio.Transport):
    """An asyncio transport over a core Stream (push mode), for an asyncssh connection.

    asyncssh writes one call per SSH packet (16-32 KiB); writes made in one event-loop turn
    are joined and handed to the stream once, so a window's worth of packets costs one
    ``send()`` instead of one per packet (the single largest cost in a bulk profile).

    Channel data sent: once the connection encrypts, a :class:`~.send.PacketWriter` (offered
    to channels as the extra info ``ugate_ssh_writer``) builds and encrypts its packets.

    Received bytes: once the connection encrypts, a :class:`~.recv.PacketReader` frames them
    and delivers channel data without asyncssh's per-packet path (everything else still goes
    through asyncssh). Before that, or with an asyncssh without the internals it uses, they are
    handed to asyncssh one SSH packet at a time: asyncssh keeps its input as ``bytes`` and
    re-slices the rest of it after every header and packet, so a 256 KiB read holding eight
    32 KiB packets cost ~2 MiB of copying; fed packet by packet the rest is always empty. Only
    the sizes are read from asyncssh's parser state (where it is not what this asyncssh version
    has, every chunk is passed on whole).
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
        self._closed = False
        self._pending: list[bytes | bytearray | memoryview] | None = None
        self._attach(protocol)

    def _attach(self, protocol: asyncio.Protocol) -> None:
        self._protocol = protocol
        self._paced = all(hasattr(protocol, a) for a in _PARSER_STATE)
        self.reader = reader_for(protocol) if self._paced else None
        self.writer = writer_for(protocol)
        self._info["ugate_ssh_writer"] = self.writer

    def start(self) -> None:
        """Tell the protocol it is connected, then hand it every byte (buffered ones first)."""
        self._protocol.connection_made(self)
        self.stream.set_receiver(self)

    # core Receiver
    def data_received(self, data: bytes) -> None:
        c: Any = self._protocol
        if getattr(c, "_transport", self) is None:
            # asyncssh closed the connection: bytes still in flight mean nothing now (fed to
            # it, they were parsed as if unencrypted: "Max packet size exceeded" disconnects)
            return
        n = len(data)
        rx = self.reader
        if rx is None and (not self._paced or n <= 4096):
            c.data_received(data)
            return
        pos = 0
        while pos < n and not self._closed:
            if rx is not None and (rx.active or rx.can_start()):
                pos = rx.feed(data, pos)
                continue
            h = c._recv_handler
            if h == c._recv_pkthdr:
                need = c._recv_blocksize - len(c._inpbuf)
            elif h == c._recv_packet:
                need = 4 + c._pktlen + c._recv_macsize - c._recv_blocksize - len(c._inpbuf)
            else:  # version line, or a packet still being processed: all of it
                need = n
            end = n if need <= 0 else min(n, pos + need)
            c.data_received(data if pos == 0 and end == n else data[pos:end])
            pos = end

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
        self._attach(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol
