"""HTTP routes: how other plugins answer requests on ugate-http's listeners (public API).

ugate-http owns HTTP on a port (HTTP/1.1, h2c, h2 behind the TLS front). A plugin that needs a
path of its own — a WebSocket endpoint (ugate-ws), WHIP signaling (ugate-webrtc), a token
endpoint — implements the hook ``ugate_http_routes`` instead of parsing HTTP again::

    from ugate_core import hookimpl
    from ugate_http.routes import Exchange, HttpRoute

    async def hello(ex: Exchange) -> None:
        await ex.respond(200, [("content-type", "text/plain")], b"hello\\n")

    @hookimpl
    def ugate_http_routes(gateway):
        return [HttpRoute("/.well-known/hello", hello, methods=frozenset({"GET"}))]

Every request whose path (before ``?``) equals a route's ``prefix`` or continues it after a
``/`` goes to that route's handler instead of the proxy, over HTTP/1.1 and HTTP/2 alike, on
every ``http`` listener (cleartext, h2c, TLS); the longest prefix wins, and two routes with one
prefix are a start-up error. Routes are checked before proxy authentication: a route
authenticates its own clients (a browser cannot send ``Proxy-Authorization``), and the
gateway's policy still decides every stream a handler dials.

A handler either answers (:meth:`Exchange.respond`) or takes the exchange over as a byte
stream (:meth:`Exchange.accept`): an HTTP/1.1 ``Upgrade`` (101) or an RFC 8441 extended
CONNECT over HTTP/2 (200). A handler that returns without either gets a 500; one that raises
gets a 500 (or a reset once the head is sent), counted and logged.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ugate_core import ConfigError, hookspec

if TYPE_CHECKING:
    from ugate_core import GatewayAPI, Stream, StreamMeta

__all__ = ["Exchange", "HttpRoute", "RouteTable", "collect_routes", "hookspecs"]

Header = tuple[str, str]


class Exchange(Protocol):
    """One request to a route, the same over HTTP/1.1 and HTTP/2."""

    @property
    def method(self) -> str:
        """``GET``, ``POST``, ``CONNECT`` (an HTTP/2 extended CONNECT), ..."""
        ...

    @property
    def path(self) -> str:
        """The request target's path with its query (``/a/b?x=1``), as the client sent it."""
        ...

    @property
    def headers(self) -> Sequence[Header]:
        """The fields in order, names lower-case, values as sent; no HTTP/2 pseudo-headers
        (``:authority`` is given as ``host``)."""
        ...

    @property
    def protocol(self) -> str | None:
        """The protocol the client asks to switch to, lower-case: HTTP/1.1 ``Upgrade``
        (with ``Connection: upgrade``) or HTTP/2 ``:protocol``; ``None`` for a plain request."""
        ...

    @property
    def http_version(self) -> str:
        """``"1.1"`` or ``"2"``."""
        ...

    @property
    def meta(self) -> StreamMeta:
        """The client connection's metadata: peer address, listener, TLS and a verified mesh
        identity (``peer_id``, ``extra["spiffe"]``) when the client presented a certificate."""
        ...

    def header(self, name: str) -> str | None:
        """The value of field ``name`` (lower-case); several lines joined with ``", "``."""
        ...

    async def body(self, limit: int) -> bytes:
        """The whole request body; more than ``limit`` bytes answers 413 and raises
        :class:`~ugate_core.ProtocolError` (the handler just returns)."""
        ...

    async def respond(self, status: int, headers: Iterable[Header] = (),
                      body: bytes = b"") -> None:
        """Answer with ``status``, ``headers`` and ``body`` (``content-length`` is added).
        The connection goes on with the client's next request where HTTP allows."""
        ...

    async def accept(self, headers: Iterable[Header] = ()) -> Stream:
        """Switch protocols and return the byte stream: HTTP/1.1 answers ``101 Switching
        Protocols`` (adding ``Connection: upgrade`` and ``Upgrade: <protocol>``), HTTP/2
        answers ``200`` to the extended CONNECT. ``headers`` are the new protocol's own (e.g.
        ``sec-websocket-accept``). The stream carries what follows both ways (HTTP/1.1: the
        rest of the connection; HTTP/2: the stream's DATA, END_STREAM as end of file) with
        backpressure, and its ``meta`` is the client connection's."""
        ...


