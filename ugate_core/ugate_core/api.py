"""``GatewayAPI``: the part of a gateway a plugin may use.

Hook specs, :class:`~ugate_core.ListenerContext`, :class:`~ugate_core.DialRequest` and
:class:`~ugate_core.IdentitySource` are typed with this protocol, not with the
:class:`~ugate_core.Gateway` class: a plugin sees config, metrics, identity, the dial path,
policy, the relay and refusal bookkeeping, and its own per-gateway :class:`~ugate_core.Stash`
— nothing of the gateway's runtime (listeners, plugin manager, router internals). Core's
``Gateway`` implements it (``tests/test_api.py`` checks that with mypy and at run time), and a
test double may implement it too.

This module imports no runtime module of core, so typing against it closes no import circle.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .config import Config
    from .identity import Identity
    from .listeners import Admission
    from .metrics import Metrics
    from .policy import Verdict
    from .records import StreamRecord
    from .relay import RelayStats
    from .roundtrip import HttpRequest, HttpResponse
    from .stash import Stash
    from .stream import Stream, StreamMeta
    from .types import Destination, DialerType, DialRequest, ListenerType

__all__ = ["GatewayAPI"]


@runtime_checkable
class GatewayAPI(Protocol):
    """What a plugin may use of the gateway it runs in (see the module docs)."""

    # -- state -------------------------------------------------------------------------
    @property
    def config(self) -> Config:
        """The whole parsed config; a plugin reads its table with ``config.section(name)``."""
        ...

    @property
    def metrics(self) -> Metrics:
        """Prometheus metrics; per-connection counts go through ``metrics.tally``."""
        ...

    @property
    def identity(self) -> Identity:
        """This workload's identity (loaded through ``ugate_identity`` on first use)."""
        ...

    @property
    def state_dir(self) -> Path:
        """Where this gateway keeps keys and other state."""
        ...

    @property
    def stash(self) -> Stash:
        """Per-gateway state for plugins, by :class:`~ugate_core.StashKey`."""
        ...

    @property
    def dialer_types(self) -> Mapping[str, DialerType]:
        """The installed dialers by name (``secure`` ones carry ``https`` round trips)."""
        ...

    @property
    def listener_types(self) -> Mapping[str, ListenerType]:
        """The installed protocols by name (the TLS front dispatches by their ALPN)."""
        ...

    def addresses(self, listener: str) -> list[tuple[str, int]]:
        """Where listener ``listener`` is bound (a port 0 read back), once the gateway started
        it; ``KeyError`` for an unknown or not yet started listener. A plugin that serves the
        same port number on another transport (ugate-quic: UDP beside the shared TCP port)
        reads it here in ``ugate_startup``."""
        ...

    def call_hook(self, name: str, **kwargs: Any) -> list[Any]:
        """Call hook ``name`` — one a plugin specified (``ugate_hookspecs``) — and return the
        implementations' answers that are not ``None``, in load order. ``gateway`` is passed
        when the spec names it; an unknown name is an ``AttributeError``."""
        ...

    # -- who a client is -------------------------------------------------------------------
    def verify_token(self, token: str, now: float | None = None) -> str:
        """The subject of a signed token (:mod:`ugate_core.tokens`): signed by a ``[tokens]
        trusted_keys`` key, for this gateway's audience, not expired, not valid longer than
        ``max_lifetime``. Otherwise :class:`~ugate_core.AuthError` with a ``reason``
        (``token_expired``, ``token_audience``, ...) and a message that never holds the
        token. A listener makes the subject the client's verified user (``meta.user``,
        ``extra["user_verified"]``), which ``[[rules]]`` name ``user:<sub>``."""
        ...

    # -- routing, policy, dialing --------------------------------------------------------
    async def resolve(self, address: str) -> tuple[Destination, int]:
        """Discovery only: ``name:port`` → (Destination, port)."""
        ...

    def invalidate_route(self, name: str | None = None) -> None:
        """Forget cached discovery answers for ``name`` (all names: ``None``)."""
        ...

    def admit(self, source: StreamMeta, dest: Destination, port: int | None,
              address: str) -> Verdict:
        """May ``source`` reach ``dest``? (``ugate_authorize`` hooks, rules, protected
        addresses) A refusal is counted and raised as ``DialError("denied")``."""
        ...

    async def dial(self, address: str, *, source: StreamMeta | None = None,
                   timeout: float | None = None, screen: bool = False) -> Stream:
        """Reach ``address`` through discovery, policy and a dialer (``screen``: refuse
        protected addresses even without a ``source``, for wildcard routes)."""
        ...

    async def dial_destination(self, dest: Destination, port: int, *,
                               source: StreamMeta | None = None, timeout: float | None = None,
                               screen: bool = False) -> Stream:
        """Dial ``dest`` (discovery and policy done)."""
        ...

    async def screen_addresses(self, req: DialRequest) -> list[str]:
        """The addresses a dialer may connect to for ``req`` (protected ones screened)."""
        ...

    async def round_trip(self, request: HttpRequest) -> HttpResponse:
        """An HTTP request through routing, policy and pooled upstream connections."""
        ...

    # -- relaying ------------------------------------------------------------------------
    def start_relay(self, client: Stream, upstream: Stream, *,
                    then: Callable[[StreamRecord], None] | None = None) -> StreamRecord:
        """Relay ``client`` ⇄ ``upstream`` on transport callbacks and return at once."""
        ...

    async def relay(self, client: Stream, upstream: Stream) -> RelayStats:
        """Relay and wait until it ended."""
        ...

    async def forward(self, client: Stream, address: str, *, wait: bool = True,
                      route: bool = False) -> RelayStats:
        """Dial ``address`` for ``client`` and relay: the whole job of a simple proxy
        (``route=True``: the address is a configured route, not the client's choice)."""
        ...

    async def drained(self) -> None:
        """Return once no relayed stream is left (at once when there is none)."""
        ...

    # -- refusals ------------------------------------------------------------------------
    def reject(self, listener: str, reason: str, detail: str = "",
               meta: StreamMeta | None = None) -> None:
        """Count one refusal and log it at a bounded rate."""
        ...

    def log_refusal(self, listener: str, reason: str, msg: str, *args: object,
                    level: int = ...) -> None:
        """Log a refusal counted elsewhere at the same bounded rate."""
        ...

    def guard(self, listener: str, meta: StreamMeta) -> contextlib.AbstractContextManager[None]:
        """Turn what a connection's protocol raises into one log line and a refusal."""
        ...

    # -- listeners that accept their own sockets -------------------------------------------
    def admission(self, listener: str) -> Admission:
        """A ``max_connections`` counter for a listener that accepts its own connections."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, Any],
              done: Callable[[asyncio.Task[Any]], None] | None = None) -> asyncio.Task[Any]:
        """Run ``coro`` as a task that shutdown waits for (within the drain deadline)."""
        ...
