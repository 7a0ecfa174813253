"""FQDN routing: ask the discoveries in order, cache by TTL, fall back to the system resolver."""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import ipaddress
import logging
import time
from collections.abc import Iterable, Sequence

from .config import Config, HostConfig
from .errors import ConfigError, DialError
from .metrics import Metrics
from .types import Destination, Discovery, Endpoint

log = logging.getLogger("ugate.router")


@functools.lru_cache(maxsize=4096)  # every dial parses its address; most repeat
def split_address(address: str, default_port: int | None = None) -> tuple[str, int]:
    """``name:port`` / ``[v6]:port`` → (name, port), as a DialError on bad input."""
    from .options import parse_hostport

    try:
        host, port = parse_hostport(address, "address", default_port)
    except ConfigError as e:
        raise DialError("bad_address", f"bad address {address!r}: {e}") from None
    if not 1 <= port <= 65535:
        raise DialError("bad_address", f"bad address {address!r}: port {port} out of range")
    return normalize_name(host), port


def normalize_name(host: str) -> str:
    h = host.strip().rstrip(".").lower()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    return h


@functools.lru_cache(maxsize=4096)  # asked per dial (SNI choice, known remote address)
def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def match_name(pattern: str, name: str) -> bool:
    """Exact name, ``*.suffix`` (any depth below suffix), or ``*`` for all."""
    pattern = pattern.lower().rstrip(".")
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return name.endswith(pattern[1:])
    if any(c in pattern for c in "?["):
        return fnmatch.fnmatchcase(name, pattern)
    return name == pattern


class LocalDiscovery:
    """The ``hosts`` table of the config: exact names first, then the longest ``*.suffix``."""

    name = "local"

    def __init__(self, hosts: Iterable[HostConfig]) -> None:
        self.exact: dict[str, HostConfig] = {}
        self.wild: list[HostConfig] = []
        for h in hosts:
            if h.name.startswith("*."):
                self.wild.append(h)
            else:
                self.exact[h.name] = h
        self.wild.sort(key=lambda h: len(h.name), reverse=True)

    def lookup(self, fqdn: str) -> HostConfig | None:
        h = self.exact.get(fqdn)
        if h is None:
            h = next((w for w in self.wild if match_name(w.name, fqdn)), None)
        return h

    async def resolve(self, fqdn: str, port: int) -> Destination | None:
        h = self.lookup(fqdn)
        if h is None:
            return None
        return Destination(
            name=fqdn,
            endpoints=h.endpoints,
            protocol=h.protocol,
            identities=h.identities,
            labels=h.labels,
            ttl=3600.0,
            source="local",
        )


