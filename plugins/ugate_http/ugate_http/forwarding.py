"""Forwarding rules, written once for both fronts (HTTP/1.1 ``h1front.py``, HTTP/2
``h2front.py``) and their lanes: pure functions, no I/O, testable without sockets.

* credentials: :func:`check_credentials` (a mesh identity the client's TLS certificate
  proves, from the listener's ``identities``, or Basic against its ``users``);
* the fields sent upstream: :func:`request_fields` (hop-by-hop removal, ``Host``,
  ``Forwarded`` / ``X-Forwarded-For``, ``Via`` and loop detection);
* refusals: :func:`dial_failure`, :func:`loop_refusal` → (status, reason label, message);
* answers: :func:`error_answer` (a refusal's fields and body, :func:`error_response` its
  HTTP/1.1 bytes) and :func:`answer_fields` (the head passed on for an upstream's response,
  :func:`response_head` its HTTP/1.1 bytes); the HTTP/2 front encodes the same fields as a
  header list.

``Via`` (RFC 9110 7.6.3), decided once, for both versions and every lane: one ``Via`` field
line, last, that holds the client's ``Via`` values in the order they came followed by this
gateway's entry ``<received-protocol> <token>`` (``1.1`` for an HTTP/1.1 client, ``2`` for
HTTP/2), as ``X-Forwarded-For`` is made. As an RFC 9110 list that equals the client's lines
plus a line of ours, and one line survives upstreams that keep only the last line of a name.
The raw lane (``raw.py``) only takes requests without ``Via``: it appends our line to the
client's bytes, which is the same form. A request whose ``Via`` already holds our token came
back to us: :attr:`Found.loop`, answered 508.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping

from ugate_core import DialError, ExpectedIdentity, StreamMeta

from .h1 import Framing, Request, Response, encode_head
from .rewrite import DIAL_STATUS, HOP_FRAMING, REASONS, basic_credentials, forwarded_for

__all__ = [
    "ClientForwarding",
    "Found",
    "answer_fields",
    "challenge",
    "check_credentials",
    "dial_failure",
    "error_answer",
    "error_response",
    "loop_refusal",
    "proven_identity",
    "request_fields",
    "response_head",
    "via_entry",
]

#: (status, reason label, message) of a refusal
Refusal = tuple[int, str, str]


# ---------------------------------------------------------------------------- credentials
def challenge(realm: str, *, proxy: bool) -> tuple[str, str]:
    """The Basic challenge field of a 407 (``proxy``) or 401 answer."""
    return ("Proxy-Authenticate" if proxy else "WWW-Authenticate", f'Basic realm="{realm}"')


def proven_identity(identities: Iterable[ExpectedIdentity], meta: StreamMeta) -> str | None:
    """The listed identity the client's verified certificate proves (``id:<mesh ID>`` from
    ``meta.peer_id``, a SPIFFE ID from ``meta.extra["spiffe"]``), or None."""
    peer_id = meta.peer_id
    spiffe = meta.extra.get("spiffe") if peer_id is not None else None
    for e in identities:
        if e.kind == "id" and peer_id is not None and peer_id.upper() == e.value:
            return f"id:{e.value}"
        if e.kind == "spiffe" and isinstance(spiffe, str) and spiffe == e.value:
            return spiffe
    return None


def check_credentials(users: Mapping[str, str], value: str | None, meta: StreamMeta, *,
                      proxy: bool, identities: Iterable[ExpectedIdentity] = ()
                      ) -> Refusal | None:
    """Authenticate a request on a listener with ``users`` (Basic passwords) or
    ``identities`` (mesh identities): None if fine (or neither is set), else the refusal
    (407 for a proxy request, else 401).

    A client whose TLS client certificate proves one of ``identities`` (see
    :func:`proven_identity`) needs no password; who it is stays ``meta.peer_id`` /
    ``extra["spiffe"]``, what rules name as ``id:`` / ``spiffe://``. Else the Basic
    credentials ``value`` of ``Proxy-Authorization`` (``proxy``) or ``Authorization`` are
    checked against ``users``: a right password names the user (``meta.user`` and
    ``meta.extra["user_verified"]``, what ``[[rules]] user:<name>`` trusts)."""
    if identities and proven_identity(identities, meta) is not None:
        return None
    status = 407 if proxy else 401
    if not users:
        if not identities:
            return None
        return status, "auth_required", "a TLS client certificate of one of the listener's " \
            "identities is required"
    field = "Proxy-Authorization" if proxy else "Authorization"
    if value is None:
        return status, "auth_required", f"{field} (Basic) is required"
    creds = basic_credentials(value)
    if creds is None:
        return status, "auth_failed", f"{field} is not Basic credentials"
    user, pw = creds
    expected = users.get(user)
    ok = hmac.compare_digest(pw.encode(), (expected if expected is not None else pw + "x")
                             .encode())
    if expected is None or not ok:
        return status, "auth_failed", f"wrong user name or password (user {user[:64]!r})"
    meta.user = user
    meta.extra["user_verified"] = True  # a password: [[rules]] user:<name>
    return None


# ---------------------------------------------------------------------------- refusals
def dial_failure(e: DialError, address: str) -> Refusal:
    """What the client is answered when dialing ``address`` failed."""
    status = DIAL_STATUS.get(e.reason, 502)
    reason = "denied" if e.reason == "denied" else f"dial_{e.reason}"
    return status, reason, f"cannot reach {address}: {e.reason}: {e}"


def loop_refusal(token: str, address: str) -> Refusal:
    """The answer to a request that carries our own ``Via`` token."""
    return 508, "loop", f"request came back to this gateway ({token}) on its way to {address}"


# ---------------------------------------------------------------------------- answers
def error_answer(status: int, message: str, extra: list[tuple[str, str]] | None = None
                 ) -> tuple[list[tuple[str, str]], bytes]:
    """A refusal's answer, the same over both versions: plain text that says why, and its
    fields (``extra``: a challenge, ``Allow``; values made safe for a field line)."""
    body = (message.rstrip("\n") + "\n").encode("utf-8", "replace")
    fields = [("Content-Type", "text/plain; charset=utf-8"),
              ("Content-Length", str(len(body)))]
    for k, v in extra or ():
        fields.append((k, v.replace("\r", " ").replace("\n", " ")))
    return fields, body


def error_response(status: int, message: str, extra: list[tuple[str, str]] | None = None,
                   close: bool = True) -> bytes:
    """:func:`error_answer` as HTTP/1.1 bytes (``close``: the connection ends after it)."""
    fields, body = error_answer(status, message, extra)
    if close:
        fields.append(("Connection", "close"))
    return encode_head(f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", fields) + body


def answer_fields(head: Response, method: str, *, lower: bool = False
                  ) -> tuple[list[tuple[str, str]], bool]:
    """The fields of the answer passed on for an upstream's final response ``head`` to a
    ``method`` request, whatever either side's HTTP version: its end-to-end fields
    (hop-by-hop, framing and ``Connection``-named ones removed, RFC 9110 7.6.1; ``lower``:
    names lower-cased, as HTTP/2 sends them) and a ``Content-Length`` where it describes the
    body passed on — its length; the upstream's for a ``HEAD`` or 304 answer; 0 for a
    bodyless answer that may carry one. Second: True when the body's length is unknown
    (chunked or close-delimited upstream): the front frames it (HTTP/1.1 chunked, HTTP/2 DATA
    frames)."""
    tokens = head.connection
    drop = HOP_FRAMING | tokens if tokens else HOP_FRAMING
    if lower:
        fields = [(low, v) for k, v in head.headers if (low := k.lower()) not in drop]
        length = "content-length"
    else:
        fields = [(k, v) for k, v in head.headers if k.lower() not in drop]
        length = "Content-Length"
    framing = head.framing
    if framing is Framing.LENGTH:
        fields.append((length, str(head.length)))
    elif framing is Framing.NONE:
        if method == "HEAD" or head.status == 304:
            cl = head.get("content-length")
            if cl is not None:
                fields.append((length, cl.strip()))
        elif head.status != 204:
            fields.append((length, "0"))
    else:
        return fields, True
    return fields, False


def response_head(req: Request, head: Response) -> tuple[bytes, bool, bool]:
    """:func:`answer_fields` as the HTTP/1.1 head for the client of ``req``: (bytes, re-chunk
    the body?, keep the client connection?)."""
    keep = req.keep_alive
    fields, unknown = answer_fields(head, req.method)
    chunked = False
    if unknown:
        if req.version == "1.1":
            fields.append(("Transfer-Encoding", "chunked"))
            chunked = True
        else:
            keep = False  # an HTTP/1.0 client reads to the end of the connection
    if not keep:
        fields.append(("Connection", "close"))
    return encode_head(f"HTTP/1.1 {head.status} {head.reason}", fields), chunked, keep


# ---------------------------------------------------------------------------- fields
def via_entry(received: str, token: str) -> str:
    """This gateway's ``Via`` value for a request received over HTTP ``received``
    (``"1.1"`` / ``"2"``)."""
    return f"{received} {token}"


class ClientForwarding:
    """One client connection's ``Forwarded`` / ``X-Forwarded-For`` elements. ``proto`` is how
    the client reached us (``https`` through the TLS front, else ``http``), the same for
    every request of the connection whatever its HTTP version; the ``Forwarded`` value is
    kept for the last host asked (clients repeat it)."""

    __slots__ = ("_key", "_value", "element", "proto", "remote")

    def __init__(self, remote: tuple[str, int] | None, proto: str = "http") -> None:
        self.remote = remote
        self.proto = proto
        #: the X-Forwarded-For element for this client
        self.element = remote[0] if remote else "unknown"
        self._key: tuple[str, str] | None = None
        self._value = ""

    def forwarded(self, host: str, proto: str | None = None) -> str:
        """The ``Forwarded`` element (RFC 7239) for this client asking ``host`` (``proto``:
        other than the connection's)."""
        key = (host, proto or self.proto)
        if self._key != key:
            self._key = key
            self._value = forwarded_for(self.remote, host, key[1])
        return self._value


class Found:
    """The fields to send upstream and what :func:`request_fields` found in a request's
    fields that the front acts on."""

    __slots__ = ("expect", "expect_continue", "fields", "host", "hosts", "length_field", "loop",
                 "upgrade", "upgrade_field")

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self.fields = fields
        self.host = ""  # the (last) Host field's value
        self.hosts = 0  # how many Host fields
        self.length_field = False  # a Content-Length field (0: the request has no body)
        self.expect = False  # an Expect field
        self.expect_continue = False  # ... asking for 100-continue
        self.upgrade_field = False  # an Upgrade field
        self.upgrade: str | None = None  # ... to pass through (not h2c)
        self.loop = False  # our own Via token: the request came back to us


def request_fields(
    headers: Iterable[tuple[str, str]],
    host: str | None,
    *,
    token: str,
    via: str,
    drop: frozenset[str] | set[str],
    connection: frozenset[str] = frozenset(),
    client: ClientForwarding | None,
    lower: bool = True,
) -> Found:
    """One pass over a request's fields: what to send upstream, with ``Host``, ``Forwarded``
    and ``X-Forwarded-For`` (if ``client``: the listener's ``forwarded``) and ``Via`` (our
    entry ``via``) added, and what the front acts on.

    ``drop``: lower-case names not forwarded as they came (hop-by-hop, framing, ``Host``,
    ``Expect``, the ``connection`` tokens, a credential field this gateway used up); of
    those, ``Host``, ``Content-Length``, ``Expect`` and ``Upgrade`` are noted in the result.
    ``host`` None: the request's own ``Host`` (``Found.hosts`` says how many it has).
    ``lower``: the names may be in any case (HTTP/1.1); HTTP/2 names are lower-case already.
    The client's ``X-Forwarded-For`` values and ours go in one line, and so do the client's
    ``Via`` values and ours (``via``): the module's docstring says why."""
    f = Found([("Host", host or "")])
    xff: list[str] = []
    vias: list[str] | None = None  # (made only for a request that has Via)
    for k, v in headers:
        low = k.lower() if lower else k
        if low in drop:
            if low == "host":
                f.hosts += 1
                f.host = v.strip()
            elif low == "content-length":
                f.length_field = True
            elif low == "expect":
                f.expect = True
                f.expect_continue = f.expect_continue or "100-continue" in v.lower()
            elif low == "upgrade":
                f.upgrade_field = True
                if "upgrade" in connection and "h2c" not in v.lower():
                    f.upgrade = v  # h2c is ours to take or ignore
            continue
        if low == "via":
            if token in v:
                f.loop = True
            elif vias is None:
                vias = [v]
            else:
                vias.append(v)
            continue
        if low == "x-forwarded-for" and client is not None:
            xff.append(v)
            continue
        f.fields.append((k, v))
    if host is None:
        host = f.host
        f.fields[0] = ("Host", host)
    if client is not None:
        f.fields.append(("Forwarded", client.forwarded(host)))
        xff.append(client.element)
        f.fields.append(("X-Forwarded-For", ", ".join(xff)))
    if vias is not None:
        vias.append(via)
        via = ", ".join(vias)
    f.fields.append(("Via", via))
    return f
