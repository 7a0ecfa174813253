"""Checks of the header lists a peer sends (RFC 9113 8.2 and 8.3). A list that fails is a
malformed message: the codec answers with a stream error, never a connection error.

Headers we build ourselves are not checked again (their builders know what they build).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

Header = tuple[bytes, bytes]

#: RFC 9113 8.2.2: these belong to HTTP/1.1 connections and make an HTTP/2 message malformed
CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection",
                                 b"transfer-encoding", b"upgrade"})
REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":protocol"})
RESPONSE_PSEUDO = frozenset({b":status"})
NO_PSEUDO: frozenset[bytes] = frozenset()

# RFC 9113 8.2.1: a name holds no 0x00-0x20, no uppercase 0x41-0x5a, no 0x7f-0xff
_NAME_CHARS = bytes(c for c in range(256) if 0x20 < c < 0x41 or 0x5A < c < 0x7F)
# ... and a value no NUL, CR or LF, and no whitespace at either end
_BAD_VALUE = re.compile(rb"[\0\r\n]|\A[ \t]|[ \t]\Z").search
_STATUS = re.compile(rb"[1-9][0-9][0-9]").fullmatch

_good_names: set[bytes] = set()  # names already found valid (bounded below)


def _name_error(name: bytes) -> str | None:
    if name in _good_names:
        return None
    if not name or name.translate(None, _NAME_CHARS):
        return f"invalid header name {name!r}"
    if name in CONNECTION_SPECIFIC:
        return f"connection-specific header {name.decode()!r}"
    if len(_good_names) > 2048:
        _good_names.clear()
    _good_names.add(name)
    return None


def check_fields(headers: Sequence[Header], allowed: frozenset[bytes],
                 pseudo: dict[bytes, bytes]) -> str | None:
    """Why ``headers`` is malformed, or None. Pseudo-headers (only those in ``allowed``, each
    once, before every regular header) are stored in ``pseudo``."""
    regular = False
    for name, value in headers:
        if name[:1] == b":":
            if regular:
                return f"pseudo-header {name!r} after a regular header"
            if name not in allowed:
                return f"pseudo-header {name!r} not allowed here"
            if name in pseudo:
                return f"pseudo-header {name!r} repeated"
            pseudo[name] = value
        else:
            regular = True
            why = _name_error(name)
            if why is not None:
                return why
            if name == b"te" and value != b"trailers":
                return f"header te: {value!r} (only 'trailers' is allowed)"
        if value and _BAD_VALUE(value) is not None:
            return f"invalid value of header {name!r}"
    return None


def check_request(headers: Sequence[Header], extended_connect: bool) -> str | None:
    """Why a request's header list is malformed, or None (RFC 9113 8.3.1, 8.5; RFC 8441)."""
    p: dict[bytes, bytes] = {}
    why = check_fields(headers, REQUEST_PSEUDO, p)
    if why is not None:
        return why
    method = p.get(b":method")
    if not method:
        return "request without :method"
    if b":protocol" in p:
        if not extended_connect or method != b"CONNECT":
            return ":protocol without an extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL)"
        if not (p.get(b":scheme") and p.get(b":path") and p.get(b":authority")):
            return "extended CONNECT without :scheme, :path and :authority"
    elif method == b"CONNECT":
        if b":scheme" in p or b":path" in p:
            return "CONNECT with :scheme or :path"
        if not p.get(b":authority"):
            return "CONNECT without :authority"
    elif not p.get(b":scheme") or not p.get(b":path"):
        return "request without :scheme or :path"
    return None


def check_response(headers: Sequence[Header]) -> str | None:
    """Why a response's header list is malformed, or None (RFC 9113 8.3.2)."""
    p: dict[bytes, bytes] = {}
    why = check_fields(headers, RESPONSE_PSEUDO, p)
    if why is not None:
        return why
    status = p.get(b":status")
    if status is None or _STATUS(status) is None:
        return f"response :status {status!r} is not a 3-digit code"
    return None


def check_trailers(headers: Sequence[Header]) -> str | None:
    """Why a trailer section is malformed, or None: no pseudo-headers at all."""
    return check_fields(headers, NO_PSEUDO, {})
