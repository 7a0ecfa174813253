"""Encrypting one outgoing SSH packet for :mod:`.send`, and decrypting one received packet for
:mod:`.recv`, with an asyncssh ``Encryption`` object.

:func:`sealer` gives a function ``(seq, length_field, plain) -> pieces``: the bytes of the
packet on the wire, in order, to be written as they are. By default it is the object's own
``encrypt_packet``. For the two AEAD modes it is shorter, from their specifications, with the
object's keys and state:

* ``aes*-gcm@openssh.com`` (RFC 5647): asyncssh makes a new ``AESGCM`` for every packet and
  copies its output twice (cutting off the tag, putting the length field in front); here one
  ``AESGCM`` per key, the output written as it is. The nonce is asyncssh's (``_iv``, fixed
  field and invocation counter), advanced by one per packet as section 7.1 says — the same
  object goes on with the same counter when asyncssh sends the next packet.
* ``chacha20-poly1305@openssh.com`` (OpenSSH's PROTOCOL.chacha20poly1305): the length field
  under ChaCha20 with K_1, the packet under ChaCha20 with K_2 from block 1, the Poly1305 key
  from block 0 of the same stream, the tag over both; asyncssh makes three ChaCha20 contexts
  per packet and joins length and packet to compute the tag, here two and no join. It keeps
  no state besides the keys (the nonce is the sequence number).

Each shortcut is checked once, at import, against asyncssh's ``encrypt_packet`` on objects
with test keys (same bytes for a few packets, same state afterwards); one that differs is not
used (:data:`SHORT` says which are), so an asyncssh that changes these internals costs speed,
not correctness, and a test notices.

:func:`opener` is the receiving twin: ``(seq, data, pos, end) -> plain or None`` for the packet
``data[pos:end]`` as it came off the wire (length field, encrypted packet, 16-byte tag), what
asyncssh's ``decrypt_packet`` returns (None when the tag is wrong, so the caller fails exactly as
asyncssh's own path does). asyncssh's GCM wrapper makes a new ``AESGCM`` per packet and joins
the ciphertext twice (first block and rest, then the tag); here one ``AESGCM`` per key decrypts
a view of the input as it is, with asyncssh's nonce advanced as it would (also after a wrong
tag). For chacha20 asyncssh makes two ChaCha20 contexts for the packet and joins length and
packet for the tag; here one context (Poly1305 key from block 0, the packet from block 1) and
the tag over a view of the input. The tag is verified before anything is decrypted (ChaCha20)
or returned (GCM). Checked at import against ``decrypt_packet`` the same way (:data:`OPEN`);
without a shortcut the caller uses ``decrypt_packet``, and ``ssh_fast_decrypt_off`` is logged
once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

try:
    from asyncssh.encryption import ChachaEncryption, GCMEncryption, get_encryption
    from cryptography.exceptions import InvalidSignature, InvalidTag
    from cryptography.hazmat.primitives.ciphers import Cipher
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20
    from cryptography.hazmat.primitives.poly1305 import Poly1305
except ImportError:  # send.py reports asyncssh's layout; without these only the default
    GCMEncryption = ChachaEncryption = None  # type: ignore[assignment,misc]

from .internals import off_once

Sealer = Callable[[int, bytes, bytes], tuple[bytes, ...]]
Opener = Callable[[int, Any, int, int], bytes | None]

_U64 = (1 << 64) - 1
_ZERO8 = bytes(8)
_ZERO64 = bytes(64)


class _Gcm:
    """AES-GCM with the key and nonce of asyncssh's ``GCMCipher`` (see the module)."""

    def __init__(self, enc: Any) -> None:
        self.cipher = enc._cipher
        self.aead = AESGCM(self.cipher._key)

    def __call__(self, seq: int, length: bytes, plain: bytes) -> tuple[bytes, ...]:
        c = self.cipher
        iv = c._iv
        out = self.aead.encrypt(iv, plain, length)  # ciphertext and tag; length is the AAD
        c._iv = iv[:4] + ((int.from_bytes(iv[4:], "big") + 1) & _U64).to_bytes(8, "big")
        return length, out


class _Chacha:
    """chacha20-poly1305@openssh.com with the keys of asyncssh's ``ChachaCipher``."""

    def __init__(self, enc: Any) -> None:
        self.k_main, self.k_length = enc._cipher._key, enc._cipher._adkey

    def __call__(self, seq: int, length: bytes, plain: bytes) -> tuple[bytes, ...]:
        nonce = _ZERO8 + seq.to_bytes(8, "big")  # block counter 0, then the sequence number
        head = Cipher(ChaCha20(self.k_length, nonce), None).encryptor().update(length)
        stream = Cipher(ChaCha20(self.k_main, nonce), None).encryptor()
        mac = Poly1305(stream.update(_ZERO64)[:32])  # block 0; the packet starts at block 1
        body = stream.update(plain)
        mac.update(head)
        mac.update(body)
        return head, body, mac.finalize()


def _same(alg: bytes, key_len: int, iv_len: int, short: Callable[[Any], Sealer]) -> bool:
    """The shortcut gives what asyncssh's ``encrypt_packet`` gives, packet after packet."""
    try:
        key, iv = os.urandom(key_len), os.urandom(iv_len)
        ours, theirs = get_encryption(alg, key, iv), get_encryption(alg, key, iv)
        seal = short(ours)
        for seq, size in ((0, 48), (1, 32768 + 16), (0xFFFFFFFF, 1024)):
            plain, length = os.urandom(size), size.to_bytes(4, "big")
            if b"".join(seal(seq, length, plain)) != \
                    b"".join(theirs.encrypt_packet(seq, length, plain)):
                return False
        # the state asyncssh goes on with (GCM's counter) moved the same way
        probe = (7, b"\0\0\0\x10", bytes(16))
        return ours.encrypt_packet(*probe) == theirs.encrypt_packet(*probe)
    except Exception:
        return False


