"""The sans-IO SOCKS5 server: scripted byte exchanges, bounds, errors, and hypothesis."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ugate_core import ConfigError, ProtocolError, Sniff
from ugate_socks.options import check_options, has_auth, password_ok, users_of
from ugate_socks.protocol import (
    ATYP_DOMAIN,
    ATYP_IPV4,
    ATYP_IPV6,
    CMD_CONNECT,
    METHOD_NO_AUTH,
    METHOD_NONE_ACCEPTABLE,
    METHOD_USERPASS,
    AuthReceived,
    Event,
    GreetingReceived,
    RequestReceived,
    Socks5Error,
    Socks5Server,
    State,
    encode_reply,
    sniff,
)
from ugate_socks.server import reply_code


def request(host: bytes, port: int, atyp: int = ATYP_DOMAIN, cmd: int = CMD_CONNECT) -> bytes:
    addr = bytes([len(host)]) + host if atyp == ATYP_DOMAIN else host
    return bytes([5, cmd, 0, atyp]) + addr + struct.pack("!H", port)


def auth(user: bytes, pw: bytes) -> bytes:
    return bytes([1, len(user)]) + user + bytes([len(pw)]) + pw


# ------------------------------------------------------------------ scripted exchanges


def test_no_auth_connect_pipelined_with_early_data() -> None:
    p = Socks5Server()
    data = b"\x05\x01\x00" + request(b"svc.example", 443) + b"early bytes"
    assert p.receive_data(data) == [GreetingReceived(methods=(0,))]
    assert p.select_method(METHOD_NO_AUTH) == b"\x05\x00"
    [ev] = p.receive_data(b"")
    assert ev == RequestReceived(cmd=1, host="svc.example", port=443, atyp=ATYP_DOMAIN)
    assert isinstance(ev, RequestReceived) and ev.address == "svc.example:443"
    assert p.reply(0, "127.0.0.1", 40000) == b"\x05\x00\x00\x01\x7f\x00\x00\x01\x9c\x40"
    assert p.state is State.RELAY
    assert p.leftover() == b"early bytes"


def test_userpass_flow_and_failure() -> None:
    p = Socks5Server()
    assert p.receive_data(b"\x05\x02\x00\x02") == [GreetingReceived(methods=(0, 2))]
    assert p.select_method(METHOD_USERPASS) == b"\x05\x02"
    assert p.receive_data(auth(b"alice", b"s3cret")) == [
        AuthReceived(user="alice", password="s3cret")
    ]
    assert p.auth_reply(True) == b"\x01\x00"
    [ev] = p.receive_data(request(bytes([10, 0, 0, 1]), 80, ATYP_IPV4))
    assert ev == RequestReceived(cmd=1, host="10.0.0.1", port=80, atyp=ATYP_IPV4)

    q = Socks5Server()
    q.receive_data(b"\x05\x01\x02")
    q.select_method(METHOD_USERPASS)
    [a] = q.receive_data(auth(b"bob", b"\xff\xfe") + request(b"x", 1))
    assert a == AuthReceived(user="bob", password="\udcff\udcfe")  # not UTF-8: kept escaped
    assert q.auth_reply(False) == b"\x01\x01"
    assert q.state is State.CLOSED
    assert q.receive_data(b"more") == []


def test_ipv6_request_and_reply() -> None:
    p = Socks5Server()
    p.receive_data(b"\x05\x01\x00")
    p.select_method(METHOD_NO_AUTH)
    ip6 = bytes(15) + b"\x01"
    [ev] = p.receive_data(request(ip6, 8080, ATYP_IPV6))
    assert ev == RequestReceived(cmd=1, host="::1", port=8080, atyp=ATYP_IPV6)
    assert isinstance(ev, RequestReceived) and ev.address == "[::1]:8080"
    assert p.reply(0, "::1", 1) == b"\x05\x00\x00\x04" + ip6 + b"\x00\x01"


def test_ip_literal_sent_as_domain() -> None:
    p = Socks5Server()
    p.receive_data(b"\x05\x01\x00")
    p.select_method(METHOD_NO_AUTH)
    [ev] = p.receive_data(request(b"::1", 22))
    assert isinstance(ev, RequestReceived) and ev.host == "::1" and ev.address == "[::1]:22"


def test_255_methods_and_255_byte_domain() -> None:
    p = Socks5Server()
    methods = bytes(range(255))
    assert p.receive_data(b"\x05\xff" + methods) == [GreetingReceived(methods=tuple(methods))]
    p.select_method(METHOD_NO_AUTH)
    name = b".".join([b"a" * 63] * 4)[:255]
    [ev] = p.receive_data(request(name, 1))
    assert isinstance(ev, RequestReceived) and ev.host == name.decode()


def refused(data: bytes, method: int = METHOD_NO_AUTH) -> Socks5Error:
    """Greet with ``method``, then send ``data``: it must be refused."""
    p = Socks5Server()
    p.receive_data(bytes([5, 1, method]))
    p.select_method(method)
    with pytest.raises(Socks5Error) as ei:
        p.receive_data(data)
    assert p.state is State.CLOSED
    return ei.value


@pytest.mark.parametrize(
    ("data", "reason", "reply"),
    [
        (b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00", "socks4", b"\x00\x5b" + bytes(6)),
        (b"\x06\x01\x00", "bad_version", b""),
        (b"\x05\x00", "no_methods", b"\x05\xff"),
    ],
)
def test_greeting_errors(data: bytes, reason: str, reply: bytes) -> None:
    p = Socks5Server()
    with pytest.raises(Socks5Error) as ei:
        p.receive_data(data)
    assert (ei.value.reason, ei.value.reply) == (reason, reply)
    assert isinstance(ei.value, ProtocolError)


V4_FAIL = b"\x00\x01" + bytes(6)


@pytest.mark.parametrize(
    ("data", "reason", "code", "message"),
    [
        (request(bytes(4), 1, ATYP_IPV4, cmd=2), "unsupported_command", 7, "BIND"),
        (request(bytes(4), 1, ATYP_IPV4, cmd=3), "unsupported_command", 7, "UDP ASSOCIATE"),
        (request(bytes(4), 1, ATYP_IPV4, cmd=9), "unsupported_command", 7, "0x09"),
        (b"\x05\x01\x00\x05", "bad_address_type", 8, "address type 0x05"),
        (request(b"", 80), "bad_address", 4, "empty domain"),
        (request(b"a b", 80), "bad_address", 4, "'a b'"),
        (request(b"evil\x00.com", 80), "bad_address", 4, "not a host name"),
        (b"\x04\x01\x00\x01" + bytes(6), "bad_version", 1, "version 0x04"),
    ],
)
def test_request_errors(data: bytes, reason: str, code: int, message: str) -> None:
    e = refused(data)
    assert e.reason == reason
    assert e.reply == bytes([5, code, 0, 1]) + bytes(6)
    assert message in str(e)


def test_auth_version_error() -> None:
    e = refused(b"\x05\x03abc\x01x", METHOD_USERPASS)
    assert (e.reason, e.reply) == ("bad_auth_version", b"\x01\x01")


def test_decisions_out_of_order_are_programming_errors() -> None:
    p = Socks5Server()
    with pytest.raises(RuntimeError, match=r"reply\(\) in state greeting"):
        p.reply(0)
    p.receive_data(b"\x05\x01\x00")
    assert p.select_method(METHOD_NONE_ACCEPTABLE) == b"\x05\xff"
    assert p.state is State.CLOSED


def test_buffer_bound_when_caller_never_answers() -> None:
    p = Socks5Server()
    p.receive_data(b"\x05\x01\x00")
    with pytest.raises(Socks5Error, match="more than 65536 bytes") as ei:
        for _ in range(20):
            p.receive_data(bytes(4096))
    assert ei.value.reason == "too_long"


def test_sniff() -> None:
    assert sniff(b"") is Sniff.NEED_MORE
    assert sniff(b"\x05") is Sniff.NEED_MORE
    assert sniff(b"\x05\x01") is Sniff.MATCH
    assert sniff(b"\x05\x02\x00\x02") is Sniff.MATCH
    assert sniff(b"\x05\x00") is Sniff.NO
    assert sniff(b"\x04\x01") is Sniff.NO
    assert sniff(b"GET / HTTP/1.1\r\n") is Sniff.NO
    assert sniff(b"\x16\x03\x01") is Sniff.NO


def test_encode_reply() -> None:
    assert encode_reply(5) == b"\x05\x05\x00\x01" + bytes(6)
    assert encode_reply(0, "fe80::1%eth0", 2) == (
        b"\x05\x00\x00\x04\xfe\x80" + bytes(13) + b"\x01\x00\x02"
    )
    assert encode_reply(0, "gw.example", 3) == b"\x05\x00\x00\x03\x0agw.example\x00\x03"
    with pytest.raises(ValueError):
        encode_reply(256)


def test_reply_codes_for_dial_errors() -> None:
    assert reply_code("refused") == 0x05
    assert reply_code("denied") == 0x02
    assert reply_code("no_route") == 0x04
    assert reply_code("unreachable") == 0x04
    assert reply_code("timeout") == 0x04
    assert reply_code("bad_address") == 0x04
    assert reply_code("identity") == 0x01
    assert reply_code("no_dialer") == 0x01


# ------------------------------------------------------------------ options


def test_options(tmp_path: Path) -> None:
    f = tmp_path / "users"
    f.write_text("# socks users\n\ncarol:pw:with:colons\ndave:x\n")
    opts = {"users": {"alice": "a", "dave": "table wins"}, "users_file": str(f)}
    check_options(opts, "listeners.s")
    assert has_auth(opts) and not has_auth({}) and not has_auth({"users": {}})
    users = users_of(opts, "listeners.s")
    assert users == {"alice": "a", "carol": "pw:with:colons", "dave": "table wins"}
    assert password_ok(users, "carol", "pw:with:colons")
    assert not password_ok(users, "carol", "pw")
    assert not password_ok(users, "nobody", "a")
    check_options({"authorized_keys": "x", "max_streams": 3}, "listeners.s")  # another protocol's


@pytest.mark.parametrize(
    ("opts", "path", "message"),
    [
        ({"users": ["a"]}, "listeners.s.users", "is not a table"),
        ({"users": {"a": 1}}, "listeners.s.users.a", "must be a string"),
        ({"users": {"a": "x" * 256}}, "listeners.s.users.a", "at most 255"),
        ({"users_file": 3}, "listeners.s.users_file", "is not a string"),
        ({"users_file": "/nonexistent/u"}, "listeners.s.users_file", "cannot read"),
        ({"user": {"a": "b"}}, "listeners.s.user", "did you mean 'users'"),
        ({"users_files": "f"}, "listeners.s.users_files", "did you mean 'users_file'"),
    ],
)
def test_option_errors(opts: dict[str, object], path: str, message: str) -> None:
    with pytest.raises(ConfigError) as ei:
        check_options(opts, "listeners.s")
    assert ei.value.path == path
    assert message in str(ei.value)


def test_users_file_syntax_error(tmp_path: Path) -> None:
    f = tmp_path / "users"
    f.write_text("ok:1\nno-colon-here\n")
    with pytest.raises(ConfigError, match="line 2: not 'name:password'"):
        check_options({"users_file": str(f)}, "listeners.s")


# ------------------------------------------------------------------ hypothesis


def decide(p: Socks5Server, ev: Event) -> bytes:
    """A fixed server policy, so the whole handshake can be driven by the test."""
    if isinstance(ev, GreetingReceived):
        for m in (METHOD_USERPASS, METHOD_NO_AUTH):
            if m in ev.methods:
                return p.select_method(m)
        return p.select_method(METHOD_NONE_ACCEPTABLE)
    if isinstance(ev, AuthReceived):
        return p.auth_reply(ev.user == "u")
    return p.reply(0, "127.0.0.1", 1)


Outcome = tuple[list[Event], bytes, str | None, bytes]


def drive(chunks: list[bytes]) -> Outcome:
    p = Socks5Server()
    events: list[Event] = []
    out = bytearray()
    try:
        for c in chunks:
            evs = p.receive_data(c)
            while evs:
                for ev in evs:
                    events.append(ev)
                    out += decide(p, ev)
                evs = p.receive_data(b"")
    except ProtocolError as e:
        assert isinstance(e, Socks5Error)
        return events, bytes(out + e.reply), e.reason, b""
    return events, bytes(out), None, p.leftover() if p.state is State.RELAY else b""


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(0, 10_000), max_size=12))
def test_any_bytes_give_events_or_protocol_error(data: bytes, cuts: list[int]) -> None:
    whole = drive([data])
    assert drive(split(data, cuts)) == whole
    assert drive([bytes([b]) for b in data]) == whole


@st.composite
def handshakes(draw: st.DrawFn) -> bytes:
    methods = draw(st.lists(st.integers(0, 255), min_size=1, max_size=255))
    out = bytes([5, len(methods), *methods])
    if 2 in methods:
        user = draw(st.sampled_from([b"u", b"v", b""]))
        out += auth(user, draw(st.binary(max_size=255)))
    elif 0 not in methods:
        return out
    atyp = draw(st.sampled_from([ATYP_IPV4, ATYP_IPV6, ATYP_DOMAIN]))
    if atyp == ATYP_IPV4:
        host = draw(st.binary(min_size=4, max_size=4))
    elif atyp == ATYP_IPV6:
        host = draw(st.binary(min_size=16, max_size=16))
    else:
        host = draw(st.text("abcxyz019-._", min_size=1, max_size=255)).encode()
    cmd = draw(st.sampled_from([1, 1, 1, 2, 3]))
    out += request(host, draw(st.integers(0, 65535)), atyp, cmd)
    return out + draw(st.binary(max_size=64))


@settings(max_examples=300, deadline=None)
@given(handshakes(), st.lists(st.integers(0, 10_000), max_size=12))
def test_valid_handshakes_split_anywhere(data: bytes, cuts: list[int]) -> None:
    whole = drive([data])
    events, _, err, leftover = whole
    assert drive(split(data, cuts)) == whole
    assert events and isinstance(events[0], GreetingReceived)
    if err is None and any(isinstance(e, RequestReceived) for e in events):
        # every byte after the request is handed on to the relay
        assert data.endswith(leftover)
