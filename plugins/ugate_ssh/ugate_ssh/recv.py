"""A shorter receive path for SSH channel data, over asyncssh 2.x's connection internals.

asyncssh handles each received packet the same way: append it to ``_inpbuf`` and slice it off
again, decrypt it, wrap the payload in an ``SSHPacket``, pick a handler from its tables, log it
(the log call formats a name and a size even when nothing is logged), then the channel's
``_process_data`` copies the data out of the packet; and every call resets the keepalive
timer. For bulk transfer that is most of the Python time per 32 KiB packet.

:class:`PacketReader` takes over the framing once a connection encrypts and does, per packet,
what asyncssh would: decrypt with the connection's own ``Encryption`` object (the MAC or AEAD
tag is checked before any byte of the payload is looked at; for AES-GCM and chacha20-poly1305
with :func:`.seal.opener`, one cipher object per key and no copies, in step with the object's
state), and for ``MSG_CHANNEL_DATA``
whose checks pass (authenticated, no compression, asyncssh's debug level below 2, a channel
that is open, of a class whose data handling is asyncssh's own, within its window) it calls the
channel's ``_accept_data`` (window bookkeeping and window adjusts, buffering while paused,
delivery to the session) and the connection's ``_finish_recv_packet`` (sequence number).
``MSG_IGNORE`` — asyncssh sends one before every packet, so from another ugate one per data
packet — is checked for form and only counted. The keepalive timer is reset once per read
instead of once per packet.

Every other packet — and a data packet failing any check, so asyncssh raises its own error —
is handed to asyncssh's ``data_received`` as received, with a one-shot ``Encryption`` standing
in that answers with what was already decrypted: decryption is stateful (GCM's counter, CTR,
CBC) and must happen once. asyncssh then runs its whole path for it: key exchange and rekeying,
window adjusts, EOF, close, extended data, errors and disconnects. When its handler is a
coroutine (``KEXINIT``, channel opens) asyncssh stops reading until it is done; the reader then
gives the rest back and takes over again when asyncssh's parser is idle.

:func:`unsupported` says why an asyncssh connection cannot be read this way (an asyncssh
version without these internals); the transport then feeds asyncssh as before.
"""

from __future__ import annotations

from typing import Any

import asyncssh

try:
    from asyncssh.channel import SSHChannel
    from asyncssh.connection import SSHConnection
    from asyncssh.constants import MSG_CHANNEL_DATA, MSG_IGNORE
    from asyncssh.encryption import Encryption
    from asyncssh.logging import SSHLogger
    from asyncssh.misc import DisconnectError
    from asyncssh.packet import SSHPacketHandler
except ImportError as e:  # another module layout: the reader stays off (see reader_for)
    _IMPORT_ERROR = f"import: {e}"
else:
    _IMPORT_ERROR = ""

from .internals import logger_problem, missing, off_once, params
from .seal import Opener, opener

#: connection state the reader reads and writes (asyncssh 2.x)
CONN_STATE = ("_recv_encryption", "_recv_blocksize", "_recv_macsize", "_recv_seq",
              "_recv_handler", "_recv_pkthdr", "_inpbuf", "_max_recv_pktlen", "_channels",
              "_auth_complete", "_decompressor", "_transport", "_finish_recv_packet",
              "_reset_keepalive_timer", "_send_disconnect", "_force_close", "internal_error")
#: channel state read before taking a data packet
CHAN_STATE = ("_recv_state", "_recv_window", "_accept_data")


def _interface_problem() -> str:
    """What in asyncssh's classes differs from what the reader was written against."""
    if _IMPORT_ERROR:
        return _IMPORT_ERROR
    if params(Encryption.decrypt_header) != ["seq", "first_block", "header_len"] or \
            params(Encryption.decrypt_packet) != ["seq", "first", "rest", "header_len", "mac"]:
        return "Encryption.decrypt_header/decrypt_packet signature"
    if params(SSHConnection._finish_recv_packet)[:2] != ["pkttype", "seq"]:
        return "SSHConnection._finish_recv_packet signature"
    if SSHChannel._packet_handlers.get(MSG_CHANNEL_DATA) is not \
            getattr(SSHChannel, "_process_data", None):
        return "SSHChannel._packet_handlers[MSG_CHANNEL_DATA]"
    return logger_problem()