class Router:
    """Turns a name into a :class:`Destination`."""

    def __init__(
        self, config: Config, discoveries: Sequence[Discovery], metrics: Metrics
    ) -> None:
        self.config = config
        self.metrics = metrics
        order = list(config.discovery.order)
        by_name = {d.name: d for d in discoveries}
        named = [by_name[n] for n in order if n in by_name]
        rest = [d for d in discoveries if d.name not in order]
        self.discoveries: list[Discovery] = named + rest
        # keyed by (name, port): DANE/TLSA and SRV answers depend on the port
        self._cache: dict[tuple[str, int], tuple[float, Destination | None]] = {}
        self._inflight: dict[tuple[str, int], asyncio.Future[Destination | None]] = {}
        self._cached_tally = metrics.tally(metrics.discovery, "cache", "cached")
        self._direct: dict[str, Destination] = {}

    def invalidate(self, name: str | None = None) -> None:
        if name is None:
            self._cache.clear()
        else:
            for key in [k for k in self._cache if k[0] == name]:
                del self._cache[key]

    def routes(self) -> list[dict[str, object]]:
        now = time.monotonic()
        out: list[dict[str, object]] = []
        for (name, port), (exp, d) in sorted(self._cache.items()):
            out.append(
                {
                    "name": name,
                    "port": port,
                    "expires_in": round(exp - now, 1),
                    "protocol": d.protocol if d else None,
                    "endpoints": [str(e) for e in d.endpoints] if d else [],
                    "source": d.source if d else None,
                }
            )
        return out

    def cached(self, name: str, port: int) -> Destination | None:
        """The destination of a normalized ``name`` when a fresh cache entry names one (counted
        as a cache hit, as :meth:`resolve` counts it); else None and :meth:`resolve` decides.
        Lets a dial skip a coroutine for the common case."""
        hit = self._cache.get((name, port))
        if hit is None or hit[0] <= time.monotonic():
            return None
        dest = hit[1]
        if dest is None:  # nobody knows it: dialed directly, or resolve() refuses it
            if not self.config.routing.direct:
                return None
            dest = self._direct_to(name)
        self._cached_tally.n += 1
        return dest

    def _direct_to(self, name: str) -> Destination:
        """The destination of a name no discovery knows (``[routing] direct``); one per name,
        kept like the discoveries' cached answers (a frozen dataclass is slow to make)."""
        dest = self._direct.get(name)
        if dest is None:
            if len(self._direct) > 10_000:
                self._direct.clear()
            dest = self._direct[name] = Destination(name=name, endpoints=(Endpoint(name),),
                                                    source="direct", ttl=0)
        return dest

    async def resolve(self, host: str, port: int) -> Destination:
        """The destination for ``host``.

        DialError(``no_route``) if nobody knows it and ``routing.direct`` is off; a
        discovery's :class:`~ugate_core.DiscoveryError` as it was raised (never a direct dial).
        """
        name = normalize_name(host)
        now = time.monotonic()
        key = (name, port)
        hit = self._cache.get(key)
        dest: Destination | None
        if hit is not None and hit[0] > now:
            self._cached_tally.n += 1
            dest = hit[1]
        else:
            fut = self._inflight.get(key)
            if fut is None:
                fut = asyncio.get_running_loop().create_future()
                self._inflight[key] = fut
                try:
                    dest = await self._lookup(name, port)
                    fut.set_result(dest)
                except BaseException as e:
                    fut.set_exception(e)
                    fut.exception()  # mark retrieved
                    raise
                finally:
                    del self._inflight[key]
            else:
                dest = await asyncio.shield(fut)
        if dest is not None:
            return dest
        if self.config.routing.direct:
            return self._direct_to(name)
        raise DialError("no_route", f"no route to {name!r}: no discovery knows it")

    async def _lookup(self, name: str, port: int) -> Destination | None:
        timeout = self.config.discovery.timeout
        for d in self.discoveries:
            try:
                async with asyncio.timeout(timeout):  # not wait_for: no task per lookup
                    dest = await d.resolve(name, port)
            except DialError as e:
                # DiscoveryError (or any DialError): the discovery knows the name but cannot
                # answer safely (DNSSEC bogus, DNS down, policy). It ends the lookup: the next
                # discovery or a direct dial would route around it. Not cached: the next dial
                # asks again (concurrent ones share this attempt through _inflight).
                self.metrics.discovery.labels(d.name, e.reason).inc()
                log.warning("discovery_failed discovery=%s name=%s port=%d reason=%s error=%r",
                            d.name, name, port, e.reason, str(e))
                raise
            except TimeoutError:
                self.metrics.discovery.labels(d.name, "timeout").inc()
                log.warning("discovery_timeout discovery=%s name=%s timeout=%s", d.name, name,
                            timeout)
                continue
            except Exception as e:
                self.metrics.discovery.labels(d.name, "error").inc()
                log.warning("discovery_error discovery=%s name=%s error=%r", d.name, name, e)
                continue
            if dest is not None:
                self.metrics.tally(self.metrics.discovery, d.name, "hit").n += 1
                self._store(name, port, dest, dest.ttl)
                return dest
            self.metrics.tally(self.metrics.discovery, d.name, "miss").n += 1
        # unknown names and IP literals alike: remember "nobody knows" briefly, so a burst of
        # connections to one address asks the discoveries once
        self._store(name, port, None, 5.0)
        return None

    def _store(self, name: str, port: int, dest: Destination | None, ttl: float) -> None:
        c = self.config.discovery
        ttl = min(max(ttl, c.cache_min_ttl), c.cache_max_ttl)
        if ttl > 0:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[(name, port)] = (time.monotonic() + ttl, dest)
