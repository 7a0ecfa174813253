"""The short receive path for channel data (recv.PacketReader), between two asyncssh
connections in memory: both ends run over StreamTransport, the wire is cut at random places."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from typing import Any

import asyncssh
import pytest
from asyncssh.logging import SSHLogger

from ugate_core import MemoryStream
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


async def test_corrupted_packet_is_refused_not_delivered() -> None:
    """One flipped bit in a data packet: the AEAD check fails before anything of it is
    delivered; asyncssh disconnects with its own error."""
    loop = asyncio.get_running_loop()
    got = bytearray()

    class Count(EchoSession):
        def data_received(self, d: bytes, datatype: Any) -> None:
            got.extend(d)

    class Counting(Owner):
        def session_requested(self) -> EchoSession:
            return Count()

    owner = Counting()
    data = pattern(2 << 20, seed=3)
    cs, ss = ChoppedStream(3, flip_at=1 << 20), ChoppedStream(4)
    cs.peer, ss.peer = ss, cs
    sopts = await asyncssh.SSHServerConnectionOptions.construct(
        server_factory=lambda: owner, server_host_keys=[HOST_KEY],
        encryption_algs=["aes128-gcm@openssh.com"], encoding=None)
    st = StreamTransport(ss, asyncssh.SSHServerConnection(loop, sopts))
    st.start()
    conn = await asyncssh.connect("peer", tunnel=_StreamTunnel(cs), known_hosts=None, config=[],
                                  username="u", agent_path=None, client_keys=None,
                                  encryption_algs=["aes128-gcm@openssh.com"])
    chan, _ = await conn.create_session(Reader, encoding=None)
    chan.write(data)
    await asyncio.wait_for(conn.wait_closed(), 10)
    for _ in range(100):
        if owner.lost:
            break
        await asyncio.sleep(0.01)
    assert len(owner.lost) == 1 and isinstance(owner.lost[0], asyncssh.Error)
    assert "MAC verification failed" in str(owner.lost[0])
    assert 0 < len(got) < (1 << 20) and bytes(got) == data[:len(got)]
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
