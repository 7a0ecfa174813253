"""Protocol sniffing on the shared port.

:func:`choose` is pure: given the bytes read so far and the candidate listener types, it says
which matched, that none can, or that more bytes are needed. :func:`sniff_stream` drives it on
a stream within a byte bound and a deadline, and puts the bytes it read back in front of the
stream, so the chosen protocol sees the connection from its first byte.

A client that sends nothing at all for :data:`DEFAULT_AFTER` seconds (or the whole sniff
timeout, if shorter) gets the listener's default protocol: a server-speaks-first client such
as ``ssh-keyscan`` waits for the SSH banner and gives up after 5 s. A client that sent even one
byte is sniffed until the full timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from .stream import Stream
from .types import ListenerType, Sniff

log = logging.getLogger("ugate.sniff")

#: seconds of silence after which a client gets the default protocol: short enough for
#: ``ssh-keyscan`` (5 s) to see the SSH banner, long enough that a client of another protocol
#: that is merely slow to send its first bytes (a busy host, a human at telnet) still sniffs
DEFAULT_AFTER = 1.5


@dataclass(frozen=True)
class SniffResult:
    """``listener`` chosen, or ``None`` with ``reason``: ``no_match``, ``timeout``,
    ``too_long``, ``closed``."""

    listener: ListenerType | None
    reason: str = ""
    prefix: bytes = b""


#: the protocol a silent client gets when the listener names no ``default``, if installed
IMPLIED_DEFAULT = "ssh"
#: ``default = "none"``: silent clients are closed after the sniff timeout, even with ssh
NO_DEFAULT = "none"


def default_for(configured: str, candidates: Sequence[ListenerType]) -> ListenerType | None:
    """The listener type a silent client gets: the configured ``default``; with none
    configured, ``ssh`` when it is among the candidates (SSH is the mesh's main protocol, and
    its clients that wait for the banner, like ``ssh-keyscan``, would otherwise get nothing);
    ``"none"`` turns that off."""
    if configured == NO_DEFAULT:
        return None
    name = configured or IMPLIED_DEFAULT
    return next((t for t in candidates if t.name == name), None)


def choose(prefix: bytes, candidates: Sequence[ListenerType]) -> tuple[ListenerType | None, Sniff]:
    """First candidate that MATCHes; else NEED_MORE if any might; else NO.

    A sniffer that raises is treated as NO for that prefix (and logged): one broken plugin
    must not take the shared port down.
    """
    need_more = False
    for lt in candidates:
        if lt.sniff is None:
            continue
        try:
            r = lt.sniff(prefix)
        except Exception as e:
            log.error("sniffer_error protocol=%s error=%r", lt.name, e)
            continue
        if r is Sniff.MATCH:
            return lt, Sniff.MATCH
        if r is Sniff.NEED_MORE:
            need_more = True
    return None, Sniff.NEED_MORE if need_more else Sniff.NO


async def sniff_stream(
    stream: Stream,
    candidates: Sequence[ListenerType],
    *,
    timeout: float,
    max_bytes: int,
    default: ListenerType | None = None,
    default_after: float = DEFAULT_AFTER,
) -> SniffResult:
    """Read a bounded prefix within ``timeout``; choose a listener; put the prefix back.

    With a ``default``, a client silent for ``min(default_after, timeout)`` seconds gets it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    silent_until = loop.time() + min(default_after, timeout) if default is not None else deadline
    prefix = b""
    while True:
        want = len(prefix) + 1
        prefix = await stream.read_some_into(want, deadline if prefix else silent_until)
        prefix = prefix[:max_bytes]
        if not prefix:
            if stream.at_eof:
                return SniffResult(None, "closed")
            if default is not None:
                return SniffResult(default, "", b"")
            return SniffResult(None, "timeout")
        lt, r = choose(prefix, candidates)
        if lt is not None:
            return SniffResult(lt, "", prefix)
        if r is Sniff.NO:
            return SniffResult(None, "no_match", prefix)
        if len(prefix) >= max_bytes:
            return SniffResult(None, "too_long", prefix)
        if stream.saw_eof:
            return SniffResult(None, "closed", prefix)
        if loop.time() >= deadline:
            return SniffResult(None, "timeout", prefix)
