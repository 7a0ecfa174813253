"""Forwarding rules, written once for both fronts (HTTP/1.1 ``proxy.py``, HTTP/2
``h2server.py``) and their lanes: pure functions, no I/O, testable without sockets.

* credentials: :func:`check_credentials` (Basic against the listener's ``users``);
* the fields sent upstream: :func:`request_fields` (hop-by-hop removal, ``Host``,
  ``Forwarded`` / ``X-Forwarded-For``, ``Via`` and loop detection);
* refusals: :func:`dial_failure`, :func:`loop_refusal` → (status, reason label, message).

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

from ugate_core import DialError, StreamMeta

from .rewrite import DIAL_STATUS, basic_credentials, forwarded_for

__all__ = [
    "ClientForwarding",
    "Found",
    "challenge",
    "check_credentials",
    "dial_failure",
    "loop_refusal",
    "request_fields",
    "via_entry",
]

#: (status, reason label, message) of a refusal
Refusal = tuple[int, str, str]


# ---------------------------------------------------------------------------- credentials
def challenge(realm: str, *, proxy: bool) -> tuple[str, str]:
    """The Basic challenge field of a 407 (``proxy``) or 401 answer."""
    return ("Proxy-Authenticate" if proxy else "WWW-Authenticate", f'Basic realm="{realm}"')


def check_credentials(users: Mapping[str, str], value: str | None, meta: StreamMeta, *,
                      proxy: bool) -> Refusal | None:
    """Check the Basic credentials ``value`` of ``Proxy-Authorization`` (``proxy``) or
    ``Authorization`` against ``users``: None if fine (or no users), else the refusal
    (407 / 401). A right password names the user: ``meta.user`` and
    ``meta.extra["user_verified"]`` (what ``[[rules]] user:<name>`` trusts)."""
    if not users:
        return None
    field = "Proxy-Authorization" if proxy else "Authorization"
    status = 407 if proxy else 401
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


# ---------------------------------------------------------------------------- fields
def via_entry(received: str, token: str) -> str:
    """This gateway's ``Via`` value for a request received over HTTP ``received``
    (``"1.1"`` / ``"2"``)."""
    return f"{received} {token}"


class ClientForwarding:
    """One client connection's ``Forwarded`` / ``X-Forwarded-For`` elements: the
    ``Forwarded`` value is kept for the last (host, proto) asked (clients repeat them)."""

    __slots__ = ("_key", "_value", "element", "remote")

    def __init__(self, remote: tuple[str, int] | None) -> None:
        self.remote = remote
        #: the X-Forwarded-For element for this client
        self.element = remote[0] if remote else "unknown"
        self._key: tuple[str, str] | None = None
        self._value = ""

    def forwarded(self, host: str, proto: str = "http") -> str:
        """The ``Forwarded`` element (RFC 7239) for this client asking ``host``."""
        key = self._key
        if key is None or key[0] != host or key[1] != proto:
            self._key = (host, proto)
            self._value = forwarded_for(self.remote, host, proto)
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
    proto: str = "http",
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
        f.fields.append(("Forwarded", client.forwarded(host, proto)))
        xff.append(client.element)
        f.fields.append(("X-Forwarded-For", ", ".join(xff)))
    if vias is not None:
        vias.append(via)
        via = ", ".join(vias)
    f.fields.append(("Via", via))
    return f
