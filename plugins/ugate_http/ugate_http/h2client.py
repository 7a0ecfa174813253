"""HTTP/2 to upstreams: requests multiplexed over few connections per address.

Used for destinations whose discovery answer says so (``labels.http = "h2"``, see the README):
the stream the dialer returns (TCP, or TLS/SSH/HBONE ...) speaks HTTP/2 with prior knowledge.
A request goes on a connection with room for one more stream (the peer's
SETTINGS_MAX_CONCURRENT_STREAMS, at most :data:`MAX_STREAMS_PER_CONN`), else on a new one;
idle connections are closed after ``pool_idle_timeout``. The answer has the same shape as the
HTTP/1.1 pool's (:class:`~ugate_http.client.Reply`), so every front end serves both.

A request without a body is retried once on another connection when the peer refused its
stream (REFUSED_STREAM, or a GOAWAY that did not cover it). 1xx answers of an h2 upstream are
not passed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ugate_core import H2ErrorCode, Stream, StreamMeta

from .client import OutgoingRequest, authorize_reuse, require_secure
from .h1 import Framing, Headers, HttpError, Response
from .h2conn import H2Conn, H2Exchange, H2Limits, Header, RefusedStreamError, StreamResetError
from .h2msg import response_from_h2
from .rewrite import FRAMING, HOP_BY_HOP

if TYPE_CHECKING:
    from ugate_core import GatewayAPI

log = logging.getLogger("ugate.http")

#: streams one upstream connection carries at once, whatever the peer allows
MAX_STREAMS_PER_CONN = 256
REQUEST_DROP = HOP_BY_HOP | FRAMING | {"host"}


def request_headers(req: OutgoingRequest, scheme: str = "http") -> list[Header]:
    """The h2 header list of an outgoing request (``Host`` becomes ``:authority``)."""
    authority = req.authority
    fields: list[Header] = []
    for k, v in req.headers:
        low = k.lower()
        if low in REQUEST_DROP:
            if low == "host":
                authority = v
            continue
        fields.append((low.encode("latin-1"), v.encode("latin-1")))
    head: list[Header] = [
        (b":method", req.method.encode("latin-1")),
        (b":scheme", scheme.encode("ascii")),
        (b":authority", authority.encode("latin-1")),
        (b":path", req.target.encode("latin-1")),
    ]
    if req.length is not None:
        fields.append((b"content-length", str(req.length).encode()))
    return head + fields


class H2UpstreamResponse:
    """A response from an HTTP/2 upstream; same interface as the HTTP/1.1 pool's."""

    def __init__(self, pool: H2UpstreamPool, conn: H2Conn, ex: H2Exchange, head: Response,
                 pump: asyncio.Task[None] | None, reused: bool) -> None:
        self.pool = pool
        self.conn = conn
        self.ex = ex
        self.head = head
        self.reused = reused
        self.trailers: Headers = ()
        self.received = 0
        self._pump = pump
        self._done = head.framing is Framing.NONE or (ex.remote_ended and not ex.pending)
        self._released = False

    @property
    def address(self) -> str:
        return self.pool.address_of(self.conn)

    @property
    def complete(self) -> bool:
        return self._done

    async def read(self) -> bytes:
        if self._done:
            return b""
        ex = self.ex
        try:
            data = await ex.read(self.pool.idle_timeout or None)
        except TimeoutError:
            raise HttpError(f"upstream {self.address}: no body bytes for "
                            f"{self.pool.idle_timeout:g}s", "upstream_timeout", 504) from None
        except StreamResetError as e:
            raise HttpError(f"upstream {self.address}: {e}", "upstream_closed", 502) from None
        self.received += len(data)
        if not data or (ex.remote_ended and not ex.pending):
            self._done = True
            self.trailers = tuple((k.decode("latin-1"), v.decode("latin-1"))
                                  for k, v in ex.trailers)
        return data

    async def request_body_sent(self) -> bool:
        pump = self._pump
        if pump is None:
            return True
        if not pump.done():
            await asyncio.wait({pump}, timeout=2.0)
        if not pump.done():
            pump.cancel()
            with contextlib.suppress(BaseException):
                await pump
            return False
        return not pump.cancelled() and pump.exception() is None

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        await self.request_body_sent()
        self.ex.finish()

    def abort(self) -> None:
        self._released = True
        pump = self._pump
        if pump is not None:
            if not pump.done():
                pump.cancel()
            elif not pump.cancelled():
                pump.exception()
        self.ex.reset(H2ErrorCode.CANCEL)

    async def detach(self) -> Stream:
        raise HttpError("an HTTP/2 upstream cannot switch protocols", "bad_response", 502)


