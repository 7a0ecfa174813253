"""The URL path scheme: ``/.well-known/ugate/ws/<host>:<port>`` names the destination.

``<host>`` is a DNS name, an IPv4 address or an IPv6 address in brackets
(``/.well-known/ugate/ws/[fd00::1]:443``), percent-encoded or not; ``<port>`` is 1-65535. A
query (``?token=...``) follows as usual. The gateway dials ``<host>:<port>`` for the client
through discovery and the policy, like a SOCKS5 CONNECT.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, quote, unquote

from ugate_core import ConfigError, ProtocolError, format_hostport, parse_hostport

PREFIX = "/.well-known/ugate/ws"
_NAME = re.compile(r"[A-Za-z0-9._-]{1,253}")


def target_of(path: str) -> str:
    """The destination ``host:port`` of request target ``path``; :class:`ProtocolError`
    (reason ``bad_target``) when it names none."""
    p = path.split("?", 1)[0].split("#", 1)[0]
    if not p.startswith(PREFIX + "/"):
        raise ProtocolError(f"path {p[:200]!r} names no destination: use {PREFIX}/<host>:<port>",
                            "bad_target")
    text = unquote(p[len(PREFIX) + 1 :])
    try:
        host, port = parse_hostport(text, "path")
    except ConfigError as e:
        raise ProtocolError(f"path {p[:200]!r}: {e}", "bad_target") from None
    if not 1 <= port <= 65535:
        raise ProtocolError(f"path {p[:200]!r}: port {port} is not 1-65535", "bad_target")
    if ":" not in host and not _NAME.fullmatch(host):
        raise ProtocolError(f"path {p[:200]!r}: {host[:80]!r} is not a host name",
                            "bad_target")
    return format_hostport(host, port)


def path_for(target: str) -> str:
    """The path that names ``target`` (``host:port``)."""
    return f"{PREFIX}/{quote(target, safe='[]:')}"


def query_param(path: str, name: str) -> str | None:
    """The first value of query parameter ``name`` in ``path``, if any."""
    _, sep, q = path.partition("?")
    if not sep:
        return None
    vals = parse_qs(q.split("#", 1)[0], keep_blank_values=True).get(name)
    return vals[0] if vals else None
