"""The plugin contract: every hook a ugate plugin may implement.

Hooks are plain, synchronous functions that return objects whose methods are async. An
implementation may accept fewer arguments than the spec names, so specs can grow. Plugins are
found through the ``ugate`` entry-point group; each entry point names a module whose
``@hookimpl`` functions implement these specs. The reference in ``docs/hooks.md`` is generated
from these docstrings (``make docs``).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .api import GatewayAPI
    from .records import StreamRecord
    from .roundtrip import RoundTripper
    from .stream import StreamMeta
    from .types import Destination, DialerType, Discovery, IdentitySource, ListenerType

PROJECT = "ugate"

#: Decorator for hook specifications: core's below, and those a plugin adds for other plugins
#: (``from ugate_core import hookspec``; see :func:`ugate_hookspecs`).
hookspec = pluggy.HookspecMarker(PROJECT)
#: Decorator for plugin implementations: ``from ugate_core import hookimpl``.
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------------------------------------
# Protocols: what the gateway accepts and how it reaches destinations
# ---------------------------------------------------------------------------------------------


@hookspec
def ugate_listener_types(gateway: GatewayAPI) -> list[ListenerType] | None:
    """Return the protocols this plugin can accept.

    Called once at start-up, after config is loaded and before any listener starts. Each
    :class:`~ugate_core.ListenerType` has a ``name`` that listeners name in
    ``listeners.<x>.protocols``. A stream protocol gives ``serve(stream, ctx)``; if it also gives
    ``sniff(prefix) -> Sniff`` it can share a port with other protocols. A protocol that owns its
    socket (UDP, QUIC) gives ``start(config, gateway)`` instead. Two plugins giving the same name
    is a start-up error naming both.
    """


@hookspec
def ugate_dialer_types(gateway: GatewayAPI) -> list[DialerType] | None:
    """Return the ways this plugin can reach a destination.

    Called once at start-up. The router picks the dialer whose ``name`` equals the
    ``protocol`` of the :class:`~ugate_core.Destination` that discovery returned, and awaits
    ``dial(request) -> Stream``; a dial raises :class:`~ugate_core.DialError` with a reason
    on failure. A dialer that proves who answers lists the identity kinds it checks in
    ``DialerType.verifies``: core never hands it a destination whose expected identities it
    cannot check (reason ``identity``), and ``config check`` refuses such a ``hosts`` entry.
    Core provides ``tcp`` (proves nothing) and ``tls`` (every kind).
    """


@hookspec
def ugate_discovery(gateway: GatewayAPI) -> list[Discovery] | None:
    """Return metadata systems that map names to destinations.

    Called once at start-up. ``discovery.order`` in config lists the names to ask, first
    answer wins; a discovery not named there is asked after the named ones, in load order.
    ``resolve(fqdn, port)`` has three outcomes:

    * a :class:`~ugate_core.Destination`: the answer, cached per (name, port) for its ``ttl``;
    * ``None``: the discovery does not know the name; the next one is asked, and when none
      knows it the router remembers that for 5 s (clamped to ``discovery.cache_min_ttl`` /
      ``cache_max_ttl``) and, with ``routing.direct``, dials the name through the system
      resolver;
    * :class:`~ugate_core.DiscoveryError` (a :class:`~ugate_core.DialError`) with a
      ``reason``: the discovery is responsible for the name but cannot answer safely
      (``dnssec_bogus``: the answer failed validation; ``dns_unavailable``: no server gave a
      usable answer in time). It ends the lookup: no other discovery is asked, nothing is
      dialed (never a direct dial), the dial fails with this error, and it is not cached.
      Raise it rather than return ``None`` whenever ``None`` would let a forged or missing
      answer route around the checks this discovery exists for.

    It must return within ``discovery.timeout`` seconds or it is skipped for that name, as it
    is when it raises any other exception: a discovery that must fail closed keeps its own
    deadline below ``discovery.timeout`` and raises DiscoveryError when it passes. Core
    provides ``local`` (the ``hosts`` table of the config).
    """


@hookspec(firstresult=True)
def ugate_round_tripper(gateway: GatewayAPI) -> RoundTripper | None:
    """Return the object that carries HTTP requests for :meth:`Gateway.round_trip`.

    First non-``None`` answer wins (``ugate-http`` provides one). Called once, on the first
    round trip. Its ``round_trip(HttpRequest) -> HttpResponse`` routes ``request.authority``
    through the gateway's discovery, policy and dialers and reuses upstream connections.
    """


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@hookspec
def ugate_config_sections(gateway: GatewayAPI) -> list[str] | None:
    """Return the names of the top-level config tables this plugin reads (``["ssh"]``).

    Called once by :meth:`Gateway.check` (``ugate config check``, and at start-up). A table
    that neither core nor a loaded plugin claims is a config error with a did-you-mean (a
    typo'd ``[identty]`` would otherwise be dropped in silence); a table named like an
    installed plugin that is not loaded is only logged. The plugin reads its table with
    ``gateway.config.section(name)`` and validates it itself.
    """


# ---------------------------------------------------------------------------------------------
# Identity and policy
# ---------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def ugate_identity(gateway: GatewayAPI) -> IdentitySource | None:
    """Return where this workload's key and certificates come from.

    First non-``None`` answer wins; core's default keeps the key in the state directory.
    Called when the config is checked and when ``gateway.identity`` is first used (at
    start-up, before listeners start): building the source must be cheap and create nothing
    (``ugate config check`` and ``ugate plugins`` call it); ``source.load(gateway)`` reads or
    creates the key and returns a :class:`~ugate_core.Identity`.
    """


@hookspec(firstresult=True)
def ugate_authorize(
    gateway: GatewayAPI, peer: StreamMeta, destination: Destination
) -> bool | None:
    """Decide whether ``peer`` may reach ``destination``.

    Called for every dial that a listener makes on behalf of a client, after discovery and
    before dialing. Return ``True`` to allow, ``False`` to deny, ``None`` to leave the decision
    to the next plugin and finally to the built-in policy (:mod:`ugate_core.policy`: loopback
    listeners without an ``allow`` list act as a local proxy; otherwise the listener's
    ``allow`` patterns and the ``[[rules]]`` that name the client decide). ``peer`` says who
    the client is as its protocol verified it (``peer_id``, ``extra["spiffe"]``, ``user`` with
    ``extra["user_verified"]``); a verified identity alone should authorize nothing.

    Whatever a hook answers, a client that is not local never reaches a protected address
    (loopback, link-local, cloud metadata, this gateway's own listeners and admin endpoint):
    only a built-in rule that names such a destination without a wildcard opens it. A listener
    beyond loopback that relays starts without a rule only when some plugin implements this
    hook. Every protocol that relays for clients goes through it by dialing with
    ``gateway.dial(address, source=meta)``.
    """


# ---------------------------------------------------------------------------------------------
# Lifecycle and observation
# ---------------------------------------------------------------------------------------------


@hookspec
def ugate_startup(gateway: GatewayAPI) -> Awaitable[None] | None:
    """Called once when the gateway starts, after listeners are bound.

    May return an awaitable, which the gateway awaits before it reports ready.
    """


@hookspec
def ugate_shutdown(gateway: GatewayAPI) -> Awaitable[None] | None:
    """Called once when the gateway stops, after listeners stopped accepting.

    May return an awaitable, awaited within the drain deadline.
    """


@hookspec
def ugate_stream_opened(gateway: GatewayAPI, record: StreamRecord) -> None:
    """Called when a relayed stream starts: ``record`` holds both ends' metadata.

    Must be cheap and must not block: it runs on the hot path of every connection.
    """


@hookspec
def ugate_stream_closed(gateway: GatewayAPI, record: StreamRecord) -> None:
    """Called when a relayed stream ends, with byte counts and the reason it ended.

    Use it for access logs and audit. Must be cheap and must not block.
    """


# ---------------------------------------------------------------------------------------------
# Extension points that plugins define for each other
# ---------------------------------------------------------------------------------------------


@hookspec
def ugate_hookspecs() -> list[object] | None:
    """Return the modules (or classes) holding hook specs this plugin defines for others.

    A plugin that others extend (ugate-http's HTTP routes, ugate-quic's ALPN handlers) marks
    its specs with ``@hookspec`` (``from ugate_core import hookspec``) and names them
    ``ugate_<plugin>_<what>``; implementations use ``@hookimpl`` as for core's hooks, in any
    plugin, loaded in any order. A hook that neither core nor a loaded plugin specifies is still
    refused at load (a typo stays an error), so an implementation of a spec whose plugin is not
    installed fails to load: mark it ``@hookimpl(optionalhook=True)`` (and import that
    plugin's types only when it is installed), or keep it in a module only that plugin's entry
    point loads. Called once while plugins load, without arguments.
    The defining plugin calls its own hook through :meth:`GatewayAPI.call_hook`.
    """
