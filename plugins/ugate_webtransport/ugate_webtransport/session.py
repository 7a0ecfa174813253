"""HTTP/3 with WebTransport on ugate-quic's endpoint (ALPN ``h3``).

A page opens ``new WebTransport("https://host:port/.well-known/ugate/wt?token=T",
{serverCertificateHashes})``; the extended CONNECT (``:protocol webtransport``) is accepted
with the draft-02 answer Chromium expects (``sec-webtransport-http3-draft: draft02``; qh3
sends both the draft-02 ``ENABLE_WEBTRANSPORT`` and the current settings). Each bidirectional
stream the page opens in the session is one mesh stream: core's preamble (``host:port`` →
status, docs/preamble.md), then payload, through ``gateway.dial(target, source=meta)`` — so
rules, protected addresses and ``ugate_authorize`` decide every stream.

**Who the page is.** Browsers cannot set headers on a WebTransport request, so the token is
in the query: core's signed token (:mod:`ugate_core.tokens`, ``[tokens]``); a session with a
valid one runs as ``user:<sub>`` (rules name it), a bad one is refused (401). Without a token
the session is refused (401) before any stream — except on a loopback listener while no
``[tokens] trusted_keys`` are configured, which is the local user's proxy like every
loopback listener (docs/security.md). Anything but the session
path gets a plain 404; a GET of ``/`` a one-line 200, so HTTP/3 clients can check the server.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
from urllib.parse import parse_qs

from aioquic.h3.connection import H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.events import QuicEvent, StreamDataReceived

from ugate_core import AuthError, GatewayAPI, StreamMeta, serve_preamble
from ugate_core import options as opt
from ugate_quic.alpn import QuicConn
from ugate_quic.certs import browser_certs
from ugate_quic.endpoint import QuicPeer, option
from ugate_quic.qstream import RESET_CODE, QuicStream

log = logging.getLogger("ugate.webtransport")

WT_PATH = "/.well-known/ugate/wt"
#: the current and next certificate hashes, as JSON (here over HTTP/3, and on ugate-http's
#: listeners when it is installed: :func:`hashes_json`)
HASHES_PATH = "/.well-known/ugate/wt-hashes"


def hashes_json(gw: GatewayAPI) -> bytes:
    """``{"algorithm": "sha-256", "hashes": [current, next], "not_after": [...]}``; an empty
    list of hashes when the key cannot make browser certificates (not P-256)."""
    certs = browser_certs(gw)
    doc = certs.as_json() if certs is not None else {"algorithm": "sha-256", "hashes": []}
    return json.dumps(doc).encode()
#: keys that moved to core's ``[tokens]`` (one table for every plugin's browser tokens)
MOVED = {"tokens": "[tokens] trusted_keys (signed tokens: 'ugate token')"}


def settings_of(gw: GatewayAPI) -> None:
    """Check ``[webtransport]``: it has no keys of its own (tokens are core's ``[tokens]``)."""
    t = gw.config.section("webtransport")
    opt.moved(t, MOVED, "webtransport")
    opt.check_keys(t, (), "webtransport")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class WebTransportSession:
    """One HTTP/3 connection: requests, WebTransport sessions, and their streams."""

    def __init__(self, conn: QuicConn) -> None:
        assert isinstance(conn, QuicPeer)
        self.peer = conn
        self.ctx = conn.ctx
        self.gw = conn.ctx.gateway
        self.h3 = H3Connection(conn.quic, enable_webtransport=True)
        self.sessions: dict[int, StreamMeta] = {}
        self._max_streams = int(option(self.ctx, "max_streams"))
        self._refused: set[int] = set()
        conn.transmit_soon()  # our SETTINGS (H3Connection queued them)

    # ------------------------------------------------------------------ events
    def quic_event(self, ev: QuicEvent) -> None:
        if not isinstance(ev, StreamDataReceived) and self.peer.stream_event(ev):
            return
        for h3ev in self.h3.handle_event(ev):
            self._h3_event(h3ev)
        self.peer.transmit_soon()

    def _h3_event(self, ev: H3Event) -> None:
        if isinstance(ev, HeadersReceived):
            self._request(ev.stream_id, dict(ev.headers))
        elif isinstance(ev, WebTransportStreamDataReceived):
            s = self.peer.streams.get(ev.stream_id)
            if s is None:
                s = self._new_stream(ev.session_id, ev.stream_id)
                if s is None:
                    return
            s.feed(ev.data, ev.stream_ended)
        elif isinstance(ev, DataReceived) and ev.stream_ended and ev.stream_id in self.sessions:
            self.sessions.pop(ev.stream_id)  # the session's CONNECT stream ended: the session

    def _respond(self, stream_id: int, status: int, body: bytes = b"",
                 extra: list[tuple[bytes, bytes]] | None = None) -> None:
        headers = [(b":status", str(status).encode()), *(extra or [])]
        if (status != 200 or body) and not any(k == b"content-type" for k, _ in headers):
            headers.append((b"content-type", b"text/plain; charset=utf-8"))
        if status != 200 or body:
            headers.append((b"content-length", str(len(body)).encode()))
        self.h3.send_headers(stream_id, headers, end_stream=not body and status != 200)
        if body:
            self.h3.send_data(stream_id, body, end_stream=True)

    def _request(self, stream_id: int, h: dict[bytes, bytes]) -> None:
        method = h.get(b":method", b"").decode(errors="replace")
        path = h.get(b":path", b"").decode(errors="replace")
        proto = h.get(b":protocol", b"").decode(errors="replace")
        meta = StreamMeta(protocol="webtransport", listener=self.ctx.name,
                          remote=self.peer.meta.remote, alpn="h3")
        if not (method == "CONNECT" and proto == "webtransport"):
            if method in ("GET", "HEAD") and path.split("?", 1)[0] == "/":
                self._respond(stream_id, 200, b"ugate webtransport: open a session at "
                              + WT_PATH.encode() + b"\n")
            elif method == "GET" and path.split("?", 1)[0] == HASHES_PATH:
                self._respond(stream_id, 200, hashes_json(self.gw),
                              [(b"content-type", b"application/json")])
            else:
                self.ctx.reject("not_found", f"{method} {path[:80]}", meta)
                self._respond(stream_id, 404, b"not found: WebTransport sessions are at "
                              + WT_PATH.encode() + b"\n")
            return
        route, _, query = path.partition("?")
        if route != WT_PATH:
            self.ctx.reject("not_found", f"WebTransport path {route[:80]!r}", meta)
            self._respond(stream_id, 404, b"no WebTransport session at this path\n")
            return
        token = (parse_qs(query).get("token") or [""])[0]
        if token:
            try:
                meta.user = self.gw.verify_token(token)
            except AuthError as e:
                self.ctx.reject(e.reason, f"WebTransport session: {e}", meta)
                self._respond(stream_id, 401, f"{e}\n".encode())
                return
            meta.extra["user_verified"] = True
        elif self.gw.config.tokens.trusted_keys or not _loopback(self.ctx.config.host):
            self.ctx.reject("no_token", "WebTransport session: no token", meta)
            self._respond(stream_id, 401, b"no token\n")
            return
        self.sessions[stream_id] = meta
        self._respond(stream_id, 200, extra=[(b"sec-webtransport-http3-draft", b"draft02")])
        log.debug("wt_session listener=%s user=%s", self.ctx.name, meta.user or "-")

    def _new_stream(self, session_id: int, stream_id: int) -> QuicStream | None:
        owner = self.sessions.get(session_id)
        if owner is None or stream_id % 4 != 0 or not self.peer.accepts_new(stream_id):
            return None  # no such session, a unidirectional stream, or one that ended
        if len(self.peer.streams) >= self._max_streams:  # live streams, relayed or not
            if stream_id not in self._refused:
                self._refused.add(stream_id)
                self.ctx.reject("max_streams", f"more than {self._max_streams} WebTransport "
                                "streams on one connection", owner)
                with contextlib.suppress(Exception):  # the stream may have ended already
                    self.peer.quic.reset_stream(stream_id, RESET_CODE)
                    self.peer.quic.stop_stream(stream_id, RESET_CODE)
            return None
        meta = StreamMeta(protocol="webtransport", listener=self.ctx.name, remote=owner.remote,
                          user=owner.user, alpn="h3")
        meta.copy_extra(owner)
        s = self.peer.stream(stream_id, meta)
        self.gw.spawn(self._serve(s))
        return s

    async def _serve(self, s: QuicStream) -> None:
        with self.gw.guard(self.ctx.name, s.meta):
            await serve_preamble(s, self.ctx)


def open_session(conn: QuicConn) -> WebTransportSession:
    return WebTransportSession(conn)


__all__ = ["HASHES_PATH", "WT_PATH", "WebTransportSession", "hashes_json", "open_session",
           "settings_of"]