Handler = Callable[[Exchange], Awaitable[None]]


@dataclass(frozen=True)
class HttpRoute:
    """A path of a plugin's own on the ``http`` listeners."""

    prefix: str
    """``/`` followed by the path it owns (``/.well-known/ugate/ws``)."""
    handle: Handler
    methods: frozenset[str] = frozenset()
    """Methods it answers (empty: any); others get 405 without reaching the handler. An
    HTTP/2 extended CONNECT is let through when its ``:protocol`` is in :attr:`protocols`
    (it is HTTP/2's form of an HTTP/1.1 ``GET`` with ``Upgrade``), refused with 400 when not."""
    protocols: frozenset[str] = frozenset()
    """Protocols it accepts through :meth:`Exchange.accept` (``websocket``). A non-empty set
    makes the HTTP/2 front offer RFC 8441 extended CONNECT (``SETTINGS_ENABLE_CONNECT_PROTOCOL``)
    and lets an extended CONNECT with that ``:protocol`` reach the handler."""
    name: str = field(default="")
    """For logs and metrics (default: the prefix)."""

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/") or "?" in self.prefix or "#" in self.prefix:
            raise ConfigError("", f"HTTP route prefix {self.prefix!r} must be a path that "
                              "starts with '/'")
        if not self.name:
            object.__setattr__(self, "name", self.prefix)


class RouteTable:
    """The installed routes, matched by longest prefix on whole path segments."""

    def __init__(self, routes: Iterable[HttpRoute] = ()) -> None:
        self._by_prefix: dict[str, HttpRoute] = {}
        for r in routes:
            key = r.prefix.rstrip("/") or "/"
            if key in self._by_prefix:
                raise ConfigError("", f"two plugins route HTTP path {r.prefix!r} "
                                  f"({self._by_prefix[key].name!r} and {r.name!r})")
            self._by_prefix[key] = r
        self.protocols = frozenset(p for r in self._by_prefix.values() for p in r.protocols)

    def __bool__(self) -> bool:
        return bool(self._by_prefix)

    def __len__(self) -> int:
        return len(self._by_prefix)

    def match(self, target: str) -> HttpRoute | None:
        """The route for request target ``target`` (origin form; a query is ignored)."""
        if not self._by_prefix or not target.startswith("/"):
            return None
        path = target.split("?", 1)[0].split("#", 1)[0]
        while True:
            r = self._by_prefix.get(path)
            if r is not None:
                return r
            if path in ("", "/"):
                return None
            path = path.rsplit("/", 1)[0] or "/"


def ugate_http_routes(gateway: GatewayAPI) -> list[HttpRoute] | None:
    """Return the HTTP paths this plugin answers on ugate-http's listeners.

    Called once when the gateway starts. Each :class:`~ugate_http.routes.HttpRoute` names a
    path prefix, the methods and upgrade protocols it accepts and an async handler that gets
    an :class:`~ugate_http.routes.Exchange` — the same object over HTTP/1.1 and HTTP/2 — and
    answers it or takes it over as a byte stream. Two routes with one prefix are a start-up
    error naming both.
    """


#: The hook specs ugate-http adds for other plugins (returned by its ``ugate_hookspecs``).
hookspecs = types.SimpleNamespace(ugate_http_routes=hookspec(ugate_http_routes))


def collect_routes(gateway: GatewayAPI) -> RouteTable:
    """Every installed plugin's routes, checked (what the fronts consult per request)."""
    routes: list[HttpRoute] = []
    for got in gateway.call_hook("ugate_http_routes"):
        routes.extend(got)
    return RouteTable(routes)
