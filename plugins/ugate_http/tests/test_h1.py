"""The sans-IO HTTP/1.1 parser: unit cases, smuggling guards, and hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ugate_core import ProtocolError, Sniff
from ugate_http.h1 import (
    BodyReceived,
    Event,
    Framing,
    HttpError,
    MessageEnded,
    RequestParser,
    RequestReceived,
    ResponseParser,
    ResponseReceived,
    encode_chunk,
    encode_head,
    encode_last_chunk,
)
from ugate_http.rewrite import (
    basic_credentials,
    end_to_end,
    forwarded_for,
    split_absolute,
    split_authority,
)
from ugate_http.sniff import sniff

# ------------------------------------------------------------------------ drivers


def merge(events: list[Event]) -> list[Event]:
    """Join adjacent body pieces: how bytes were split must not matter."""
    out: list[Event] = []
    for ev in events:
        if isinstance(ev, BodyReceived) and out and isinstance(out[-1], BodyReceived):
            out[-1] = BodyReceived(data=out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


def drive_requests(chunks: list[bytes], max_header_bytes: int = 1024,
                   eof: bool = True) -> tuple[list[Event], tuple[int, str] | None]:
    """Feed chunks, continuing after every message; returns events and (status, reason)."""
    p = RequestParser(max_header_bytes=max_header_bytes, max_fields=32)
    events: list[Event] = []
    try:
        for c in chunks:
            evs = p.receive_data(c)
            while evs:
                events.extend(evs)
                evs = p.next_message() if isinstance(evs[-1], MessageEnded) else []
        if eof:
            events.extend(p.receive_eof())
    except HttpError as e:
        assert isinstance(e, ProtocolError)
        assert 400 <= e.status <= 599 and e.reason and str(e)
        return merge(events), (e.status, e.reason)
    return merge(events), None


def drive_responses(chunks: list[bytes], method: str = "GET"
                    ) -> tuple[list[Event], tuple[int, str] | None]:
    p = ResponseParser(max_header_bytes=1024, max_fields=32)
    events: list[Event] = []
    try:
        evs = p.expect(method)
        for c in chunks:
            evs += p.receive_data(c)
            while evs:
                events.extend(evs)
                ended = isinstance(evs[-1], MessageEnded) and p.framing is not Framing.TUNNEL
                evs = p.expect(method) if ended else []
        events.extend(p.receive_eof())
    except HttpError as e:
        assert e.status == 502 and e.reason and str(e)
        return merge(events), (e.status, e.reason)
    return merge(events), None


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return [c for c in out if c]


def req(data: bytes, **kw: int) -> list[Event]:
    events, err = drive_requests([data], **kw)
    assert err is None, err
    return events


def req_error(data: bytes, **kw: int) -> tuple[int, str]:
    _, err = drive_requests([data], **kw)
    assert err is not None
    return err


# ------------------------------------------------------------------------ requests


def test_request_without_body_ends_at_head() -> None:
    ev = req(b"GET http://a.example/x?y HTTP/1.1\r\nHost: a.example\r\nX-A:  v  \r\n\r\n")
    assert ev == [
        RequestReceived(request=ev[0].request),  # type: ignore[union-attr]
        MessageEnded(),
    ]
    r = ev[0].request  # type: ignore[union-attr]
    assert (r.method, r.target, r.version) == ("GET", "http://a.example/x?y", "1.1")
    assert r.headers == (("Host", "a.example"), ("X-A", "v"))
    assert r.framing is Framing.NONE and r.keep_alive


def test_content_length_and_pipelining() -> None:
    data = (b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /b HTTP/1.0\r\n\r\n")
    ev = req(data)
    assert [type(e).__name__ for e in ev] == [
        "RequestReceived", "BodyReceived", "MessageEnded", "RequestReceived", "MessageEnded"]
    assert ev[1] == BodyReceived(data=b"hello")
    assert not ev[3].request.keep_alive  # type: ignore[union-attr]


def test_parser_pauses_after_each_message() -> None:
    p = RequestParser()
    ev = p.receive_data(b"GET / HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n")
    assert len(ev) == 2 and p.paused
    assert p.receive_data(b"junk") == []
    assert p.take_leftover() == b"GET /2 HTTP/1.1\r\n\r\njunk"


def test_chunked_body_with_extensions_and_trailers() -> None:
    data = (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;name=val\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n")
    ev = req(data)
    assert ev[0].request.framing is Framing.CHUNKED  # type: ignore[union-attr]
    assert ev[1:] == [BodyReceived(data=b"hello world"), MessageEnded(trailers=(("X-Sum", "1"),))]


def test_bare_lf_and_leading_empty_lines() -> None:
    ev = req(b"\r\n\r\nGET / HTTP/1.1\nHost: x\n\n")
    assert ev[0].request.headers == (("Host", "x"),)  # type: ignore[union-attr]


@pytest.mark.parametrize("data,status,reason", [
    (b"GET / HTTP/1.1\r\nA b\r\n\r\n", 400, "bad_request"),
    (b"GET / HTTP/1.1\r\nA : b\r\n\r\n", 400, "bad_request"),
    (b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", 400, "bad_request"),
    (b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n", 400, "bad_request"),
    (b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", 400, "bad_request"),
    (b"GET /\x7f HTTP/1.1\r\n\r\n", 400, "bad_request"),
    (b"GET / HTTP/1.1 \r\n\r\n", 400, "bad_request"),
    (b"G(T / HTTP/1.1\r\n\r\n", 400, "bad_request"),
    (b"GET / HTTP/2.0\r\n\r\n", 505, "bad_version"),
    (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
     "bad_request"),
    (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400, "bad_request"),
    (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "bad_request"),
    (b"POST / HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n", 400, "bad_request"),
    (b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n", 400, "bad_request"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 501, "not_implemented"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "bad_chunk"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", 400, "bad_chunk"),
    (b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nshort", 400, "incomplete"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n", 400, "incomplete"),
])
def test_request_errors(data: bytes, status: int, reason: str) -> None:
    assert req_error(data) == (status, reason)


def test_duplicate_equal_content_length_is_one() -> None:
    ev = req(b"POST / HTTP/1.1\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nab")
    assert ev[1] == BodyReceived(data=b"ab")


def test_header_bound_is_431_and_exact() -> None:
    head = b"GET / HTTP/1.1\r\nX: "
    pad = 1024 - len(head) - 4
    ok = head + b"a" * pad + b"\r\n\r\n"
    assert len(ok) == 1024
    assert req(ok)[0]
    assert req_error(head + b"a" * (pad + 1) + b"\r\n\r\n") == (431, "header_too_large")
    # an endless head without its empty line is refused once past the bound, not buffered
    p = RequestParser(max_header_bytes=1024)
    with pytest.raises(HttpError) as ei:
        for _ in range(100):
            p.receive_data(b"X: " + b"a" * 60 + b"\r\n")
    assert ei.value.status == 431 and p.buffered() <= 1024 + 70
    many = b"GET / HTTP/1.1\r\n" + b"A: b\r\n" * 40 + b"\r\n"
    assert req_error(many) == (431, "header_too_large")


def test_chunk_line_bound() -> None:
    p = RequestParser()
    p.receive_data(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(HttpError, match="chunk size line"):
        p.receive_data(b"1;" + b"x" * 5000)


# ------------------------------------------------------------------------ responses


def resp(data: bytes, method: str = "GET") -> list[Event]:
    events, err = drive_responses([data], method)
    assert err is None, err
    return events


def test_response_framings() -> None:
    ev = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
    assert ev[0].response.framing is Framing.LENGTH and ev[1] == BodyReceived(data=b"abc")  # type: ignore[union-attr]
    ev = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", "HEAD")
    assert ev[0].response.framing is Framing.NONE and len(ev) == 2  # type: ignore[union-attr]
    for status in (204, 304):
        ev = resp(b"HTTP/1.1 %d X\r\nContent-Length: 3\r\n\r\n" % status)
        assert ev[0].response.framing is Framing.NONE  # type: ignore[union-attr]
    ev = resp(b"HTTP/1.0 200 OK\r\n\r\nuntil close")
    assert ev[0].response.framing is Framing.CLOSE  # type: ignore[union-attr]
    assert not ev[0].response.keep_alive  # type: ignore[union-attr]
    assert ev[1:] == [BodyReceived(data=b"until close"), MessageEnded()]
    ev = resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    assert ev[1] == BodyReceived(data=b"ok")
    ev = resp(b"HTTP/1.1 200\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n0\r\n\r\n")
    assert ev[0].response.reason == "" and ev[1] == MessageEnded()  # type: ignore[union-attr]


def test_interim_then_final_and_tunnels() -> None:
    ev = resp(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Hints\r\nLink: x\r\n\r\n"
              b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert [e.response.status for e in ev if isinstance(e, ResponseReceived)] == [100, 103, 200]
    assert ev[0].response.interim  # type: ignore[union-attr]
    p = ResponseParser()
    p.expect("GET")
    ev = p.receive_data(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00")
    assert ev[0].response.framing is Framing.TUNNEL  # type: ignore[union-attr]
    assert p.take_leftover() == b"\x81\x00"
    p = ResponseParser()
    p.expect("CONNECT")
    ev = p.receive_data(b"HTTP/1.1 200 OK\r\n\r\nraw")
    assert ev[0].response.framing is Framing.TUNNEL and p.take_leftover() == b"raw"  # type: ignore[union-attr]


def test_close_delimited_body_ends_at_fin_not_at_reset() -> None:
    """A close-delimited body is whole at the peer's FIN; a reset cuts it (502, incomplete)."""
    for reset in (False, True):
        p = ResponseParser()
        p.expect("GET")
        ev = p.receive_data(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nbody")
        assert isinstance(ev[-1], BodyReceived)
        if not reset:
            assert isinstance(p.receive_eof()[-1], MessageEnded)
            continue
        with pytest.raises(HttpError) as e:
            p.receive_eof(reset=True)
        assert (e.value.status, e.value.reason) == (502, "incomplete")


@pytest.mark.parametrize("data", [
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/2 200\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
    b"junk",
])
def test_response_errors_are_502(data: bytes) -> None:
    _, err = drive_responses([data])
    assert err is not None and err[0] == 502


def test_response_bytes_before_a_request_are_held() -> None:
    p = ResponseParser()
    assert p.receive_data(b"HTTP/1.1 200 OK\r\n\r\n") == [] and p.buffered()


# ------------------------------------------------------------------------ writing


def test_encoders_round_trip() -> None:
    head = encode_head("POST /x HTTP/1.1", [("Host", "h"), ("Transfer-Encoding", "chunked")])
    body = encode_chunk(b"abc") + encode_chunk(b"\r\n") + encode_last_chunk((("T", "1"),))
    ev = req(head + body)
    assert ev[1:] == [BodyReceived(data=b"abc\r\n"), MessageEnded(trailers=(("T", "1"),))]


# ------------------------------------------------------------------------ sniff and rewrite


def test_sniff() -> None:
    for m in (b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT",
              b"TRACE"):
        assert sniff(m + b" /") is Sniff.MATCH
        assert sniff(m + b" ") is Sniff.MATCH
        for i in range(1, len(m) + 1):
            assert sniff(m[:i]) is Sniff.NEED_MORE, m[:i]
    for no in (b"PRI * HTTP/2.0\r\n", b"PRI ", b"PR", b"GETX /", b"get /", b"\x16\x03\x01",
               b"SSH-2.0-", b"\x05\x01\x00", b"CONNECTX"):
        assert sniff(no) is Sniff.NO, no


def test_split_authority_and_absolute() -> None:
    assert split_authority("svc.test", 80) == ("svc.test", 80)
    assert split_authority("svc.test:8080", 80) == ("svc.test", 8080)
    assert split_authority("[::1]:443", None) == ("::1", 443)
    for bad in ("svc.test", "a:0", "a:99999", "[zz]:1", "a b:1", "a:1:2", ""):
        with pytest.raises(HttpError):
            split_authority(bad, None)
    assert split_absolute("http://a.b:81/p?q=1") == ("http", "a.b:81", "/p?q=1")
    assert split_absolute("HTTP://a.b") == ("http", "a.b", "/")
    assert split_absolute("http://a.b?x") == ("http", "a.b", "/?x")
    with pytest.raises(HttpError, match="user info"):
        split_absolute("http://u:p@a.b/")


def test_end_to_end_drops_hop_by_hop() -> None:
    h = (("Host", "x"), ("Connection", "keep-alive, X-Secret"), ("X-Secret", "1"),
         ("Keep-Alive", "5"), ("Proxy-Authorization", "Basic x"), ("TE", "trailers"),
         ("Trailer", "a"), ("Upgrade", "websocket"), ("Content-Length", "3"),
         ("Proxy-Connection", "keep-alive"), ("Transfer-Encoding", "chunked"), ("Accept", "*/*"))
    assert end_to_end(h) == [("Host", "x"), ("Accept", "*/*")]
    assert ("Upgrade", "websocket") in end_to_end(h, keep=frozenset({"upgrade"}))


def test_forwarded_and_basic() -> None:
    assert forwarded_for(("10.0.0.1", 5), "h:1") == 'for=10.0.0.1;host="h:1";proto=http'
    assert forwarded_for(("::1", 5), "h") == 'for="[::1]";host="h";proto=http'
    assert basic_credentials("Basic YWxpY2U6czNjcjp0") == ("alice", "s3cr:t")
    assert basic_credentials("basic  YWxpY2U6czNjcjp0 ") == ("alice", "s3cr:t")
    for bad in ("Bearer x", "Basic", "Basic !!!", "Basic YWxpY2U="):
        assert basic_credentials(bad) is None


# ------------------------------------------------------------------------ properties

PIECES = [
    b"GET ", b"POST ", b"CONNECT ", b"http://a.b/", b"/", b"a.b:443", b" HTTP/1.1", b" HTTP/1.0",
    b"\r\n", b"\n", b"\r", b"Host: a\r\n", b"Content-Length: 3\r\n", b"Content-Length: 0\r\n",
    b"Transfer-Encoding: chunked\r\n", b"Connection: close\r\n", b"X:  \t\r\n", b" folded\r\n",
    b"3\r\nabc\r\n", b"0\r\n\r\n", b"ffffffffffffffff\r\n", b"abc", b"\x00", b"\xff", b":",
    b"Content-Length: 99999999999999999999\r\n", b";ext=1", b"\r\n\r\n",
]
PARSE = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PARSE
@given(st.binary(max_size=3000), st.lists(st.integers(0, 5000), max_size=8))
def test_any_bytes_give_events_or_http_error(data: bytes, cuts: list[int]) -> None:
    whole = drive_requests([data])
    parts = drive_requests(split(data, cuts))
    assert whole[1] == parts[1]
    if whole[1] is None:
        assert whole[0] == parts[0]
    drive_responses(split(data, cuts))


@PARSE
@given(st.lists(st.sampled_from(PIECES), max_size=40), st.lists(st.integers(0, 5000),
                                                                 max_size=8))
def test_http_shaped_bytes_are_split_invariant(pieces: list[bytes], cuts: list[int]) -> None:
    data = b"".join(pieces)
    for drive in (drive_requests, drive_responses):
        whole = drive([data])
        parts = drive(split(data, cuts))
        assert whole[1] == parts[1], (data, whole, parts)
        if whole[1] is None:
            assert whole[0] == parts[0]


TOKEN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-!#$%&'*+.^_`|~",
                min_size=1, max_size=12)
