"""The receive path's decryption shortcut (seal.opener) for AES-GCM and chacha20-poly1305:
the same plaintext, the same refusal of a wrong tag and the same cipher state as asyncssh's
``decrypt_packet``; in memory, with asyncssh at both ends (see test_recv)."""

from __future__ import annotations

import logging
import random
from typing import Any

import asyncssh
import pytest
from asyncssh.encryption import ChachaEncryption, GCMEncryption, get_encryption

from ugate_core.testing import pattern
from ugate_ssh import seal

from .test_recv import corrupted_transfer, transfer

AEAD = [("aes128-gcm@openssh.com", 16, 12), ("aes256-gcm@openssh.com", 32, 12),
        ("chacha20-poly1305@openssh.com", 64, 0)]


def test_installed_asyncssh_has_the_decrypt_shortcuts() -> None:
    # checked at import against this asyncssh's decrypt_packet; a change makes them fall back
    assert set(seal.OPEN) == {GCMEncryption, ChachaEncryption}
    assert seal.opener(get_encryption(b"aes128-ctr", bytes(16), bytes(16),
                                      b"hmac-sha2-256", bytes(32))) is None


@pytest.mark.parametrize(("alg", "key_len", "iv_len"), AEAD)
def test_opener_matches_decrypt_packet(alg: str, key_len: int, iv_len: int) -> None:
    """Random sizes, sequence numbers and places in the input, every tenth tag wrong: the
    shortcut and asyncssh agree packet by packet and stay in step (GCM's counter)."""
    rng = random.Random(alg)
    key, iv = rng.randbytes(key_len), rng.randbytes(iv_len)
    name = alg.encode()
    sender, ours, theirs = (get_encryption(name, key, iv) for _ in range(3))
    open_ = seal.opener(ours)
    assert isinstance(open_, seal.OPEN[type(ours)])
    block = 16 if iv_len else 8  # asyncssh's first block for these modes
    seq = rng.randrange(1 << 32)
    for i in range(200):
        size = rng.choice((16, 48, 1024, 32768 + 16, 35000 + 16)) + rng.randrange(0, 64, 8)
        plain, length = rng.randbytes(size), size.to_bytes(4, "big")
        wire = bytearray(b"".join(sender.encrypt_packet(seq, length, plain)))
        bad = i % 10 == 3
        if bad:
            wire[-1 - rng.randrange(16)] ^= 1 << rng.randrange(8)  # a wrong tag
        lead = rng.randbytes(rng.randrange(40))
        data = bytes(lead + wire + rng.randbytes(rng.randrange(40)))
        pos, end = len(lead), len(lead) + len(wire)
        first = theirs.decrypt_header(seq, data[pos:pos + block], 4)[0]
        want = theirs.decrypt_packet(seq, first, data[pos + block:end - 16], 4,
                                     data[end - 16:end])
        got = open_(seq, data, pos, end)
        assert got == want
        assert got is None if bad else got == plain
        seq = (seq + 1) & 0xFFFFFFFF
    if iv_len:
        assert ours._cipher._iv == theirs._cipher._iv


def test_a_shortcut_that_differs_from_asyncssh_is_not_used() -> None:
    class NoCounter(seal._GcmOpen):  # forgets to advance the GCM invocation counter
        def __call__(self, seq: int, data: Any, pos: int, end: int) -> bytes | None:
            iv = self.cipher._iv
            out = super().__call__(seq, data, pos, end)
            self.cipher._iv = iv
            return out

    class NoCheck(seal._ChachaOpen):  # decrypts without looking at the tag
        def __call__(self, seq: int, data: Any, pos: int, end: int) -> bytes | None:
            return seal.Cipher(seal.ChaCha20(self.k_main, bytes([1]) + bytes(7) +
                                             seq.to_bytes(8, "big")),
                               None).encryptor().update(bytes(data[pos + 4:end - 16]))

    assert seal._same_open(b"aes128-gcm@openssh.com", 16, 12, seal._GcmOpen)
    assert not seal._same_open(b"aes128-gcm@openssh.com", 16, 12, NoCounter)
    assert seal._same_open(b"chacha20-poly1305@openssh.com", 64, 0, seal._ChachaOpen)
    assert not seal._same_open(b"chacha20-poly1305@openssh.com", 64, 0, NoCheck)
    assert not seal._same_open(b"aes256-gcm@openssh.com", 32, 12, seal._ChachaOpen)


@pytest.mark.parametrize("enc", ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"])
async def test_transfer_decrypts_with_the_shortcut(enc: str) -> None:
    data = pattern(2 << 20, seed=11)
    reader, owner, st = await transfer(data, enc, seed=7)
    assert b"".join(reader.out) == data and owner.lost == [None]
    rx = st.reader
    assert rx is not None and rx.fast >= 50 and rx.opened >= rx.fast


@pytest.mark.parametrize("enc", ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"])
async def test_rekeying_switches_keys(enc: str) -> None:
    """A new key every 256 KiB: a new shortcut for each, data correct throughout."""
    data = pattern(3 << 20, seed=12)
    reader, owner, st = await transfer(data, enc, rekey_bytes=256 * 1024)
    assert b"".join(reader.out) == data and owner.lost == [None]
    rx = st.reader
    assert rx is not None and rx.keys >= 8 and rx.opened >= rx.fast > 50


@pytest.mark.parametrize("enc", ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"])
async def test_corrupted_packet_fails_as_with_decrypt_packet(
    enc: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    exc, got, st = await corrupted_transfer(enc)
    assert st.reader is not None and st.reader.opened > 0
    monkeypatch.setattr(seal, "OPEN", {})
    monkeypatch.setattr(seal, "_warned", ["quiet"])
    stock_exc, stock_got, stock_st = await corrupted_transfer(enc)
    assert stock_st.reader is not None and stock_st.reader.opened == 0
    assert isinstance(exc, asyncssh.Error) and type(exc) is type(stock_exc)
    assert str(exc) == str(stock_exc) and "MAC verification failed" in str(exc)
    assert exc.code == stock_exc.code  # type: ignore[union-attr]
    data = pattern(2 << 20, seed=3)
    assert 0 < len(got) < (1 << 20) and got == data[:len(got)] and got == stock_got


async def test_without_the_shortcuts_decrypt_packet_is_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(seal, "OPEN", {})
    monkeypatch.setattr(seal, "_warned", [])
    caplog.set_level(logging.WARNING, logger="ugate.ssh")
    for enc in ("aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"):
        data = pattern(500_000, seed=4)
        reader, owner, st = await transfer(data, enc)
        assert b"".join(reader.out) == data and owner.lost == [None]
        assert st.reader is not None and st.reader.fast > 5 and st.reader.opened == 0
    warnings = [r.getMessage() for r in caplog.records if "ssh_fast_decrypt_off" in r.getMessage()]
    assert len(warnings) == 1  # four connections, one line