#: shortcuts that match the installed asyncssh, by its Encryption class
SHORT: dict[Any, Callable[[Any], Sealer]] = {}
if GCMEncryption is not None and _same(b"aes128-gcm@openssh.com", 16, 12, _Gcm):
    SHORT[GCMEncryption] = _Gcm
if ChachaEncryption is not None and _same(b"chacha20-poly1305@openssh.com", 64, 0, _Chacha):
    SHORT[ChachaEncryption] = _Chacha


def sealer(enc: Any) -> Sealer:
    """How to encrypt a packet with asyncssh's Encryption ``enc`` (see the module)."""
    short = SHORT.get(type(enc))
    if short is not None:
        return short(enc)
    encrypt: Callable[[int, bytes, bytes], tuple[bytes, bytes]] = enc.encrypt_packet
    return encrypt


# ------------------------------------------------------------------------------ receiving
class _GcmOpen:
    """AES-GCM decryption with the key and nonce of asyncssh's ``GCMCipher`` (see the module)."""

    def __init__(self, enc: Any) -> None:
        self.cipher = enc._cipher
        self.aead = AESGCM(self.cipher._key)

    def __call__(self, seq: int, data: Any, pos: int, end: int) -> bytes | None:
        c = self.cipher
        iv = c._iv
        mv = memoryview(data)
        try:  # ciphertext and tag as they arrived; the length field is the AAD
            plain: bytes | None = self.aead.decrypt(iv, mv[pos + 4:end], mv[pos:pos + 4])
        except InvalidTag:
            plain = None
        c._iv = iv[:4] + ((int.from_bytes(iv[4:], "big") + 1) & _U64).to_bytes(8, "big")
        return plain


class _ChachaOpen:
    """chacha20-poly1305@openssh.com decryption with the keys of asyncssh's ``ChachaCipher``."""

    def __init__(self, enc: Any) -> None:
        self.k_main = enc._cipher._key

    def __call__(self, seq: int, data: Any, pos: int, end: int) -> bytes | None:
        stream = Cipher(ChaCha20(self.k_main, _ZERO8 + seq.to_bytes(8, "big")), None).encryptor()
        mac = Poly1305(stream.update(_ZERO64)[:32])  # block 0; the packet starts at block 1
        mv = memoryview(data)
        mac.update(mv[pos:end - 16])  # the encrypted length field and packet
        try:
            mac.verify(bytes(mv[end - 16:end]))
        except InvalidSignature:
            return None
        return stream.update(mv[pos + 4:end - 16])


def _same_open(alg: bytes, key_len: int, iv_len: int, short: Callable[[Any], Opener]) -> bool:
    """The shortcut gives what asyncssh's ``decrypt_packet`` gives, packet after packet, a
    wrong tag included, and leaves the state asyncssh goes on with as it would."""
    try:
        key, iv = os.urandom(key_len), os.urandom(iv_len)
        sender, ours, theirs = (get_encryption(alg, key, iv) for _ in range(3))
        block = 8  # the first block, as asyncssh's parser splits it (its size: no matter)
        open_ = short(ours)
        cases = ((0, 48, False), (1, 32768 + 16, False), (2, 1024, True),
                 (0xFFFFFFFF, 1024, False))
        for seq, size, bad in cases:
            plain, length = os.urandom(size), size.to_bytes(4, "big")
            wire = bytearray(b"".join(sender.encrypt_packet(seq, length, plain)))
            if bad:
                wire[-1] ^= 1
            wire_b = bytes(wire)
            first = theirs.decrypt_header(seq, wire_b[:block], 4)[0]
            want = theirs.decrypt_packet(seq, first, wire_b[block:-16], 4, wire_b[-16:])
            got = open_(seq, wire_b, 0, len(wire_b))
            if got != want or (want is None) != bad or (want is not None and want != plain):
                return False
        # the state asyncssh goes on with (GCM's counter) moved the same way
        wire_b = b"".join(sender.encrypt_packet(7, b"\0\0\0\x10", bytes(16)))
        first = ours.decrypt_header(7, wire_b[:block], 4)[0]
        return ours.decrypt_packet(7, first, wire_b[block:-16], 4, wire_b[-16:]) == bytes(16)
    except Exception:
        return False


#: decryption shortcuts that match the installed asyncssh, by its Encryption class
OPEN: dict[Any, Callable[[Any], Opener]] = {}
if GCMEncryption is not None and _same_open(b"aes128-gcm@openssh.com", 16, 12, _GcmOpen):
    OPEN[GCMEncryption] = _GcmOpen
if ChachaEncryption is not None and \
        _same_open(b"chacha20-poly1305@openssh.com", 64, 0, _ChachaOpen):
    OPEN[ChachaEncryption] = _ChachaOpen

_AEAD = ("GCMEncryption", "ChachaEncryption")
_warned: list[str] = []


def opener(enc: Any) -> Opener | None:
    """How to decrypt a packet with asyncssh's Encryption ``enc`` (see the module); None:
    with its own ``decrypt_packet`` (logged once for an AEAD mode without its shortcut)."""
    short = OPEN.get(type(enc))
    if short is not None:
        return short(enc)
    name = type(enc).__name__
    if name in _AEAD:
        off_once("ssh_fast_decrypt_off",
                 f"{name}: the shortcut differs from decrypt_packet or cannot be built", _warned)
    return None
