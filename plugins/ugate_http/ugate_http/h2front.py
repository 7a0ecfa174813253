"""The HTTP/2 front of the ``http`` listener: a reverse proxy for h2c and h2 (TLS) clients.

Each request stream is routed by ``:authority`` (or ``host``) exactly as an HTTP/1.1
reverse-proxy request is routed by ``Host``: discovery, policy, then the listener's upstream
pool (HTTP/1.1, or HTTP/2 when discovery says the destination speaks it). Streams run
concurrently, each in its own task; bodies stream both ways under HTTP/2 flow control.
Refusals are answered on the stream (the connection stays up), counted and logged like the
HTTP/1.1 ones; a connection-level protocol error closes the connection with GOAWAY.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from ugate_core import DialError, H2ErrorCode, ListenerContext, ProtocolError, Stream, StreamMeta

from .client import OutgoingRequest, Reply, allowed_addresses
from .forwarding import (
    ClientForwarding,
    Found,
    challenge,
    check_credentials,
    dial_failure,
    error_answer,
    loop_refusal,
    request_fields,
    via_entry,
)
from .h1 import Framing, HttpError, Request, Response, encode_head
from .h2conn import H2Conn, H2Exchange, H2Limits, Header, StreamResetError
from .h2express import H2Express
from .h2msg import H2Request, parse_request, request_from_h1, response_headers, trailer_headers
from .lanes import RequestBody
from .options import HttpOptions
from .rewrite import address_of
from .routes import HttpRoute, RouteTable
from .routing import H2Tunnel, RouteExchange, handler_fields, logged_path, serve_route
from .state import PluginState

log = logging.getLogger("ugate.http")

#: what request_fields drops from an HTTP/2 request's fields (parse_request took out the
#: connection-specific ones): nothing, or the Authorization this gateway checked
_NONE: frozenset[str] = frozenset()
_AUTHZ = frozenset({"authorization"})
#: a refused route request: how long / how much of its body to read and drop
LINGER_SECONDS = 1.0
LINGER_BYTES = 1 << 16


async def serve_h2(
    stream: Stream,
    ctx: ListenerContext,
    opts: HttpOptions,
    state: PluginState,
    *,
    tls: bool,
    upgrade: tuple[Request, bytes] | None = None,
) -> None:
    """Serve one HTTP/2 client connection until it closes. ``upgrade``: the HTTP/1.1
    request that asked for ``Upgrade: h2c`` and its ``HTTP2-Settings`` (101 already sent)."""
    await H2Front(stream, ctx, opts, state, tls=tls).run(upgrade)


class _H2Body:
    """A request body as the upstream pool reads it."""

    def __init__(self, front: H2Front, ex: H2Exchange, expect_continue: bool) -> None:
        self.front = front
        self.ex = ex
        self.expect_continue = expect_continue
        self.count = 0
        self.done = False

    async def read(self) -> bytes:
        ex = self.ex
        if self.expect_continue:
            self.expect_continue = False
            if not ex.pending and not ex.remote_ended:
                ex.send_headers([(b":status", b"100")])
        idle = self.front.idle
        try:
            data = await ex.read(idle)
        except TimeoutError:
            raise HttpError(f"client sent no request body bytes for {idle:g}s",
                            "body_timeout", 408) from None
        except StreamResetError as e:
            raise HttpError(f"client reset the stream in the middle of the request body: {e}",
                            "client_closed", 400) from None
        if not data:
            self.done = True
        self.count += len(data)
        return data


class _Seen:
    """What an HTTP/2 front made for a header list: the parsed request, and the express
    lane's (address, upstream head) once made."""

    __slots__ = ("prep", "req")

    def __init__(self, req: H2Request) -> None:
        self.req = req
        self.prep: tuple[str, bytes] | None = None


