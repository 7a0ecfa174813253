"""What the HTTP/2 front parses itself (h2msg) and its sessions in memory: unit cases and
hypothesis properties; any bytes into an HTTP/2 session → answers or a clean close."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, ResponseReceived, StreamEnded, StreamReset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ugate_core import (
    BytesBody,
    Gateway,
    ListenerContext,
    ProtocolError,
    Sniff,
    StreamMeta,
    loads,
    stream_pair,
)
from ugate_http.client import OutgoingRequest
from ugate_http.h1 import Framing, HttpError, Request, Response
from ugate_http.h1front import serve
from ugate_http.h2client import request_headers
from ugate_http.h2conn import PREFACE
from ugate_http.h2msg import (
    H2Request,
    h2c_settings,
    parse_request,
    preface_match,
    request_from_h1,
    response_from_h2,
    response_headers,
)

BASE = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"svc.test:8080"),
        (b":path", b"/a?b=c")]


def parse(raw: list[tuple[bytes, bytes]], max_bytes: int = 4096) -> H2Request:
    return parse_request(raw, default_port=80, max_bytes=max_bytes, max_fields=32)


# ------------------------------------------------------------------------------ units
def test_parse_request_basics() -> None:
    r = parse([*BASE, (b"cookie", b"a=1"), (b"x-y", b"z"), (b"cookie", b"b=2"),
               (b"te", b"trailers"), (b"content-length", b"12"), (b"expect", b"100-continue"),
               (b"proxy-authorization", b"Basic eA==")])
    assert (r.method, r.scheme, r.authority, r.host, r.port, r.path) == (
        "GET", "http", "svc.test:8080", "svc.test", 8080, "/a?b=c")
    assert r.headers == (("x-y", "z"), ("cookie", "a=1; b=2"))  # RFC 9113 8.2.3
    assert (r.length, r.expect_continue) == (12, True)
    # host when :authority is absent; the default port
    r = parse([(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"),
               (b"host", b"[::1]")])
    assert (r.host, r.port, r.scheme) == ("::1", 80, "https")
    assert parse([(b":method", b"OPTIONS"), (b":scheme", b"http"), (b":authority", b"a"),
                  (b":path", b"*")]).path == "*"


@pytest.mark.parametrize(("raw", "status", "text"), [
    (BASE[1:], 400, "missing :method"),
    ([BASE[0], BASE[1], BASE[2]], 400, "missing :path"),
    ([*BASE, (b":path", b"/x")], 400, "duplicate pseudo-header :path"),
    ([BASE[0], (b"x", b"y"), *BASE[1:]], 400, "after a regular field"),
    ([*BASE, (b":protocol", b"websocket")], 400, "not allowed"),
    ([(b":method", b"CONNECT"), (b":authority", b"a:1")], 405, "CONNECT"),
    ([(b":method", b"G T"), *BASE[1:]], 400, "bad :method"),
    ([BASE[0], (b":scheme", b"ftp"), *BASE[2:]], 400, "not http or https"),
    ([*BASE[:3], (b":path", b"a")], 400, "not an origin-form target"),
    ([*BASE[:3], (b":path", b"/a b")], 400, "not an origin-form target"),
    ([*BASE[:2], BASE[3]], 400, "missing :authority"),
    ([*BASE[:2], (b":authority", b"u@h"), BASE[3]], 400, "user info"),
    ([*BASE[:2], (b":authority", b"h:99999"), BASE[3]], 400, "not 1-65535"),
    ([*BASE, (b"X-Up", b"1")], 400, "lower-case token"),
    ([*BASE, (b"x", b"a\r\nb: c")], 400, "CR, LF or NUL"),
    ([*BASE, (b"connection", b"close")], 400, "connection-specific"),
    ([*BASE, (b"te", b"gzip")], 400, "only 'trailers'"),
    ([*BASE, (b"content-length", b"1"), (b"content-length", b"2")], 400, "content-length"),
    ([*BASE, (b"host", b"a"), (b"host", b"b")], 400, "more than one host"),
    ([*BASE, (b"x", b"y" * 5000)], 431, "more than 4096"),
    ([*BASE] + [(b"x", b"y")] * 40, 431, "fields"),
])
def test_parse_request_refusals(raw: list[tuple[bytes, bytes]], status: int, text: str) -> None:
    with pytest.raises(HttpError) as e:
        parse(raw)
    assert e.value.status == status and text in str(e.value)


def _h1(*fields: tuple[str, str], method: str = "GET", target: str = "/",
        framing: Framing = Framing.NONE) -> Request:
    conn = frozenset(t.strip().lower() for k, v in fields if k.lower() == "connection"
                     for t in v.split(","))
    return Request(method=method, target=target, headers=fields, framing=framing,
                   connection=conn)


def test_h2c_settings_and_request_from_h1() -> None:
    c = H2Connection(H2Configuration(client_side=True))
    value = c.initiate_upgrade_connection().decode()  # what an h2 client sends
    up = [("Host", "svc.test"), ("Connection", "Upgrade, HTTP2-Settings"),
          ("Upgrade", "h2c"), ("HTTP2-Settings", value.rstrip("="))]
    req = _h1(*up, ("X-A", "1"), target="/p?q")
    settings = h2c_settings(req)
    assert settings is not None and len(base64.urlsafe_b64decode(settings)) % 6 == 0
    r = request_from_h1(req, default_port=80)
    assert (r.method, r.authority, r.path, r.headers) == ("GET", "svc.test", "/p?q",
                                                          (("x-a", "1"),))
    assert h2c_settings(_h1(*up[:3])) is None  # no HTTP2-Settings: no upgrade
    assert h2c_settings(_h1(*up[:3], ("HTTP2-Settings", "!!"))) is None
    assert h2c_settings(_h1(*up[:3], ("HTTP2-Settings", "AAAA"))) is None  # 3 bytes
    assert h2c_settings(_h1(up[0], ("Connection", "Upgrade, HTTP2-Settings"),
                            ("Upgrade", "websocket"), up[3])) is None


def test_response_translations() -> None:
    head = Response(status=200, headers=(("Content-Type", "a/b"), ("Connection", "x-y"),
                                         ("X-Y", "1"), ("Keep-Alive", "5"),
                                         ("Transfer-Encoding", "chunked")),
                    framing=Framing.CHUNKED, connection=frozenset({"x-y"}))
    assert response_headers(head, "GET") == [(b":status", b"200"), (b"content-type", b"a/b")]
    head = Response(status=200, headers=(("Content-Length", "5"),), framing=Framing.NONE)
    assert response_headers(head, "HEAD")[1:] == [(b"content-length", b"5")]
    r = response_from_h2([(b":status", b"404"), (b"content-length", b"3")], "GET", False)
    assert (r.status, r.reason, r.framing, r.length) == (404, "Not Found", Framing.LENGTH, 3)
    assert response_from_h2([(b":status", b"200")], "GET", False).framing is Framing.CHUNKED
    assert response_from_h2([(b":status", b"200")], "GET", True).framing is Framing.NONE
    for bad in ([(b":status", b"abc")], [], [(b":status", b"200"), (b":path", b"/")]):
        with pytest.raises(HttpError) as e:
            response_from_h2(bad, "GET", False)
        assert e.value.status == 502
    out = OutgoingRequest(method="POST", target="/x", authority="svc.test:80",
                          headers=(("Host", "svc.test"), ("Connection", "close"),
                                   ("X-A", "b")), body=BytesBody(b"abc"), length=3)
    assert request_headers(out) == [
        (b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"svc.test"),
        (b":path", b"/x"), (b"x-a", b"b"), (b"content-length", b"3")]


# ------------------------------------------------------------------------------ properties
_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.!#$%&'*+^`|~", min_size=1,
                 max_size=12)
_value = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0xff),
                 max_size=20).map(lambda s: s.encode("latin-1"))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=12), st.binary(max_size=24)), max_size=12))
def test_any_header_list_parses_or_refuses(raw: list[tuple[bytes, bytes]]) -> None:
    for fields in (raw, BASE + raw):
        try:
            r = parse(fields)
        except HttpError as e:
            assert e.status in (400, 405, 431)
            continue
        # whatever passes is safe to write into an HTTP/1.1 head
        for k, v in r.headers:
            assert k and k == k.lower() and not any(c in k for c in ":\r\n\0 ")
            assert not any(c in v for c in "\r\n\0")
        assert r.path.startswith("/") or r.path == "*"
        assert 1 <= r.port <= 65535


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_token.filter(lambda t: t not in (
    "host", "cookie", "te", "connection", "keep-alive", "upgrade", "expect", "trailer",
    "transfer-encoding", "content-length", "proxy-connection", "proxy-authorization",
    "proxy-authenticate", "http2-settings")), _value), max_size=10),
    st.sampled_from([b"GET", b"POST", b"PATCH"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/?=&%.", max_size=30))
def test_valid_requests_keep_their_fields(fields: list[tuple[str, bytes]], method: bytes,
                                          path: str) -> None:
    raw = [(b":method", method), (b":scheme", b"http"), (b":authority", b"a.test:81"),
           (b":path", ("/" + path).encode())] + [(k.encode(), v) for k, v in fields]
    r = parse(raw, max_bytes=1 << 16)
    assert r.headers == tuple((k, v.decode("latin-1")) for k, v in fields)
    assert (r.method, r.host, r.port, r.path) == (method.decode(), "a.test", 81, "/" + path)


@given(st.binary(max_size=40))
def test_preface_match(data: bytes) -> None:
    r = preface_match(data)
    assert (r is Sniff.MATCH) == data.startswith(PREFACE)
    assert (r is Sniff.NEED_MORE) == (len(data) < len(PREFACE) and PREFACE.startswith(data))
    for i in range(len(PREFACE)):
        assert preface_match(PREFACE[:i]) is Sniff.NEED_MORE


@given(st.text(max_size=40))
def test_h2c_settings_any_value(value: str) -> None:
    req = _h1(("Host", "a"), ("Connection", "Upgrade, HTTP2-Settings"), ("Upgrade", "h2c"),
              ("HTTP2-Settings", value))
    out = h2c_settings(req)
    if out is not None:
        assert len(base64.urlsafe_b64decode(out)) % 6 == 0


@given(st.lists(st.tuples(st.binary(max_size=10), st.binary(max_size=10)), max_size=6),
       st.booleans())
def test_any_h2_response_head(raw: list[tuple[bytes, bytes]], ended: bool) -> None:
    for fields in (raw, [(b":status", b"200"), *raw]):
        try:
            r = response_from_h2(fields, "GET", ended)
        except HttpError as e:
            assert e.status == 502
        else:
            assert 100 <= r.status <= 599


# ------------------------------------------------------------------------------ sessions
CONFIG = """
[admin]
listen = ""
[gateway]
handshake_timeout = 0.5
connect_timeout = 0.3
[routing]
direct = false
[listeners.p]
listen = "127.0.0.1:0"
protocols = ["http"]
mode = "reverse"
max_header_bytes = 2048
"""


async def _session(data: bytes, state: Path) -> bytes:
    cfg = loads(CONFIG)
    gw = Gateway(cfg, state_dir=state)
    gw.load()
    ctx = ListenerContext(gw, cfg.listeners[0])
    client, server = stream_pair(None, StreamMeta(listener="p", remote=("127.0.0.1", 1)))
    client.write(data)
    client.write_eof()
    try:
        await asyncio.wait_for(serve(server, ctx), 5)
    except (ProtocolError, ConnectionError):
        pass
    finally:
        server.close()
    out = bytearray()
    while chunk := await asyncio.wait_for(client.read(), 5):
        out += chunk
    return bytes(out)


def _answers(c: H2Connection, out: bytes) -> list[tuple[int, object]]:
    """Events the client ``c`` (which sent the requests) sees in the server's bytes."""
    return [(getattr(e, "stream_id", 0), e) for e in c.receive_data(out)]


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(fields=st.lists(st.tuples(
    st.sampled_from([b":method", b":path", b":authority", b":scheme", b"host", b"x-a",
                     b"content-length", b"cookie", b"te", b"Upper", b"connection", b""]),
    st.sampled_from([b"GET", b"/", b"a.test", b"http", b"5", b"x" * 3000, b"a b", b"", b" x",
                     b"trailers", b"\x00"])), min_size=1, max_size=8),
       junk=st.binary(max_size=64), end=st.booleans())