class H2UpstreamPool:
    """HTTP/2 connections by upstream address, dialed through the gateway."""

    def __init__(
        self,
        gateway: GatewayAPI,
        *,
        limits: H2Limits | None = None,
        idle_timeout: float = 60.0,
        response_timeout: float = 60.0,
        body_timeout: float | None = None,
    ) -> None:
        self.gateway = gateway
        self.limits = limits or H2Limits(max_streams=0)
        self.pool_idle_timeout = idle_timeout
        self.response_timeout = response_timeout
        self.idle_timeout = (
            gateway.config.gateway.idle_timeout if body_timeout is None else body_timeout
        )
        self._conns: dict[str, list[H2Conn]] = {}
        self._addr: dict[H2Conn, str] = {}
        self._idle: dict[H2Conn, asyncio.TimerHandle] = {}
        self._dialing: dict[str, asyncio.Future[H2Conn]] = {}
        self._closed = False
        self.dialed = 0
        self.reused = 0

    def address_of(self, conn: H2Conn) -> str:
        return self._addr.get(conn, conn.name)

    def connections(self, address: str) -> int:
        return len(self._conns.get(address, ()))

    # ------------------------------------------------------------------ connections
    def _pick(self, address: str) -> H2Conn | None:
        for conn in self._conns.get(address, ()):
            if conn.usable and min(conn.capacity(), MAX_STREAMS_PER_CONN - len(conn.streams)) > 0:
                return conn
        return None

    async def _acquire(self, address: str, source: StreamMeta | None) -> tuple[H2Conn, bool]:
        if source is not None and address in self._conns and \
                not await authorize_reuse(self.gateway, address, source):
            return await self._dial(address, source), False  # screened: no shared connection
        while True:
            conn = self._pick(address)
            if conn is not None:
                self.reused += 1
                return conn, True
            fut = self._dialing.get(address)
            if fut is not None:  # someone is dialing: wait for it, then look again
                with contextlib.suppress(Exception):
                    await asyncio.shield(fut)
                if source is not None:
                    await authorize_reuse(self.gateway, address, source)
                continue
            return await self._dial(address, source), False

    async def _dial(self, address: str, source: StreamMeta | None) -> H2Conn:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[H2Conn] = loop.create_future()
        self._dialing[address] = fut
        try:
            stream = await self.gateway.dial(address, source=source)
            conn = H2Conn(stream, self.limits, client=True,
                          name=f"upstream-{address}-{stream.meta.id}")
            conn.on_idle = self._on_idle
            conn.on_close = self._on_close
            conn.start()
            self._conns.setdefault(address, []).append(conn)
            self._addr[conn] = address
            self.dialed += 1
            fut.set_result(conn)
            return conn
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()
            raise
        finally:
            del self._dialing[address]

    def _on_idle(self, conn: H2Conn) -> None:
        old = self._idle.pop(conn, None)
        if old is not None:
            old.cancel()
        if self._closed:
            conn.goaway()
            return
        self._idle[conn] = asyncio.get_running_loop().call_later(
            self.pool_idle_timeout, self._expire, conn)

    def _expire(self, conn: H2Conn) -> None:
        self._idle.pop(conn, None)
        if not conn.streams:
            conn.goaway()

    def _on_close(self, conn: H2Conn) -> None:
        h = self._idle.pop(conn, None)
        if h is not None:
            h.cancel()
        address = self._addr.pop(conn, None)
        if address is not None:
            lst = self._conns.get(address)
            if lst is not None and conn in lst:
                lst.remove(conn)
                if not lst:
                    del self._conns[address]

    async def aclose(self) -> None:
        """Close idle connections; busy ones close when their last stream ends."""
        self._closed = True
        for lst in list(self._conns.values()):
            for conn in list(lst):
                conn.goaway()

    # ------------------------------------------------------------------ requests
    async def round_trip(
        self,
        req: OutgoingRequest,
        *,
        source: StreamMeta | None = None,
        on_interim: Callable[[Response], Awaitable[None]] | None = None,
        scheme: str = "http",
    ) -> H2UpstreamResponse:
        """Send ``req`` on an HTTP/2 connection to ``req.authority``; the response head.

        DialError when the upstream cannot be reached or the policy refuses, HttpError
        (502/504) when it answers badly or late."""
        if req.upgrade is not None:
            raise HttpError(f"Upgrade {req.upgrade[:40]!r} cannot be sent to an HTTP/2 "
                            f"upstream ({req.authority})", "bad_request", 400)
        retry = req.body is None
        while True:
            conn, reused = await self._acquire(req.authority, source)
            if req.secure:
                require_secure(self.gateway, conn.transport, req.authority)
            try:
                return await self._exchange(conn, req, reused, scheme)
            except RefusedStreamError:
                if retry:
                    retry = False
                    log.debug("upstream_retry address=%s reason=refused_stream", req.authority)
                    continue
                raise HttpError(f"upstream {req.authority} refused the request stream",
                                "upstream_closed", 502) from None

    async def _exchange(self, conn: H2Conn, req: OutgoingRequest, reused: bool, scheme: str
                        ) -> H2UpstreamResponse:
        h = self._idle.pop(conn, None)
        if h is not None:
            h.cancel()
        try:
            ex = conn.open(request_headers(req, scheme), end=req.body is None)
        except Exception as e:
            conn.close()
            raise RefusedStreamError(f"upstream {req.authority}: cannot open a stream: {e}"
                                     ) from None
        pump: asyncio.Task[None] | None = None
        if req.body is not None:
            pump = asyncio.get_running_loop().create_task(self._pump(ex, req))
        head_fut = ex.head
        assert head_fut is not None
        try:
            try:
                async with asyncio.timeout(self.response_timeout):
                    raw = await head_fut
            except TimeoutError:
                raise HttpError(f"upstream {req.authority} did not answer within "
                                f"{self.response_timeout:g}s", "upstream_timeout",
                                504) from None
            except RefusedStreamError:
                raise
            except StreamResetError as e:
                if pump is not None and pump.done() and not pump.cancelled() and \
                        pump.exception() is not None:
                    exc = pump.exception()
                    assert exc is not None
                    raise exc from None
                if not conn.settled and not reused:
                    raise HttpError(f"upstream {req.authority} does not speak HTTP/2: {e}",
                                    "bad_response", 502) from None
                raise HttpError(f"upstream {req.authority}: {e}", "upstream_closed",
                                502) from None
            head = response_from_h2(raw, req.method, ex.remote_ended and not ex.pending)
        except BaseException:
            if pump is not None and not pump.done():
                pump.cancel()
            ex.reset(H2ErrorCode.CANCEL)
            raise
        return H2UpstreamResponse(self, conn, ex, head, pump, reused)

    async def _pump(self, ex: H2Exchange, req: OutgoingRequest) -> None:
        body = req.body
        assert body is not None
        idle = self.idle_timeout or None
        try:
            while data := await body.read():
                try:
                    await ex.send_data(data, timeout=idle)
                except TimeoutError:
                    raise HttpError(f"upstream {req.authority} read no request body for "
                                    f"{idle:g}s", "upstream_timeout", 504) from None
            await ex.send_data(b"", end=True)
        except StreamResetError as e:
            raise HttpError(f"upstream {req.authority}: {e}", "upstream_closed",
                            502) from None
        except BaseException:
            ex.reset(H2ErrorCode.CANCEL)
            raise

