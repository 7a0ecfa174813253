"""Per-gateway state of the plugin: upstream pools, counters, the ``Via`` token, and the choice
between an HTTP/1.1 and an HTTP/2 upstream for each request."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from prometheus_client import Counter

from ugate_core import DialError, StashKey, StreamMeta, Tally

from .client import OutgoingRequest, Reply, UpstreamPool
from .h1 import Response
from .h2client import H2UpstreamPool
from .h2conn import H2Limits
from .options import HttpOptions, parse_options
from .routes import RouteTable, collect_routes

if TYPE_CHECKING:
    from ugate_core import Destination, GatewayAPI

#: the ``listener`` label of requests made through ``gateway.round_trip``
ROUND_TRIP = "round_trip"
#: ``Destination.labels[LABEL]`` says which HTTP version the upstream speaks
LABEL = "http"
H2_VALUES = frozenset({"h2", "h2c", "http2", "2"})


def wants_h2(dest: Destination) -> bool:
    """True if discovery says the destination speaks HTTP/2 (prior knowledge)."""
    v = dest.labels.get(LABEL)
    return v is not None and v.lower() in H2_VALUES


class PluginState:
    """Per gateway: upstream pools per listener (HTTP/1.1 and HTTP/2), the request counter,
    our ``Via`` token."""

    def __init__(self, gateway: GatewayAPI) -> None:
        self.gateway = gateway
        self.pools: dict[str, UpstreamPool] = {}
        self.h2pools: dict[str, H2UpstreamPool] = {}
        #: a loop (a request that comes back to this gateway) is seen by this token in Via
        self.via = f"ugate-{secrets.token_hex(4)}"
        self.requests = Counter(
            "ugate_http_requests", "HTTP requests answered by the http listener, by status",
            ["listener", "code"], registry=gateway.metrics.registry,
        )
        self._counts: dict[tuple[str, int], Tally] = {}
        self._bytes: dict[str, tuple[Tally, Tally]] = {}
        self._rt_options: HttpOptions | None = None
        #: requests sent in the express lane (express.py), for tests and benchmarks
        self.expressed = 0
        #: requests and answers the raw lane (raw.py) passed on as bytes, likewise
        self.raw_requests = 0
        self.raw_answers = 0
        #: address → (expiry, speaks HTTP/2): the per-request protocol choice, cached briefly
        self._h2_seen: dict[str, tuple[float, bool]] = {}
        #: other plugins' paths (ugate_http_routes), consulted before proxying
        self.routes: RouteTable = collect_routes(gateway)

    def count(self, listener: str, status: int) -> None:
        t = self._counts.get((listener, status))
        if t is None:
            t = self._counts[(listener, status)] = self.gateway.metrics.tally(
                self.requests, listener, str(status))
        t.n += 1

    def add_bytes(self, listener: str, up: int, down: int) -> None:
        """Body bytes of proxied requests, in the core's relay byte counter."""
        pair = self._bytes.get(listener)
        if pair is None:
            m = self.gateway.metrics
            pair = self._bytes[listener] = (m.tally(m.bytes, listener, "up"),
                                            m.tally(m.bytes, listener, "down"))
        pair[0].n += up
        pair[1].n += down

    def pool(self, listener: str, opts: HttpOptions) -> UpstreamPool:
        p = self.pools.get(listener)
        if p is None:
            p = self.pools[listener] = UpstreamPool(
                self.gateway,
                max_idle=opts.pool_max_idle,
                idle_timeout=opts.pool_idle_timeout,
                response_timeout=opts.response_timeout,
                max_header_bytes=opts.max_header_bytes,
            )
        return p

    def h2pool(self, listener: str, opts: HttpOptions) -> H2UpstreamPool:
        p = self.h2pools.get(listener)
        if p is None:
            p = self.h2pools[listener] = H2UpstreamPool(
                self.gateway,
                limits=H2Limits(stream_window=opts.h2_stream_window,
                                connection_window=opts.h2_connection_window, max_streams=0,
                                max_header_list=max(opts.max_header_bytes, 1 << 16)),
                idle_timeout=opts.pool_idle_timeout,
                response_timeout=opts.response_timeout,
            )
        return p

    def round_trip_options(self) -> HttpOptions:
        """The ``[http]`` table of the config: pool settings of ``gateway.round_trip``."""
        if self._rt_options is None:
            self._rt_options = parse_options(self.gateway.config.section("http"), "http")
        return self._rt_options

    async def round_trip(
        self,
        listener: str,
        opts: HttpOptions,
        req: OutgoingRequest,
        *,
        source: StreamMeta | None,
        on_interim: Callable[[Response], Awaitable[None]] | None = None,
        scheme: str = "http",
    ) -> Reply:
        """Send ``req`` upstream over HTTP/2 if discovery says the destination speaks it,
        else over HTTP/1.1 (upgrades always go over HTTP/1.1)."""
        if req.upgrade is None and await self._wants_h2(req.authority):
            return await self.h2pool(listener, opts).round_trip(
                req, source=source, on_interim=on_interim, scheme=scheme)
        return await self.pool(listener, opts).round_trip(req, source=source,
                                                          on_interim=on_interim)

    def speaks_h1(self, address: str) -> bool:
        """True if discovery said ``address`` speaks HTTP/1.1 within the last second (the
        express lane asks; no lookup)."""
        hit = self._h2_seen.get(address)
        return hit is not None and not hit[1] and hit[0] > time.monotonic()

    async def _wants_h2(self, address: str) -> bool:
        """Does discovery say ``address`` speaks HTTP/2? (remembered for a second: this is
        asked per request)"""
        now = time.monotonic()
        hit = self._h2_seen.get(address)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            dest, _ = await self.gateway.resolve(address)
        except DialError as e:
            self.gateway.metrics.dial_errors.labels(e.reason).inc()
            raise
        h2 = wants_h2(dest)
        if len(self._h2_seen) > 4096:
            self._h2_seen.clear()
        self._h2_seen[address] = (now + min(dest.ttl, 1.0), h2)
        return h2

    async def aclose(self) -> None:
        for p in self.pools.values():
            await p.aclose()
        for h in self.h2pools.values():
            await h.aclose()


_STATE = StashKey[PluginState]("http")


def state_for(gateway: GatewayAPI) -> PluginState:
    """The plugin's state for ``gateway`` (pools, round tripper), made on first use."""
    st = gateway.stash.get(_STATE, None)
    if st is None:
        st = gateway.stash[_STATE] = PluginState(gateway)
    return st


async def close_state(gateway: GatewayAPI) -> None:
    st = gateway.stash.pop(_STATE, None)
    if st is not None:
        await st.aclose()