_PROBLEM = _interface_problem()


def unsupported(conn: object) -> str:
    """Why the asyncssh connection ``conn`` cannot be read by :class:`PacketReader` ("" when
    it can)."""
    why = missing(_PROBLEM, conn, CONN_STATE)
    if why:
        return why
    if getattr(type(conn), "_packet_handlers", {}).get(MSG_IGNORE) is not \
            getattr(SSHConnection, "_process_ignore", None):
        return f"{type(conn).__name__}._packet_handlers[MSG_IGNORE]"
    return ""


def reader_for(protocol: object) -> PacketReader | None:
    """A reader for an asyncssh connection, or None (logged once when asyncssh lacks what the
    reader needs: the connection is then fed through asyncssh's own path, slower)."""
    if not isinstance(protocol, asyncssh.SSHClientConnection | asyncssh.SSHServerConnection):
        return None
    why = unsupported(protocol)
    if not why:
        return PacketReader(protocol)
    off_once("ssh_fast_receive_off", why, _warned)
    return None


_warned: list[str] = []


#: channel classes whose data packets asyncssh handles with SSHChannel._process_data
_plain: dict[type, bool] = {}


def _plain_data(chan: Any) -> bool:
    cls = type(chan)
    ok = _plain.get(cls)
    if ok is None:
        ok = _plain[cls] = (
            cls._packet_handlers.get(MSG_CHANNEL_DATA) is SSHChannel._process_data
            and cls.process_packet is SSHPacketHandler.process_packet
            and all(hasattr(chan, a) for a in CHAN_STATE))
    return ok


class _Decrypted:
    """asyncssh's ``Encryption`` interface for one packet the reader already decrypted: the
    connection's parser gets the same results without a second (stateful) decryption; the
    real object is put back before the packet is processed."""

    def __init__(self, conn: Any, enc: Any, first: bytes, length: bytes,
                 plain: bytes | None) -> None:
        self.conn, self.enc = conn, enc
        self.first, self.length, self.plain = first, length, plain

    def decrypt_header(self, seq: int, first_block: bytes, header_len: int
                       ) -> tuple[bytes, bytes]:
        return self.first, self.length

    def decrypt_packet(self, seq: int, first: bytes, rest: bytes, header_len: int,
                       mac: bytes) -> bytes | None:
        self.conn._recv_encryption = self.enc
        return self.plain


