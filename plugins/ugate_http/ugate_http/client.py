"""HTTP/1.1 to upstreams: a keep-alive connection pool and ``round_trip(request) -> response``.

This is the shape of the gateway's RoundTrip API: a front end (this plugin's HTTP/1.1 proxy,
later an HTTP/2 one) turns what its client sent into an :class:`OutgoingRequest` whose body
is any object with ``async read() -> bytes``, and gets an :class:`UpstreamResponse` whose body
it reads the same way. Connections are dialed through the gateway (discovery, policy,
dialers), so ``authority`` is a name such as ``svc.example:80``; an idle connection is reused
only after the same policy check a new dial would make.

Bodies stream both ways at the same time (the request body is sent by a task while the
response head is awaited), so an upstream that answers before it has read the whole upload,
or echoes as it reads, does not deadlock. A request without a body is retried once on a new
connection when a reused one turns out closed (the keep-alive race).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ugate_core import Body, DialError, Stream, StreamMeta

from .h1 import (
    DEFAULT_MAX_HEADER_BYTES,
    BodyReceived,
    Framing,
    Headers,
    HttpError,
    MessageEnded,
    Response,
    ResponseParser,
    ResponseReceived,
    encode_chunk,
    encode_head,
    encode_last_chunk,
)
from .reader import EventReader

if TYPE_CHECKING:
    from ugate_core import GatewayAPI

log = logging.getLogger("ugate.http")

#: how long a finished response waits for its request body to finish sending
BODY_GRACE = 2.0
#: idle connections one pool keeps over all upstream addresses
MAX_IDLE_TOTAL = 1024


@dataclass(frozen=True, kw_only=True)
class OutgoingRequest:
    """One request to send upstream.

    ``headers`` are end-to-end fields including ``Host``: no hop-by-hop or framing fields
    (``Content-Length`` / ``Transfer-Encoding`` follow from ``body`` and ``length``).
    ``length`` is the body size if known; a body of unknown size is sent chunked.
    ``upgrade`` passes an ``Upgrade`` (WebSocket) through; a 101 answer becomes a tunnel.
    ``secure`` (an ``https`` round trip): sent only on a connection that
    :func:`require_secure` accepts, checked on the connection it goes out on (new or pooled).
    """

    method: str
    target: str
    authority: str
    headers: Headers
    body: Body | None = None
    length: int | None = None
    upgrade: str | None = None
    secure: bool = False


class PooledConn:
    """One kept-alive HTTP/1.1 connection to an upstream."""

    __slots__ = ("address", "idle_since", "on_eof", "parser", "reader", "requests", "stream")

    def __init__(self, address: str, stream: Stream, max_header_bytes: int) -> None:
        self.address = address
        self.stream = stream
        self.parser = ResponseParser(max_header_bytes=max_header_bytes)
        self.reader = EventReader(stream, self.parser)
        self.requests = 0
        #: event-loop time this connection went idle into the pool
        self.idle_since = 0.0
        #: the pool's "the upstream closed it" callback, made once per connection
        self.on_eof: Callable[[], None] | None = None

    def usable(self) -> bool:
        # (the stream is in push mode: its bytes and its end go to the reader)
        return self.reader.quiet() and not self.stream.is_closing()

    def close(self) -> None:
        self.stream.close()

    def abort(self) -> None:
        self.stream.abort()


def allowed_addresses(source: StreamMeta) -> set[str]:
    """Addresses the policy already allowed for this client connection (bounded)."""
    allowed: set[str] | None = source.extra.get(_ALLOWED_KEY)
    if allowed is None or len(allowed) > 64:
        allowed = source.extra[_ALLOWED_KEY] = set()
    return allowed


_ALLOWED_KEY = "ugate_http.allowed"


async def authorize_reuse(gateway: GatewayAPI, address: str, source: StreamMeta) -> bool:
    """The policy check a dial makes, for reusing a pooled connection to ``address`` on
    behalf of ``source``. Remembered per client connection (its meta), so a keep-alive client
    pays it once per address. DialError("denied") if the policy refuses.

    True if ``source`` may use a pooled connection. False when the policy allowed the name
    only through a wildcard for a client beyond loopback: a pooled connection may have been
    opened for a local client to an address this one may not reach (a name resolving to
    127.0.0.1), so such a client dials anew and the dial screens the resolved addresses."""
    source.target = address
    allowed = allowed_addresses(source)
    if address in allowed:
        return True
    dest, port = await gateway.resolve(address)
    v = gateway.admit(source, dest, port, address)  # raises DialError("denied"), counted
    if v.local or v.explicit:
        allowed.add(address)
        return True
    return False


def require_secure(gateway: GatewayAPI, stream: Stream, authority: str) -> None:
    """DialError("insecure") unless ``stream`` came from a ``secure`` dialer (encrypted, its
    peer verified: ``meta.peer_id`` set). Checked on the very connection a request is about to
    be written to, so neither a pooled clear-text connection nor a discovery answer that
    changed since the caller looked can carry it."""
    meta = stream.meta
    dialer = gateway.dialer_types.get(meta.protocol)
    if dialer is None or not dialer.secure or meta.peer_id is None:
        m = gateway.metrics
        m.child(m.dial_errors, "insecure").inc()
        raise DialError("insecure", f"https://{authority}: the connection is "
                        f"{meta.protocol or 'unknown'!r} without a verified peer: refusing to "
                        "send an https request in clear")


class Reply(Protocol):
    """What a front end gets from an upstream pool (HTTP/1.1 or HTTP/2 upstream)."""

    head: Response
    trailers: Headers
    received: int
    reused: bool

    @property
    def complete(self) -> bool: ...

    @property
    def address(self) -> str: ...

    async def read(self) -> bytes: ...

    async def release(self) -> None: ...

    def abort(self) -> None: ...

    async def detach(self) -> Stream: ...

    async def request_body_sent(self) -> bool: ...


class _Stale(Exception):
    """A connection closed before any byte of the response."""


class UpstreamResponse:
    """A response head from upstream; read its body with :meth:`read`, then :meth:`release`."""

    def __init__(
        self, pool: UpstreamPool, conn: PooledConn, head: Response, pump: asyncio.Task[None] | None,
        reused: bool,
    ) -> None:
        self.pool = pool
        self.head = head
        self.reused = reused
        self.trailers: Headers = ()
        self.received = 0
        self._conn: PooledConn | None = conn
        self._pump = pump
        self._done = head.framing in (Framing.NONE, Framing.TUNNEL)

    @property
    def address(self) -> str:
        return self._conn.address if self._conn else ""

    @property
    def complete(self) -> bool:
        """The whole body has been read."""
        return self._done

    async def read(self) -> bytes:
        """The next piece of the body, ``b""`` at its end. HttpError(502) if cut short."""
        if self._done:
            return b""
        conn = self._conn
        assert conn is not None
        idle = self.pool.idle_timeout
        loop = asyncio.get_running_loop()
        try:
            ev = await conn.reader.next_event(loop.time() + idle if idle else None)
        except TimeoutError:
            raise HttpError(f"upstream {conn.address}: no body bytes for {idle:g}s",
                            "upstream_timeout", 504) from None
        if isinstance(ev, BodyReceived):
            self.received += len(ev.data)
            nxt = conn.reader.peek()
            if isinstance(nxt, MessageEnded):  # let the caller see the end with the data
                conn.reader.next_event_nowait()
                self._done = True
                self.trailers = nxt.trailers
            return ev.data
        if isinstance(ev, MessageEnded):
            self._done = True
            self.trailers = ev.trailers
            return b""
        raise HttpError(f"upstream {conn.address}: unexpected {type(ev).__name__} in body",
                        "bad_response", 502)

    async def request_body_sent(self) -> bool:
        """Wait (briefly) for the request body to finish; True if all of it was sent."""
        pump = self._pump
        if pump is None:
            return True
        if not pump.done():
            await asyncio.wait({pump}, timeout=BODY_GRACE)
        if not pump.done():
            pump.cancel()
            with contextlib.suppress(BaseException):
                await pump
            return False
        return not pump.cancelled() and pump.exception() is None

    async def release(self) -> None:
        """Done with this response: keep the connection for the next request if clean."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        sent = await self.request_body_sent()
        if sent and self._done and self.head.keep_alive and conn.usable():
            self.pool._put(conn)
        else:
            conn.close()

    def abort(self) -> None:
        """Give up on this response: the connection is closed, never reused."""
        conn, self._conn = self._conn, None
        pump = self._pump
        if pump is not None:
            if not pump.done():
                pump.cancel()
            elif not pump.cancelled():
                pump.exception()  # seen: its failure is why we give up, or irrelevant now
        if conn is not None:
            conn.abort()

    async def detach(self) -> Stream:
        """For a 101 or CONNECT 2xx: the raw upstream stream, which leaves the pool."""
        conn, self._conn = self._conn, None
        assert conn is not None and self.head.framing is Framing.TUNNEL
        await self.request_body_sent()
        conn.reader.detach()
        return conn.stream


