"""The raw lane's byte rewriting (raw.py) against the parsing path, byte for byte.

Whatever ``request_parts``/``request_head`` and ``response_head`` accept, the parser plus the
session's field rewriting (``H1Front._fields``, ``encode_head``) and ``rewrite.response_head``
must turn into exactly the same bytes; what they refuse is left to that path. Heads are built
from pieces that sit on both sides of every rule (name case, separators, whitespace around
values, bare LF, the fields the proxy acts on, lengths that do not match the body).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ugate_http.forwarding import response_head as parsed_response_head
from ugate_http.h1 import (
    HttpError,
    Request,
    RequestParser,
    Response,
    ResponseParser,
    encode_head,
)
from ugate_http.h1front import H1Front
from ugate_http.h2msg import response_headers
from ugate_http.raw import request_head, request_parts, response_fields, response_head
from ugate_http.rewrite import address_of, split_authority

NEUTRAL = ["Accept", "User-Agent", "X-A", "Tea", "Hostx", "Forwarded", "Date", "Server",
           "Content-Lengthy"]
SPECIAL = ["host", "HOST", "X-Forwarded-For", "Via", "Connection", "Content-Length",
           "content-length", "Transfer-Encoding", "Te", "Expect", "Keep-Alive", "Upgrade",
           "Proxy-Authorization", "Trailer", "Proxy-Connection"]
VALUES = ["svc.test", "svc.test:8080", "[::1]:99", "0", "12", "007", "chunked", "close",
          "a b", "", "x\ty", "\x80\xa0", " a", "a ", "\ta", "1, 2", "1.1 ugate-test",
          "1.0 other", "keep-alive", "Keep-Alive", "keep-alive, x-a", "keep-alive "]
FIRST_LINES = ["GET / HTTP/1.0", "HEAD /a HTTP/1.1", "POST /a HTTP/1.1", "CONNECT / HTTP/1.1",
               "get /x HTTP/1.1", "GET /x y HTTP/1.1", "GET http://svc.test/ HTTP/1.1",
               "GET * HTTP/1.1", "HTTP/1.1 200 OK", "HTTP/1.1 204 No Content",
               "HTTP/1.1 304 Not Modified", "HTTP/1.1 101 Switching", "HTTP/1.1 100 Continue",
               "HTTP/1.0 200 OK", "HTTP/1.1 200", "HTTP/1.1 404 Not\tFound ",
               "HTTP/1.1 503 \x80", "HTTP/2.0 200 OK", "HTTP/1.1 099 X"]


@st.composite
def heads(draw: Any, first: str, key: str, values: list[str]) -> bytes:
    """A head in the form the raw lane takes (``first`` line, a ``key`` field with one of
    ``values`` among neutral fields), then up to three changes, each of which may or may not
    put it off that form."""
    fields = [(draw(st.sampled_from(NEUTRAL)), draw(st.sampled_from(VALUES[:4])))
              for _ in range(draw(st.integers(0, 4)))]
    fields.insert(draw(st.integers(0, len(fields))), (key, draw(st.sampled_from(values))))
    lines = [first] + [f"{k}: {v}" for k, v in fields]
    eols = ["\r\n"] * (len(lines) + 1)
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        change = draw(st.sampled_from(["sep", "value", "eol", "add", "add", "first", "first",
                                       "lead"]))
        if change == "sep" and i:
            k, _, v = lines[i].partition(": ")
            lines[i] = k + draw(st.sampled_from([":", ":  ", " : ", ":\t", ": "])) + v
        elif change == "value" and i:
            lines[i] = lines[i].partition(": ")[0] + ": " + draw(st.sampled_from(VALUES))
        elif change == "eol":
            eols[draw(st.integers(0, len(eols) - 1))] = "\n"
        elif change == "add":
            lines.insert(i + 1, draw(st.sampled_from(SPECIAL)) + ": "
                         + draw(st.sampled_from(VALUES)))
            eols.append("\r\n")
        elif change == "first":
            lines[0] = draw(st.sampled_from(FIRST_LINES))
        elif change == "lead":
            lines[0] = "\r\n" + lines[0]
    return "".join(ln + e for ln, e in zip([*lines, ""], eols, strict=True)).encode("latin-1")


def fake_session() -> Any:
    """What ``H1Front._fields`` and ``_raw_route`` use of a session."""
    s = SimpleNamespace(
        consumed="", _forwarded=None, _raw_routes={}, scheme="http",
        opts=SimpleNamespace(forwarded=True, default_port=80),
        state=SimpleNamespace(via="ugate-test"),
        stream=SimpleNamespace(meta=SimpleNamespace(remote=("127.0.0.7", 4321))))
    s._forwarded_for = lambda host: H1Front._forwarded_for(s, host)  # type: ignore[arg-type]
    return s


def parsed_request(data: bytes) -> tuple[Request, bytes] | None:
    try:
        w = RequestParser().receive_whole(data)
    except HttpError:
        return None
    if w is None:
        return None
    assert isinstance(w[0], Request)
    return w[0], w[1]


@settings(max_examples=1500)
@given(heads("POST /w?q=1 HTTP/1.1", "Host", ["svc.test", "svc.test:8080", "[::1]:99"]),
       st.sampled_from([b"", b"", b"{}", b"hello", b"0123456789"]),
       st.sampled_from(["", "", "Content-Length: {n}\r\n", "content-length: 00{n}\r\n",
                        "Content-Length: {n}\r\nContent-Length: {n}\r\n",
                        "Content-Length: 3\r\n"]))
@example(b"GET /w HTTP/1.1\r\nHost: svc.test\r\n\r\n", b"", "")
@example(b"GET / HTTP/1.1\r\nUser-Agent: x\r\nhost: svc.test:81\r\nAccept: */*\r\n\r\n", b"",
         "")
@example(b"GET / HTTP/1.1\r\nHost: svc.test\r\nVia: 1.1 ugate-test\r\n\r\n", b"", "")  # loop
@example(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nAccept: */*\r\n\r\n", b"",
         "")
@example(b"GET / HTTP/1.1\r\nConnection: keep-alive, x-a\r\nHost: a\r\nX-A: 1\r\n\r\n", b"",
         "")
@example(b"POST / HTTP/1.1\r\nHost: a\r\n\r\n", b"{}", "Content-Length: {n}\r\n")
@example(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", b"{}",
         "Content-Length: {n}\r\n")  # two lengths: the parser's 400
def test_raw_request_is_the_parsing_path(head: bytes, body: bytes, length: str) -> None:
    """Requests (with a Content-Length line put after the first line, or none): what the
    raw lane sends upstream is what the parsing lanes send (``_fields``, the Content-Length
    the pool appends, the body)."""
    first, _, fields = head.partition(b"\n")
    data = first + b"\n" + length.format(n=len(body)).encode() + fields + body
    parts = request_parts(data, 65536, 256, 65536)
    if parts is None:
        return
    got = parsed_request(data)
    assert got is not None, data
    req, rbody = got
    s = fake_session()
    f = H1Front._fields(s, req, None)
    # nothing the parsing lanes act on: one Host, no hop-by-hop, Expect or Via
    assert f.hosts == 1 and not (f.loop or f.expect or f.upgrade_field)
    assert req.version == "1.1" and req.connection <= {"keep-alive"} and req.keep_alive
    assert req.method != "CONNECT"
    route = H1Front._raw_route(s, parts[2])
    if route is None:  # a Host that is no authority: the task answers 400
        return
    assert route[0] == address_of(*split_authority(f.host, 80))  # where the task sends it
    fields = f.fields + ([("Content-Length", str(req.length))] if f.length_field else [])
    expected = encode_head(f"{req.method} {req.target} HTTP/1.1", fields) + rbody
    assert request_head(*parts, route[1]) + data[len(data) - max(parts[4], 0):] == expected


CANONICAL_FIELDS = st.lists(st.tuples(st.sampled_from(["Accept", "User-Agent", "X-A", "Tea"]),
                                      st.text(alphabet="a1./ \t", max_size=5).map(str.strip)),
                            max_size=4)


@given(CANONICAL_FIELDS, st.integers(0, 4), st.sampled_from(["GET", "HEAD", "DELETE"]),
       st.booleans())
def test_canonical_requests_take_the_raw_lane(fields: list[tuple[str, str]], at: int,
                                              method: str, keep_alive: bool) -> None:
    if keep_alive:  # (as browsers send it)
        fields.insert(min(at + 1, len(fields)), ("Connection", "keep-alive"))
    fields.insert(min(at, len(fields)), ("Host", "svc.test"))
    data = encode_head(f"{method} /p HTTP/1.1", fields)
    parts = request_parts(data, 65536, 256, 0)
    assert parts is not None and parts[2] == b"svc.test" and parts[4] == -1
    assert request_parts(data, len(data) - 1, 256, 0) is None  # bounds as the parser's
    assert request_parts(data, 65536, len(fields) - 1, 0) is None
    with_body = data.replace(b"Host:", b"Content-Length: 2\r\nHost:") + b"{}"
    assert request_parts(with_body, 65536, 256, 2) is not None
    assert request_parts(with_body, 65536, 256, 1) is None  # the body bound


@settings(max_examples=1500)
@given(heads("HTTP/1.1 200 OK", "Content-Length", ["6", "0", "06"]),
       st.sampled_from([b"", b"hello\n", b"hello\nx"]))
@example(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n", b"hello\n")
@example(b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n", b"")
@example(b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 6\r\nConnection: keep-alive"
         b"\r\n\r\n", b"hello\n")
@example(b"HTTP/1.1 200 OK\r\nDate: x\r\nContent-Length: 0\r\nServer: y\r\n\r\n", b"")
def test_raw_response_is_the_parsing_path(head: bytes, body: bytes) -> None:
    data = head + body
    got = response_head(data, 65536, 256)
    if got is None:
        return
    status, out, start = got
    parser = ResponseParser()
    parser.expect("GET")
    w = parser.receive_whole(data)
    assert w is not None, data
    resp, rbody = w
    assert resp.status == status and rbody == data[start:]  # type: ignore[union-attr]
    req = Request(method="GET", target="/")
    expected, chunked, keep = parsed_response_head(req, resp)  # type: ignore[arg-type]
    assert out == expected and keep and not chunked
    assert resp.keep_alive  # the upstream connection goes back to the pool


@settings(max_examples=1000)
@given(heads("HTTP/1.1 200 OK", "Content-Length", ["6", "0", "06"]),
       st.sampled_from([b"", b"hello\n", b"hello\nx"]))
@example(b"HTTP/1.1 200 OK\r\nDate: x\r\nContent-Length: 6\r\nServer: A b\r\n\r\n", b"hello\n")
@example(b"HTTP/1.1 200 OK\r\nconnection: Keep-Alive\r\nContent-Length: 6\r\n\r\n", b"hello\n")
def test_raw_h2_response_is_the_parsing_path(head: bytes, body: bytes) -> None:
    """The HTTP/2 front's header list (``response_fields``) for what ``response_head``
    takes, as ``h2msg.response_headers`` makes it from the parsed head."""
    data = head + body
    got = response_fields(data, 65536, 256)
    assert (got is None) == (response_head(data, 65536, 256) is None)
    if got is None:
        return
    parser = ResponseParser()
    parser.expect("GET")
    w = parser.receive_whole(data)
    assert w is not None and isinstance(w[0], Response)
    assert got[0] == w[0].status and got[2] == len(data) - len(w[1])
    assert got[1] == response_headers(w[0], "GET")


@given(st.sampled_from(["Date: x", "Server: y", "X-A: 1 2"]).map(lambda s: s + "\r\n"),
       st.binary(max_size=50), st.sampled_from([200, 404, 500]))
def test_whole_answers_take_the_raw_lane(field: str, body: bytes, status: int) -> None:
    head = (f"HTTP/1.1 {status} X\r\n{field}Content-Length: {len(body)}\r\n{field}\r\n")
    got = response_head(head.encode() + body, 65536, 256)
    assert got is not None and got[0] == status
    assert got[1].endswith(f"Content-Length: {len(body)}\r\n\r\n".encode())
    assert response_head(head.encode() + body + b"x", 65536, 256) is None  # not whole
    assert response_head(head.encode() + body, len(head) - 1, 256) is None
