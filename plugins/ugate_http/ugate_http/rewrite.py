"""Pure helpers a proxy needs between parsing and sending: targets, authorities, hop-by-hop
fields, ``Forwarded`` / ``X-Forwarded-For`` elements, Basic credentials (the rules that use
them, answers included, are ``forwarding.py``'s)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re

from ugate_core import format_hostport

from .h1 import Headers, HttpError, connection_tokens

#: fields that describe one connection, never forwarded (RFC 9110 7.6.1, plus legacy ones)
HOP_BY_HOP = frozenset({
    "connection", "proxy-connection", "keep-alive", "proxy-authorization",
    "proxy-authenticate", "te", "trailer", "upgrade",
})
#: framing fields: the sender sets them from the body it actually sends
FRAMING = frozenset({"content-length", "transfer-encoding"})
#: both: what never passes a proxy as it came
HOP_FRAMING = HOP_BY_HOP | FRAMING

_AUTHORITY = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+)(?::([0-9]{0,5}))?")
_ABSOLUTE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)([^#]*)(#.*)?")

#: DialError.reason → status answered to the client
DIAL_STATUS = {
    "denied": 403, "no_route": 502, "unreachable": 502, "refused": 502, "timeout": 504,
    "bad_address": 400, "identity": 502, "no_dialer": 502,
}

REASONS = {
    100: "Continue", 101: "Switching Protocols", 200: "OK", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    407: "Proxy Authentication Required", 408: "Request Timeout",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout", 505: "HTTP Version Not Supported", 508: "Loop Detected",
}


def split_authority(authority: str, default_port: int | None) -> tuple[str, int]:
    """``host[:port]`` / ``[v6][:port]`` → (host without brackets, port); HttpError(400)."""
    m = _AUTHORITY.fullmatch(authority)
    if m is None:
        raise HttpError(f"bad authority {authority[:100]!r}: not host[:port]")
    host, port_s = m.group(1), m.group(2)
    if host.startswith("["):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise HttpError(f"bad authority {authority[:100]!r}: {host!r} is not an IPv6 "
                            "address") from None
    if not port_s:
        if default_port is None:
            raise HttpError(f"bad authority {authority[:100]!r}: a port is required")
        return host, default_port
    port = int(port_s)
    if not 1 <= port <= 65535:
        raise HttpError(f"bad authority {authority[:100]!r}: port {port} is not 1-65535")
    return host, port


def split_absolute(target: str) -> tuple[str, str, str]:
    """``scheme://authority/path?query`` → (lower-case scheme, authority, origin-form)."""
    m = _ABSOLUTE.fullmatch(target)
    if m is None:
        raise HttpError(f"bad request target {target[:100]!r}")
    scheme, authority, rest = m.group(1).lower(), m.group(2), m.group(3)
    if "@" in authority:
        raise HttpError(f"bad request target {target[:100]!r}: user info is not allowed")
    if not rest.startswith("/"):
        rest = "/" + rest
    return scheme, authority, rest


def address_of(host: str, port: int) -> str:
    return format_hostport(host, port)


def end_to_end(headers: Headers, *, keep: frozenset[str] = frozenset(),
               tokens: frozenset[str] | set[str] | None = None) -> list[tuple[str, str]]:
    """``headers`` without hop-by-hop and framing fields and without the fields the
    ``Connection`` header names (``tokens`` if the caller has them already; ``keep`` lists
    lower-case names to let through anyway)."""
    if tokens is None:
        tokens = connection_tokens(headers)
    drop = (HOP_FRAMING | tokens) - keep if tokens or keep else HOP_FRAMING
    return [(k, v) for k, v in headers if k.lower() not in drop]


def forwarded_for(remote: tuple[str, int] | None, host: str, proto: str = "http") -> str:
    """One ``Forwarded`` element (RFC 7239) for a client."""
    if remote is None:
        node = "unknown"
    elif ":" in remote[0]:
        node = f'"[{remote[0]}]"'
    else:
        node = remote[0]
    return f'for={node};host="{host}";proto={proto}'


def basic_credentials(value: str) -> tuple[str, str] | None:
    """``Basic base64(user:password)`` → (user, password); ``None`` if not that shape."""
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    text = raw.decode("utf-8", "replace")
    user, sep, pw = text.partition(":")
    return (user, pw) if sep else None


def peer(meta: object) -> str:
    """``host:port`` of a stream meta's remote end, for logs."""
    remote = getattr(meta, "remote", None)
    return f"{remote[0]}:{remote[1]}" if remote else "-"