def test_any_h2_session_answers_or_closes(fields: list[tuple[bytes, bytes]], junk: bytes,
                                          end: bool, tmp_path: Path) -> None:
    """A client (h2, unvalidated) sends any header list, maybe a body, maybe junk frames:
    the server answers with a status on the stream, resets it, or closes with GOAWAY."""
    c = H2Connection(H2Configuration(client_side=True, validate_outbound_headers=False,
                                     normalize_outbound_headers=False,
                                     validate_inbound_headers=False))
    c.initiate_connection()
    c.send_headers(1, fields, end_stream=end)
    if not end:
        c.send_data(1, b"body", end_stream=True)
    data = c.data_to_send() + junk
    out = asyncio.run(_session(data, tmp_path))
    assert out.startswith(b"\x00\x00")  # our SETTINGS came first
    try:
        events = _answers(c, out)
    except Exception:  # the GOAWAY/close path may cut a frame: fine
        return
    for sid, ev in events:
        if sid == 1 and isinstance(ev, ResponseReceived):
            status = dict(ev.headers)[b":status"]
            assert status in (b"400", b"405", b"431", b"502", b"508"), status


def test_h2_session_in_memory_answers_a_request(tmp_path: Path) -> None:
    c = H2Connection(H2Configuration(client_side=True))
    c.initiate_connection()
    c.send_headers(1, [(":method", "GET"), (":scheme", "http"), (":authority", "nowhere.test"),
                       (":path", "/")], end_stream=True)
    out = asyncio.run(_session(c.data_to_send(), tmp_path))
    events = [e for _, e in _answers(c, out)]
    resp = next(e for e in events if isinstance(e, ResponseReceived))
    assert dict(resp.headers)[b":status"] == b"502"
    body = b"".join(e.data for e in events if isinstance(e, DataReceived))
    assert b"no route to 'nowhere.test'" in body
    assert any(isinstance(e, StreamEnded) for e in events)
    assert not any(isinstance(e, StreamReset) for e in events)
