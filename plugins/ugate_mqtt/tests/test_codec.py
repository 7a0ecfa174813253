"""The CONNECT/CONNACK codec: exact bytes per version, bounds, splits, and hypothesis
round trips (decode(encode(c)) == c; any split of the bytes gives the same outcome)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ugate_core import Sniff
from ugate_mqtt.codec import (
    MQTT5,
    MQTT31,
    MQTT311,
    P_REASON_STRING,
    P_SERVER_REFERENCE,
    P_SESSION_EXPIRY,
    P_USER_PROPERTY,
    P_WILL_DELAY,
    Connect,
    ConnectParser,
    MqttError,
    Will,
    decode_varint,
    encode_connack,
    encode_connect,
    encode_varint,
    parse_connack,
    refusal,
    sniff,
)

# a 3.1.1 CONNECT: client id pub1, user alice, password pw, clean session (bytes written by hand
# from the 3.1.1 spec, section 3.1)
PUB311 = (b"\x10\x1b" b"\x00\x04MQTT" b"\x04" b"\xc2" b"\x00\x3c"
          b"\x00\x04pub1" b"\x00\x05alice" b"\x00\x02pw")
# MQTT 3.1: protocol name MQIsdp, level 3, clean session, keep alive 10, client id "c"
PUB31 = b"\x10\x0f\x00\x06MQIsdp\x03\x02\x00\x0a\x00\x01c"
# MQTT 5: session expiry 300 and a user property, a will with a delay, QoS 1, retained
PUB5 = bytes.fromhex(
    "10" "31" "0004" "4d515454" "05" "ae" "001e"
    "0c" "11 0000012c" "26 0001 6b 0001 76"
    "0002 6935"
    "05" "18 0000000a"
    "0004 742f7769" "0004 64656164"
    "0002 7535".replace(" ", ""))


def parse(data: bytes, **kw: int) -> Connect:
    p = ConnectParser(**kw)
    c = p.receive_data(data)
    assert c is not None
    return c


def refused(data: bytes, **kw: int) -> MqttError:
    p = ConnectParser(**kw)
    with pytest.raises(MqttError) as ei:
        p.receive_data(data)
    return ei.value


def test_311_fields_and_raw() -> None:
    c = parse(PUB311)
    assert (c.level, c.version, c.client_id, c.clean_start, c.keep_alive) == (
        MQTT311, "3.1.1", "pub1", True, 60)
    assert (c.username, c.password, c.will) == ("alice", b"pw", None)
    assert c.raw == PUB311
    assert encode_connect(c) == PUB311


def test_31_and_5() -> None:
    c = parse(PUB31)
    assert (c.level, c.version, c.client_id, c.keep_alive) == (MQTT31, "3.1", "c", 10)
    assert encode_connect(c) == PUB31
    c5 = parse(PUB5)
    assert c5.level == MQTT5 and c5.client_id == "i5" and c5.username == "u5"
    assert c5.password is None
    assert c5.properties == ((P_SESSION_EXPIRY, 300), (P_USER_PROPERTY, ("k", "v")))
    assert c5.get_property(P_SESSION_EXPIRY) == 300
    assert c5.will == Will(topic="t/wi", payload=b"dead", qos=1, retain=True,
                           properties=((P_WILL_DELAY, 10),))
    assert encode_connect(c5) == PUB5


def test_split_at_every_byte_and_leftover() -> None:
    tail = b"\x82\x06\x00\x01\x00\x01t\x00"  # a pipelined SUBSCRIBE
    for data in (PUB311, PUB31, PUB5):
        p = ConnectParser()
        got = [p.receive_data(data[i : i + 1] + (tail if i == len(data) - 1 else b""))
               for i in range(len(data))]
        assert got[:-1] == [None] * (len(data) - 1)
        assert got[-1] is not None and got[-1].raw == data
        assert p.leftover() == tail


def test_connack_bytes_per_version() -> None:
    assert encode_connack(MQTT311, 0, session_present=True) == b"\x20\x02\x01\x00"
    assert encode_connack(MQTT31, 0, session_present=True) == b"\x20\x02\x00\x00"
    assert refusal(MQTT311, "bad_client_id") == b"\x20\x02\x00\x02"
    assert refusal(MQTT311, "bad_credentials") == b"\x20\x02\x00\x04"
    assert refusal(MQTT311, "not_authorized") == b"\x20\x02\x00\x05"
    assert refusal(MQTT31, "unavailable") == b"\x20\x02\x00\x03"
    assert refusal(MQTT311, "malformed") == b""  # 3.x: close without a CONNACK
    assert refusal(None, "malformed") == b""
    assert refusal(MQTT5, "not_authorized") == b"\x20\x03\x00\x87\x00"
    assert refusal(MQTT5, "bad_client_id") == b"\x20\x03\x00\x85\x00"
    assert refusal(MQTT5, "bad_credentials", reason_string="no") == (
        b"\x20\x08\x00\x86\x05\x1f\x00\x02no")
    ref = refusal(MQTT5, "use_another_server", server_reference="b2.example:1883")
    assert ref == b"\x20\x15\x00\x9c\x12\x1c\x00\x0fb2.example:1883"
    assert parse_connack(ref, MQTT5) == (0x9C, False, ((P_SERVER_REFERENCE,
                                                        "b2.example:1883"),))
    # a server reference goes only with 0x9C / 0x9D
    assert refusal(MQTT5, "unavailable", server_reference="x") == b"\x20\x03\x00\x88\x00"
    assert parse_connack(refusal(MQTT5, "too_large", reason_string="big"), MQTT5) == (
        0x95, False, ((P_REASON_STRING, "big"),))


@pytest.mark.parametrize(("data", "reason", "connack"), [
    # garbage after 0x10
    (b"\x10\x05\xff\xff\xff\xff\xff", "malformed", b""),
    (b"\x10\x0c\x00\x04MQXX\x04\x02\x00\x3c\x00\x00", "malformed", b""),
    # remaining length of five bytes
    (b"\x10\xff\xff\xff\xff\x7f", "malformed", b""),
    # a first packet that is not a CONNECT, and CONNECT with reserved flags
    (b"\x30\x02\x00\x00", "malformed", b""),
    (b"\x12\x02\x00\x00", "malformed", b""),
    # unknown level: 3.1.1's return code 1
    (b"\x10\x0c\x00\x04MQTT\x06\x02\x00\x3c\x00\x00", "unsupported_version",
     b"\x20\x02\x00\x01"),
    (b"\x10\x0c\x00\x04MQTT\x03\x02\x00\x3c\x00\x00", "unsupported_version",
     b"\x20\x02\x00\x01"),
    # reserved flag, will QoS 3, password without user name (3.1.1)
    (b"\x10\x0c\x00\x04MQTT\x04\x03\x00\x3c\x00\x00", "malformed", b""),
    (b"\x10\x0c\x00\x04MQTT\x04\x1e\x00\x3c\x00\x00", "malformed", b""),
    (b"\x10\x0e\x00\x04MQTT\x04\x42\x00\x3c\x00\x00\x00\x00", "malformed", b""),
    # empty client id with a persistent session (3.1.1) or on 3.1: identifier rejected
    (b"\x10\x0c\x00\x04MQTT\x04\x00\x00\x3c\x00\x00", "bad_client_id", b"\x20\x02\x00\x02"),
    (b"\x10\x0e\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x00", "bad_client_id",
     b"\x20\x02\x00\x02"),
    # trailing bytes inside the packet
    (b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x01a\x00", "malformed", b""),
    # v5: a property not allowed in CONNECT (server reference), a duplicate, bad UTF-8
    (b"\x10\x11\x00\x04MQTT\x05\x02\x00\x3c\x04\x1c\x00\x01x\x00\x00", "protocol_error",
     "property 0x1c is not allowed in the CONNECT properties"),
    (b"\x10\x17\x00\x04MQTT\x05\x02\x00\x3c\x0a\x11\x00\x00\x00\x01\x11\x00\x00\x00\x02"
     b"\x00\x00", "protocol_error", "property 0x11 appears twice in the CONNECT properties"),
    (b"\x10\x0e\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x01\xff", "malformed",
     "client identifier is not UTF-8"),
])
def test_refusals(data: bytes, reason: str, connack: bytes | str) -> None:
    e = refused(data)
    assert e.reason == reason
    if isinstance(connack, bytes):
        assert e.connack == connack
    else:  # v5: the reason code, with the parser's text as reason string
        code, _sp, props = parse_connack(e.connack, MQTT5)
        assert code == {"protocol_error": 0x82, "malformed": 0x81}[reason]
        assert props == ((P_REASON_STRING, connack),)


def test_remaining_length_bound_checked_before_the_body() -> None:
    head = b"\x10" + encode_varint(1 << 20) + b"\x00\x04MQTT\x05"
    p = ConnectParser(max_size=65536)
    assert p.receive_data(head[:-1]) is None  # the level decides the CONNACK's format
    with pytest.raises(MqttError) as ei:
        p.receive_data(head[-1:])
    assert ei.value.reason == "too_large"
    assert parse_connack(ei.value.connack, MQTT5)[0] == 0x95
    assert "1048576 bytes is larger than 65536" in str(ei.value)
    e = refused(b"\x10" + encode_varint(70000) + b"\x00\x04MQTT\x04")
    assert (e.reason, e.connack) == ("too_large", b"")
    # after a refusal the parser takes nothing more
    assert p.receive_data(PUB311) is None


def test_client_id_bound() -> None:
    c = Connect(level=MQTT311, client_id="x" * 300)
    e = refused(encode_connect(c))
    assert (e.reason, e.connack) == ("bad_client_id", b"\x20\x02\x00\x02")
    assert parse(encode_connect(c), max_client_id=300).client_id == "x" * 300


def test_sniff() -> None:
    for data in (PUB311, PUB31, PUB5):
        assert sniff(data) is Sniff.MATCH
        assert all(sniff(data[:i]) is Sniff.NEED_MORE for i in range(len(data))
                   if i < data.index(b"\x00", 1) + 4), data
    assert sniff(b"\x10\x0c\x00\x04MQXX") is Sniff.NO
    assert sniff(b"\x10\x0c\x00\x05MQTT") is Sniff.NO
    assert sniff(b"\x05\x01\x00") is Sniff.NO
    assert sniff(b"\x10\xff\xff\xff\xff\xff") is Sniff.NO
    assert sniff(b"GET / HTTP/1.1\r\n") is Sniff.NO


def test_varint_limits() -> None:
    for n, enc in ((0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"),
                   (16383, b"\xff\x7f"), (268435455, b"\xff\xff\xff\x7f")):
        assert encode_varint(n) == enc
        assert decode_varint(enc, 0) == (n, len(enc))
    with pytest.raises(ValueError):
        encode_varint(268435456)
    assert decode_varint(b"\x80\x80", 0) is None


# ------------------------------------------------------------------------------ hypothesis
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=20)
pairs = st.tuples(text, text)


@st.composite
def connects(draw: st.DrawFn) -> Connect:
    level = draw(st.sampled_from([MQTT31, MQTT311, MQTT5]))
    v5 = level == MQTT5
    clean = draw(st.booleans())
    cid = draw(text.filter(lambda s: s != "") if level == MQTT31 or (
        level == MQTT311 and not clean) else text)
    props: tuple[tuple[int, object], ...] = ()
    if v5:
        props = tuple(draw(st.lists(st.one_of(
            st.tuples(st.just(P_USER_PROPERTY), pairs)), max_size=3)))
        if draw(st.booleans()):
            props = ((P_SESSION_EXPIRY, draw(st.integers(0, 2**32 - 1))), *props)
    will = None
    if draw(st.booleans()):
        wprops = ((P_WILL_DELAY, draw(st.integers(0, 2**32 - 1))),) if v5 and draw(
            st.booleans()) else ()
        will = Will(topic=draw(text.filter(lambda s: s != "" and "+" not in s
                                           and "#" not in s)),
                    payload=draw(st.binary(max_size=40)), qos=draw(st.integers(0, 2)),
                    retain=draw(st.booleans()), properties=wprops)
    user = draw(st.none() | text)
    pw = draw(st.none() | st.binary(max_size=30))
    if user is None and not v5:
        pw = None
    return Connect(level=level, client_id=cid, clean_start=clean,
                   keep_alive=draw(st.integers(0, 65535)), properties=props,  # type: ignore[arg-type]
                   will=will, username=user, password=pw)


@settings(max_examples=300, deadline=None)
@given(connects(), st.integers(0, 200), st.binary(max_size=8))
def test_roundtrip_any_split(c: Connect, cut: int, tail: bytes) -> None:
    data = encode_connect(c)
    p = ConnectParser()
    first = p.receive_data(data[: cut % (len(data) + 1)])
    got = p.receive_data(data[cut % (len(data) + 1) :] + tail)
    assert first is None or cut % (len(data) + 1) == len(data)
    assert got == c and got.raw == data
    assert p.leftover() == tail
    assert sniff(data) is Sniff.MATCH


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.integers(0, 80))
def test_any_bytes_same_outcome_whole_or_split(data: bytes, cut: int) -> None:
    def outcome(chunks: list[bytes]) -> object:
        p = ConnectParser(max_size=64)
        try:
            for ch in chunks:
                c = p.receive_data(ch)
                if c is not None:
                    return ("ok", c, p.leftover())
        except MqttError as e:
            return ("err", e.reason, e.connack)
        return ("more",)

    k = cut % (len(data) + 1)
    assert outcome([data]) == outcome([data[:k], data[k:]])


def test_fuzz_target_short_run() -> None:
    """The fuzz target's own property on 3,000 mutated seeds (seeded: reproducible)."""
    import random

    from .fuzz_connect import SEEDS, TestOneInput, random_case

    rng = random.Random(20)
    for seed in SEEDS:
        TestOneInput(seed)
    for _ in range(3000):
        random_case(rng)


def test_variable_byte_integers_in_their_shortest_form_only() -> None:
    """MQTT 5 1.5.5: the minimum number of bytes. A property identifier 0x21 written as
    ``a1 00`` parsed, and re-encoding the CONNECT gave other bytes (fuzz_connect.py); a
    remaining length with a trailing zero byte the same."""
    e = refused(b"\x10\x19\x00\x04MQTT\x05\x02\x00<\x0c\x15\x00\x05SCRAM\xa1\x00\x01x\x00\x00")
    assert e.reason == "malformed" and "shortest form" in str(e)
    e = refused(b"\x10\x8d\x00\x00\x04MQTT\x04\x02\x00<\x00\x01c")
    assert e.reason == "malformed" and "shortest form" in str(e)
