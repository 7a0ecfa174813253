"""Sans-IO checks of what an HBONE client sends: the ``:authority`` and the request headers.

:func:`parse_authority` is strict (``host:port``, ``[v6]:port``; a name made of DNS labels, an
IPv4 or IPv6 literal; a port 1-65535), because the authority becomes a dial target.
:func:`parse_request` turns a decoded HTTP/2 header list into a :class:`ConnectRequest` or a
:class:`Refusal` (the status to answer and why); it never raises on client input.
"""

from __future__ import annotations

import functools
import ipaddress
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: headers read, logged and passed on to the next hop (W3C trace context, baggage, RFC 7239)
PASSED_HEADERS = ("baggage", "traceparent", "tracestate", "forwarded")
#: longest value of one passed-on header (all its fields joined)
MAX_PASSED_VALUE = 8192
#: longest authority: a bracketed IPv6 literal or a 253-byte name, ':', 5 digits
MAX_AUTHORITY = 253 + 7

_LABEL_CHARS = frozenset(string.ascii_letters + string.digits + "-_")


class AuthorityError(ValueError):
    """The authority is not ``host:port``; the message names the value and what is wrong."""


def _port(value: str, port_s: str) -> int:
    if not port_s:
        raise AuthorityError(f"authority {value!r} has no port")
    if len(port_s) > 5 or not all(c in string.digits for c in port_s):
        raise AuthorityError(f"authority {value!r}: port {port_s!r} is not a number")
    port = int(port_s)
    if not 1 <= port <= 65535:
        raise AuthorityError(f"authority {value!r}: port {port} is not a port (1-65535)")
    return port


def _name(value: str, host: str) -> str:
    name = host[:-1] if host.endswith(".") else host
    if not name:
        raise AuthorityError(f"authority {value!r} has no host")
    if len(name) > 253:
        raise AuthorityError(f"authority {value!r}: host name longer than 253 bytes")
    labels = name.split(".")
    for label in labels:
        if not 1 <= len(label) <= 63:
            raise AuthorityError(f"authority {value!r}: host label {label!r} is not 1-63 bytes")
        if not set(label) <= _LABEL_CHARS:
            raise AuthorityError(f"authority {value!r}: host {host!r} is not a DNS name or "
                                 "an IP address")
        if label[0] == "-" or label[-1] == "-":
            raise AuthorityError(f"authority {value!r}: host label {label!r} starts or ends "
                                 "with '-'")
    if labels[-1].isdigit():
        # '127.1', '1.2.3.999': IP-like but not an IPv4 literal; resolvers disagree on them
        raise AuthorityError(f"authority {value!r}: host {host!r} is neither an IPv4 address "
                             "nor a DNS name")
    return name.lower()


@functools.lru_cache(maxsize=4096)  # per tunnel; most authorities repeat (ipaddress is slow)
def parse_authority(value: str | bytes) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` → (host, port); the host lower-cased, IPv6 compressed.

    Raises :class:`AuthorityError` for anything else (no port, user info, a path, spaces,
    a zone id, a name that is not DNS labels, port 0).
    """
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise AuthorityError(f"authority {value[:64]!r} is not ASCII") from None
    if not value:
        raise AuthorityError("authority is empty")
    if len(value) > MAX_AUTHORITY:
        raise AuthorityError(f"authority {value[:64]!r}... is longer than {MAX_AUTHORITY} "
                             "bytes")
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise AuthorityError(f"authority {value!r}: missing ']'")
        literal = value[1:end]
        rest = value[end + 1:]
        if not rest.startswith(":"):
            raise AuthorityError(f"authority {value!r} has no port")
        port = _port(value, rest[1:])
        try:
            ip6 = ipaddress.IPv6Address(literal)
        except ValueError:
            raise AuthorityError(f"authority {value!r}: {literal!r} is not an IPv6 "
                                 "address") from None
        if ip6.scope_id is not None:
            raise AuthorityError(f"authority {value!r}: zone ids are not accepted")
        return str(ip6), port
    host, sep, port_s = value.rpartition(":")
    if not sep:
        raise AuthorityError(f"authority {value!r} has no port")
    if ":" in host:
        raise AuthorityError(f"authority {value!r}: IPv6 addresses need brackets, "
                             "[addr]:port")
    port = _port(value, port_s)
    if not host:
        raise AuthorityError(f"authority {value!r} has no host")
    try:
        return str(ipaddress.IPv4Address(host)), port
    except ValueError:
        pass
    return _name(value, host), port


def format_authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ------------------------------------------------------------------------------ requests
@dataclass(frozen=True, kw_only=True)
class ConnectRequest:
    """A tunnel request that passed every check."""

    method: str
    #: canonical ``host:port`` (``[v6]:port``)
    authority: str
    host: str
    port: int
    #: the :data:`PASSED_HEADERS` present, repeated fields joined with ``", "``
    passed: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, kw_only=True)
class Refusal:
    """A request to answer with ``status`` and close; ``reason`` is the rejection counter."""

    status: int
    reason: str
    detail: str


def _text(b: bytes | str) -> str:
    return b if isinstance(b, str) else b.decode("latin-1")


def parse_request(
    headers: Iterable[tuple[bytes | str, bytes | str]], *, methods: Sequence[str] = ("CONNECT",)
) -> ConnectRequest | Refusal:
    """Check a request's headers (already HTTP/2-validated by h2): the method must be one of
    ``methods``, ``:authority`` a valid ``host:port``. Never raises on client input."""
    method = ""
    authority: str | None = None
    passed: dict[str, list[str]] = {}
    for k, v in headers:
        name = _text(k).lower()
        if name == ":method":
            method = _text(v)
        elif name == ":authority":
            if authority is not None:
                return Refusal(status=400, reason="bad_request",
                               detail="more than one :authority")
            authority = _text(v)
        elif name in PASSED_HEADERS:
            passed.setdefault(name, []).append(_text(v).strip())
    if method not in methods:
        return Refusal(status=400, reason="bad_method",
                       detail=f"method {method[:32]!r} is not {' or '.join(methods)}")
    if authority is None:
        return Refusal(status=400, reason="bad_authority", detail="no :authority")
    try:
        host, port = parse_authority(authority)
    except AuthorityError as e:
        return Refusal(status=400, reason="bad_authority", detail=str(e))
    out: list[tuple[str, str]] = []
    for name in PASSED_HEADERS:
        if name in passed:
            value = ", ".join(x for x in passed[name] if x)
            if len(value) > MAX_PASSED_VALUE:
                return Refusal(status=400, reason="header_too_long",
                               detail=f"{name} is {len(value)} bytes (limit "
                                      f"{MAX_PASSED_VALUE})")
            if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
                return Refusal(status=400, reason="bad_header",
                               detail=f"{name} holds control characters")
            if value:
                out.append((name, value))
    return ConnectRequest(method=method, authority=format_authority(host, port), host=host,
                          port=port, passed=tuple(out))