VALUE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f"),
                max_size=20)


@PARSE
@given(
    method=TOKEN,
    path=st.text("abc/?=&%0123", max_size=30),
    fields=st.lists(st.tuples(TOKEN, VALUE), max_size=10),
    body=st.binary(max_size=3000),
    chunked=st.booleans(),
    chunk=st.integers(1, 700),
    cuts=st.lists(st.integers(0, 10000), max_size=10),
)
def test_valid_requests_parse_back(method: str, path: str, fields: list[tuple[str, str]],
                                   body: bytes, chunked: bool, chunk: int,
                                   cuts: list[int]) -> None:
    fields = [(k, v) for k, v in fields
              if k.lower() not in ("content-length", "transfer-encoding")]
    if chunked:
        framing = [("Transfer-Encoding", "chunked")]
        payload = b"".join(encode_chunk(body[i:i + chunk]) for i in range(0, len(body), chunk))
        payload += encode_last_chunk()
    else:
        framing = [("Content-Length", str(len(body)))]
        payload = body
    data = encode_head(f"{method} /{path} HTTP/1.1", [*fields, *framing]) + payload
    events, err = drive_requests(split(data, cuts), max_header_bytes=64 * 1024)
    assert err is None
    r = events[0].request  # type: ignore[union-attr]
    assert (r.method, r.target) == (method, "/" + path)
    assert r.headers == (*fields, *framing)
    got = b"".join(e.data for e in events if isinstance(e, BodyReceived))
    assert got == body and events[-1] == MessageEnded()


