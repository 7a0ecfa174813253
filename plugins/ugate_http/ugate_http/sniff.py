"""Shared-port recognition: an HTTP/1.x request starts with a method token and a space."""

from __future__ import annotations

from ugate_core import Sniff

METHODS = tuple(
    m.encode() + b" "
    for m in ("GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE")
)


def sniff(prefix: bytes) -> Sniff:
    """MATCH on ``METHOD ``; NEED_MORE on a proper prefix of one; NO otherwise.

    ``PRI * HTTP/2.0`` (h2c prior knowledge) is NO: ``PR`` starts no method here.
    """
    for m in METHODS:
        if prefix.startswith(m):
            return Sniff.MATCH
    for m in METHODS:
        if m.startswith(prefix):
            return Sniff.NEED_MORE
    return Sniff.NO
