"""The WebSocket endpoint: one WebSocket is one stream to the destination its path names.

The same handler serves an HTTP/1.1 ``Upgrade: websocket`` and an RFC 8441 extended CONNECT
over HTTP/2 (both reach it as an ugate-http :class:`~ugate_http.routes.Exchange`), and the
dedicated ``ws`` listener (:mod:`ugate_ws.h1`). Everything that can refuse the client happens
before the upgrade, in HTTP's words: a bad request 400, a bad or missing token 401, the policy
401 (no identity) or 403 (an identity no rule lets through), a failed dial 502/503/504. Each is
counted (``ugate_rejections_total{listener, reason}``) and logged at a bounded rate. Only a
destination already connected is answered ``101``/``200``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import Counter
from websockets.protocol import Protocol, Side, State

from ugate_core import (
    AuthError,
    DialError,
    GatewayAPI,
    ListenerContext,
    MessageStream,
    ProtocolError,
    StashKey,
    Stream,
    StreamMeta,
)

from .path import query_param, target_of
from .services import Service, service_for
from .settings import settings_of
from .transport import CLOSE_TIMEOUT, FRAMES_LOG, WsTransport, message_stream

if TYPE_CHECKING:
    from ugate_http.routes import Exchange

log = logging.getLogger("ugate.ws")

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: the subprotocol a client offers beside ``ugate.token.<token>``; the server selects it
SUBPROTOCOL = "ugate"
TOKEN_PROTOCOL = "ugate.token."

#: DialError.reason -> HTTP status (the preamble's table)
STATUS_FOR_REASON = {
    "no_route": 503, "no_dialer": 503, "timeout": 504, "refused": 502, "unreachable": 502,
    "identity": 502, "insecure": 502, "bad_address": 502, "tls_alert": 502,
}


@dataclass
class WsMetrics:
    upgrades: Counter

    @classmethod
    def of(cls, gw: GatewayAPI) -> WsMetrics:
        m = gw.stash.get(_METRICS, None)
        if m is None:
            m = gw.stash[_METRICS] = cls(Counter(
                "ugate_ws_upgrades", "WebSockets accepted, by listener and HTTP version",
                ["listener", "http_version"], registry=gw.metrics.registry))
        return m


_METRICS: StashKey[WsMetrics] = StashKey("ugate_ws.metrics")


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for ``Sec-WebSocket-Key`` ``key`` (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode("ascii")).digest()).decode()


class Refused(Exception):
    """A refusal before the upgrade: the HTTP status, then what is counted and logged."""

    def __init__(self, status: int, error: ProtocolError | AuthError | DialError,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(str(error))
        self.status = status
        self.error = error
        self.headers = headers


def check_handshake(ex: Exchange) -> list[tuple[str, str]]:
    """The WebSocket part of the request; returns the response's own headers."""
    if ex.protocol != "websocket":
        raise Refused(400, ProtocolError(f"not a WebSocket request: upgrade "
                                         f"{ex.protocol!r}", "not_websocket"))
    out: list[tuple[str, str]] = []
    if ex.http_version == "1.1":
        if ex.method != "GET":
            raise Refused(400, ProtocolError(f"WebSocket upgrade with method {ex.method}",
                                             "not_websocket"))
        key = ex.header("sec-websocket-key") or ""
        try:
            ok = len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
        except (binascii.Error, UnicodeEncodeError):
            ok = False
        if not ok:
            raise Refused(400, ProtocolError(f"Sec-WebSocket-Key {key[:40]!r} is not 16 "
                                             "bytes in base64", "bad_websocket_key"))
        out.append(("sec-websocket-accept", accept_key(key)))
    if (ex.header("sec-websocket-version") or "").strip() != "13":
        raise Refused(426, ProtocolError(f"Sec-WebSocket-Version "
                                         f"{ex.header('sec-websocket-version')!r}, not 13",
                                         "bad_websocket_version"),
                      (("sec-websocket-version", "13"),))
    return out


