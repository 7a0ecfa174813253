"""The short receive path for channel data (recv.PacketReader), between two asyncssh
connections in memory: both ends run over StreamTransport, the wire is cut at random places."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import struct
from typing import Any

import asyncssh
import pytest
from asyncssh.channel import SSHChannel
from asyncssh.constants import MSG_CHANNEL_DATA
from asyncssh.logging import SSHLogger
from asyncssh.packet import SSHPacketHandler
from hypothesis import given, settings
from hypothesis import strategies as st

from ugate_core import MemoryStream, stream_pair
from ugate_core.testing import pattern
from ugate_ssh.adapters import StreamTransport
from ugate_ssh.client import _StreamTunnel
from ugate_ssh.recv import PacketReader, reader_for, unsupported


class ChoppedStream(MemoryStream):
    """A MemoryStream whose writes arrive in pieces of random size (1 byte to 100 KiB), so
    packets and even their first block are split across reads; optionally one byte is
    flipped at a given offset of what it sends."""

    def __init__(self, seed: int, flip_at: int = -1) -> None:
        super().__init__()
        self.rng = random.Random(seed)
        self.sent = 0
        self.flip_at = flip_at

    def _do_write(self, data: bytes | bytearray | memoryview) -> None:
        b = bytearray(data)
        if self.sent <= self.flip_at < self.sent + len(b):
            b[self.flip_at - self.sent] ^= 0x40
        self.sent += len(b)
        pos = 0
        while pos < len(b):
            n = self.rng.choice((1, 3, 13, 17, 600, 5000, 33_000, 100_000))
            if self.peer is None or self.peer._lost:
                return
            self.peer._on_data(bytes(b[pos:pos + n]))
            pos += n


class EchoSession(asyncssh.SSHServerSession):  # type: ignore[misc]
    """Echoes stdin to stdout; on EOF writes the count and digest to stderr and exits."""

    def __init__(self) -> None:
        self.n = 0
        self.h = hashlib.sha256()

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def shell_requested(self) -> bool:
        return True

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.n += len(data)
        self.h.update(data)
        self.chan.write(data)
        if self.n % 7 == 0:
            self.chan.write(b".", asyncssh.EXTENDED_DATA_STDERR)

    def eof_received(self) -> bool:
        self.chan.write(f"{self.n} {self.h.hexdigest()}".encode(), asyncssh.EXTENDED_DATA_STDERR)
        self.chan.exit(0)
        return False


class Owner(asyncssh.SSHServer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.lost: list[Exception | None] = []

    def begin_auth(self, username: str) -> bool:
        return False  # no authentication: the test is about the data path

    def session_requested(self) -> EchoSession:
        return EchoSession()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


class Reader(asyncssh.SSHClientSession):  # type: ignore[misc]
    """Collects stdout and stderr; pauses reading for a moment now and then."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.done = asyncio.get_running_loop().create_future()
        self.pauses = 0

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def data_received(self, data: bytes, datatype: Any) -> None:
        (self.err if datatype == asyncssh.EXTENDED_DATA_STDERR else self.out).append(data)
        if len(self.out) % 50 == 0 and datatype is None:
            self.pauses += 1
            self.chan.pause_reading()
            asyncio.get_running_loop().call_later(0.002, self.chan.resume_reading)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(exc)


