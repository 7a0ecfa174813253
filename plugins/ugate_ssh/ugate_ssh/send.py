"""A shorter send path for SSH channel data, over asyncssh 2.x's connection internals.

asyncssh sends channel data one packet at a time: ``SSHChannel._flush_send_buf`` slices the
send buffer, ``send_packet`` builds the payload by concatenation (three times), sends an
``MSG_IGNORE`` first, pads, encrypts (its GCM wrapper copies the result twice more), joins
ciphertext and MAC and formats a log line even when nothing is logged. Per 32 KiB packet most
of that is not the cipher.

:class:`PacketWriter` sends ``MSG_CHANNEL_DATA`` itself, as RFC 4253 section 6 lays out the
binary packet: the header (padding length, message type, recipient channel, data length)
and random padding around the data in one buffer, encrypted with the connection's own
asyncssh ``Encryption`` object for its current keys and sequence number (for AES-GCM and
chacha20-poly1305 with its keys and nonce, without its per-packet copies: :mod:`.seal`);
the encrypted pieces are handed to the transport as they are
(:class:`~.adapters.StreamTransport` joins a loop turn's writes once). Afterwards asyncssh's
state is what its own path would have left: the send sequence number, the bytes counted
towards rekeying, the channel's send window and buffer length. asyncssh has no keepalive or
idle timer on the send side.

It stands aside — the packet goes through asyncssh's ``send_packet`` unchanged — whenever
asyncssh would do more than send it: before authentication, during a key exchange (asyncssh
queues packets then), when a rekey is due (asyncssh starts it and queues the packet), with
packets already queued, with compression, with asyncssh's debug level 2 or more (it logs
each write), for extended data, and for cipher modes other than CTR, GCM and
chacha20-poly1305. Window adjusts, EOF, close and requests always go through asyncssh.

The ``MSG_IGNORE`` asyncssh sends before every packet once it encrypts is the countermeasure
of RFC 4251 section 9.3.1 against the chosen-plaintext attack on SSH's CBC mode, whose IV for
a packet is the last ciphertext block of the one before. asyncssh's first version sent it
only when no output was pending (the condition the attack needs; its comment still says so);
since its move to asyncio (2014) there is no output buffer to look at and it goes before
every packet. CTR (RFC 4344 made it the fix for exactly this), GCM (RFC 5647) and
chacha20-poly1305 derive each packet's keystream from a counter or the sequence number, not
from earlier ciphertext, so the packet protects nothing there and this path leaves it out.
With CBC (and anything else) data goes through asyncssh, ``MSG_IGNORE`` included.

:func:`unsupported` says why an asyncssh connection cannot be written this way; then nothing
is attached and asyncssh sends everything, as before.
"""

from __future__ import annotations

import os
import time
from typing import Any

import asyncssh

try:
    from asyncssh.channel import SSHChannel
    from asyncssh.connection import SSHConnection
    from asyncssh.constants import MSG_CHANNEL_DATA
    from asyncssh.encryption import (
        BasicEncryption,
        ChachaEncryption,
        Encryption,
        ETMEncryption,
        GCMEncryption,
    )
    from asyncssh.logging import SSHLogger
    from cryptography.hazmat.primitives.ciphers.modes import CTR
except ImportError as e:  # another module layout: the writer stays off (see writer_for)
    _IMPORT_ERROR = f"import: {e}"
else:
    _IMPORT_ERROR = ""

from .internals import logger_problem, missing, off_once, params
from .seal import Sealer, sealer

#: connection state the writer reads and writes (asyncssh 2.x)
CONN_STATE = ("_send_encryption", "_send_seq", "_send_blocksize", "_send_enchdrlen",
              "_compressor", "_kex_complete", "_auth_complete", "_deferred_packets",
              "_rekey_bytes", "_rekey_bytes_sent", "_rekey_seconds", "_rekey_time",
              "_transport")
#: channel state the writer reads and writes
CHAN_STATE = ("_send_buf", "_send_buf_len", "_send_window", "_send_pktsize", "_send_state",
              "_send_chan", "_encoding", "_conn", "_pause_resume_writing")


def _interface_problem() -> str:
    """What in asyncssh's classes differs from what the writer was written against."""
    if _IMPORT_ERROR:
        return _IMPORT_ERROR
    if params(Encryption.encrypt_packet) != ["seq", "header", "packet"]:
        return "Encryption.encrypt_packet signature"
    for cls in (BasicEncryption, GCMEncryption, ChachaEncryption):
        if not hasattr(cls, "encrypt_packet"):
            return f"{cls.__name__}.encrypt_packet"
    if params(SSHConnection.send_packet)[:1] != ["pkttype"] or \
            params(SSHChannel._flush_send_buf) != [] or \
            params(SSHChannel.write)[:2] != ["data", "datatype"]:
        return "SSHConnection.send_packet / SSHChannel._flush_send_buf / write signature"
    return logger_problem()


_PROBLEM = _interface_problem()


def unsupported(conn: object) -> str:
    """Why the asyncssh connection ``conn`` cannot be written by :class:`PacketWriter` ("" when
    it can)."""
    why = missing(_PROBLEM, conn, CONN_STATE)
    if why:
        return why
    if getattr(type(conn), "send_packet", None) is not SSHConnection.send_packet:
        return f"{type(conn).__name__}.send_packet"
    return ""


_warned: list[str] = []


