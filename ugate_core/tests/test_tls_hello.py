"""The sans-IO ClientHello reader, against hellos that OpenSSL itself writes."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ugate_core import ProtocolError
from ugate_core.tls_hello import ClientHelloParser, ClientHelloReceived, looks_like_tls


def openssl_hello(sni: str | None, alpn: list[str] | None = None) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_side=False,
                       server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def parse(data: bytes, chunks: list[int] | None = None) -> ClientHelloReceived | None:
    p = ClientHelloParser()
    if not chunks:
        return p.receive_data(data)
    res = None
    pos = 0
    for n in [*chunks, len(data)]:
        res = p.receive_data(data[pos : pos + n]) or res
        pos += n
        if pos >= len(data):
            break
    return res


def test_sni_and_alpn_from_openssl() -> None:
    hello = openssl_hello("Svc.Example.", ["h2", "http/1.1"])
    ev = parse(hello)
    assert ev is not None
    assert ev.sni == "svc.example"
    assert ev.alpn == ("h2", "http/1.1")
    assert ev.version == 0x0304
    assert ev.length == len(hello)
    assert looks_like_tls(hello[:3]) is True
    assert looks_like_tls(b"GET") is False


def test_no_sni_no_alpn() -> None:
    ev = parse(openssl_hello(None))
    assert ev is not None and (ev.sni, ev.alpn) == (None, ())


def test_byte_by_byte_gives_the_same_event() -> None:
    hello = openssl_hello("a.b", ["h2"])
    p = ClientHelloParser()
    evs = [p.receive_data(hello[i : i + 1]) for i in range(len(hello))]
    assert evs[:-1] == [None] * (len(hello) - 1)
    assert evs[-1] == parse(hello)


def test_errors_are_named() -> None:
    with pytest.raises(ProtocolError) as ei:
        parse(b"\x17\x03\x03\x00\x05hello")
    assert str(ei.value) == "TLS ClientHello: record type 0x17 is not handshake (0x16)"
    assert ei.value.reason == "tls_malformed"
    with pytest.raises(ProtocolError) as ei:
        ClientHelloParser(max_bytes=100).receive_data(b"\x16\x03\x01\x40\x00" + b"\x01" * 200)
    assert ei.value.reason == "tls_too_long"
    hello = bytearray(openssl_hello("x.y"))
    hello[43] = 0xFF  # record 5 + handshake header 4 + version 2 + random 32: session id length
    with pytest.raises(ProtocolError) as ei:
        parse(bytes(hello))
    assert str(ei.value) == "TLS ClientHello: session id length 255 > 32"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(1, 50), max_size=8))
def test_any_bytes_never_escape(data: bytes, chunks: list[int]) -> None:
    try:
        parse(b"\x16\x03\x01" + data, chunks)
    except ProtocolError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["a.example", "x" * 60 + ".test", None]))
def test_mutated_openssl_hellos(seed: int, sni: str | None) -> None:
    import random

    hello = bytearray(openssl_hello(sni, ["h2"]))
    rnd = random.Random(seed)
    for _ in range(rnd.randint(1, 4)):
        hello[rnd.randrange(len(hello))] = rnd.randrange(256)
    try:
        ev = parse(bytes(hello))
    except ProtocolError:
        return
    assert ev is None or ev.length <= len(hello)