async def transfer(data: bytes, enc: str, mac: str | None = None, seed: int = 1,
                   flip_at: int = -1, **client_opts: Any) -> tuple[Reader, Owner, StreamTransport]:
    """Client → server → back through an echo session; returns both ends' state."""
    loop = asyncio.get_running_loop()
    cs, ss = ChoppedStream(seed, flip_at), ChoppedStream(seed + 1)
    cs.peer, ss.peer = ss, cs
    owner = Owner()
    sopts = await asyncssh.SSHServerConnectionOptions.construct(
        server_factory=lambda: owner, server_host_keys=[HOST_KEY], allow_pty=False,
        encryption_algs=[enc], mac_algs=[mac] if mac else (), keepalive_interval=30,
        encoding=None)
    sconn = asyncssh.SSHServerConnection(loop, sopts)
    st = StreamTransport(ss, sconn)
    st.start()
    conn = await asyncssh.connect(
        "peer", tunnel=_StreamTunnel(cs), known_hosts=None, config=[], username="u",
        agent_path=None, client_keys=None, encryption_algs=[enc],
        mac_algs=[mac] if mac else (), keepalive_interval=30, **client_opts)
    chan, reader = await conn.create_session(Reader, encoding=None)
    for i in range(0, len(data), 50_000):
        chan.write(data[i:i + 50_000])
        await asyncio.sleep(0)
    chan.write_eof()
    await asyncio.wait_for(reader.done, 30)
    conn.close()
    await asyncio.wait_for(conn.wait_closed(), 10)
    return reader, owner, st


HOST_KEY = asyncssh.generate_private_key("ssh-ed25519")
CIPHERS = [("aes128-gcm@openssh.com", None), ("chacha20-poly1305@openssh.com", None),
           ("aes128-ctr", "hmac-sha2-256"), ("aes256-ctr", "hmac-sha2-256-etm@openssh.com")]


def test_installed_asyncssh_has_what_the_reader_needs() -> None:
    # an asyncssh upgrade that changes these makes every connection fall back (slower): fail
    loop = asyncio.new_event_loop()
    try:
        conn = asyncssh.SSHServerConnection(loop, asyncssh.SSHServerConnectionOptions(
            server_host_keys=[HOST_KEY]))
        assert unsupported(conn) == ""
        assert isinstance(reader_for(conn), PacketReader)
        assert reader_for(asyncio.Protocol()) is None
    finally:
        loop.close()


@pytest.mark.parametrize(("enc", "mac"), CIPHERS)
async def test_channel_data_takes_the_short_path(enc: str, mac: str | None) -> None:
    data = pattern(3 << 20, seed=5)
    reader, owner, st = await transfer(data, enc, mac, seed=len(enc))
    assert b"".join(reader.out) == data
    err = b"".join(reader.err)
    assert err.endswith(f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode())
    assert err.startswith(b".")  # extended data arrived through asyncssh's own path
    assert reader.pauses > 0
    assert reader.chan.get_exit_status() == 0
    rx = st.reader
    assert rx is not None
    # the server received ~3 MiB of channel data as ~100 packets: all but a few the short way
    assert rx.fast >= 80, (rx.fast, rx.handed)
    assert owner.lost == [None]


async def test_rekeying_mid_transfer(caplog: pytest.LogCaptureFixture) -> None:
    """The client asks for a new key every 256 KiB; every key exchange packet and the switch
    to the new keys go through asyncssh, data in between takes the short path."""
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    data = pattern(4 << 20, seed=9)
    reader, owner, st = await transfer(data, "chacha20-poly1305@openssh.com",
                                          rekey_bytes=256 * 1024)
    assert b"".join(reader.out) == data
    kex = sum("Completed key exchange" in r.getMessage() for r in caplog.records)
    assert kex >= 2 * 10  # both ends log each: the first one and at least 9 rekeys
    assert st.reader is not None and st.reader.fast > 50
    assert owner.lost == [None]


async def corrupted_transfer(enc: str) -> tuple[BaseException | None, bytes, StreamTransport]:
    """One byte flipped 1 MiB into what the client sends: how the server's connection ends
    and what its session got before."""
    loop = asyncio.get_running_loop()
    got = bytearray()

    class Count(EchoSession):
        def data_received(self, d: bytes, datatype: Any) -> None:
            got.extend(d)

    class Counting(Owner):
        def session_requested(self) -> EchoSession:
            return Count()

    owner = Counting()
    cs, ss = ChoppedStream(3, flip_at=1 << 20), ChoppedStream(4)
    cs.peer, ss.peer = ss, cs
    sopts = await asyncssh.SSHServerConnectionOptions.construct(
        server_factory=lambda: owner, server_host_keys=[HOST_KEY], encryption_algs=[enc],
        encoding=None)
    st = StreamTransport(ss, asyncssh.SSHServerConnection(loop, sopts))
    st.start()
    conn = await asyncssh.connect("peer", tunnel=_StreamTunnel(cs), known_hosts=None, config=[],
                                  username="u", agent_path=None, client_keys=None,
                                  encryption_algs=[enc])
    chan, _ = await conn.create_session(Reader, encoding=None)
    chan.write(pattern(2 << 20, seed=3))
    await asyncio.wait_for(conn.wait_closed(), 10)
    for _ in range(100):
        if owner.lost:
            break
        await asyncio.sleep(0.01)
    assert len(owner.lost) == 1
    return owner.lost[0], bytes(got), st



