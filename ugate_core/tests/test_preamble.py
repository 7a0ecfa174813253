"""The stream preamble, sans-IO: scripted exchanges, bounds, errors, and hypothesis
round trips over any split of the bytes."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ugate_core import stream_pair
from ugate_core.preamble import (
    MAX_META,
    MAX_REQUEST,
    PreambleAcceptor,
    PreambleError,
    PreambleOpener,
    PreambleReceived,
    StatusReceived,
    decode_varint,
    encode_request,
    encode_status,
    encode_varint,
)
from ugate_core.preamble_io import accept_preamble, dial_error, open_preamble, status_for

# ------------------------------------------------------------------ the byte format


def test_request_bytes_are_as_documented() -> None:
    assert encode_request("svc.example:443") == b"\x01\x0fsvc.example:443"
    assert encode_request("[::1]:80", {"traceparent": "00-ab"}) == \
        b"\x01\x1a[::1]:80\ntraceparent=00-ab"
    assert encode_status(200) == b"\x01\x03200"
    assert encode_status(403, "denied") == b"\x01\x0a403 denied"


def test_varint_is_leb128_minimal_and_bounded() -> None:
    assert encode_varint(0) == b"\x00"
    assert encode_varint(127) == b"\x7f"
    assert encode_varint(300) == b"\xac\x02"
    assert decode_varint(b"\xac\x02", 0, 4096) == (300, 2)
    assert decode_varint(b"\xac", 0, 4096) is None  # incomplete
    with pytest.raises(ValueError, match="minimally"):
        decode_varint(b"\x81\x00", 0, 4096)
    with pytest.raises(ValueError, match="limit"):
        decode_varint(b"\x81\x40", 0, 4096)  # 8193
    with pytest.raises(ValueError, match="limit"):
        decode_varint(b"\x80\x80\x80", 0, 4096)  # never ends within two bytes


def test_pipelined_request_and_payload() -> None:
    p = PreambleAcceptor()
    data = encode_request("svc.example:443", {"baggage": "a=1,b=2"}) + b"GET / HTTP/1.1\r\n"
    assert p.receive_data(data[:3]) is None
    req = p.receive_data(data[3:])
    assert req == PreambleReceived(target="svc.example:443", host="svc.example", port=443,
                                   meta={"baggage": "a=1,b=2"})
    assert p.leftover() == b"GET / HTTP/1.1\r\n"
    assert p.answer(200) == b"\x01\x03200"
    with pytest.raises(RuntimeError):
        p.answer(403)

    o = PreambleOpener()
    assert o.receive_data(b"\x01\x0a403 den") is None
    assert o.receive_data(b"ied") == StatusReceived(status=403, reason="denied")
    assert not o.status.ok  # type: ignore[union-attr]


@pytest.mark.parametrize(("data", "reason"), [
    (b"\x02\x03a:1", "preamble_version"),
    (b"\x00", "preamble_version"),
    (b"\x01" + encode_varint(MAX_REQUEST + 1), "preamble_too_long"),
    (b"\x01\xff\xff\xff", "preamble_too_long"),
    (b"\x01\x80\x00", "preamble_malformed"),  # non-minimal varint
    (b"\x01\x00", "preamble_malformed"),  # empty
    (b"\x01\x04\xff\xfe:1", "preamble_malformed"),  # not UTF-8
    (b"\x01\x04host", "preamble_malformed"),  # no port
    (b"\x01\x06host:0", "preamble_malformed"),
    (b"\x01\x0ahost:65536", "preamble_malformed"),
    (b"\x01\x08a b:8080", "preamble_malformed"),
    (b"\x01\x0aa:1\nnoeq!!", "preamble_malformed"),
    (b"\x01\x0ba:1\nk=1\nk=2", "preamble_malformed"),  # a key twice
    (b"\x01\x09a:1\nK=\r\n1", "preamble_malformed"),
])
def test_malformed_requests_get_a_400_that_says_why(data: bytes, reason: str) -> None:
    p = PreambleAcceptor()
    with pytest.raises(PreambleError) as ei:
        p.receive_data(data)
    assert ei.value.reason == reason
    o = PreambleOpener()
    st_ = o.receive_data(ei.value.answer)
    assert st_ is not None and st_.status == 400 and st_.reason == str(ei.value), st_


def test_too_many_metadata_lines() -> None:
    meta = {f"k{i}": "v" for i in range(MAX_META + 1)}
    with pytest.raises(ValueError, match="metadata lines"):
        encode_request("a:1", meta)
    text = "a:1\n" + "\n".join(f"{k}={v}" for k, v in meta.items())
    with pytest.raises(PreambleError, match="metadata lines"):
        PreambleAcceptor().receive_data(b"\x01" + encode_varint(len(text)) + text.encode())


def test_status_for_dial_failures() -> None:
    assert status_for("denied", authenticated=False) == 401
    assert status_for("denied", authenticated=True) == 403
    assert [status_for(r, False) for r in ("refused", "no_route", "timeout", "bad_address",
                                            "something_new")] == [502, 503, 504, 400, 503]


def test_dial_error_for_a_refusal_keeps_the_reason_a_hop_further() -> None:
    e = dial_error("svc.test:80", StatusReceived(status=403, reason="denied"))
    assert (e.reason, str(e)) == ("denied", "svc.test:80: the peer answered 403 denied")
    assert dial_error("a:1", StatusReceived(status=504)).reason == "timeout"
    assert dial_error("a:1", StatusReceived(status=502, reason="refused")).reason == "refused"
    assert dial_error("a:1", StatusReceived(status=400, reason="bad thing")).reason == \
        "bad_address"


# ------------------------------------------------------------------ hypothesis

hosts = st.one_of(
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,40}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
)
metas = st.dictionaries(
    st.from_regex(r"[a-z0-9_.-]{1,20}", fullmatch=True),
    st.text(st.characters(min_codepoint=0x20, blacklist_characters="\x7f",
                          blacklist_categories=("Cs",)), max_size=40),
    max_size=6,
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=300, deadline=None)
@given(hosts, st.integers(1, 65535), metas, st.binary(max_size=64),
       st.lists(st.integers(0, 10_000), max_size=8))
def test_request_round_trips_over_any_split(host: str, port: int, meta: dict[str, str],
                                            payload: bytes, cuts: list[int]) -> None:
    target = f"{host}:{port}"
    data = encode_request(target, meta) + payload
    p = PreambleAcceptor()
    got = [r for c in split(data, cuts) if (r := p.receive_data(c)) is not None]
    assert got == [PreambleReceived(target=target, host=host.strip("[]"), port=port,
                                    meta=meta)]
    assert p.leftover() == payload


@settings(max_examples=200, deadline=None)
@given(st.integers(100, 599), st.text(st.characters(min_codepoint=0x20,
                                                    blacklist_characters="\x7f",
                                                    blacklist_categories=("Cs",)),
                                      max_size=60),
       st.binary(max_size=64), st.lists(st.integers(0, 10_000), max_size=6))
def test_status_round_trips_over_any_split(status: int, reason: str, payload: bytes,
                                           cuts: list[int]) -> None:
    data = encode_status(status, reason) + payload
    o = PreambleOpener()
    got = [s for c in split(data, cuts) if (s := o.receive_data(c)) is not None]
    assert got == [StatusReceived(status=status, reason=reason)]
    assert o.leftover() == payload


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.lists(st.integers(0, 200), max_size=5))
def test_any_bytes_give_a_request_more_or_a_preamble_error(data: bytes,
                                                           cuts: list[int]) -> None:
    def drive(chunks: list[bytes]) -> object:
        p = PreambleAcceptor()
        try:
            for c in chunks:
                if (r := p.receive_data(c)) is not None:
                    return r, p.leftover()
        except PreambleError as e:
            assert e.answer.startswith(b"\x01")
            return e.reason
        return None

    assert drive(split(data, cuts)) == drive([data])


# ------------------------------------------------------------------ asyncio helpers


async def test_open_and_accept_over_an_in_memory_pair() -> None:
    a, b = stream_pair()

    async def acceptor() -> None:
        acc = await accept_preamble(b, timeout=5)
        assert acc.request.target == "svc.test:80" and acc.request.meta == {"x": "1"}
        acc.answer(200)
        b.write(b"hello")
        assert await b.readexactly(5) == b"after"

    t = asyncio.create_task(acceptor())
    status = await asyncio.wait_for(open_preamble(a, "svc.test:80", {"x": "1"}), 5)
    assert status.ok
    a.write(b"after")
    await asyncio.wait_for(t, 5)
    assert await a.readexactly(5) == b"hello"


async def test_accept_applies_the_deadline() -> None:
    _a, b = stream_pair()
    with pytest.raises(TimeoutError):
        await accept_preamble(b, timeout=0.05)
