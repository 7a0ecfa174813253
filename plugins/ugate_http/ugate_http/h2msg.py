"""Pure translations between HTTP/2 header lists and the proxy's HTTP/1.1 shapes (no I/O).

* :func:`parse_request`: an h2 request header list (as h2 delivers it: bytes, validated for
  RFC 9113 8.2.1 by h2) → :class:`H2Request`, with the checks a proxy that speaks HTTP/1.1
  upstream needs: method token, origin-form ``:path``, an authority we can route, bounds
  (431), cookie crumbs joined (RFC 9113 8.2.3), connection-specific fields dropped.
* :func:`request_from_h1`: the HTTP/1.1 request that asked for ``Upgrade: h2c`` → the same.
* :func:`response_headers`: an upstream's :class:`~ugate_http.h1.Response` → an h2 header list.
* :func:`response_from_h2`: an h2 response header list (from an h2 upstream) → ``Response``.
* :func:`h2c_settings`: the ``HTTP2-Settings`` of an ``Upgrade: h2c`` request, checked.
* :func:`preface_match`: does a byte prefix start the HTTP/2 connection preface?

Every error is an :class:`~ugate_http.h1.HttpError` with the status to answer.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import NamedTuple

from ugate_core import Sniff

from .forwarding import answer_fields
from .h1 import Framing, Headers, HttpError, Request, Response, field_values
from .h2conn import PREFACE, Header
from .rewrite import FRAMING, HOP_BY_HOP, REASONS, split_authority

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PATH = re.compile(rb"/[\x21-\x7e]*")
_PATH_STR = re.compile(r"/[\x21-\x7e]*")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")
_STATUS = re.compile(rb"[1-5][0-9][0-9]")
_LENGTH = re.compile(rb"[0-9]{1,18}")
_B64URL = re.compile(r"[A-Za-z0-9_\-]*={0,2}")
#: request fields the proxy consumes or that describe the h2 connection, never forwarded
REQUEST_DROP = HOP_BY_HOP | FRAMING | {"host", "expect", "http2-settings"}
_DROP_B = frozenset(x.encode() for x in REQUEST_DROP)
#: fields RFC 9113 8.2.2 forbids in HTTP/2
_CONNECTION_B = frozenset({b"connection", b"proxy-connection", b"keep-alive",
                           b"transfer-encoding", b"upgrade", b"http2-settings"})
#: per-field overhead in SETTINGS_MAX_HEADER_LIST_SIZE accounting (RFC 9113 6.5.2)
FIELD_OVERHEAD = 32
#: regular field names already checked: name → its ``str`` (forwarded), or None (a field
#: the proxy consumes or refuses: looked at by name); bounded
_NAMES: dict[bytes, str | None] = {}
#: (authority, default port) → (host, port) of authorities already split; bounded
_AUTHORITIES: dict[tuple[str, int], tuple[str, int]] = {}


class H2Request(NamedTuple):
    """A request as the proxy forwards it. ``headers`` are end-to-end fields (``str``, names
    lower-case, no ``Host``); ``length`` the ``content-length`` if sent. (A tuple: built
    per request, in a third of a frozen dataclass's time.)"""

    method: str
    scheme: str
    authority: str
    host: str
    port: int
    path: str
    headers: Headers = ()
    length: int | None = None
    expect_continue: bool = False


def _too_large(what: str, limit: int) -> HttpError:
    return HttpError(f"request header {what}: more than {limit} allowed", "header_too_large",
                     431)


def parse_request(
    raw: list[Header] | tuple[Header, ...],
    *,
    default_port: int,
    max_bytes: int,
    max_fields: int = 256,
) -> H2Request:
    """Check an h2 request head and turn it into an :class:`H2Request` (HttpError 400/431)."""
    method: bytes | None = None
    scheme: bytes | None = None
    authority: bytes | None = None
    path: bytes | None = None
    m: bytes | None
    host: bytes | None = None
    length: int | None = None
    expect = False
    cookies: list[str] = []
    out: list[tuple[str, str]] = []
    size = 0
    if len(raw) > max_fields:
        raise _too_large(f"fields: {len(raw)}", max_fields)
    names = _NAMES
    for name, value in raw:
        size += len(name) + len(value) + FIELD_OVERHEAD
        if name[:1] == b":":
            if name == b":method":
                m, method = method, value
            elif name == b":scheme":
                m, scheme = scheme, value
            elif name == b":authority":
                m, authority = authority, value
            elif name == b":path":
                m, path = path, value
            else:
                raise HttpError(f"pseudo-header {name[:40]!r} is not allowed in a request")
            if m is not None:
                raise HttpError(f"duplicate pseudo-header {name.decode('latin-1')}")
            if out or cookies or host is not None or length is not None or expect:
                raise HttpError(f"pseudo-header {name.decode('latin-1')} after a regular field")
            continue
        if name in names:
            key = names[name]
        else:
            if _TOKEN.fullmatch(name) is None:
                raise HttpError(f"bad field name {name[:40]!r}: not a lower-case token")
            key = None if name in _DROP_B or name == b"cookie" else name.decode("ascii")
            if len(names) >= 4096:
                names.clear()
            names[name] = key
        if _BAD_VALUE.search(value) is not None:
            raise HttpError(f"field {name.decode('latin-1')}: value has CR, LF or NUL")
        if key is not None:
            out.append((key, value.decode("latin-1")))
            continue
        if name == b"cookie":
            cookies.append(value.decode("latin-1"))
        elif name == b"host":
            if host is not None:
                raise HttpError("more than one host field")
            host = value
        elif name == b"content-length":
            if _LENGTH.fullmatch(value) is None or (length is not None
                                                     and int(value) != length):
                raise HttpError(f"bad content-length {value[:40]!r}")
            length = int(value)
        elif name == b"expect":
            expect = expect or b"100-continue" in value.lower()
        elif name == b"te":
            if value.strip().lower() != b"trailers":
                raise HttpError(f"te {value[:40]!r}: only 'trailers' is allowed in HTTP/2")
        elif name in _CONNECTION_B:
            raise HttpError(f"connection-specific field {name.decode('latin-1')} in HTTP/2")
    if size > max_bytes:
        raise _too_large(f"block: {size} bytes", max_bytes)
    if method is None:
        raise HttpError("missing :method")
    m_str = method.decode("latin-1")
    if _METHOD.fullmatch(m_str) is None:
        raise HttpError(f"bad :method {m_str[:40]!r}")
    if m_str == "CONNECT":
        raise HttpError("CONNECT is not proxied over HTTP/2 by the http listener (HBONE "
                        "serves HTTP/2 CONNECT)", "method_not_allowed", 405)
    if scheme is None or path is None:
        raise HttpError(f"missing {':scheme' if scheme is None else ':path'}")
    s_str = scheme.decode("latin-1").lower()
    if s_str not in ("http", "https"):
        raise HttpError(f":scheme {s_str[:20]!r} is not http or https")
    if _PATH.fullmatch(path) is None and not (path == b"*" and m_str == "OPTIONS"):
        raise HttpError(f"bad :path {path[:100]!r}: not an origin-form target")
    if authority is None:
        authority = host
    if authority is None:
        raise HttpError("missing :authority (and host)")
    a_str = authority.decode("latin-1")
    if "@" in a_str:
        raise HttpError(f"bad :authority {a_str[:100]!r}: user info is not allowed")
    hp = _AUTHORITIES.get((a_str, default_port))
    if hp is None:
        hp = split_authority(a_str, default_port)
        if len(_AUTHORITIES) >= 1024:
            _AUTHORITIES.clear()
        _AUTHORITIES[(a_str, default_port)] = hp
    h, port = hp
    if cookies:
        out.append(("cookie", "; ".join(cookies)))
    return H2Request(m_str, s_str, a_str, h, port, path.decode("ascii"), tuple(out), length,
                     expect)


def request_from_h1(req: Request, *, default_port: int) -> H2Request:
    """The HTTP/1.1 request that carried ``Upgrade: h2c`` as stream 1 of the new connection."""
    hosts = [v.strip() for k, v in req.headers if k.lower() == "host"]
    if len(hosts) != 1:
        raise HttpError("missing Host field" if not hosts else f"{len(hosts)} Host fields")
    if _PATH_STR.fullmatch(req.target) is None:
        raise HttpError(f"bad request target {req.target[:100]!r} for an h2c upgrade")
    h, port = split_authority(hosts[0], default_port)
    drop = REQUEST_DROP | req.connection
    out = tuple((k.lower(), v) for k, v in req.headers if k.lower() not in drop)
    return H2Request(method=req.method, scheme="http", authority=hosts[0], host=h, port=port,
                     path=req.target, headers=out, length=None,
                     expect_continue=False)


def h2c_settings(req: Request) -> bytes | None:
    """For a request asking for ``Upgrade: h2c`` (RFC 7540 3.2) with exactly one valid
    ``HTTP2-Settings``: that value, padded for base64 decoding. ``None`` otherwise: then the
    server must not upgrade (and answers over HTTP/1.1)."""
    if "upgrade" not in req.connection or "http2-settings" not in req.connection:
        return None
    if "h2c" not in (t.lower() for t in field_values(req.headers, "upgrade")):
        return None
    values = [v.strip() for k, v in req.headers if k.lower() == "http2-settings"]
    if len(values) != 1 or _B64URL.fullmatch(values[0]) is None:
        return None
    bare = values[0].rstrip("=")
    padded = bare + "=" * (-len(bare) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded.encode("ascii"))
    except (binascii.Error, ValueError):
        return None
    return padded.encode("ascii") if len(raw) % 6 == 0 else None


def response_headers(head: Response, method: str) -> list[Header]:
    """The h2 header list for an upstream's response head (``forwarding.answer_fields``,
    names lower-cased)."""
    fields, _ = answer_fields(head, method, lower=True)
    out: list[Header] = [(b":status", str(head.status).encode())]
    out += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in fields]
    return out