async def test_corrupted_packet_is_refused_not_delivered() -> None:
    """One flipped bit in a data packet: the AEAD check fails before anything of it is
    delivered; asyncssh disconnects with its own error."""
    exc, got, st = await corrupted_transfer("aes128-gcm@openssh.com")
    data = pattern(2 << 20, seed=3)
    assert isinstance(exc, asyncssh.Error)
    assert "MAC verification failed" in str(exc)
    assert 0 < len(got) < (1 << 20) and got == data[:len(got)]
    assert st.reader is not None and st.reader.fast > 0


async def test_debug_logging_takes_asyncssh_path() -> None:
    old = SSHLogger._debug_level
    asyncssh.set_debug_level(2)
    try:
        data = pattern(300_000, seed=2)
        reader, _, st = await transfer(data, "aes128-gcm@openssh.com")
    finally:
        SSHLogger._debug_level = old
    assert b"".join(reader.out) == data
    assert st.reader is not None and st.reader.fast == 0 and st.reader.handed > 10


async def test_without_the_internals_asyncssh_path_is_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An asyncssh that lacks what the reader needs: one warning, then asyncssh's own path
    (fed a packet at a time) for every connection."""
    from ugate_ssh import recv

    monkeypatch.setattr(recv, "_PROBLEM", "simulated change")
    monkeypatch.setattr(recv, "_warned", [])
    caplog.set_level(logging.WARNING, logger="ugate.ssh")
    data = pattern(500_000, seed=4)
    reader, owner, st = await transfer(data, "aes128-gcm@openssh.com")
    assert b"".join(reader.out) == data and owner.lost == [None]
    assert st.reader is None and st._paced
    warnings = [r.getMessage() for r in caplog.records if "ssh_fast_receive_off" in r.getMessage()]
    assert len(warnings) == 1 and "simulated change" in warnings[0]  # two connections, one line


# ----------------------------------------------------------------- framing, without asyncssh
class _Identity:
    """An Encryption that changes nothing (the first block is the plain header)."""

    def decrypt_header(self, seq: int, first_block: bytes, header_len: int
                       ) -> tuple[bytes, bytes]:
        return first_block, first_block[:header_len]

    def decrypt_packet(self, seq: int, first: bytes, rest: Any, header_len: int,
                       mac: bytes) -> bytes:
        return first[header_len:] + bytes(rest)


class _Chan:
    """What the reader looks at on a channel whose data handling is asyncssh's."""

    _packet_handlers = {MSG_CHANNEL_DATA: SSHChannel._process_data}
    process_packet = SSHPacketHandler.process_packet
    _recv_state = "open"
    _recv_window = 1 << 30

    def __init__(self, events: list[tuple[int, bytes]]) -> None:
        self.events = events

    def _accept_data(self, data: bytes) -> None:
        self.events.append((MSG_CHANNEL_DATA, data))


SLOW = 20  # a packet type whose handler is a coroutine in asyncssh (KEXINIT): parser waits


