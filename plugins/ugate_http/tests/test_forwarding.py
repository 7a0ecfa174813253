"""The forwarding rules (forwarding.py) without sockets, and the two fronts' use of them: the
same request gets the same forwarding fields over HTTP/1.1 and over HTTP/2."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ugate_core import ConfigError, DialError, ExpectedIdentity, Gateway, StreamMeta
from ugate_core.certs import anchor_pem
from ugate_core.testing import StartGateway, require_peer, run
from ugate_http.forwarding import (
    ClientForwarding,
    challenge,
    check_credentials,
    dial_failure,
    loop_refusal,
    proven_identity,
    request_fields,
    via_entry,
)
from ugate_http.h1 import Request, RequestParser
from ugate_http.h1front import REQUEST_DROP, H1Front
from ugate_http.h2front import H2Front
from ugate_http.h2msg import parse_request
from ugate_http.options import parse_options
from ugate_http.rewrite import DIAL_STATUS

if TYPE_CHECKING:
    from conftest import Origin  # type: ignore[import-not-found]

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
                       drop=REQUEST_DROP | {"connection", "x-a"}, connection=frozenset({"x-a"}),
                       client=ClientForwarding(REMOTE))
    assert (f.hosts, f.host, f.length_field, f.expect, f.expect_continue, f.loop) == (
        1, "svc.test", True, True, True, False)
    assert f.fields == [
        ("Host", "svc.test"), ("Accept", "*/*"),
        ("Forwarded", 'for=10.9.8.7;host="svc.test";proto=http'),
        ("X-Forwarded-For", "10.0.0.1, 10.9.8.7"), ("Via", f"1.0 other, 1.1 {TOKEN}")]
    f = request_fields((("Via", f"1.1 {TOKEN}"),), "h", token=TOKEN, via="v", drop=REQUEST_DROP,
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


def h1_front(forwarded: bool, scheme: str = "http") -> Any:
    """What ``H1Front._fields`` uses of a session."""
    return SimpleNamespace(consumed="", _forwarded=None, scheme=scheme,
                           opts=SimpleNamespace(forwarded=forwarded),
                           state=SimpleNamespace(via=TOKEN),
                           stream=SimpleNamespace(meta=SimpleNamespace(remote=REMOTE)))


def h2_front(forwarded: bool, scheme: str = "http") -> Any:
    """What ``H2Front._fields`` uses of a front."""
    return SimpleNamespace(opts=SimpleNamespace(forwarded=forwarded),
                           state=SimpleNamespace(via=TOKEN), _via=via_entry("2", TOKEN),
                           _client=ClientForwarding(REMOTE, scheme))


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
    f1 = H1Front._fields(h1_front(forwarded), h1req, None)
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


@settings(max_examples=100)
@given(st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES),
                          st.booleans()), max_size=6),
       st.sampled_from(["svc.test", "svc.test:8443", "[::1]:99"]),
       st.sampled_from(["http", "https"]))
@example([("forwarded", "for=10.0.0.2", False)], "svc.test", "https")
def test_forwarded_proto_is_how_the_client_came(fields: list[tuple[str, str, bool]],
                                                authority: str, scheme: str) -> None:
    """``Forwarded: proto=`` says how the client reached this gateway (``https`` through the
    TLS front), over HTTP/1.1 as over HTTP/2, after the client's own elements."""
    lines = "".join(f"{k.title() if cap else k}: {v}\r\n" for k, v, cap in fields)
    got = RequestParser().receive_whole(
        f"GET /p HTTP/1.1\r\nHost: {authority}\r\n{lines}\r\n".encode())
    assert got is not None and isinstance(got[0], Request)
    h2req = parse_request([(b":method", b"GET"), (b":scheme", scheme.encode()),
                           (b":authority", authority.encode()), (b":path", b"/p"),
                           *((k.encode(), v.encode()) for k, v, _ in fields)],
                          default_port=80, max_bytes=65536)
    f1 = H1Front._fields(h1_front(True, scheme), got[0], None)
    f2 = H2Front._fields(h2_front(True, scheme), h2req, "")
    if f1.loop:
        assert f2.loop
        return
    mine = f'for={REMOTE[0]};host="{authority}";proto={scheme}'
    l1, l2 = as_lists(f1.fields), as_lists(f2.fields)
    clients = [v.strip() for k, v, _ in fields if k == "forwarded" for v in v.split(",")]
    assert l1["forwarded"] == l2["forwarded"] == [*clients, mine]
    assert [v for k, v in f1.fields if k == "Forwarded"][-1] == mine