class UpstreamPool:
    """Idle HTTP/1.1 connections by upstream address, dialed through the gateway."""

    def __init__(
        self,
        gateway: GatewayAPI,
        *,
        max_idle: int = 32,
        idle_timeout: float = 60.0,
        response_timeout: float = 60.0,
        body_timeout: float | None = None,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    ) -> None:
        self.gateway = gateway
        self.max_idle = max_idle
        self.pool_idle_timeout = idle_timeout
        self.response_timeout = response_timeout
        #: seconds without body bytes either way before a request is given up
        self.idle_timeout = (
            gateway.config.gateway.idle_timeout if body_timeout is None else body_timeout
        )
        self.max_header_bytes = max_header_bytes
        self._idle: dict[str, list[PooledConn]] = {}
        self._idle_total = 0
        #: one timer per pool closes connections idle longer than pool_idle_timeout (a timer
        #: per pooled connection was set and cancelled on every request)
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        #: the loop the pool's connections live on (asyncio.get_running_loop costs a getpid
        #: system call on Python 3.11, and take_reusable/_put run once per request each)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dialed = 0
        self.reused = 0

    # ------------------------------------------------------------------------ connections
    def idle_count(self, address: str | None = None) -> int:
        if address is not None:
            return len(self._idle.get(address, ()))
        return sum(len(v) for v in self._idle.values())

    async def _authorize(self, address: str, source: StreamMeta) -> bool:
        return await authorize_reuse(self.gateway, address, source)

    async def _acquire(self, address: str, source: StreamMeta | None) -> tuple[PooledConn, bool]:
        # the check first, also before a dial: it remembers the address for this client, so
        # its next requests can take the express lanes
        reuse = source is None or await self._authorize(address, source)
        if reuse and address in self._idle:
            conn = self.take_reusable(address)
            if conn is not None:
                return conn, True
        stream = await self.gateway.dial(address, source=source)
        self.dialed += 1
        return PooledConn(address, stream, self.max_header_bytes), False

    def take_reusable(self, address: str) -> PooledConn | None:
        """An idle connection to ``address`` that is still good to use (the caller made the
        policy check), or None."""
        if address not in self._idle:
            return None
        oldest = (self._loop or self._running_loop()).time() - self.pool_idle_timeout
        while (conn := self._take_idle(address)) is not None:
            if conn.idle_since > oldest and conn.usable():
                self.reused += 1
                return conn
            conn.close()
        return None

    def _take_idle(self, address: str, conn: PooledConn | None = None) -> PooledConn | None:
        """Remove ``conn`` (or the newest idle connection) to ``address`` from the pool."""
        lst = self._idle.get(address)
        if not lst:
            return None
        if conn is None:
            conn = lst.pop()
        elif conn in lst:
            lst.remove(conn)
        else:
            return None
        if not lst:
            del self._idle[address]
        self._idle_total -= 1
        conn.reader.on_eof = None
        return conn

    def _put(self, conn: PooledConn) -> None:
        lst = self._idle.get(conn.address)
        if (self._closed or (lst is not None and len(lst) >= self.max_idle)
                or self._idle_total >= MAX_IDLE_TOTAL or self.max_idle == 0):
            conn.close()
            return
        if lst is None:
            lst = self._idle[conn.address] = []
        loop = self._loop or self._running_loop()
        conn.idle_since = loop.time()
        if conn.on_eof is None:
            conn.on_eof = functools.partial(self._expire, conn)
        conn.reader.on_eof = conn.on_eof  # the upstream closed it: drop it now
        lst.append(conn)
        self._idle_total += 1
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._sweep_every(), self._sweep)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop = asyncio.get_running_loop()
        return loop

    def _sweep_every(self) -> float:
        """A connection leaves the pool at most this long after its idle timeout."""
        return max(self.pool_idle_timeout / 4, 0.05)

    def _sweep(self) -> None:
        self._sweeper = None
        oldest = asyncio.get_running_loop().time() - self.pool_idle_timeout
        for lst in list(self._idle.values()):
            for conn in [c for c in lst if c.idle_since <= oldest]:
                self._expire(conn)
        if self._idle_total and not self._closed:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every(),
                                                                  self._sweep)

    def _expire(self, conn: PooledConn) -> None:
        if self._take_idle(conn.address, conn) is not None:
            conn.close()

    async def aclose(self) -> None:
        """Close every idle connection; responses in flight close theirs when released."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        idle, self._idle = self._idle, {}
        self._idle_total = 0
        for lst in idle.values():
            for conn in lst:
                conn.close()

    # ------------------------------------------------------------------------ requests
    async def round_trip(
        self,
        req: OutgoingRequest,
        *,
        source: StreamMeta | None = None,
        on_interim: Callable[[Response], Awaitable[None]] | None = None,
    ) -> UpstreamResponse:
        """Send ``req`` and return the final response head, its body still to be read.

        Raises :class:`~ugate_core.DialError` when the upstream cannot be reached or the
        policy denies it, :class:`HttpError` (status 502 or 504) when it answers badly or
        late. ``on_interim`` sees 1xx responses (other than 101) before the final one.
        """
        retry = req.body is None
        while True:
            conn, reused = await self._acquire(req.authority, source)
            try:
                if req.secure:
                    require_secure(self.gateway, conn.stream, req.authority)
                return await self._exchange(conn, req, reused, on_interim)
            except _Stale:
                conn.abort()
                if reused and retry:
                    retry = False
                    log.debug("upstream_retry address=%s reason=stale_keepalive", conn.address)
                    continue
                raise HttpError(f"upstream {req.authority} closed the connection without "
                                "answering", "upstream_closed", 502) from None
            except BaseException:
                conn.abort()
                raise

    async def _exchange(
        self, conn: PooledConn, req: OutgoingRequest, reused: bool,
        on_interim: Callable[[Response], Awaitable[None]] | None,
    ) -> UpstreamResponse:
        fields = list(req.headers)
        if req.upgrade is not None:
            fields += [("Connection", "Upgrade"), ("Upgrade", req.upgrade)]
        if req.length is not None:
            fields.append(("Content-Length", str(req.length)))
        elif req.body is not None:
            fields.append(("Transfer-Encoding", "chunked"))
        conn.requests += 1
        conn.stream.write(encode_head(f"{req.method} {req.target} HTTP/1.1", fields))
        conn.reader.push(conn.parser.expect(req.method))
        pump: asyncio.Task[None] | None = None
        if req.body is not None:
            pump = asyncio.get_running_loop().create_task(self._pump(conn, req))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.response_timeout
        try:
            while True:
                try:
                    ev = await conn.reader.next_event(deadline)
                except TimeoutError:
                    raise HttpError(f"upstream {req.authority} did not answer within "
                                    f"{self.response_timeout:g}s", "upstream_timeout",
                                    504) from None
                except HttpError as e:
                    if e.reason == "incomplete" and conn.parser.buffered() == 0:
                        raise _Stale() from None
                    raise
                if ev is None:
                    raise _Stale()
                if isinstance(ev, ResponseReceived):
                    head = ev.response
                    if head.interim:
                        if on_interim is not None:
                            await on_interim(head)
                        continue
                    if head.framing is Framing.NONE and isinstance(conn.reader.peek(),
                                                                   MessageEnded):
                        conn.reader.next_event_nowait()  # no body: the message is over
                    return UpstreamResponse(self, conn, head, pump, reused)
                raise HttpError(f"upstream {req.authority}: unexpected {type(ev).__name__}",
                                "bad_response", 502)
        except BaseException:
            if pump is not None:
                if pump.done() and not pump.cancelled() and pump.exception() is not None:
                    # the request body failed first (client gone, bad chunk): that is the cause
                    exc = pump.exception()
                    assert exc is not None
                    raise exc from None
                pump.cancel()
            raise

    async def _pump(self, conn: PooledConn, req: OutgoingRequest) -> None:
        """Send the request body; on any failure the upstream connection is aborted."""
        s = conn.stream
        body = req.body
        assert body is not None
        chunked = req.length is None
        left = req.length or 0
        idle = self.idle_timeout or None
        try:
            while True:
                data = await body.read()  # the client's errors pass through as they are
                if not data:
                    break
                if not chunked:
                    # a body longer than its Content-Length would be read by the upstream as
                    # the start of another request (smuggling): never send the excess
                    left -= len(data)
                    if left < 0:
                        raise HttpError(f"request body longer than its length {req.length}",
                                        "bad_request", 400)
                if s.is_lost:
                    raise HttpError(f"upstream {conn.address} closed while the request body "
                                    "was being sent", "upstream_closed", 502)
                s.write(encode_chunk(data) if chunked else data)
                if s.write_paused:
                    try:
                        async with asyncio.timeout(idle):
                            await s.drain()
                    except TimeoutError:
                        raise HttpError(f"upstream {conn.address} read no request body for "
                                        f"{idle:g}s", "upstream_timeout", 504) from None
                    except ConnectionError as e:
                        raise HttpError(f"upstream {conn.address} closed while the request "
                                        f"body was being sent: {e}", "upstream_closed",
                                        502) from None
            if chunked:
                s.write(encode_last_chunk())
            elif left:
                raise HttpError(f"request body ended {left} bytes short of its length "
                                f"{req.length}", "bad_request", 400)
        except BaseException:
            conn.abort()
            raise
