"""The stream preamble over a :class:`~ugate_core.Stream` (asyncio side of
:mod:`ugate_core.preamble`).

A protocol plugin whose streams carry no destination (raw QUIC, WebTransport, libp2p) serves
each accepted stream with one call, inside the gateway's guard::

    with gw.guard(ctx.name, stream.meta):
        await serve_preamble(stream, ctx)

and opens one with ``status = await open_preamble(stream, "svc.example:443")``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from .errors import DialError
from .preamble import (
    PreambleAcceptor,
    PreambleError,
    PreambleOpener,
    PreambleReceived,
    StatusReceived,
)
from .stream import Stream, StreamClosedError
from .types import ListenerContext

log = logging.getLogger("ugate.preamble")

_READ = 4096

#: DialError.reason → status, besides ``denied`` (401 or 403 by who the client is)
STATUS_FOR_REASON = {
    "bad_address": 400,
    "timeout": 504,
    "refused": 502,
    "unreachable": 502,
    "identity": 502,
    "insecure": 502,
    "no_route": 503,
    "no_dialer": 503,
}


def status_for(reason: str, authenticated: bool) -> int:
    """The status answering a failed dial: ``denied`` → 403 for a client that proved who it
    is, 401 for one that did not; then :data:`STATUS_FOR_REASON`; anything else 503."""
    if reason == "denied":
        return 403 if authenticated else 401
    return STATUS_FOR_REASON.get(reason, 503)


#: status → DialError reason, for an answer whose reason is not a known word
_REASON_FOR_STATUS = {400: "bad_address", 401: "denied", 403: "denied", 502: "unreachable",
                      503: "no_route", 504: "timeout"}


def dial_error(target: str, status: StatusReceived) -> DialError:
    """The :class:`DialError` for a refusal an acceptor answered (a dialer that opened a
    stream with :func:`open_preamble` raises it): its ``reason`` is the acceptor's reason word
    when it is one of :data:`STATUS_FOR_REASON`'s or ``denied``, else the status's meaning, so
    the client of this gateway gets the same answer a hop further."""
    known = status.reason in STATUS_FOR_REASON or status.reason == "denied"
    reason = status.reason if known else _REASON_FOR_STATUS.get(status.status, "unreachable")
    return DialError(reason, f"{target}: the peer answered {status.status} "
                             f"{status.reason}".rstrip())


async def open_preamble(stream: Stream, target: str, meta: Mapping[str, str] | None = None,
                        *, timeout: float = 10.0) -> StatusReceived:
    """Send the request for ``target`` and wait (at most ``timeout`` s) for the status. On
    ``200`` the stream carries payload from here (bytes read past the status are put back);
    on anything else the acceptor ends the stream. Raises :class:`PreambleError` on a
    malformed answer, :class:`StreamClosedError` if the stream ends first, ``TimeoutError``."""
    p = PreambleOpener()
    stream.write(p.request(target, meta))
    async with asyncio.timeout(timeout):
        while True:
            data = await stream.read(_READ)
            if not data:
                raise StreamClosedError(f"stream ended before the preamble status for {target}")
            st = p.receive_data(data)
            if st is not None:
                stream.unread(p.leftover())
                return st


class AcceptedPreamble:
    """A received request; :meth:`answer` it once. Payload bytes the opener sent behind the
    request are back in the stream's buffer."""

    __slots__ = ("_p", "request", "stream")

    def __init__(self, stream: Stream, p: PreambleAcceptor, request: PreambleReceived) -> None:
        self.stream = stream
        self.request = request
        self._p = p

    @property
    def answered(self) -> int | None:
        return self._p.answered

    def answer(self, status: int, reason: str = "") -> None:
        """Write the status (``200``: payload may follow; else close the stream after it)."""
        self.stream.write(self._p.answer(status, reason))


async def accept_preamble(stream: Stream, *, timeout: float) -> AcceptedPreamble:
    """Read the request within ``timeout`` seconds (the handshake deadline). A malformed or
    oversized one is answered ``400 <why>`` and raised as :class:`PreambleError` (a
    ``ProtocolError``: the guard counts its reason); ``TimeoutError`` and
    :class:`StreamClosedError` as the stream gives them."""
    p = PreambleAcceptor()
    try:
        async with asyncio.timeout(timeout):
            while True:
                data = await stream.read(_READ)
                if not data:
                    raise StreamClosedError("stream ended during the preamble")
                req = p.receive_data(data)
                if req is not None:
                    break
    except PreambleError as e:
        stream.write(e.answer)
        raise
    stream.unread(p.leftover())
    return AcceptedPreamble(stream, p, req)


async def serve_preamble(stream: Stream, ctx: ListenerContext) -> None:
    """Serve one accepted stream: read its preamble within the handshake timeout, dial the
    destination through ``gateway.dial(target, source=stream.meta)`` (discovery, policy,
    dialer: the client is who ``stream.meta`` says its transport verified; the preamble's
    metadata is kept in ``meta.extra["preamble"]`` and proves nothing), answer, relay.

    Refusals answer the status (:func:`status_for`), close the stream and raise, so the
    caller's :meth:`~ugate_core.Gateway.guard` counts and logs them. Also usable as a
    ``ListenerType.serve``."""
    gw = ctx.gateway
    meta = stream.meta
    if not meta.listener:
        # a stream with no listener would be the embedding program itself, which the policy
        # trusts: a plugin's stream always belongs to the listener that accepted it
        meta.listener = ctx.name
    try:
        acc = await accept_preamble(stream, timeout=gw.config.gateway.handshake_timeout)
    except PreambleError:
        stream.close()
        raise
    req = acc.request
    meta.target = req.target
    if req.meta:
        meta.extra["preamble"] = dict(req.meta)
    log.debug("preamble_request listener=%s peer=%s target=%s", ctx.name,
              meta.peer_id or "-", req.target)
    try:
        up = await gw.dial(req.target, source=meta)
    except DialError as e:
        acc.answer(status_for(e.reason, meta.authenticated), e.reason)
        stream.close()
        raise
    acc.answer(200)
    gw.start_relay(stream, up)
