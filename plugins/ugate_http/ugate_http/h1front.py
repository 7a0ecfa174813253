"""The ``http`` listener: HTTP/1.1 forward proxy and reverse proxy on one client connection.

Per request, the form of the request target decides (and the listener's ``mode`` allows):

* ``CONNECT host:port`` (forward): dial through the gateway, answer ``200 Connection
  established``, then relay raw bytes both ways. The connection stops being HTTP.
* ``GET http://host:port/path`` (absolute form, forward): the request goes to ``host:port``
  with an origin-form target, hop-by-hop fields removed, ``Forwarded`` / ``X-Forwarded-For``
  and ``Via`` added, bodies streamed both ways.
* ``GET /path`` with ``Host: name`` (origin form, reverse): the same, to ``name:port``.

Upstream connections come from an :class:`~ugate_http.client.UpstreamPool` (keep-alive), the
client connection is kept alive across requests when both sides allow it, and an accepted
``Upgrade`` (101, e.g. WebSocket) turns the exchange into a relayed tunnel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from ugate_core import DialError, ListenerContext, ProtocolError, Sniff, Stream, StreamMeta

from .client import OutgoingRequest, PooledConn, Reply, allowed_addresses
from .express import Exchange, Handoff, close_step
from .forwarding import (
    ClientForwarding,
    Found,
    challenge,
    check_credentials,
    dial_failure,
    error_response,
    loop_refusal,
    request_fields,
    response_head,
    via_entry,
)
from .h1 import (
    BodyReceived,
    Framing,
    HttpError,
    MessageEnded,
    Request,
    RequestParser,
    RequestReceived,
    Response,
    encode_chunk,
    encode_head,
    encode_last_chunk,
)
from .h2front import serve_h2
from .h2msg import h2c_settings, preface_match
from .lanes import RequestBody
from .options import HttpOptions, parse_options
from .raw import request_head, request_parts
from .reader import EventReader
from .rewrite import (
    DIAL_STATUS,
    FRAMING,
    HOP_BY_HOP,
    REASONS,
    address_of,
    end_to_end,
    peer,
    split_absolute,
    split_authority,
)
from .routes import Header, HttpRoute, RouteTable
from .routing import RouteExchange, handler_fields, serve_route
from .state import PluginState, close_state, state_for

log = logging.getLogger("ugate.http")

#: after an answer that left the request body unread: how long / how much to discard
LINGER_SECONDS = 2.0
LINGER_BYTES = 64 << 20
#: a response head is sent together with a first body piece up to this size
COALESCE = 64 * 1024
#: a request body that arrived whole with its head, up to this size, goes along in the
#: express lane (larger ones stream from the session's task)
WHOLE_BODY = 64 * 1024
#: _read_head: the wait ended because the express lane answered requests meanwhile
_AGAIN = object()
#: request fields never forwarded as they came
REQUEST_DROP = HOP_BY_HOP | FRAMING | {"host", "expect"}

__all__ = ["DIAL_STATUS", "PluginState", "close_state", "serve", "state_for"]


async def serve(stream: Stream, ctx: ListenerContext) -> None:
    """Serve one client connection (the ListenerType's ``serve``).

    HTTP/2 comes three ways: ALPN ``h2`` from the TLS front (``meta.alpn``), the h2c
    connection preface on a dedicated cleartext port (reverse/auto mode; on the shared port
    the preface is HBONE's), and ``Upgrade: h2c`` from an HTTP/1.1 request (in the session).
    """
    opts = parse_options(ctx.options, ctx.config.path)
    state = state_for(ctx.gateway)
    meta = stream.meta
    if meta.alpn == "h2":
        if not opts.h2:  # the TLS front chose h2 by ALPN before options could say no
            ctx.reject("h2_disabled", f"ALPN h2 on listener {ctx.name!r} with h2 = false", meta)
            return
        await serve_h2(stream, ctx, opts, state, tls=True)
        return
    deadline: float | None = None
    if opts.h2 and opts.mode != "forward" and not _in_tls(stream):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ctx.gateway.config.gateway.handshake_timeout
        if await _h2_preface(stream, deadline):
            await serve_h2(stream, ctx, opts, state, tls=False)
            return
    session = H1Front(stream, ctx, opts, state)
    session.first_deadline = deadline
    await session.run()


def _in_tls(stream: Stream) -> bool:
    """The stream was decrypted by a TLS front (h2c is for cleartext only)."""
    m = stream.meta
    return m.alpn is not None or m.sni is not None or m.protocol in ("tls", "https")


async def _h2_preface(stream: Stream, deadline: float) -> bool:
    """Peek (without consuming) whether the client starts with the HTTP/2 preface. Returns
    as soon as the first bytes rule it out: an HTTP/1.1 client never waits here."""
    seen = 0
    while True:
        buf = await stream.read_some_into(seen + 1, deadline)
        if len(buf) <= seen:  # EOF or deadline: let the HTTP/1.1 session answer it
            return False
        seen = len(buf)
        r = preface_match(buf)
        if r is not Sniff.NEED_MORE:
            return r is Sniff.MATCH


class _ClientBody:
    """The client's request body as the pool reads it; sends ``100 Continue`` on first read."""

    def __init__(self, session: H1Front, expect_continue: bool) -> None:
        self.s = session
        self.expect_continue = expect_continue
        self.done = False
        self.count = 0

    async def read(self) -> bytes:
        if self.done:
            return b""
        s = self.s
        if self.expect_continue:
            self.expect_continue = False
            s.stream.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        idle = s.idle
        try:
            ev = await s.reader.next_event(s.loop.time() + idle if idle else None)
        except TimeoutError:
            raise HttpError(f"client sent no request body bytes for {idle:g}s",
                            "body_timeout", 408) from None
        if isinstance(ev, BodyReceived):
            self.count += len(ev.data)
            return ev.data
        if isinstance(ev, MessageEnded):
            self.done = True
            return b""
        raise HttpError("client closed the connection in the middle of the request body",
                        "client_closed", 400)


class H1Front:
    """One client connection: a loop of requests."""

    def __init__(
        self, stream: Stream, ctx: ListenerContext, opts: HttpOptions, state: PluginState
    ) -> None:
        self.stream = stream
        self.ctx = ctx
        self.gw = ctx.gateway
        self.opts = opts
        self.state = state
        self.reader = EventReader(stream, RequestParser(max_header_bytes=opts.max_header_bytes))
        #: the listener's name (a property of ctx: asked per request)
        self.lname = ctx.name
        #: how the client reached us: ``Forwarded: proto=``
        self.scheme = "https" if _in_tls(stream) else "http"
        self.pool = state.pool(ctx.name, opts)
        self.idle: float | None = self.gw.config.gateway.idle_timeout or None
        self.loop = asyncio.get_running_loop()
        #: the current request's body, once the request is being forwarded
        self.body: _ClientBody | None = None
        #: a request field this gateway used up (reverse-mode credentials): not forwarded
        self.consumed = ""
        #: deadline for the first request head (event-loop time), when serve() set one
        self.first_deadline: float | None = None
        #: the express lane (express.py): the exchange in it, and how many it answered
        self.express: Exchange | None = None
        self.expressed = 0
        #: the task is handling a request: new events are its own, not the express lane's
        self.task_busy = False
        #: event-loop time the last request ended (keep-alive idle is counted from it)
        self.last_active = self.loop.time()
        #: the express exchanges' deadlines: one timer, re-armed only when it fires
        self._ex_timer: asyncio.TimerHandle | None = None
        self._ex_timer_at = 0.0
        #: the addresses the policy allowed this connection (client.allowed_addresses's set)
        self._allowed: set[str] | None = None
        #: this client's Forwarded / X-Forwarded-For elements (made when first asked)
        self._forwarded: ClientForwarding | None = None
        #: the express lane's last authority: (as sent, default port, address)
        self._route: tuple[str, int, str] | None = None
        #: the request the express lane last declined (not examined twice)
        self._declined: Request | None = None
        #: the raw lane's routes: Host as sent → (address, the lines this gateway adds)
        self._raw_routes: dict[bytes, tuple[str, bytes]] = {}
        #: other plugins' paths (routes.py), None when there are none
        self.routes: RouteTable | None = state.routes or None
        if opts.express and not opts.auth:
            self.reader.hook = self._on_client_events
            self.reader.whole = self._express_whole
            if opts.mode != "forward":
                self.reader.raw = self._express_raw

    # ------------------------------------------------------------------------ the loop
    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self._ex_timer is not None:
                self._ex_timer.cancel()
                self._ex_timer = None

    async def _run(self) -> None:
        first = True
        while True:
            if not first and not await self._keepalive_wait():
                return  # idle keep-alive connection: close quietly
            first = False
            ev = await self._read_head()
            if ev is None:
                return
            if ev is _AGAIN:
                continue
            self.task_busy = True
            try:
                if isinstance(ev, Handoff):  # an exchange the express lane gave back
                    if not await ev.step():
                        return
                else:
                    assert isinstance(ev, Request)
                    self.body = None
                    if not await self.handle(ev):
                        if ev.framing is not Framing.NONE and (self.body is None
                                                               or not self.body.done):
                            await self._linger()
                        return
                self.reader.next_message()
            finally:
                self.task_busy = False
            self.last_active = self.loop.time()

    async def _keepalive_wait(self) -> bool:
        """Wait for the next request's first bytes; False after ``keepalive_timeout`` idle
        (counted from the last request's end, whichever lane answered it)."""
        ka = self.opts.keepalive_timeout
        while True:
            base = self.loop.time() if self.express is not None else self.last_active
            if await self.reader.wait_readable(base + ka):
                return True
            if self.express is None and self.loop.time() >= self.last_active + ka:
                return False

    # ------------------------------------------------------------------------ express lane
    def _on_client_events(self) -> bool:
        """The client reader's hook: True when the express lane took care of what arrived,
        False to wake the task."""
        ex = self.express
        if ex is not None:
            if self.stream.is_lost:
                ex.client_gone()
            return True
        if self.task_busy:
            return False
        return self._express_next()

    def _express_next(self) -> bool:
        """Send the next queued request in the express lane if it qualifies (see express.py);
        False leaves it to the task."""
        ev = self.reader.peek()
        if not isinstance(ev, RequestReceived) or ev.request is self._declined:
            return False
        return self._express_take(ev.request, queued=True)

    def _express_whole(self, msg: Request | Response, body: bytes) -> bool:
        """The reader's ``whole`` hook: a request that arrived whole, before any event was
        made of it."""
        if self.express is not None or self.task_busy or type(msg) is not Request:
            return False
        return self._express_take(msg, queued=False, body=body)

    def _express_raw(self, data: bytes) -> bool:
        """The reader's ``raw`` hook: a request head that arrived whole in the form
        ``raw.request_parts`` takes is sent upstream as bytes (the raw lane), with no
        request object; False leaves the bytes to the parser."""
        if self.express is not None or self.task_busy:
            return False
        parser = self.reader.parser
        if not parser.at_rest():
            return False
        parts = request_parts(data, parser.max_header_bytes, parser.max_fields, WHOLE_BODY)
        if parts is None:
            return False
        method, target, host, rest, length = parts
        if self.routes is not None and self.routes.match(target.decode("latin-1")):
            return False  # a plugin's path: the task answers it
        route = self._raw_routes.get(host)
        if route is None:
            route = self._raw_route(host)
            if route is None:
                return False
        address, extra = route
        allowed = self._allowed
        if allowed is None or len(allowed) > 64:
            allowed = self._allowed = allowed_addresses(self.stream.meta)
        if address not in allowed or not self.state.speaks_h1(address):
            return False
        conn = self.pool.take_reusable(address)
        if conn is None:
            return False
        self.stream.meta.target = address
        self.state.raw_requests += 1
        conn.requests += 1
        head = request_head(method, target, host, rest, length, extra)
        if length > 0:
            body = data[len(data) - length:]
            conn.stream.write(head + body)
            data = data[:len(data) - length]
            parser.took_whole(Framing.LENGTH)
        else:
            body = b""
            conn.stream.write(head)
            parser.took_whole(Framing.NONE)
        self.reader.held = True
        ex = self.express = Exchange(self, None, conn, address, target.decode("latin-1"),
                                     self.loop.time(), False, data, body)
        self._express_started(ex, conn, method.decode("latin-1"))
        return True

    def _raw_route(self, host: bytes) -> tuple[str, bytes] | None:
        """Where the raw lane sends requests with ``Host: host``, and the fields it adds
        (as ``_fields`` adds them); None if the task must answer (a bad authority)."""
        if len(host) > 300:  # no DNS name is that long: not kept (the task answers)
            return None
        name = host.decode("latin-1")
        try:
            address = address_of(*split_authority(name, self.opts.default_port))
        except HttpError:
            return None
        lines = []
        if self.opts.forwarded:
            client = _client(self)
            lines.append(f"Forwarded: {client.forwarded(name)}\r\n"
                         f"X-Forwarded-For: {client.element}\r\n")
        lines.append(f"Via: {via_entry('1.1', self.state.via)}\r\n")
        if len(self._raw_routes) >= 16:
            self._raw_routes.clear()
        route = self._raw_routes[host] = (address, "".join(lines).encode("latin-1"))
        return route

    def _express_take(self, req: Request, *, queued: bool, body: bytes = b"") -> bool:
        if not self._express_send(req, queued, body):
            self._declined = req
            return False
        return True

    def _express_send(self, req: Request, queued: bool, body: bytes = b"") -> bool:
        """Send ``req`` upstream in the express lane; False (nothing sent) if it does not
        qualify. ``queued``: its events wait in the client reader (else it came whole, with
        all of its ``body``: a Content-Length body up to WHOLE_BODY bytes goes along)."""
        if req.method == "CONNECT":
            return False
        if req.framing is not Framing.NONE and (
                queued or req.framing is not Framing.LENGTH or len(body) != req.length
                or req.length > WHOLE_BODY):
            return False
        opts = self.opts
        target = req.target
        try:
            if target[:1] == "/":
                if opts.mode == "forward" or (self.routes is not None
                                              and self.routes.match(target)):
                    return False
                f = self._fields(req, None)  # finds Host too
                if f.hosts != 1:
                    return False
                host = f.host
                default = opts.default_port
            else:
                if target[:7].lower() != "http://":
                    return False
                _, host, target = split_absolute(target)
                default = 80
                f = self._fields(req, host)
            if f.loop or f.expect or f.upgrade_field:
                return False
            route = self._route
            if route is not None and route[0] == host and route[1] == default:
                address = route[2]
            else:
                address = address_of(*split_authority(host, default))
                self._route = (host, default, address)
        except HttpError:
            return False  # the task answers it
        meta = self.stream.meta
        allowed = self._allowed
        if allowed is None or len(allowed) > 64:
            allowed = self._allowed = allowed_addresses(meta)
        if address not in allowed or not self.state.speaks_h1(address):
            return False
        conn = self.pool.take_reusable(address)
        if conn is None:
            return False
        meta.target = address
        fields = f.fields
        if f.length_field:  # (as the pool writes it: last; "0" for a field with no body)
            fields.append(("Content-Length", str(len(body))))
        conn.requests += 1
        conn.stream.write(encode_head(f"{req.method} {target} HTTP/1.1", fields) + body)
        self.reader.held = True
        ex = self.express = Exchange(self, req, conn, address, target, self.loop.time(),
                                     queued, body=body)
        self._express_started(ex, conn, req.method)
        return True

    def _express_started(self, ex: Exchange, conn: PooledConn, method: str) -> None:
        """Both lanes, once the request went upstream: count it, arm the timer, and take
        what the upstream may have sent already."""
        self.expressed += 1
        self.state.expressed += 1
        timer = self._ex_timer
        if timer is None or self._ex_timer_at > ex.deadline:
            if timer is not None:
                timer.cancel()
            self._arm_express_timer(ex.deadline)
        events = conn.parser.expect(method)
        if events:  # bytes the upstream sent early: the answer starts now
            conn.reader.push(events)
            ex.on_upstream()

    def _express_tick(self) -> None:
        self._ex_timer = None
        ex = self.express
        if ex is None:
            return  # idle: the next exchange arms it again
        now = self.loop.time()
        if now >= ex.deadline:
            ex.tick(now)
        ex = self.express
        if ex is not None and ex.deadline != float("inf"):
            self._arm_express_timer(ex.deadline)

    def _arm_express_timer(self, when: float) -> None:
        self._ex_timer = self.loop.call_at(when, self._express_tick)
        self._ex_timer_at = when

    def express_done(self, keep: bool, *, handoff: bool = True) -> None:
        """The express exchange ended; ``keep``: the client connection stays open."""
        ex, self.express = self.express, None
        self.last_active = self.loop.time()
        r = self.reader
        if ex is not None and not ex.queued:
            r.resume_parser()
        else:
            r.next_message()  # this request's events go: the task must not answer it again
        if not keep:
            if handoff:
                r.push_front(Handoff(close_step))
            r.release()
            return
        if not self._express_next():
            r.release()

    def express_handoff(self, step: Callable[[], Awaitable[bool]]) -> None:
        """Give the express exchange back to the task: it runs ``step`` for this request."""
        ex, self.express = self.express, None
        self.last_active = self.loop.time()
        if ex is not None and not ex.queued:  # the task reads the request as if queued
            self.reader.push_whole(ex.req, ex.body)
        self.reader.push_front(Handoff(step))
        self.reader.release()

    async def _linger(self) -> None:
        """Answered before the request body was read: half-close and discard what the client
        still sends for a moment, so it reads our answer instead of a reset (bounded)."""
        s = self.stream
        if s.is_lost or s.relaying:
            return
        self.reader.detach()
        s.write_eof()
        n = 0
        try:
            async with asyncio.timeout(LINGER_SECONDS):
                while n < LINGER_BYTES and (data := await s.read(65536)):
                    n += len(data)
        except TimeoutError:
            pass

    async def _read_head(self) -> Request | Handoff | object | None:
        """The next request (or a :class:`Handoff`); None when the connection is done;
        ``_AGAIN`` when the express lane answered requests while this waited."""
        t = self.gw.config.gateway.handshake_timeout
        deadline, self.first_deadline = self.first_deadline, None
        n = self.expressed
        try:
            ev = await self.reader.next_event(deadline or self.loop.time() + t)
        except TimeoutError:
            if self.express is not None or self.expressed != n:
                return _AGAIN
            await self.fail(408, "header_timeout", f"no complete request head within {t:g}s")
            return None
        except HttpError as e:
            await self.fail(e.status, e.reason, str(e))
            return None
        if ev is None or isinstance(ev, Handoff):
            return ev
        assert isinstance(ev, RequestReceived)
        return ev.request

    async def handle(self, req: Request) -> bool:
        """Answer one request; True if the connection stays open for the next."""
        mode = self.opts.mode
        t = req.target
        if self.routes is not None and t[:1] == "/":
            route = self.routes.match(t)
            if route is not None:
                return await self._serve_route(req, route)
        try:
            if req.method == "CONNECT":
                if mode == "reverse":
                    return await self.fail(405, "method_not_allowed",
                                           "CONNECT is not served here (mode = 'reverse')",
                                           [("Allow", "GET, HEAD, POST, PUT, DELETE, "
                                             "OPTIONS, PATCH, TRACE")])
                if req.framing is not Framing.NONE:
                    return await self.fail(400, "bad_request", "CONNECT with a body")
                host, port = split_authority(t, None)
                if not await self._auth(req, proxy=True):
                    return False
                return await self._connect(req, address_of(host, port))
            if t.startswith("/") or t == "*":
                if mode == "forward":
                    return await self.fail(
                        400, "not_proxy_request",
                        f"request target {t[:100]!r} is not an absolute URI: this listener "
                        "is a forward proxy (mode = 'forward'); send http://host/path or "
                        "CONNECT host:port")
                hosts = [v.strip() for k, v in req.headers if k.lower() == "host"]
                if len(hosts) != 1:
                    return await self.fail(400, "bad_request", "missing Host field" if not
                                           hosts else f"{len(hosts)} Host fields")
                host, port = split_authority(hosts[0], self.opts.default_port)
                if self.opts.h2 and req.version == "1.1" and req.framing is Framing.NONE \
                        and not _in_tls(self.stream):
                    settings = h2c_settings(req)
                    if settings is not None:
                        return await self._upgrade_h2c(req, settings)
                if not await self._auth(req, proxy=False):
                    return False
                return await self.proxy(req, address_of(host, port), hosts[0], t)
            scheme, authority, path = split_absolute(t)
            if scheme != "http":
                return await self.fail(400, "bad_request",
                                       f"scheme {scheme!r} is not proxied in absolute form; "
                                       "use CONNECT for https")
            host, port = split_authority(authority, 80)
            if not await self._auth(req, proxy=mode != "reverse"):
                return False
            return await self.proxy(req, address_of(host, port), authority, path)
        except HttpError as e:  # from parsing the target: nothing has been sent yet
            return await self.fail(e.status, e.reason, str(e))

    # ------------------------------------------------------------------------ answers
    async def _write(self, data: bytes) -> None:
        s = self.stream
        if s.is_lost:
            raise ConnectionResetError("client closed the connection")
        s.write(data)
        if s.write_paused:
            try:
                async with asyncio.timeout(self.idle):
                    await s.drain()
            except TimeoutError:
                raise ConnectionResetError(f"client read nothing for {self.idle:g}s") from None

    def count(self, status: int) -> None:
        """Count an answer's status (lane contract: the express lane counts through it)."""
        self.state.count(self.lname, status)

    async def fail(self, status: int, reason: str, message: str,
                   extra: list[tuple[str, str]] | None = None) -> bool:
        """Count and log a refusal, answer it, and end the connection (returns False)."""
        self.ctx.reject(reason, message, self.stream.meta)
        self.count(status)
        try:
            await self._write(error_response(status, message, extra))
        except ConnectionError:
            pass
        return False

    async def _dial_failed(self, e: DialError, address: str) -> bool:
        return await self.fail(*dial_failure(e, address))

    async def _auth(self, req: Request, *, proxy: bool) -> bool:
        """Authenticate the request if the listener asks (``users``, ``identities``); answer
        407/401 if it fails."""
        opts = self.opts
        if not opts.auth:
            return True
        users = opts.users
        refusal = check_credentials(
            users, req.get("Proxy-Authorization" if proxy else "Authorization"),
            self.stream.meta, proxy=proxy, identities=opts.identities)
        if refusal is not None:
            return await self.fail(*refusal, [challenge(opts.realm, proxy=proxy)]
                                   if users else None)
        if not proxy and users:
            self.consumed = "authorization"  # ours, not the upstream's
        return True

    # ------------------------------------------------------------------------ routes
    async def _serve_route(self, req: Request, route: HttpRoute) -> bool:
        """A plugin's path (routes.py): its handler answers, before any proxy credential
        check; True if the connection stays open."""
        ex = H1Route(self, req, route)
        t0 = self.loop.time()
        await serve_route(ex, ex, route, self.lname)
        log.debug("http_route listener=%s client=%s route=%s method=%s target=%s status=%d "
                  "ms=%.1f", self.lname, peer(self.stream.meta), route.name, req.method,
                  req.target[:200], ex.status, (self.loop.time() - t0) * 1000)
        return ex.keep

    # ------------------------------------------------------------------------ CONNECT
    async def _connect(self, req: Request, address: str) -> bool:
        try:
            up = await self.gw.dial(address, source=self.stream.meta)
        except DialError as e:
            return await self._dial_failed(e, address)
        self.count(200)
        self.stream.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.reader.detach()
        self.gw.start_relay(self.stream, up)  # runs on without this task
        return False

    # ------------------------------------------------------------------------ h2c
    async def _upgrade_h2c(self, req: Request, settings: bytes) -> bool:
        """``Upgrade: h2c`` (RFC 7540 3.2): answer 101, then the connection is HTTP/2 and
        this request is its stream 1."""
        self.count(101)
        await self._write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                          b"Upgrade: h2c\r\n\r\n")
        self.reader.detach()  # what the client sent after the request (its preface) stays
        await serve_h2(self.stream, self.ctx, self.opts, self.state, tls=False,
                       upgrade=(req, settings))
        return False

    # ------------------------------------------------------------------------ requests
    async def _interim(self, head: Response) -> None:
        if head.status == 100:
            return  # we answer Expect: 100-continue ourselves
        await self._write(encode_head(f"HTTP/1.1 {head.status} {head.reason}",
                                      end_to_end(head.headers)))

    def _fields(self, req: Request, host: str | None) -> Found:
        """The fields to forward and what this gateway acts on (forwarding.request_fields).
        ``host`` None: the request's own ``Host`` (``f.hosts`` says how many it has)."""
        drop = REQUEST_DROP
        if req.connection or self.consumed:
            drop = drop | req.connection | {self.consumed}
        token = self.state.via
        return request_fields(req.headers, host, token=token, via=via_entry("1.1", token),
                              drop=drop, connection=req.connection,
                              client=_client(self) if self.opts.forwarded else None)

    async def proxy(self, req: Request, address: str, host: str, target: str) -> bool:
        """Send ``req`` upstream to ``address`` and answer it; True if the connection stays
        open."""
        meta = self.stream.meta
        f = self._fields(req, host)
        if f.loop:
            return await self.fail(*loop_refusal(self.state.via, address))
        fields, expect_continue, upgrade = f.fields, f.expect_continue, f.upgrade
        body: _ClientBody | None = None
        length: int | None = None
        if req.framing is not Framing.NONE:
            body = self.body = _ClientBody(self, expect_continue)
            length = req.length if req.framing is Framing.LENGTH else None
        elif req.get("content-length") is not None:
            length = 0
        out = OutgoingRequest(method=req.method, target=target, authority=address,
                              headers=tuple(fields), body=body, length=length, upgrade=upgrade)
        t0 = self.loop.time()
        try:
            resp = await self.state.round_trip(
                self.ctx.name, self.opts, out, source=meta,
                on_interim=self._interim if req.version == "1.1" else None)
        except DialError as e:
            return await self._dial_failed(e, address)
        except HttpError as e:
            return await self.fail(e.status, e.reason, str(e))
        try:
            return await self.answer(req, resp, address, target, body, upgrade, t0)
        except BaseException:
            resp.abort()  # never leave an upstream connection half-used
            raise

    async def answer(self, req: Request, resp: Reply, address: str, target: str,
                     body: RequestBody | None, upgrade: str | None, t0: float) -> bool:
        """Pass the upstream's response to the client; True if the connection stays open."""
        meta = self.stream.meta
        head = resp.head
        if head.framing is Framing.TUNNEL:
            if head.status != 101 or upgrade is None:
                resp.abort()
                return await self.fail(502, "bad_response", f"upstream {address} answered "
                                       f"{head.status} to switch protocols unasked")
            fields = end_to_end(head.headers, tokens=head.connection)
            fields += [("Connection", "Upgrade"), ("Upgrade", head.get("upgrade") or upgrade)]
            self.count(101)
            await self._write(encode_head(f"HTTP/1.1 101 {head.reason}", fields))
            up = await resp.detach()
            self.reader.detach()
            await self.gw.relay(self.stream, up)
            return False
        pending, chunked, keep = response_head(req, head)
        self.count(head.status)
        try:
            # the head goes out with the first piece of the body: one write for small answers
            while data := await resp.read():
                if chunked:
                    data = encode_chunk(data)
                    if resp.complete:
                        data += encode_last_chunk()
                        chunked = False
                if pending:
                    if len(data) <= COALESCE:
                        data = pending + data
                    else:
                        await self._write(pending)
                    pending = b""
                await self._write(data)
            if chunked:
                pending += encode_last_chunk()
            if pending:
                await self._write(pending)
        except (HttpError, ConnectionError) as e:
            resp.abort()
            self.stream.reset()  # a close-delimited body must not look complete
            log.info("http_response_cut listener=%s client=%s target=%s status=%d bytes=%d "
                     "error=%r", self.ctx.name, peer(meta), address, head.status,
                     resp.received, str(e))
            return False
        await resp.release()
        up_bytes = body.count if body is not None else 0
        self.state.add_bytes(self.lname, up_bytes, resp.received)
        log.debug("http_request listener=%s client=%s user=%s method=%s address=%s target=%s "
                  "status=%d up=%d down=%d reused=%s ms=%.1f", self.ctx.name, peer(meta),
                  meta.user or "-", req.method, address, target[:200], head.status, up_bytes,
                  resp.received, resp.reused, (self.loop.time() - t0) * 1000)
        return keep and (body is None or body.done)


class H1Route(RouteExchange):
    """A request to a plugin's route over HTTP/1.1 (:class:`~ugate_http.routes.Exchange`)."""

    def __init__(self, session: H1Front, req: Request, route: HttpRoute) -> None:
        super().__init__(route)
        self.s = session
        self.req = req
        self.method = req.method
        self.path = req.target
        self.headers = [(k.lower(), v) for k, v in req.headers]
        self.protocol = _upgrade_of(req)
        self.http_version = "1.1"
        #: the connection goes on with the next request
        self.keep = False

    @property
    def meta(self) -> StreamMeta:
        return self.s.stream.meta

    async def body(self, limit: int) -> bytes:
        req = self.req
        if req.framing is Framing.NONE:
            return b""
        s = self.s
        b = s.body
        if b is None:
            expect = req.get("expect")
            b = s.body = _ClientBody(s, expect is not None
                                     and expect.strip().lower() == "100-continue")
        return await self._read_within(
            b.read, limit, req.length if req.framing is Framing.LENGTH else None)

    async def respond(self, status: int, headers: Iterable[Header] = (),
                      body: bytes = b"") -> None:
        fields = handler_fields(headers)
        self._answering(status)
        if status not in (204, 304):
            fields.append(("content-length", str(len(body))))
        b = self.s.body
        self.keep = self.req.keep_alive and (self.req.framing is Framing.NONE
                                             or (b is not None and b.done))
        if not self.keep:
            fields.append(("connection", "close"))
        head = encode_head(f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", fields)
        await self.s._write(head if self.req.method == "HEAD" or status in (204, 304)
                            else head + body)

    async def accept(self, headers: Iterable[Header] = ()) -> Stream:
        p = self.protocol
        if self.answered:
            raise ProtocolError("the exchange was answered already", "answered")
        if p is None or p not in self.route.protocols or self.req.framing is not Framing.NONE:
            await self._not_accepted("an upgrade to " + (
                " or ".join(sorted(self.route.protocols)) or "a protocol"))
        fields = [("Connection", "Upgrade"), ("Upgrade", p), *handler_fields(headers)]
        self._answering(101, final=False)
        s = self.s
        await s._write(encode_head("HTTP/1.1 101 Switching Protocols", fields))
        s.reader.detach()  # the bytes after the head stay in the stream, in front
        return s.stream

    def _count(self, status: int) -> None:
        self.s.count(status)

    # RouteAnswer
    async def refuse(self, status: int, reason: str, message: str,
                     extra: list[Header] | None = None) -> None:
        self.answered = True
        self.status = status
        self.keep = False
        await self.s.fail(status, reason, message, extra)

    def cut(self) -> None:
        self.keep = False
        self.s.stream.reset()


def _upgrade_of(req: Request) -> str | None:
    """The protocol an HTTP/1.1 request asks to switch to (``Connection: upgrade``)."""
    if "upgrade" not in req.connection:
        return None
    value = req.get("upgrade")
    if not value:
        return None
    return value.split(",", 1)[0].strip().lower() or None


def _client(session: H1Front) -> ClientForwarding:
    """A session's Forwarded / X-Forwarded-For elements (made when first asked)."""
    fw = session._forwarded
    if fw is None:
        fw = session._forwarded = ClientForwarding(session.stream.meta.remote, session.scheme)
    return fw