@PARSE
@given(st.text(max_size=80), st.sampled_from([None, 80]))
def test_target_helpers_never_crash(text: str, default: int | None) -> None:
    for fn in (lambda: split_absolute(text), lambda: split_authority(text, default)):
        try:
            fn()
        except HttpError as e:
            assert e.status == 400 and str(e)
    assert basic_credentials(text) is None or isinstance(basic_credentials(text), tuple)


FIELD_BYTES = st.lists(st.one_of(
    st.sampled_from([b"Host: a\r\n", b"Content-Length: 5\r\n", b"connection: close, x\r\n",
                     b"X:  v  \r\n", b"X:\r\n", b"Bad Name: x\r\n", b" folded\r\n", b"A: b\n",
                     b"A: \xff\xfe\r\n", b"A: b\rc\r\n", b"A: \x00\r\n", b"A b\r\n", b":\r\n",
                     b"Transfer-Encoding: chunked\r\n", b"A: b\r\r\n", b"\t\r\n"]),
    st.binary(max_size=12).map(lambda b: b + b"\r\n")), max_size=12)


@PARSE
@given(FIELD_BYTES, st.integers(1, 12))
def test_fast_head_fields_match_the_line_parser(lines: list[bytes], max_fields: int) -> None:
    """The one-regex field parser gives what the line-by-line one gives, errors included."""
    from ugate_http.h1 import _first_line, _head_fields, _lines, _parse_fields, _strip_end

    block = _strip_end(b"GET / HTTP/1.1\r\n" + b"".join(lines) + b"\r\n")
    if b"\n\n" in block or b"\n\r\n" in block:
        return  # an empty line would have ended the head earlier
    _, rest = _first_line(block)

    def outcome(f: object) -> object:
        try:
            return f()  # type: ignore[operator]
        except HttpError as e:
            return (e.status, e.reason, str(e))

    fast = outcome(lambda: _head_fields(block, rest, 400, max_fields))
    slow = outcome(lambda: _parse_fields(_lines(block)[1:], max_fields, 400))
    assert fast == slow