def writer_for(protocol: object) -> PacketWriter | None:
    """A writer for an asyncssh connection, or None (logged once when asyncssh lacks what the
    writer needs: the connection then sends through asyncssh's own path, slower)."""
    if not isinstance(protocol, asyncssh.SSHClientConnection | asyncssh.SSHServerConnection):
        return None
    why = unsupported(protocol)
    if not why:
        return PacketWriter(protocol)
    off_once("ssh_fast_send_off", why, _warned)
    return None


def _short_mode(enc: object) -> bool:
    """True for the encryptions this path sends with: chacha20-poly1305, AES-GCM, and CTR
    with a MAC (plain or encrypt-then-MAC). CBC and the rest keep asyncssh's path."""
    if type(enc) in (GCMEncryption, ChachaEncryption):
        return True
    if type(enc) in (BasicEncryption, ETMEncryption):
        cipher = getattr(getattr(enc, "_cipher", None), "_cipher", None)
        return isinstance(getattr(cipher, "mode", None), CTR)
    return False


#: random padding is taken from a pool of this size, refilled when used up (each byte once)
_POOL = 4096


class PacketWriter:
    """Sends an encrypted asyncssh connection's channel data (see the module)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        #: data packets sent by the short path
        self.fast = 0
        self._enc: object = None
        self._enc_ok = False
        self._seal: Sealer | None = None
        self._pool = b""
        self._pos = _POOL

    # ------------------------------------------------------------------ attaching
    def attach(self, chan: Any) -> bool:
        """Route the data ``chan`` sends through this writer (True), unless the channel is
        not asyncssh's plain kind (its data then goes through asyncssh)."""
        cls = type(chan)
        if not all(hasattr(chan, a) for a in CHAN_STATE) or chan._conn is not self.conn or \
                chan._encoding is not None or \
                cls._flush_send_buf is not SSHChannel._flush_send_buf or \
                cls.send_packet is not SSHChannel.send_packet or \
                cls.write is not SSHChannel.write:
            return False
        stock = chan._flush_send_buf

        def flush() -> None:
            if chan._send_buf and chan._send_window and self.ready():
                self._from_buffer(chan)
            stock()  # the rest (extended data, a stand-aside), pausing, EOF and close

        chan._flush_send_buf = flush
        return True

    # ------------------------------------------------------------------ sending
    def ready(self) -> bool:
        """asyncssh would send a data packet now without doing anything else first."""
        c = self.conn
        enc = c._send_encryption
        if enc is not self._enc:  # new keys
            self._enc, self._enc_ok = enc, enc is not None and _short_mode(enc)
            self._seal = sealer(enc) if self._enc_ok else None
        return (self._enc_ok and c._kex_complete and c._auth_complete
                and not c._deferred_packets and c._compressor is None
                and c._transport is not None and SSHLogger._debug_level < 2
                and not self._rekey_due())

    def _rekey_due(self) -> bool:
        c = self.conn
        return bool(c._rekey_bytes_sent >= c._rekey_bytes or
                    (c._rekey_seconds and time.monotonic() >= c._rekey_time))

    def write(self, chan: Any, data: bytes | bytearray | memoryview) -> None:
        """``chan.write(data)``, sending what the window takes at once and straight from
        ``data`` when nothing is buffered before it; the rest is buffered by asyncssh."""
        if chan._send_state == "open" and not chan._send_buf and chan._send_window and \
                self.ready():
            n = len(data)
            with memoryview(data) as mv:
                pos = 0
                while pos < n:
                    k = min(n - pos, chan._send_window, chan._send_pktsize)
                    with mv[pos:pos + k] as part:
                        self._packet(chan._send_chan, part, k)
                    chan._send_window -= k
                    pos += k
                    if not chan._send_window or self._rekey_due():
                        break
                if pos == n:
                    return
                data = bytes(mv[pos:])
        chan.write(bytes(data))

    def _from_buffer(self, chan: Any) -> None:
        """Send from the channel's buffer while the window allows and nothing else is due."""
        bufs = chan._send_buf
        while bufs and chan._send_window:
            buf, datatype = bufs[0]
            if datatype is not None:
                return
            k = min(len(buf), chan._send_window, chan._send_pktsize)
            with memoryview(buf) as mv, mv[:k] as part:
                self._packet(chan._send_chan, part, k)
            if k == len(buf):
                del bufs[0]
            else:
                del buf[:k]
            chan._send_buf_len -= k
            chan._send_window -= k
            if self._rekey_due():
                return

    def _packet(self, recipient: int, data: memoryview, n: int) -> None:
        """One MSG_CHANNEL_DATA packet of ``n`` bytes of ``data`` to channel ``recipient``."""
        c = self.conn
        bs = c._send_blocksize
        # padding: 4 or more bytes, so that padding length byte, payload and padding (and the
        # length field, unless it is outside the encryption: AEAD, encrypt-then-MAC) fill
        # whole cipher blocks (RFC 4253 section 6)
        pad = -(c._send_enchdrlen + 9 + n) % bs
        if pad < 4:
            pad += bs
        if self._pos + pad > _POOL:
            self._pool, self._pos = os.urandom(_POOL), 0
        pos = self._pos
        self._pos = pos + pad
        pktlen = 10 + n + pad
        head = bytes((pad, MSG_CHANNEL_DATA)) + recipient.to_bytes(4, "big") + \
            n.to_bytes(4, "big")
        plain = b"".join((head, data, self._pool[pos:pos + pad]))
        seq = c._send_seq
        assert self._seal is not None
        t = c._transport
        for piece in self._seal(seq, pktlen.to_bytes(4, "big"), plain):
            t.write(piece)
        c._send_seq = (seq + 1) & 0xffffffff
        c._rekey_bytes_sent += pktlen
        self.fast += 1
