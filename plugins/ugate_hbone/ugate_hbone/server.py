"""The server side of HBONE: HTTP/2 CONNECT requests become dials and relays.

* ``hbone``: HTTP/2 over mTLS. On its own port :mod:`ugate_hbone.listener` terminates TLS; on
  the shared port core's TLS front does and calls :func:`serve_hbone` with the decrypted stream.
* ``hbonec``: HTTP/2 over plaintext with prior knowledge (h2c), found on the shared port by its
  connection preface (:func:`sniff_preface`); ``POST`` is accepted like ``CONNECT``.

Per request: ``:authority`` → ``gateway.dial(authority, source=meta)`` (``meta.peer_id`` is the
client's verified identity) → ``200`` and raw bytes both ways. Refusals: ``400`` (not CONNECT,
bad authority), ``401``/``403`` (policy denied an unauthenticated/authenticated client),
``503`` (the dial failed). ``baggage``, ``traceparent``, ``tracestate`` and ``forwarded`` are
logged, kept in ``meta.extra`` and passed on by the HBONE dialer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from ugate_core import (
    AuthError,
    DialError,
    GatewayAPI,
    ListenerContext,
    Sniff,
    StashKey,
    Stream,
    format_hostport,
)

from .authority import ConnectRequest, Refusal, parse_request
from .h2stream import H2Stream
from .session import PREFACE, H2Session
from .settings import settings_of

log = logging.getLogger("ugate.hbone")

_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]

#: per gateway: the server sessions running now (GOAWAY on shutdown)
_SESSIONS = StashKey[set[H2Session]]("hbone.sessions")


def sessions_of(gw: GatewayAPI) -> set[H2Session]:
    """The HBONE server sessions running now on ``gw`` (GOAWAY on shutdown)."""
    return gw.stash.get_or_create(_SESSIONS, set)


def sniff_preface(prefix: bytes) -> Sniff:
    """MATCH on the HTTP/2 connection preface, NEED_MORE on a proper prefix of it, else NO."""
    n = min(len(prefix), len(PREFACE))
    if prefix[:n] != PREFACE[:n]:
        return Sniff.NO
    return Sniff.MATCH if len(prefix) >= len(PREFACE) else Sniff.NEED_MORE


def status_for(reason: str, authenticated: bool) -> int:
    """The HTTP status answering a failed dial (DialError ``reason``)."""
    if reason == "denied":
        return 403 if authenticated else 401
    if reason == "bad_address":
        return 400
    return 503


async def serve_hbone(stream: Stream, ctx: ListenerContext) -> None:
    """HBONE on a stream whose TLS was terminated by core's TLS front (ALPN h2)."""
    if stream.meta.peer_id is None:
        raise AuthError("HBONE requires a client certificate (mTLS); the client sent none",
                        "client_cert_required")
    await serve_connection(stream, ctx, protocol="hbone")


async def serve_hbonec(stream: Stream, ctx: ListenerContext) -> None:
    """hbonec: HTTP/2 with prior knowledge over a plaintext stream."""
    await serve_connection(stream, ctx, protocol="hbonec", methods=("CONNECT", "POST"))


async def serve_connection(
    stream: Stream, ctx: ListenerContext, *, protocol: str,
    methods: Sequence[str] = ("CONNECT",),
) -> None:
    """Run one HTTP/2 server connection until it ends; each request is a tunnel."""
    gw = ctx.gateway
    stream.meta.protocol = protocol
    server = _Server(ctx, protocol, tuple(methods))
    sess = H2Session(stream, settings_of(gw), client=False,
                     name=f"{protocol}<-{_client(stream)}", on_request=server.on_request,
                     first_idle=gw.config.gateway.handshake_timeout,
                     limits=gw.config.gateway.h2_limits)
    server.session = sess
    sess.on_malformed = lambda message: ctx.reject("h2_stream_error", f"HTTP/2 {message} "
                                                   "(stream reset)", stream.meta)
    live = sessions_of(gw)
    live.add(sess)
    try:
        sess.start()
        await sess.wait_closed()
    except asyncio.CancelledError:
        sess.close(ConnectionAbortedError("gateway shutting down"))
        raise
    finally:
        live.discard(sess)
        for t in list(server.tasks):
            t.cancel()
        if server.tasks:
            await asyncio.gather(*server.tasks, return_exceptions=True)
    sess.account(ctx, protocol_error="h2_protocol")


def goaway_all(gw: GatewayAPI) -> None:
    """Ask every client of this gateway's HBONE servers to open no more tunnels."""
    for sess in list(gw.stash.get(_SESSIONS, ())):
        sess.goaway()


class _Server:
    def __init__(self, ctx: ListenerContext, protocol: str, methods: tuple[str, ...]) -> None:
        self.ctx = ctx
        self.protocol = protocol
        self.methods = methods
        self.tasks: set[asyncio.Task[None]] = set()
        self.session: H2Session | None = None

    def on_request(self, s: H2Stream) -> None:
        t = s.task = asyncio.get_running_loop().create_task(self.tunnel(s))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def tunnel(self, s: H2Stream) -> None:
        ctx = self.ctx
        try:
            req = parse_request(s.headers, methods=self.methods)
            if isinstance(req, Refusal):
                ctx.reject(req.reason, req.detail, s.meta)
                _refuse(s, req.status, req.reason, req.detail)
                return
            await self.connect(s, req)
        except asyncio.CancelledError:
            s.abort()
            raise
        except Exception:
            ctx.gateway.metrics.reject(ctx.name, "internal")
            log.exception("hbone_tunnel_error listener=%s client=%s stream=%d", ctx.name,
                          _client(s), s.sid)
            s.abort()

    async def connect(self, s: H2Stream, req: ConnectRequest) -> None:
        ctx, gw, meta = self.ctx, self.ctx.gateway, s.meta
        meta.target = req.authority
        for name, value in req.passed:
            meta.extra[name] = value
        log.info("hbone_connect listener=%s protocol=%s client=%s peer=%s stream=%d method=%s "
                 "authority=%s%s", ctx.name, self.protocol, _client(s), meta.peer_id or "-",
                 s.sid, req.method, req.authority,
                 "".join(f" {k}={v!r}" for k, v in req.passed))
        try:
            up = await gw.dial(req.authority, source=meta)
        except DialError as e:
            status = status_for(e.reason, meta.authenticated)
            gw.log_refusal(ctx.name, e.reason, "dial_failed listener=%s client=%s peer=%s "
                           "target=%s reason=%s status=%d error=%r", ctx.name, _client(s),
                           meta.peer_id or "-", req.authority, e.reason, status, str(e))
            _refuse(s, status, e.reason, str(e))
            return
        if s.is_closing():  # the client gave up while we dialed
            up.abort()
            return
        s.respond(200)
        gw.start_relay(s, up)  # runs on the streams' callbacks; this task ends


def _refuse(s: H2Stream, status: int, reason: str, detail: str) -> None:
    body = f"{reason}: {detail}\n".encode()[:1024]
    s.respond(status, _TEXT, body, end=True)
    s.close()


def _client(s: Stream) -> str:
    r = s.meta.remote
    return "-" if r is None else format_hostport(r[0], r[1])