class H2Front:
    """One HTTP/2 client connection of the ``http`` listener."""

    def __init__(self, stream: Stream, ctx: ListenerContext, opts: HttpOptions,
                 state: PluginState, *, tls: bool) -> None:
        self.stream = stream
        self.ctx = ctx
        self.gw = ctx.gateway
        self.opts = opts
        self.state = state
        self.scheme = "https" if tls else "http"
        self.idle: float | None = self.gw.config.gateway.idle_timeout or None
        self.loop = asyncio.get_running_loop()
        limits = H2Limits(
            stream_window=opts.h2_stream_window,
            connection_window=opts.h2_connection_window,
            max_streams=opts.h2_max_streams,
            # beyond our own bound a header block gets a 431 answer; beyond this one (a
            # client that ignores the advertised limit) the connection is closed
            max_header_list=max(2 * opts.max_header_bytes, 1 << 16),
            flood=self.gw.config.gateway.h2_limits,
            connect_protocol=bool(state.routes.protocols),
        )
        self.conn = H2Conn(stream, limits, client=False, on_request=self._on_request,
                           name=f"{ctx.name}-{stream.meta.id}")
        self.conn.on_idle = self._on_idle
        self.conn.on_malformed = self._on_malformed
        #: the task answering each running stream, by stream id
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.pool = state.pool(ctx.name, opts)
        #: the express lane (h2express.py): its streams by id, and their deadlines' timer
        self._lane = opts.express and not opts.auth
        self.express: dict[int, H2Express] = {}
        self._xp_timer: asyncio.TimerHandle | None = None
        self.peer = _peer(stream)
        self._via = via_entry("2", state.via)
        #: this client's Forwarded / X-Forwarded-For elements
        self._client = ClientForwarding(stream.meta.remote, self.scheme)
        #: header lists seen on this connection → [the parsed request, the express lane's
        #: (address, upstream head) once made]: clients repeat their heads, and both are
        #: pure functions of the list and this connection
        self._seen: dict[tuple[Header, ...], _Seen] = {}
        #: the addresses the policy allowed this connection (client.allowed_addresses's set)
        self._allowed: set[str] | None = None
        #: other plugins' paths (routes.py), None when there are none
        self.routes: RouteTable | None = state.routes or None
        stream.meta.extra["http_version"] = "2"

    # ------------------------------------------------------------------ connection
    async def run(self, upgrade: tuple[Request, bytes] | None) -> None:
        conn = self.conn
        ex1 = conn.start(upgrade[1] if upgrade is not None else None)
        t = self.gw.config.gateway.handshake_timeout
        self._timer = self.loop.call_later(t, self._check_idle, True)
        if upgrade is not None and ex1 is not None:
            try:
                req = request_from_h1(upgrade[0], default_port=self.opts.default_port)
            except HttpError as e:
                err = e
                self._spawn(ex1, lambda: self._serve(ex1, None, err))
            else:
                self._spawn(ex1, lambda: self._serve(ex1, req, None))
        try:
            await conn.wait_closed()
        finally:
            if self._timer is not None:
                self._timer.cancel()
            if self._xp_timer is not None:
                self._xp_timer.cancel()
                self._xp_timer = None
            tasks = list(self.tasks.values())
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            conn.close()
            conn.account(self.ctx)
            log.debug("h2_closed listener=%s client=%s requests=%d", self.ctx.name,
                      self.peer, conn.requests)

    def _on_idle(self, conn: H2Conn) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(self.opts.keepalive_timeout, self._check_idle,
                                           False)

    def _check_idle(self, handshake: bool) -> None:
        self._timer = None
        conn = self.conn
        if conn.closed or conn.streams:
            return
        if handshake and not conn.settled:
            t = self.gw.config.gateway.handshake_timeout
            self.ctx.reject("header_timeout", f"no HTTP/2 preface and SETTINGS within {t:g}s",
                            self.stream.meta)
            conn.close()
            return
        if handshake:  # settled and idle: the keep-alive timeout applies from now on
            self._on_idle(conn)
            return
        conn.goaway()

    def _on_malformed(self, message: str) -> None:
        """The codec reset a request that breaks RFC 9113's rules (PROTOCOL_ERROR)."""
        self.ctx.reject("bad_request", f"HTTP/2 {message} (stream reset)", self.stream.meta)

    def _on_request(self, ex: H2Exchange) -> None:
        if self._timer is not None and self.conn.settled:
            self._timer.cancel()
            self._timer = None
        opts = self.opts
        if self.routes is not None:
            route = self._route_of(ex)
            if route is not None:
                task = self.loop.create_task(self._route(ex, route))
                ex.task = task
                self.tasks[ex.sid] = task
                return
        if opts.mode == "forward":
            self._spawn(ex, lambda: self._serve(ex, None, None))
            return
        key = tuple(ex.headers)
        seen = self._seen.get(key)
        if seen is None:
            try:
                req = parse_request(key, default_port=opts.default_port,
                                    max_bytes=opts.max_header_bytes)
            except HttpError as e:
                err = e
                self._spawn(ex, lambda: self._serve(ex, None, err))
                return
            seen = _Seen(req)
            if sum(len(n) + len(v) for n, v in key) <= 2048:  # (bounded: 64 x 2 KiB a client)
                if len(self._seen) >= 64:
                    self._seen.clear()
                self._seen[key] = seen
        req = seen.req
        if self._lane and ex.remote_ended and self._express(ex, req, seen):
            return
        self._spawn(ex, lambda: self.proxy(ex, req))

    def _spawn(self, ex: H2Exchange, step: Callable[[], Awaitable[None]]) -> None:
        task = self.loop.create_task(self._run_step(ex, step))
        ex.task = task
        self.tasks[ex.sid] = task

    # ------------------------------------------------------------------ routes
    def _route_of(self, ex: H2Exchange) -> HttpRoute | None:
        """The plugin route a request's ``:path`` goes to (routes.py), if any."""
        assert self.routes is not None
        for name, value in ex.headers:
            if name == b":path":
                return self.routes.match(value.decode("latin-1"))
            if name[:1] != b":":
                break
        return None

    async def _route(self, ex: H2Exchange, route: HttpRoute) -> None:
        """Run a plugin route's handler on this stream; an accepted stream is the handler's
        (or its relay's) from then on."""
        x = H2Route(self, ex, route)
        t0 = self.loop.time()
        try:
            await serve_route(x, x, route, self.ctx.name)
        except (StreamResetError, asyncio.CancelledError):
            pass  # the client reset the stream or the connection ended
        except Exception as e:
            log.warning("h2_request_error listener=%s client=%s stream=%d error=%r",
                        self.ctx.name, self.peer, ex.sid, e)
        finally:
            self.tasks.pop(ex.sid, None)
            tunnel = x.tunnel
            if tunnel is None:
                ex.finish()
            else:
                ex.task_done()
                if not tunnel.relaying:
                    tunnel.close()
        log.debug("http_route listener=%s client=%s version=2 route=%s method=%s target=%s "
                  "status=%d ms=%.1f", self.ctx.name, self.peer, route.name, x.method,
                  logged_path(x.path), x.status, (self.loop.time() - t0) * 1000)

    # ------------------------------------------------------------------ express lane
    def _express(self, ex: H2Exchange, req: H2Request, seen: _Seen) -> bool:
        """Send a bodyless request on an idle pooled connection from this callback and
        answer it from the upstream's (h2express.py); False leaves it to a task. ``seen``
        keeps the address and upstream head made for the same header list before."""
        prep = seen.prep
        if prep is None:
            f = self._fields(req, "")
            if f.loop:
                return False  # the task answers 508
            fields = f.fields
            if req.length is not None:
                fields.append(("Content-Length", "0"))
            prep = seen.prep = (address_of(req.host, req.port),
                              encode_head(f"{req.method} {req.path} HTTP/1.1", fields))
        address, head = prep
        meta = self.stream.meta
        allowed = self._allowed
        if allowed is None or len(allowed) > 64:  # (client.allowed_addresses starts a new set then)
            allowed = self._allowed = allowed_addresses(meta)
        if address not in allowed or not self.state.speaks_h1(address):
            return False
        conn = self.pool.take_reusable(address)
        if conn is None:
            return False
        meta.target = address
        conn.requests += 1
        conn.stream.write(head)
        xp = self.express[ex.sid] = H2Express(self, ex, req, conn, address, self.loop.time())
        self.state.expressed += 1
        timer = self._xp_timer
        if timer is None or timer.when() > xp.deadline:
            if timer is not None:
                timer.cancel()
            self._xp_timer = self.loop.call_at(xp.deadline, self._express_tick)
        conn.reader.push(conn.parser.expect(req.method))
        if conn.reader.peek() is not None:
            xp.on_upstream()
        return True

    def _express_tick(self) -> None:
        """The express streams' deadlines: one timer per connection, re-armed when it
        fires."""
        self._xp_timer = None
        now = self.loop.time()
        for xp in [x for x in self.express.values() if x.deadline <= now]:
            xp.tick(now)
        if self.express:
            first = min(x.deadline for x in self.express.values())
            if first != float("inf"):
                self._xp_timer = self.loop.call_at(first, self._express_tick)

    def express_forget(self, ex: H2Exchange) -> None:
        """Stream ``ex`` left the express lane (lane contract)."""
        self.express.pop(ex.sid, None)

    def express_handoff(self, ex: H2Exchange, step: Awaitable[None]) -> None:
        """Give an express stream to a task, which runs ``step`` for it (lane contract)."""
        self.express.pop(ex.sid, None)
        ex.on_fail = ex.on_writable = ex.on_finish = None

        async def run() -> None:
            await step

        self._spawn(ex, run)

    # ------------------------------------------------------------------ one request
    async def _run_step(self, ex: H2Exchange, step: Callable[[], Awaitable[None]]) -> None:
        try:
            await step()
        except (StreamResetError, asyncio.CancelledError):
            pass  # the client reset the stream or the connection ended: nobody to answer
        except Exception as e:
            log.warning("h2_request_error listener=%s client=%s stream=%d error=%r",
                        self.ctx.name, self.peer, ex.sid, e)
        finally:
            self.tasks.pop(ex.sid, None)
            ex.finish()

    async def _serve(self, ex: H2Exchange, req: H2Request | None, err: HttpError | None
                     ) -> None:
        if err is not None:
            await self.fail(ex, err.status, err.reason, str(err))
            return
        if self.opts.mode == "forward":
            await self.fail(ex, 400, "not_proxy_request",
                            "this listener is a forward proxy (mode = 'forward'): HTTP/2 "
                            "requests are proxied in mode 'reverse' or 'auto'")
            return
        if req is None:
            try:
                req = parse_request(ex.headers, default_port=self.opts.default_port,
                                    max_bytes=self.opts.max_header_bytes)
            except HttpError as e:
                await self.fail(ex, e.status, e.reason, str(e))
                return
        await self.proxy(ex, req)

    def count(self, status: int) -> None:
        """Count an answer's status (lane contract: the express lane counts through it)."""
        self.state.count(self.ctx.name, status)

    async def fail(self, ex: H2Exchange, status: int, reason: str, message: str,
                   extra: list[tuple[str, str]] | None = None) -> None:
        """Count and log a refusal and answer it on the stream (lane contract)."""
        self.ctx.reject(reason, message, self.stream.meta)
        self.count(status)
        fields, body = error_answer(status, message, extra)
        head: list[Header] = [(b":status", str(status).encode())]
        head += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in fields]
        ex.send_headers(head)
        await ex.send_data(body, end=True, timeout=self.idle)

    def _fields(self, req: H2Request, consumed: str) -> Found:
        """The HTTP/1.1 fields to send upstream (forwarding.request_fields; ``consumed``: a
        credential field this gateway used up, not forwarded)."""
        return request_fields(req.headers, req.authority, token=self.state.via, via=self._via,
                              drop=_AUTHZ if consumed else _NONE,
                              client=self._client if self.opts.forwarded else None,
                              lower=False)

    async def proxy(self, ex: H2Exchange, req: H2Request) -> None:
        """Route ``req`` (credentials, fields, upstream) and answer it on its stream."""
        meta = self.stream.meta
        opts = self.opts
        consumed = ""
        if opts.auth:
            value = next((v for k, v in req.headers if k == "authorization"), None)
            refusal = check_credentials(opts.users, value, meta, proxy=False,
                                        identities=opts.identities)
            if refusal is not None:
                await self.fail(ex, *refusal, extra=[challenge(opts.realm, proxy=False)]
                                if opts.users else None)
                return
            consumed = "authorization" if opts.users else ""
        address = address_of(req.host, req.port)
        f = self._fields(req, consumed)
        if f.loop:
            await self.fail(ex, *loop_refusal(self.state.via, address))
            return
        fields = f.fields
        body: _H2Body | None = None
        length = req.length
        if not ex.remote_ended or ex.pending:
            body = _H2Body(self, ex, req.expect_continue)
        elif length:
            length = 0  # content-length said more than the stream carried: h2 refuses that
        out = OutgoingRequest(method=req.method, target=req.path, authority=address,
                              headers=tuple(fields), body=body, length=length)
        t0 = self.loop.time()
        try:
            resp = await self.state.round_trip(self.ctx.name, opts, out, source=meta,
                                               on_interim=self._interim(ex),
                                               scheme=req.scheme)
        except DialError as e:
            await self.fail(ex, *dial_failure(e, address))
            return
        except HttpError as e:
            if body is not None and e.reason in ("client_closed", "body_timeout") \
                    and ex.error is not None:
                return  # the client went away: nobody to answer
            await self.fail(ex, e.status, e.reason, str(e))
            return
        try:
            await self.answer(ex, req, resp, address, body, t0)
        except BaseException:
            resp.abort()
            raise

    def _interim(self, ex: H2Exchange) -> _Interim:
        return _Interim(ex)

    async def answer(self, ex: H2Exchange, req: H2Request, resp: Reply, address: str,
                     body: RequestBody | None, t0: float) -> None:
        head = resp.head
        if head.framing is Framing.TUNNEL:
            resp.abort()
            await self.fail(ex, 502, "bad_response", f"upstream {address} answered "
                            f"{head.status} to switch protocols unasked")
            return
        hdrs = response_headers(head, req.method)
        self.count(head.status)
        idle = self.idle
        try:
            if head.framing is Framing.NONE:
                ex.send_headers(hdrs, end=True)
            else:
                ex.send_headers(hdrs)
                while True:
                    data = await resp.read()
                    last = resp.complete or not data
                    if last and resp.trailers:
                        await ex.send_data(data, timeout=idle)
                        ex.send_headers(trailer_headers(resp.trailers), end=True)
                        break
                    await ex.send_data(data, end=last, timeout=idle)
                    if last:
                        break
        except (HttpError, TimeoutError, StreamResetError) as e:
            resp.abort()
            client_gone = isinstance(e, StreamResetError) and ex.error is not None
            if not client_gone:
                ex.reset(H2ErrorCode.INTERNAL_ERROR)
            log.info("http_response_cut listener=%s client=%s target=%s status=%d bytes=%d "
                     "error=%r", self.ctx.name, self.peer, address, head.status,
                     resp.received, str(e) or type(e).__name__)
            return
        await resp.release()
        up = body.count if body is not None else 0
        self.state.add_bytes(self.ctx.name, up, resp.received)
        meta = self.stream.meta
        log.debug("http_request listener=%s client=%s user=%s version=2 method=%s address=%s "
                  "target=%s status=%d up=%d down=%d reused=%s ms=%.1f", self.ctx.name,
                  self.peer, meta.user or "-", req.method, address, req.path[:200],
                  head.status, up, resp.received, resp.reused, (self.loop.time() - t0) * 1000)