def check_origin(ex: Exchange, gw: GatewayAPI) -> None:
    """A browser names the page that opens a WebSocket (``Origin``); another site's page must
    not use the gateway as its user's proxy (cross-site WebSocket hijacking). Allowed: no
    ``Origin`` (not a browser), the gateway's own origin (``Host``), ``[ws] origins``."""
    origin = (ex.header("origin") or "").rstrip("/").lower()
    if not origin:
        return
    allowed = settings_of(gw).origins
    if "*" in allowed or origin in allowed:
        return
    host = (ex.header("host") or "").lower()
    if host and origin.split("://", 1)[-1] == host:
        return
    raise Refused(403, AuthError(f"Origin {origin[:100]!r} is not allowed: add it to "
                                 "[ws] origins", "origin"))


def _offered(ex: Exchange) -> list[str]:
    v = ex.header("sec-websocket-protocol") or ""
    return [p.strip() for p in v.split(",") if p.strip()]


def authenticate(ex: Exchange, gw: GatewayAPI, out: list[tuple[str, str]],
                 meta: StreamMeta) -> None:
    """A token, when the client gave one, names it (``meta.user``, verified); otherwise the
    connection's verified mesh identity (a wss client certificate), if any, stands."""
    offered = _offered(ex)
    token = query_param(ex.path, "token")
    for p in offered:
        if p.startswith(TOKEN_PROTOCOL):
            token = p[len(TOKEN_PROTOCOL):]
    if offered:
        if SUBPROTOCOL not in offered:
            raise Refused(400, ProtocolError(f"Sec-WebSocket-Protocol {offered!r}: offer "
                                             f"{SUBPROTOCOL!r} beside a token",
                                             "bad_subprotocol"))
        out.append(("sec-websocket-protocol", SUBPROTOCOL))
    if token is None:
        return
    try:
        sub = gw.verify_token(token)
    except AuthError as e:
        raise Refused(401, e, (("www-authenticate", 'Bearer realm="ugate-ws"'),)) from None
    meta.user = sub
    meta.extra["user_verified"] = True


async def serve_exchange(ex: Exchange, gw: GatewayAPI) -> None:
    """The route handler: check, authenticate, dial, upgrade, relay."""
    meta = websocket_meta(ex.meta)
    service = service_for(gw, ex.path)
    with gw.guard(meta.listener, meta):
        try:
            if service is not None:
                await _serve_protocol(ex, gw, meta, service)
            else:
                await _serve(ex, gw, meta)
        except Refused as r:
            body = f"{r.status} {r.error}\n".encode()
            await ex.respond(r.status, [("content-type", "text/plain; charset=utf-8"),
                                        *r.headers], body)
            raise r.error from None


def websocket_meta(conn: StreamMeta) -> StreamMeta:
    """This WebSocket's own metadata: the connection's facts (addresses, TLS, a verified
    client certificate), none of another request's (over HTTP/2 one connection carries many
    WebSockets, and a token names one request, not the connection)."""
    m = StreamMeta(protocol=conn.protocol if conn.protocol == "wss" else "ws",
                   listener=conn.listener, local=conn.local, remote=conn.remote,
                   sni=conn.sni, alpn=conn.alpn, original_dst=conn.original_dst,
                   peer_id=conn.peer_id)
    m.copy_extra(conn)
    m.extra.pop("user_verified", None)
    return m


