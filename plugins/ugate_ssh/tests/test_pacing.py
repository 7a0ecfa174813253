"""StreamTransport hands asyncssh one SSH packet at a time (no re-slicing of a long input)."""

from __future__ import annotations

import asyncio
import inspect
import struct
from typing import Any

import asyncssh.connection
from hypothesis import given
from hypothesis import strategies as st

from ugate_core import stream_pair
from ugate_ssh.adapters import _PARSER_STATE, StreamTransport

BLOCK, MAC = 16, 16


class FakeConn(asyncio.Protocol):
    """asyncssh's parser state machine, reduced to its sizes: a header block, then the
    rest of the packet and a MAC; records every chunk it is handed."""

    def __init__(self) -> None:
        self._recv_blocksize = BLOCK
        self._recv_macsize = MAC
        self._pktlen = 0
        self._inpbuf = b""
        self._recv_handler = self._recv_pkthdr
        self.chunks: list[bytes] = []
        self.packets: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self._inpbuf += data
        while self._inpbuf and self._recv_handler():
            pass

    def _recv_pkthdr(self) -> bool:
        if len(self._inpbuf) < BLOCK:
            return False
        self._pktlen = struct.unpack(">I", self._inpbuf[:4])[0]
        self._hdr, self._inpbuf = self._inpbuf[:BLOCK], self._inpbuf[BLOCK:]
        self._recv_handler = self._recv_packet
        return True

    def _recv_packet(self) -> bool:
        rem = 4 + self._pktlen + MAC - BLOCK
        if len(self._inpbuf) < rem:
            return False
        self.packets.append(self._hdr + self._inpbuf[:rem])
        self._inpbuf = self._inpbuf[rem:]
        self._recv_handler = self._recv_pkthdr
        return True


def packet(n: int) -> bytes:
    body = bytes([n % 251]) * (n + BLOCK - 4)  # pktlen covers the body after the length
    return struct.pack(">I", len(body)) + body + b"M" * MAC


@given(st.lists(st.integers(0, 70_000), min_size=1, max_size=6), st.integers(1, 9))
def test_paced_feed_splits_at_packet_boundaries(sizes: list[int], pieces: int) -> None:
    async def run() -> None:
        pkts = [packet(n) for n in sizes]
        wire = b"".join(pkts)
        _, s = stream_pair()
        conn = FakeConn()
        t = StreamTransport(s, conn)
        assert t._paced
        step = max(1, len(wire) // pieces)
        for i in range(0, len(wire), step):
            t.data_received(wire[i:i + step])
        assert conn.packets == pkts
        assert b"".join(conn.chunks) == wire
        # never more than one packet's bytes waiting in the parser's input
        assert all(len(c) <= max(map(len, pkts)) for c in conn.chunks if len(c) > 4096)

    asyncio.run(run())


def test_asyncssh_still_has_the_parser_state_we_read() -> None:
    # an asyncssh upgrade that renames these makes the transport fall back (slower): notice
    src = inspect.getsource(asyncssh.connection.SSHConnection)
    for name in _PARSER_STATE:
        assert f"self.{name}" in src, name


def test_unknown_protocol_gets_whole_chunks() -> None:
    class Plain(asyncio.Protocol):
        def __init__(self) -> None:
            self.got: list[Any] = []

        def data_received(self, data: bytes) -> None:
            self.got.append(data)

    _, s = stream_pair()
    p = Plain()
    t = StreamTransport(s, p)
    assert not t._paced
    t.data_received(b"x" * 100_000)
    assert p.got == [b"x" * 100_000]