class PacketReader:
    """Reads an encrypted asyncssh connection's input packet by packet (see the module)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        #: the reader frames the input (asyncssh's parser is idle between packets)
        self.active = False
        #: data packets delivered by the short path / packets handed to asyncssh
        self.fast = 0
        self.handed = 0
        self._stash = b""  # the start of a packet the next read completes
        self._head: tuple[bytes, bytes, int] | None = None  # its decrypted first block
        self._enc: Any = None  # the Encryption object _open was made for
        self._open: Opener | None = None
        #: packets decrypted by the seal.opener shortcut / Encryption objects (keys) seen
        self.opened = 0
        self.keys = 0

    def can_start(self) -> bool:
        c = self.conn
        return (c._recv_encryption is not None and c._transport is not None
                and not c._inpbuf and c._recv_handler == c._recv_pkthdr)

    def feed(self, data: bytes, pos: int) -> int:
        """Take the packets in ``data[pos:]``; returns where asyncssh's own parser must go on
        (``len(data)`` unless a handed packet left it busy), an incomplete packet is kept."""
        c = self.conn
        if c._transport is None:  # closed: asyncssh's own path decides what that means
            self.active = False
            return pos
        self.active = True
        c._reset_keepalive_timer()
        n = len(data)
        try:
            if self._stash:
                stash = self._stash
                if self._head is None:  # even its first block was cut
                    need = c._recv_blocksize - len(stash)
                    if n - pos < need:
                        self._stash += data[pos:]
                        return n
                    stash += data[pos:pos + need]
                    pos += need
                    self._head = self._header(stash)
                    if self._head is None:
                        return n
                first, length, size = self._head
                need = size - len(stash)
                if n - pos < need:
                    self._stash = stash + data[pos:]
                    return n
                self._stash, self._head = b"", None
                self._packet(stash + data[pos:pos + need], 0, size, first, length)
                pos += need
            while pos < n and self.active:
                if n - pos < c._recv_blocksize:
                    self._stash = data[pos:]
                    return n
                head = self._header(data[pos:pos + c._recv_blocksize])
                if head is None:
                    return n
                first, length, size = head
                if n - pos < size:
                    self._stash, self._head = data[pos:], head
                    return n
                self._packet(data, pos, pos + size, first, length)
                pos += size
        except DisconnectError as exc:  # what asyncssh's _recv_data does with these
            c._send_disconnect(exc.code, exc.reason, exc.lang)
            c._force_close(exc)
            self.active = False
            return n
        except Exception:
            c.internal_error()
            self.active = False
            return n
        return pos

    def _header(self, block: bytes) -> tuple[bytes, bytes, int] | None:
        """A packet's first block: decrypted, with the packet's size on the wire; None when
        asyncssh refuses the length (it is handed the block and disconnects)."""
        c = self.conn
        first, length = c._recv_encryption.decrypt_header(c._recv_seq, block, 4)
        pktlen = int.from_bytes(length, "big")
        size = 4 + pktlen + c._recv_macsize
        if pktlen > c._max_recv_pktlen or size < len(block):
            self._hand(block, first, length, None)
            return None
        return first, length, size

    def _packet(self, data: bytes, pos: int, end: int, first: bytes, length: bytes) -> None:
        c = self.conn
        seq, ms = c._recv_seq, c._recv_macsize
        enc = c._recv_encryption
        if enc is not self._enc:  # new keys
            self._enc, self._open = enc, opener(enc)
            self.keys += 1
        if self._open is not None:
            plain = self._open(seq, data, pos, end)
            self.opened += 1
        else:
            plain = enc.decrypt_packet(
                seq, first, memoryview(data)[pos + c._recv_blocksize:end - ms], 4,
                data[end - ms:end])
        # plain: padding length, payload (type, channel, data length, data), padding
        if plain is not None and c._auth_complete and c._decompressor is None \
                and SSHLogger._debug_level < 2:
            pad, kind = plain[0], plain[1]
            if kind == MSG_CHANNEL_DATA:
                dlen = int.from_bytes(plain[6:10], "big")
                if pad and 10 + dlen + pad == len(plain):
                    chan = c._channels.get(int.from_bytes(plain[2:6], "big"))
                    if chan is not None and _plain_data(chan) and chan._recv_state == "open" \
                            and dlen <= chan._recv_window:
                        chan._accept_data(plain[10:10 + dlen])
                        c._finish_recv_packet(MSG_CHANNEL_DATA, seq)
                        self.fast += 1
                        if c._transport is None:
                            self.active = False
                        return
            # asyncssh sends one before each packet: ugate to ugate, one per data packet
            elif kind == MSG_IGNORE and pad and \
                    6 + int.from_bytes(plain[2:6], "big") + pad == len(plain):
                c._finish_recv_packet(MSG_IGNORE, seq)
                return
        self._hand(data[pos:end], first, length, plain)

    def _hand(self, raw: bytes, first: bytes, length: bytes, plain: bytes | None) -> None:
        """asyncssh's own path for one packet, with its decryption already done."""
        c = self.conn
        enc = c._recv_encryption
        shim = _Decrypted(c, enc, first, length, plain)
        c._recv_encryption = shim
        try:
            c.data_received(raw)
        finally:
            if c._recv_encryption is shim:  # asyncssh refused it before decrypting
                c._recv_encryption = enc
        self.handed += 1
        self.active = self.can_start()