async def _serve(ex: Exchange, gw: GatewayAPI, meta: StreamMeta) -> None:
    out = check_handshake(ex)
    try:
        target = target_of(ex.path)
    except ProtocolError as e:
        raise Refused(404 if not ex.path.startswith("/.well-known/ugate/ws/") else 400,
                      e) from None
    meta.target = target
    check_origin(ex, gw)
    authenticate(ex, gw, out, meta)
    try:
        up = await gw.dial(target, source=meta)
    except DialError as e:
        status = ((403 if meta.authenticated else 401) if e.reason == "denied"
                  else STATUS_FOR_REASON.get(e.reason, 502))
        raise Refused(status, e) from None
    try:
        stream = await ex.accept(out)
    except BaseException:
        up.abort()
        raise
    WsMetrics.of(gw).upgrades.labels(meta.listener, ex.http_version).inc()
    meta.extra["http_version"] = ex.http_version
    log.debug("ws_accepted listener=%s target=%s http_version=%s user=%s peer_id=%s",
              meta.listener, target, ex.http_version, meta.user, meta.peer_id)
    ws = open_server(stream, gw, meta)
    gw.start_relay(ws, up)


def select_subprotocol(ex: Exchange, service: Service, out: list[tuple[str, str]]) -> None:
    """A client that offers subprotocols must offer the served protocol's name (selected)."""
    offered = _offered(ex)
    if not offered:
        return
    for p in offered:
        if p in service.subprotocols:
            out.append(("sec-websocket-protocol", p))
            return
    raise Refused(400, ProtocolError(
        f"Sec-WebSocket-Protocol {[p[:40] for p in offered[:8]]!r}: path "
        f"{service.path} carries {service.protocol!r}, offer "
        f"{' or '.join(repr(p) for p in service.subprotocols)}", "bad_subprotocol"))


async def _serve_protocol(ex: Exchange, gw: GatewayAPI, meta: StreamMeta,
                          service: Service) -> None:
    """A WebSocket on a served path: upgrade, then hand the stream to the protocol's
    ``serve`` with the context of the listener it arrived on. The protocol authenticates,
    authorizes (through core's policy) and refuses in its own words (MQTT: a CONNACK)."""
    out = check_handshake(ex)
    check_origin(ex, gw)
    select_subprotocol(ex, service, out)
    lc = next((c for c in gw.config.listeners if c.name == meta.listener), None)
    if lc is None or not (lc.protocols == ("*",) or service.protocol in lc.protocols):
        # a listener serves the protocols it lists (and takes their options) and no other
        raise Refused(404, ProtocolError(
            f"path {service.path} carries {service.protocol!r}, which listener "
            f"{meta.listener!r} does not serve (add it to its protocols)", "not_served"))
    serve = service.listener_type.serve
    assert serve is not None  # services.servable
    stream = await ex.accept(out)
    WsMetrics.of(gw).upgrades.labels(meta.listener, ex.http_version).inc()
    meta.extra["http_version"] = ex.http_version
    meta.extra["ws_serves"] = service.protocol
    log.debug("ws_accepted listener=%s path=%s protocol=%s http_version=%s", meta.listener,
              service.path, service.protocol, ex.http_version)
    ws = open_server(stream, gw, meta)
    try:
        await serve(ws, ListenerContext(gw, lc))
    except asyncio.CancelledError:
        ws.abort()
        raise
    except BaseException:
        await _finish(ws)
        raise
    await _finish(ws)


async def _finish(ws: MessageStream) -> None:
    """A served protocol's stream it did not hand to a relay (a refusal): close it after what
    the protocol wrote, and wait for the close handshake (the connection below is closed
    when the handler returns)."""
    if not ws.relaying:
        await ws.aclose(CLOSE_TIMEOUT + 1.0)


def open_server(stream: Stream, gw: GatewayAPI, meta: StreamMeta | None = None
                ) -> MessageStream:
    """The server end of an upgraded WebSocket, as a :class:`MessageStream` (``meta``: the
    WebSocket's, by default the byte stream's)."""
    s = settings_of(gw)
    proto = Protocol(Side.SERVER, state=State.OPEN, max_size=s.max_message, logger=FRAMES_LOG)
    meta = meta if meta is not None else stream.meta

    def failed(reason: str, detail: str) -> None:
        gw.reject(meta.listener, reason, detail, meta)

    t = WsTransport(stream, proto, max_message=s.max_message, idle_timeout=s.idle_timeout,
                    on_error=failed)
    return message_stream(t, meta, s.max_message)