class _Parser(asyncio.Protocol):
    """asyncssh's receive state machine, reduced: header block, rest, dispatch; a SLOW packet
    blocks the parser until release(), as a coroutine handler does."""

    def __init__(self, events: list[tuple[int, bytes]]) -> None:
        self.events = events
        self._recv_encryption: Any = _Identity()
        self._recv_blocksize, self._recv_macsize, self._max_recv_pktlen = 16, 16, 1 << 20
        self._recv_seq = self._pktlen = 0
        self._inpbuf = b""
        self._recv_handler: Any = self._recv_pkthdr
        self._channels = {0: _Chan(events)}
        self._auth_complete, self._decompressor, self._transport = True, None, object()
        self.blocked = False

    def data_received(self, data: bytes) -> None:
        self._inpbuf += data
        while self._inpbuf and self._recv_handler():
            pass

    def _recv_pkthdr(self) -> bool:
        if len(self._inpbuf) < 16:
            return False
        self._first, length = self._recv_encryption.decrypt_header(
            self._recv_seq, self._inpbuf[:16], 4)
        self._pktlen = int.from_bytes(length, "big")
        self._inpbuf = self._inpbuf[16:]
        self._recv_handler = self._recv_packet
        return True

    def _recv_packet(self) -> bool:
        rem = 4 + self._pktlen + 16 - 16
        if len(self._inpbuf) < rem:
            return False
        plain = self._recv_encryption.decrypt_packet(
            self._recv_seq, self._first, self._inpbuf[:rem - 16], 4, self._inpbuf[rem - 16:rem])
        self._inpbuf = self._inpbuf[rem:]
        kind = plain[1]
        payload = plain[1:len(plain) - plain[0]]
        self.events.append((kind, payload[9:] if kind == MSG_CHANNEL_DATA else payload[1:]))
        if kind == SLOW:
            self.blocked = True
            self._recv_handler = lambda: False
            return False
        self._finish_recv_packet(kind, self._recv_seq)
        return True

    def release(self) -> None:
        if self.blocked:
            self.blocked = False
            self._finish_recv_packet(SLOW, self._recv_seq)
            self.data_received(b"")

    def _finish_recv_packet(self, pkttype: int, seq: int) -> None:
        self._recv_seq = seq + 1
        self._recv_handler = self._recv_pkthdr

    def _reset_keepalive_timer(self) -> None:
        pass


def _wire(kind: int, body: bytes) -> bytes:
    payload = bytes([kind]) + (struct.pack(">II", 0, len(body)) if kind == MSG_CHANNEL_DATA
                               else b"") + body
    pad = 4 + (-(4 + 1 + len(payload) + 4) % 16)
    inner = bytes([pad]) + payload + b"p" * pad
    return struct.pack(">I", len(inner)) + inner + b"M" * 16


@settings(deadline=None, max_examples=300)
@given(st.lists(st.tuples(st.sampled_from([MSG_CHANNEL_DATA, MSG_CHANNEL_DATA, 93, SLOW]),
                          st.integers(0, 300) | st.integers(0, 3000)), min_size=1, max_size=12),
       st.lists(st.integers(1, 20) | st.integers(1, 4000), min_size=1, max_size=30),
       st.lists(st.booleans(), min_size=1, max_size=30))
def test_reader_framing_any_cuts(kinds: list[tuple[int, int]], cuts: list[int],
                                 release: list[bool]) -> None:
    """Packets cut anywhere (inside first blocks too), asyncssh's parser blocked by a slow
    packet for a read or more: every packet is taken once, in order, data the short way when
    the reader frames, the rest by the parser."""
    events: list[tuple[int, bytes]] = []
    parser = _Parser(events)
    _, s = stream_pair()
    t = StreamTransport(s, parser)
    assert t._paced and t.reader is None  # not an asyncssh connection: attach one by hand
    t.reader = PacketReader(parser)
    sent = [(k, bytes([i % 251]) * n) for i, (k, n) in enumerate(kinds)]
    wire = b"".join(_wire(k, b) for k, b in sent)
    pos = i = 0
    while pos < len(wire):
        n = cuts[i % len(cuts)]
        t.data_received(wire[pos:pos + n])
        if release[i % len(release)]:
            parser.release()
        pos += n
        i += 1
    while parser.blocked:
        parser.release()
    assert events == sent
    assert parser._recv_seq == len(sent) and not parser._inpbuf
