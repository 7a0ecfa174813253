"""WHIP-style signaling (RFC 9725) on ugate-http's listeners: ``/.well-known/ugate/webrtc``.

``POST`` an ``application/sdp`` offer (with every ICE candidate: no trickle) → ``201
Created``, the answer as ``application/sdp`` and ``Location: /.well-known/ugate/webrtc/<id>``;
``DELETE`` that location ends the session; ``OPTIONS`` answers a CORS preflight.

Every refusal is an HTTP status before any ICE work, counted as
``ugate_rejections_total{listener, reason}`` and ``ugate_webrtc_signaling_total{method, code}``:

=====  =========================================================================
 429   over ``[webrtc] rate`` requests per second (``burst``) from the address
 401   no credential beyond loopback (``no_token``), or a token core refuses (its reason:
       ``token_expired``, ``token_unknown_key``, ...)
 415   not ``application/sdp``
 413   over ``max_sdp`` bytes
 400   not SDP, no data channel section, or refused by aiortc
 503   ``max_sessions`` sessions open
 404   ``DELETE`` of an unknown session
=====  =========================================================================

Who may signal: a bearer token (``Authorization: Bearer`` or ``?token=``: core's signed
token, :mod:`ugate_core.tokens`, whose subject becomes the session's ``user:<sub>``), or a
verified mesh identity (a client certificate on the TLS front: ``meta.peer_id``), or — only
from a loopback address — anybody (the local user, like a loopback proxy). A token that is
present but wrong is refused even from loopback.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from ugate_core import AuthError, ProtocolError, StreamMeta

from .options import PATH
from .peer import check_offer
from .session import Session, WebRtcState, state_of

if TYPE_CHECKING:
    from ugate_core import GatewayAPI
    from ugate_http.routes import Exchange

log = logging.getLogger("ugate.webrtc")

Header = tuple[str, str]


def _loopback(addr: tuple[str, int] | None) -> bool:
    if addr is None:
        return False
    try:
        ip = ipaddress.ip_address(addr[0].split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _token(ex: Exchange) -> str | None:
    auth = ex.header("authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return ""  # present but not a bearer token: refused, never ignored
    _, _, query = ex.path.partition("?")
    got = parse_qs(query).get("token")
    return str(got[0]) if got else None


class Signaling:
    """The route's handler for one gateway."""

    def __init__(self, gateway: GatewayAPI) -> None:
        self.gateway = gateway

    @property
    def st(self) -> WebRtcState:
        return state_of(self.gateway)

    def _cors(self, ex: Exchange) -> list[Header]:
        origin = ex.header("origin")
        allowed = self.st.options.allow_origins
        if origin is None or not allowed or ("*" not in allowed and origin not in allowed):
            return []
        return [("access-control-allow-origin", origin), ("vary", "origin"),
                ("access-control-expose-headers", "location")]

    async def _refuse(self, ex: Exchange, status: int, reason: str, detail: str,
                      extra: list[Header] | None = None) -> None:
        listener = ex.meta.listener or "webrtc"
        self.gateway.reject(listener, reason, detail, ex.meta)
        self.st.signaling.labels(ex.method, str(status)).inc()
        await ex.respond(status, [("content-type", "text/plain; charset=utf-8"),
                                  *self._cors(ex), *(extra or [])],
                         f"{reason}: {detail}\n".encode())

    async def __call__(self, ex: Exchange) -> None:
        st = self.st
        if ex.method == "OPTIONS":
            st.signaling.labels("OPTIONS", "204").inc()
            await ex.respond(204, [*self._cors(ex),
                                   ("access-control-allow-methods", "POST, DELETE, OPTIONS"),
                                   ("access-control-allow-headers",
                                    "authorization, content-type"),
                                   ("access-control-max-age", "600")])
            return
        source = ex.meta.remote[0] if ex.meta.remote else ""
        if not st.allow_rate(source):
            await self._refuse(ex, 429, "rate_limited",
                               f"over {st.options.rate:g} signaling requests/s from {source}",
                               [("retry-after", "1")])
            return
        meta = await self._authenticate(ex)
        if meta is None:
            return
        path = ex.path.partition("?")[0].rstrip("/")
        if ex.method == "DELETE":
            await self._delete(ex, path)
        elif path != PATH:
            await self._refuse(ex, 404, "no_such_path", f"POST offers to {PATH}")
        else:
            await self._offer(ex, meta)

    async def _authenticate(self, ex: Exchange) -> StreamMeta | None:
        """The session's client: who signaled, from where, on which listener."""
        meta = StreamMeta(protocol="webrtc", listener=ex.meta.listener, local=ex.meta.local,
                          remote=ex.meta.remote, peer_id=ex.meta.peer_id,
                          user=None).copy_extra(ex.meta)
        token = _token(ex)
        if token is not None:
            try:
                if not token:
                    raise AuthError("the Authorization header is not a bearer token",
                                    "token_malformed")
                user = self.gateway.verify_token(token)
            except AuthError as e:  # counted by core's reason, as ws and webtransport do
                await self._refuse(ex, 401, e.reason, str(e),
                                   [("www-authenticate", 'Bearer error="invalid_token"')])
                return None
            meta.user = user
            meta.extra["user_verified"] = True
            return meta
        if meta.peer_id is not None or _loopback(ex.meta.remote):
            return meta
        await self._refuse(ex, 401, "no_token", "WebRTC signaling needs a bearer token or a "
                           "mesh client certificate", [("www-authenticate", "Bearer")])
        return None

    async def _offer(self, ex: Exchange, meta: StreamMeta) -> None:
        st, o = self.st, self.st.options
        ctype = (ex.header("content-type") or "").split(";", 1)[0].strip().lower()
        if ctype != "application/sdp":
            await self._refuse(ex, 415, "not_sdp", f"content-type {ctype or '(none)'!r}; "
                               "send the offer as application/sdp")
            return
        if len(st.sessions) >= o.max_sessions:
            await self._refuse(ex, 503, "too_many_sessions",
                               f"{o.max_sessions} WebRTC sessions open",
                               [("retry-after", "5")])
            return
        try:
            body = await ex.body(o.max_sdp)
        except ProtocolError as e:  # answered 413 already
            st.signaling.labels("POST", "413").inc()
            self.gateway.reject(ex.meta.listener or "webrtc", "sdp_too_large", str(e), ex.meta)
            return
        try:
            offer = check_offer(body.decode("utf-8"))
        except UnicodeDecodeError:
            await self._refuse(ex, 400, "bad_sdp", "the offer is not UTF-8")
            return
        except ProtocolError as e:
            await self._refuse(ex, 400, e.reason or "bad_sdp", str(e))
            return
        session = Session(st, meta)
        try:
            answer = await session.answer(offer)
        except Exception as e:  # aiortc's parser and checks raise ValueError and others
            await session.close("bad_offer")
            await self._refuse(ex, 400, "bad_sdp", f"offer refused: {e}")
            return
        log.info("webrtc_session id=%s client=%s listener=%s mdns_dropped=%d",
                 session.id[:8], meta.peer_id or meta.user or meta.remote, meta.listener,
                 offer.mdns_dropped)
        st.signaling.labels("POST", "201").inc()
        await ex.respond(201, [("content-type", "application/sdp"),
                               ("location", f"{PATH}/{session.id}"), *self._cors(ex)],
                         answer.encode())

    async def _delete(self, ex: Exchange, path: str) -> None:
        sid = path[len(PATH) + 1:] if path.startswith(PATH + "/") else ""
        session = self.st.sessions.get(sid) if sid else None
        if session is None:
            await self._refuse(ex, 404, "no_such_session", "no WebRTC session at this path")
            return
        await session.close("deleted")
        self.st.signaling.labels("DELETE", "200").inc()
        await ex.respond(200, self._cors(ex))