def trailer_headers(trailers: Headers) -> list[Header]:
    drop = HOP_BY_HOP | FRAMING
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in trailers
            if k.lower() not in drop and not k.startswith(":")]


def response_from_h2(raw: list[Header], method: str, ended: bool) -> Response:
    """An h2 upstream's response head as the proxy's ``Response`` (HttpError 502 if bad).
    ``ended``: the head carried END_STREAM (no body)."""
    status: int | None = None
    fields: list[tuple[str, str]] = []
    length: int | None = None
    for name, value in raw:
        if name == b":status":
            if status is not None or _STATUS.fullmatch(value) is None:
                raise HttpError(f"upstream :status {value[:20]!r} is not valid", "bad_response",
                                502)
            status = int(value)
        elif name[:1] == b":":
            raise HttpError(f"upstream sent pseudo-header {name[:40]!r}", "bad_response", 502)
        else:
            if name == b"content-length":
                if _LENGTH.fullmatch(value) is None:
                    raise HttpError(f"upstream content-length {value[:40]!r}", "bad_response",
                                    502)
                length = int(value)
            fields.append((name.decode("latin-1"), value.decode("latin-1")))
    if status is None:
        raise HttpError("upstream response without :status", "bad_response", 502)
    if ended or method == "HEAD" or status in (204, 304):
        framing, n = Framing.NONE, 0
    elif length is not None:
        framing, n = (Framing.LENGTH, length) if length else (Framing.NONE, 0)
    else:
        framing, n = Framing.CHUNKED, 0
    return Response(status=status, reason=REASONS.get(status, ""), headers=tuple(fields),
                    version="2", framing=framing, length=n)


def preface_match(prefix: bytes) -> Sniff:
    """MATCH once ``prefix`` holds the whole client preface, NEED_MORE on a proper prefix of
    it, NO otherwise."""
    if prefix.startswith(PREFACE):
        return Sniff.MATCH
    return Sniff.NEED_MORE if PREFACE.startswith(prefix) else Sniff.NO
