"""Shared-port sniffing: bounded, deadline-driven, loses no bytes, survives broken sniffers."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from ugate_core import ListenerType, Sniff, sniff_choose, stream_pair
from ugate_core.sniff import default_for, sniff_stream


def magic(name: str, word: bytes) -> ListenerType:
    def sniff(prefix: bytes) -> Sniff:
        n = min(len(prefix), len(word))
        if prefix[:n] != word[:n]:
            return Sniff.NO
        return Sniff.MATCH if n == len(word) else Sniff.NEED_MORE

    return ListenerType(name=name, sniff=sniff)


def broken(prefix: bytes) -> Sniff:
    raise ValueError("broken sniffer")


TYPES = [ListenerType("bad", sniff=broken), magic("ssh", b"SSH-2.0-"), magic("five", b"\x05"),
         magic("get", b"GET ")]


def test_choose() -> None:
    assert sniff_choose(b"SSH-2.0-x", TYPES)[0] is TYPES[1]
    assert sniff_choose(b"SSH", TYPES) == (None, Sniff.NEED_MORE)
    assert sniff_choose(b"\x05\x01\x00", TYPES)[0] is TYPES[2]
    assert sniff_choose(b"XYZ", TYPES) == (None, Sniff.NO)


async def feed(chunks: list[bytes], eof: bool, timeout: float = 0.3, max_bytes: int = 64,
               default: ListenerType | None = None) -> tuple[object, bytes]:
    client, server = stream_pair()
    for c in chunks:
        client.write(c)
    if eof:
        client.write_eof()
    res = await asyncio.wait_for(
        sniff_stream(server, TYPES, timeout=timeout, max_bytes=max_bytes, default=default), 5
    )
    # nothing the sniffer read is lost: the chosen protocol sees it all
    rest = bytes(server._buf)
    return res, rest


async def test_match_keeps_bytes() -> None:
    res, rest = await feed([b"SS", b"H-2.0-OpenSSH\r\n"], eof=False)
    assert res.listener is TYPES[1]  # type: ignore[attr-defined]
    assert rest == b"SSH-2.0-OpenSSH\r\n"


async def test_timeout_without_bytes_uses_default_or_rejects() -> None:
    res, _ = await feed([], eof=False, timeout=0.05)
    assert (res.listener, res.reason) == (None, "timeout")  # type: ignore[attr-defined]
    res, _ = await feed([], eof=False, timeout=0.05, default=TYPES[1])
    assert res.listener is TYPES[1]  # type: ignore[attr-defined]


async def test_silent_client_gets_the_default_after_default_after_not_the_timeout() -> None:
    client, server = stream_pair()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    res = await sniff_stream(server, TYPES, timeout=5, max_bytes=64, default=TYPES[1],
                             default_after=0.05)
    assert res.listener is TYPES[1] and loop.time() - t0 < 1
    # a client that sent one byte is sniffed to the end, never handed the default
    client.write(b"G")
    loop.call_later(0.15, client.write, b"ET /")
    res = await sniff_stream(server, TYPES, timeout=5, max_bytes=64, default=TYPES[1],
                             default_after=0.05)
    assert res.listener is TYPES[3]


def test_default_for_implies_ssh_unless_configured() -> None:
    assert default_for("", TYPES) is TYPES[1]  # ssh installed: silent clients get ssh
    assert default_for("", [TYPES[2], TYPES[3]]) is None  # no ssh: as before
    assert default_for("get", TYPES) is TYPES[3]
    assert default_for("none", TYPES) is None


async def test_need_more_forever_is_bounded() -> None:
    res, _ = await feed([b"SSH-2.0"], eof=False, timeout=0.05)
    assert res.reason == "timeout"  # type: ignore[attr-defined]
    res, _ = await feed([b"SSH-2.0"], eof=True)
    assert res.reason == "closed"  # type: ignore[attr-defined]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=6), st.booleans())
def test_any_bytes_end_cleanly(chunks: list[bytes], eof: bool) -> None:
    async def go() -> None:
        res, rest = await feed(chunks, eof, timeout=0.02, max_bytes=32)
        data = b"".join(chunks)
        assert rest == data  # never consumed, never lost
        r = res.reason  # type: ignore[attr-defined]
        if res.listener is None:  # type: ignore[attr-defined]
            assert r in ("no_match", "timeout", "too_long", "closed")
            assert len(res.prefix) <= 32  # type: ignore[attr-defined]
        else:
            assert r == ""

    asyncio.run(go())