class H2Route(RouteExchange):
    """A request to a plugin's route over HTTP/2 (:class:`~ugate_http.routes.Exchange`); an
    RFC 8441 extended CONNECT is accepted as an :class:`~ugate_http.routing.H2Tunnel`."""

    def __init__(self, front: H2Front, ex: H2Exchange, route: HttpRoute) -> None:
        super().__init__(route)
        self.front = front
        self.ex = ex
        self.tunnel: H2Tunnel | None = None
        self.method = self.path = ""
        self.protocol: str | None = None
        self.http_version = "2"
        authority: str | None = None
        fields = self.headers
        for name, value in ex.headers:
            if name[:1] == b":":
                v = value.decode("latin-1")
                if name == b":method":
                    self.method = v
                elif name == b":path":
                    self.path = v
                elif name == b":authority":
                    authority = v
                elif name == b":protocol":
                    self.protocol = v.lower()
            else:
                fields.append((name.decode("latin-1"), value.decode("latin-1")))
        if authority is not None and not any(k == "host" for k, _ in fields):
            fields.insert(0, ("host", authority))

    @property
    def meta(self) -> StreamMeta:
        return self.front.stream.meta

    async def body(self, limit: int) -> bytes:
        ex = self.ex
        idle = self.front.idle

        async def read() -> bytes:
            try:
                return await ex.read(idle)
            except TimeoutError:
                raise HttpError(f"client sent no request body bytes for {idle:g}s",
                                "body_timeout", 408) from None

        declared = self.header("content-length")
        return await self._read_within(read, limit, int(declared) if declared is not None
                                       and declared.isascii() and declared.isdigit()
                                       else None)

    async def respond(self, status: int, headers: Iterable[tuple[str, str]] = (),
                      body: bytes = b"") -> None:
        head: list[Header] = [(b":status", str(status).encode())]
        head += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in handler_fields(headers)]
        self._answering(status)
        if status not in (204, 304):
            head.append((b"content-length", str(len(body)).encode()))
        ex = self.ex
        if not body or self.method == "HEAD" or status in (204, 304):
            ex.send_headers(head, end=True)
            return
        ex.send_headers(head)
        await ex.send_data(body, end=True, timeout=self.front.idle)

    async def accept(self, headers: Iterable[tuple[str, str]] = ()) -> Stream:
        if self.answered:
            raise ProtocolError("the exchange was answered already", "answered")
        p = self.protocol
        if self.method != "CONNECT" or p is None or p not in self.route.protocols:
            await self._not_accepted("an extended CONNECT for a protocol this path accepts")
        head: list[Header] = [(b":status", b"200")]
        head += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in handler_fields(headers)]
        self._answering(200)
        self.ex.send_headers(head)
        t = self.tunnel = H2Tunnel(self.ex, self.front.stream.meta)
        return t

    def _count(self, status: int) -> None:
        self.front.count(status)

    # RouteAnswer
    async def refuse(self, status: int, reason: str, message: str,
                     extra: list[tuple[str, str]] | None = None) -> None:
        self.answered = True
        self.status = status
        if self.ex.local_ended:
            return
        ex = self.ex
        await self.front.fail(ex, status, reason, message, extra)
        # a short body still on its way is read and dropped, so the client sees its stream
        # end instead of a reset in the middle of its upload (bounded, as HTTP/1.1 lingers)
        n = 0
        try:
            async with asyncio.timeout(LINGER_SECONDS):
                while n <= LINGER_BYTES and (data := await ex.read()):
                    n += len(data)
        except (TimeoutError, StreamResetError):
            pass

    def cut(self) -> None:
        if self.tunnel is not None:
            self.tunnel.reset()
        else:
            self.ex.reset(H2ErrorCode.INTERNAL_ERROR)


class _Interim:
    """Passes 1xx answers of an HTTP/1.1 upstream (not 100: we answer that) to the client."""

    def __init__(self, ex: H2Exchange) -> None:
        self.ex = ex

    async def __call__(self, head: Response) -> None:
        if head.status == 100 or self.ex.local_ended:
            return
        hdrs = response_headers(head, "GET")
        self.ex.send_headers([h for h in hdrs if h[0] != b"content-length"])


def _peer(stream: Stream) -> str:
    remote = stream.meta.remote
    return f"{remote[0]}:{remote[1]}" if remote else "-"
