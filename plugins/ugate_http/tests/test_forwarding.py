"""The forwarding rules (forwarding.py) without sockets, and the two fronts' use of them: the
same request gets the same forwarding fields over HTTP/1.1 and over HTTP/2."""

from __future__ import annotations

import base64
from types import SimpleNamespace
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ugate_core import DialError, StreamMeta
from ugate_http.forwarding import (
    ClientForwarding,
    challenge,
    check_credentials,
    dial_failure,
    loop_refusal,
    request_fields,
    via_entry,
)
from ugate_http.h1 import Request, RequestParser
from ugate_http.h2msg import parse_request
from ugate_http.h2server import H2Front
from ugate_http.proxy import _DROP, _Session
from ugate_http.rewrite import DIAL_STATUS

TOKEN = "ugate-test"
REMOTE = ("10.9.8.7", 4321)


def basic(user: str, pw: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


# ---------------------------------------------------------------------------- credentials
def test_credentials() -> None:
    users = {"alice": "s3cret"}
    meta = StreamMeta()
    assert check_credentials({}, None, meta, proxy=True) is None  # no users: nothing asked
    assert check_credentials(users, None, meta, proxy=True) == (
        407, "auth_required", "Proxy-Authorization (Basic) is required")
    assert check_credentials(users, None, meta, proxy=False) == (
        401, "auth_required", "Authorization (Basic) is required")
    assert check_credentials(users, "Bearer x", meta, proxy=False) == (
        401, "auth_failed", "Authorization is not Basic credentials")
    for value in (basic("alice", "nope"), basic("bob", "s3cret")):
        refusal = check_credentials(users, value, meta, proxy=True)
        assert refusal is not None and refusal[:2] == (407, "auth_failed")
    assert meta.user is None and "user_verified" not in meta.extra
    assert check_credentials(users, basic("alice", "s3cret"), meta, proxy=False) is None
    assert meta.user == "alice" and meta.extra["user_verified"] is True
    assert challenge("r", proxy=True) == ("Proxy-Authenticate", 'Basic realm="r"')
    assert challenge("r", proxy=False) == ("WWW-Authenticate", 'Basic realm="r"')


# ---------------------------------------------------------------------------- refusals
def test_dial_failure_and_loop() -> None:
    for reason, status in DIAL_STATUS.items():
        got = dial_failure(DialError(reason, "why"), "h:80")
        assert got == (status, "denied" if reason == "denied" else f"dial_{reason}",
                       f"cannot reach h:80: {reason}: why")
    assert dial_failure(DialError("insecure", "x"), "h:1")[:2] == (502, "dial_insecure")
    assert loop_refusal(TOKEN, "h:80") == (
        508, "loop", f"request came back to this gateway ({TOKEN}) on its way to h:80")


# ---------------------------------------------------------------------------- fields
def test_request_fields_h1() -> None:
    headers = (("Host", " svc.test "), ("Connection", "keep-alive, X-A"), ("X-A", "1"),
               ("Accept", "*/*"), ("Via", "1.0 other"), ("X-Forwarded-For", "10.0.0.1"),
               ("Content-Length", "0"), ("Expect", "100-Continue"), ("TE", "trailers"),
               ("Proxy-Authorization", "x"))
    f = request_fields(headers, None, token=TOKEN, via=via_entry("1.1", TOKEN),
                       drop=_DROP | {"connection", "x-a"}, connection=frozenset({"x-a"}),
                       client=ClientForwarding(REMOTE))
    assert (f.hosts, f.host, f.length_field, f.expect, f.expect_continue, f.loop) == (
        1, "svc.test", True, True, True, False)
    assert f.fields == [
        ("Host", "svc.test"), ("Accept", "*/*"),
        ("Forwarded", 'for=10.9.8.7;host="svc.test";proto=http'),
        ("X-Forwarded-For", "10.0.0.1, 10.9.8.7"), ("Via", f"1.0 other, 1.1 {TOKEN}")]
    f = request_fields((("Via", f"1.1 {TOKEN}"),), "h", token=TOKEN, via="v", drop=_DROP,
                       client=None)
    assert f.loop and f.fields == [("Host", "h"), ("Via", "v")]


def test_client_forwarding_keeps_the_last_value() -> None:
    c = ClientForwarding(None)
    assert c.element == "unknown"
    assert c.forwarded("a", "https") == 'for=unknown;host="a";proto=https'
    assert c.forwarded("a", "https") is c.forwarded("a", "https")
    assert ClientForwarding(("::1", 1)).forwarded("b") == 'for="[::1]";host="b";proto=http'


def as_lists(fields: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Fields as RFC 9110 lists (5.3): lines of one name combined in order, split on commas."""
    out: dict[str, list[str]] = {}
    for k, v in fields:
        out.setdefault(k.lower(), []).extend(e.strip() for e in v.split(","))
    return out


def h1_front(forwarded: bool) -> Any:
    """What ``_Session._fields`` uses of a session."""
    return SimpleNamespace(consumed="", _forwarded=None,
                           opts=SimpleNamespace(forwarded=forwarded),
                           state=SimpleNamespace(via=TOKEN),
                           stream=SimpleNamespace(meta=SimpleNamespace(remote=REMOTE)))


def h2_front(forwarded: bool) -> Any:
    """What ``H2Front._fields`` uses of a front."""
    return SimpleNamespace(opts=SimpleNamespace(forwarded=forwarded),
                           state=SimpleNamespace(via=TOKEN), _via=via_entry("2", TOKEN),
                           _client=ClientForwarding(REMOTE))


NAMES = ["via", "x-forwarded-for", "forwarded", "accept", "x-a", "user-agent"]
VALUES = ["a", "1.1 proxy-x", "1.0 other, 2 more", "10.0.0.1", "for=10.0.0.2", f"1.1 {TOKEN}"]


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES),
                          st.booleans()), max_size=8),
       st.sampled_from(["svc.test", "svc.test:8080", "[::1]:99"]), st.booleans())
@example([("via", "1.0 other", True), ("x-forwarded-for", "10.0.0.1", False),
          ("via", "1.1 proxy-x", False)], "svc.test", True)
def test_h1_and_h2_forward_the_same_fields(fields: list[tuple[str, str, bool]], authority: str,
                                           forwarded: bool) -> None:
    """One request, received over HTTP/1.1 and over HTTP/2 (each through its own parser and
    its front's ``_fields``): the same forwarding fields as RFC 9110 lists; only the
    received-protocol of our own Via entry differs ("1.1" / "2")."""
    lines = "".join(f"{k.title() if cap else k}: {v}\r\n" for k, v, cap in fields)
    data = f"GET /p HTTP/1.1\r\nHost: {authority}\r\n{lines}\r\n".encode()
    got = RequestParser().receive_whole(data)
    assert got is not None
    h1req = got[0]
    assert isinstance(h1req, Request)
    h2req = parse_request([(b":method", b"GET"), (b":scheme", b"http"),
                           (b":authority", authority.encode()), (b":path", b"/p"),
                           *((k.encode(), v.encode()) for k, v, _ in fields)],
                          default_port=80, max_bytes=65536)
    f1 = _Session._fields(h1_front(forwarded), h1req, None)
    f2 = H2Front._fields(h2_front(forwarded), h2req, "")
    assert f1.loop == f2.loop == any(TOKEN in v for k, v, _ in fields if k == "via")
    if f1.loop:
        return
    # the Via form decided once: one line, last
    assert [k.lower() for k, _ in f1.fields].count("via") == 1 and f1.fields[-1][0] == "Via"
    assert [k.lower() for k, _ in f2.fields].count("via") == 1 and f2.fields[-1][0] == "Via"
    l1, l2 = as_lists(f1.fields), as_lists(f2.fields)
    assert l1["via"].pop() == f"1.1 {TOKEN}" and l2["via"].pop() == f"2 {TOKEN}"
    assert l1 == l2
    assert l1["host"] == [authority]
    if forwarded:
        assert l1["x-forwarded-for"][-1] == REMOTE[0]
        assert l1["forwarded"][-1] == f'for={REMOTE[0]};host="{authority}";proto=http'