async def test_forwarded_proto_through_the_tls_front(start_gateway: StartGateway,
                                                     origin: Origin, tmp_path: Path) -> None:
    """Real fronts: HTTP/1.1 and HTTP/2 inside TLS say ``proto=https``, cleartext ones
    ``proto=http``, in the Forwarded element the origin gets."""
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.shared]
listen = "127.0.0.1:0"
protocols = ["*"]
mode = "auto"
[listeners.web]
listen = "127.0.0.1:0"
protocols = ["http"]
mode = "reverse"
[hosts."svc.test"]
endpoints = ["127.0.0.1:{origin.port}"]
[hosts."*.m"]
endpoints = ["127.0.0.1:{origin.port}"]
""")
    name = gw.identity.fqdns[0]
    port = gw.port("shared")
    anchor = tmp_path / "anchor.pem"
    anchor.write_bytes(anchor_pem())
    tls = ["--resolve", f"{name}:{port}:127.0.0.1", "--cacert", str(anchor)]
    for mode, url, proto in [
        ("--http1.1", f"https://{name}:{port}/a", "https"),
        ("--http2", f"https://{name}:{port}/b", "https"),
        ("--http1.1", f"http://127.0.0.1:{port}/c", "http"),
        ("--http2-prior-knowledge", f"http://127.0.0.1:{gw.port('web')}/d", "http"),
    ]:
        res = await run(require_peer("curl"), "-sS", "--noproxy", "*", "--max-time", "20",
                        mode, *tls, "-H", "Host: svc.test" if "127.0.0.1" in url else "X-A: 1",
                        url, timeout=30)
        path = url.rsplit("/", 1)[1]
        assert res.returncode == 0 and res.stdout == f"hello /{path}\n".encode(), res.stderr
        sent = origin.requests[-1][2]
        host = "svc.test" if "127.0.0.1" in url else f"{name}:{port}"
        assert sent["forwarded"] == f'for=127.0.0.1;host="{host}";proto={proto}', (mode, url)


def test_a_listed_mesh_identity_needs_no_password() -> None:
    mesh_id = "A" * 52
    ids = (ExpectedIdentity("id", mesh_id),
           ExpectedIdentity("spiffe", "spiffe://td.test/ns/a/sa/b"))
    users = {"alice": "s3cret"}
    meta = StreamMeta(peer_id=mesh_id.lower())
    assert proven_identity(ids, meta) == f"id:{mesh_id}"
    assert check_credentials(users, None, meta, proxy=False, identities=ids) is None
    assert meta.user is None  # who it is stays its identity, not a user name
    spiffe = StreamMeta(peer_id="B" * 52)
    spiffe.extra["spiffe"] = "spiffe://td.test/ns/a/sa/b"
    assert proven_identity(ids, spiffe) == "spiffe://td.test/ns/a/sa/b"
    other = StreamMeta(peer_id="C" * 52)
    assert proven_identity(ids, other) is None
    assert check_credentials(users, None, other, proxy=True, identities=ids) == (
        407, "auth_required", "Proxy-Authorization (Basic) is required")
    assert check_credentials({}, None, other, proxy=False, identities=ids) == (
        401, "auth_required",
        "a TLS client certificate of one of the listener's identities is required")
    assert check_credentials(users, basic("alice", "s3cret"), other, proxy=False,
                             identities=ids) is None
    assert other.user == "alice"


@pytest.mark.parametrize(("value", "error"), [
    (["spki_sha256:00ff"], "only 'id:<mesh ID>' and 'spiffe://<trust domain>/<path>'"),
    (["id:nope"], "'nope' is not a mesh ID"),
    ([1], "is not a list of strings"),
])
def test_identities_option_is_checked(value: list[Any], error: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(error)):
        parse_options({"identities": value}, "l")


async def test_client_certificate_of_a_listed_identity(start_gateway: StartGateway,
                                                       origin: Origin, tmp_path: Path) -> None:
    """Through the TLS front of an HTTPS listener: a client certificate whose mesh ID the
    listener lists passes without a password; another key's, or none, gets the 401 as
    before."""
    cfg = """
[admin]
listen = ""
[listeners.https]
listen = "127.0.0.1:0"
protocols = ["tls", "http"]
mode = "reverse"
users = {{ alice = "s3cret" }}
identities = [{ids}]
[hosts."*.m"]
endpoints = ["127.0.0.1:{port}"]
"""
    client = await start_gateway(cfg.format(ids="", port=origin.port))
    stranger = await start_gateway(cfg.format(ids="", port=origin.port))
    gw = await start_gateway(cfg.format(ids=f'"id:{client.identity.id}"', port=origin.port))
    name = gw.identity.fqdns[0]
    port = gw.port("https")
    (tmp_path / "anchor.pem").write_bytes(anchor_pem())
    for who in (client, stranger):
        (tmp_path / f"{who.identity.id}.crt").write_bytes(who.identity.cert_pem())
        (tmp_path / f"{who.identity.id}.key").write_bytes(who.identity.private_key_pem())

    async def get(*args: str) -> tuple[int, bytes]:
        res = await run(require_peer("curl"), "-sS", "--noproxy", "*", "--max-time", "20",
                        "--resolve", f"{name}:{port}:127.0.0.1", "--cacert",
                        str(tmp_path / "anchor.pem"), "-w", "\n%{http_code}", *args,
                        f"https://{name}:{port}/x", timeout=30)
        assert res.returncode == 0, res.stderr
        body, _, code = res.stdout.rpartition(b"\n")
        return int(code), body

    def cert(who: Gateway) -> list[str]:
        return ["--cert", str(tmp_path / f"{who.identity.id}.crt"), "--key",
                str(tmp_path / f"{who.identity.id}.key")]

    for version in ("--http1.1", "--http2"):
        assert await get(version, *cert(client)) == (200, b"hello /x\n")
        assert await get(version, *cert(stranger)) == (
            401, b"Authorization (Basic) is required\n")
        assert await get(version) == (401, b"Authorization (Basic) is required\n")
        assert await get(version, "-u", "alice:s3cret") == (200, b"hello /x\n")
    assert "authorization" not in origin.requests[0][2]