@PARSE
@given(st.lists(st.sampled_from(PIECES), max_size=30), st.sampled_from(["GET", "HEAD"]),
       st.booleans())
@example([b"GET ", b"/", b" HTTP/1.1", b"\r\n", b"Host: a\r\n", b"\r\n"], "GET", False)
@example([b"POST ", b"/", b" HTTP/1.0", b"\r\n", b"Content-Length: 3\r\n", b"\r\n", b"abc"],
         "GET", False)
@example([b"Content-Length: 3\r\n", b"\r\n", b"abc"], "GET", True)
@example([b"Content-Length: 3\r\n", b"\r\n"], "HEAD", True)
@example([b"Host: a\r\n", b"\r\n", b"\xff"], "GET", True)
@example([b"\n", b"\r\n\r\n"], "GET", True)  # the head ends at the bare LF pair
def test_receive_whole_is_receive_data_without_events(pieces: list[bytes], method: str,
                                                      response: bool) -> None:
    """receive_whole either declines and changes nothing, or returns what receive_data's
    events say and leaves the parser exactly where receive_data does."""
    data = b"".join(pieces)
    if response:
        data = b"HTTP/1.1 200 OK\r\n" + data
    parsers: list[RequestParser | ResponseParser] = []
    for _ in range(2):
        p: RequestParser | ResponseParser = ResponseParser() if response else RequestParser()
        if isinstance(p, ResponseParser):
            p.expect(method)
        parsers.append(p)
    a, b = parsers

    def outcome(f: object) -> object:
        try:
            return f()  # type: ignore[operator]
        except HttpError as e:
            return (e.status, e.reason, str(e))

    whole = outcome(lambda: a.receive_whole(data))
    if whole is None:  # declined: a is untouched, as b
        assert (a._state, a.buffered()) == (b._state, b.buffered())
        return
    events = outcome(lambda: b.receive_data(data))
    if isinstance(whole, tuple) and len(whole) == 3:  # the same error
        assert events == whole
        return
    assert isinstance(whole, tuple) and isinstance(events, list)
    msg, body = whole
    head = events[0]
    assert (head.response if response else head.request) == msg  # type: ignore[union-attr]
    assert merge(events[1:]) == ([BodyReceived(data=body)] if body else []) + [MessageEnded()]
    assert (a._state, a.buffered(), a.framing) == (b._state, b.buffered(), b.framing)
    # and both go on alike
    tail = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" if not response else \
        b"HTTP/1.1 204 No\r\n\r\n"
    if isinstance(a, ResponseParser) and isinstance(b, ResponseParser):
        assert a.expect("GET") == b.expect("GET")
    else:
        assert a.next_message() == b.next_message()
    assert outcome(lambda: a.receive_data(tail)) == outcome(lambda: b.receive_data(tail))
