"""``gateway.round_trip``: core's :class:`~ugate_core.HttpRequest` /
:class:`~ugate_core.HttpResponse` over this plugin's upstream pools.

One gateway-level pool pair (HTTP/1.1 and HTTP/2 upstreams), created on the first call with
the settings of the config's ``[http]`` table and closed at shutdown. Requests are routed by
``request.authority`` through discovery, policy (``request.source``, if given) and dialers,
like every proxied request; answers are counted under ``listener="round_trip"``.

``scheme="https"`` is a promise to the caller that the request is encrypted on the way: it
goes only to a destination whose dialer is ``secure`` (``tls``: TLS to the origin, which
must prove the expected identity; ``hbone``: mTLS to the peer gateway); any other
(``tcp``, ``hbonec``, a name dialed directly) fails with ``DialError("insecure")`` before a
connection is opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import TYPE_CHECKING

from ugate_core import DialError, HttpRequest, HttpResponse

from .client import OutgoingRequest, Reply
from .h1 import Framing, HttpError
from .rewrite import FRAMING, HOP_BY_HOP, address_of, end_to_end, split_authority
from .state import ROUND_TRIP, state_for

if TYPE_CHECKING:
    from ugate_core import GatewayAPI

log = logging.getLogger("ugate.http")

_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(r"/[\x21-\x7e]*|\*")
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[^\x00\r\n]*")
REQUEST_DROP = HOP_BY_HOP | FRAMING | {"host"}
#: what ``close()`` reads of an unread body to keep the connection, before giving it up
DRAIN_BYTES = 1 << 20
DRAIN_SECONDS = 5.0


class _ReplyBody:
    """The response body as ``HttpResponse.read`` sees it; the connection goes back to the
    pool as soon as the body has been read to its end."""

    def __init__(self, reply: Reply, response: HttpResponse) -> None:
        self.reply = reply
        self.response = response
        self.released = False

    async def read(self) -> bytes:
        if self.released:
            return b""
        try:
            data = await self.reply.read()
        except BaseException:
            self.released = True
            self.reply.abort()
            raise
        if not data or self.reply.complete:
            self.response.trailers = tuple(self.reply.trailers)
            self.released = True
            await self.reply.release()
        return data

    async def aclose(self) -> None:
        if self.released:
            return
        n = 0
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                while not self.released and n < DRAIN_BYTES:
                    n += len(await self.read())
        except (TimeoutError, HttpError, ConnectionError):
            pass
        if not self.released:
            self.released = True
            self.reply.abort()


class GatewayRoundTripper:
    """What the ``ugate_round_tripper`` hook returns for a gateway."""

    def __init__(self, gateway: GatewayAPI) -> None:
        self.gateway = gateway

    async def round_trip(self, request: HttpRequest) -> HttpResponse:
        """Send ``request``; the response head, its body read with ``read()``.

        Raises :class:`~ugate_core.DialError` (no route, refused, denied, timeout) and
        :class:`~ugate_http.h1.HttpError` (a bad request: status 400; a bad or late answer:
        502 / 504), both :class:`~ugate_core.UgateError`."""
        state = state_for(self.gateway)
        opts = state.round_trip_options()
        scheme = request.scheme.lower()
        try:
            if scheme not in ("http", "https"):
                raise HttpError(f"scheme {request.scheme[:20]!r} is not http or https")
            out = _outgoing(request, 443 if scheme == "https" else 80, scheme == "https")
            if out.secure:  # before a connection is opened; the pools check again at sending
                await _require_secure(self.gateway, out.authority)
            resp = await state.round_trip(ROUND_TRIP, opts, out, source=request.source,
                                          scheme=scheme)
        except (DialError, HttpError) as e:
            status = e.status if isinstance(e, HttpError) else 502
            state.count(ROUND_TRIP, status)
            log.info("round_trip_failed authority=%s method=%s reason=%s error=%r",
                     request.authority[:200], request.method[:20], e.reason, str(e))
            raise
        head = resp.head
        if head.framing is Framing.TUNNEL:
            resp.abort()
            state.count(ROUND_TRIP, 502)
            raise HttpError(f"upstream {request.authority} answered {head.status} to switch "
                            "protocols unasked", "bad_response", 502)
        state.count(ROUND_TRIP, head.status)
        response = HttpResponse(status=head.status,
                                headers=tuple(end_to_end(head.headers, tokens=head.connection)))
        body = _ReplyBody(resp, response)
        response.body = body
        if resp.complete:  # no body: the connection is free at once
            with contextlib.suppress(Exception):
                await body.read()
        return response


async def _require_secure(gateway: GatewayAPI, address: str) -> None:
    """An ``https`` request goes only over a dialer that encrypts and verifies the peer
    (``tls``, ``hbone``): DialError("insecure") before a byte is sent otherwise, since the
    request (its ``Authorization`` too) would cross the network in clear."""
    m = gateway.metrics
    try:
        dest, _ = await gateway.resolve(address)
    except DialError as e:
        m.child(m.dial_errors, e.reason).inc()
        raise
    dialer = gateway.dialer_types.get(dest.protocol)
    if dialer is None or not dialer.secure:
        m.child(m.dial_errors, "insecure").inc()
        secure = ", ".join(sorted(n for n, d in gateway.dialer_types.items() if d.secure))
        raise DialError("insecure", f"https://{address}: {dest.name} is reached with protocol "
                        f"{dest.protocol!r} (from {dest.source or 'discovery'}), which does not "
                        f"encrypt: refusing to send an https request in clear (give the host "
                        f"one of: {secure or 'none installed'}, and the identity to expect)")


def _outgoing(request: HttpRequest, default_port: int, secure: bool) -> OutgoingRequest:
    """Check an embedding program's request and shape it for the pools (HttpError 400)."""
    if _METHOD.fullmatch(request.method) is None:
        raise HttpError(f"method {request.method[:40]!r} is not a token")
    if request.method == "CONNECT":
        raise HttpError("CONNECT is not a round trip: use gateway.dial()")
    if _TARGET.fullmatch(request.target) is None:
        raise HttpError(f"target {request.target[:100]!r} is not an origin-form path")
    host, port = split_authority(request.authority, default_port)
    fields: list[tuple[str, str]] = [("Host", request.authority)]
    for k, v in request.headers:
        if _NAME.fullmatch(k) is None or _VALUE.fullmatch(v) is None:
            raise HttpError(f"header {k[:40]!r}: bad name, or CR/LF/NUL in the value")
        if k.lower() not in REQUEST_DROP:
            fields.append((k, v.strip()))
    length = request.length
    if request.body is None and length:
        raise HttpError(f"length {length} given without a body")
    return OutgoingRequest(method=request.method, target=request.target,
                           authority=address_of(host, port), headers=tuple(fields),
                           body=request.body, length=length, secure=secure)
