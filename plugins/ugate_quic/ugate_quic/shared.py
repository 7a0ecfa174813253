"""QUIC on the shared port's number, on UDP: started with the gateway, stopped with it.

For every shared-port listener (``protocols = ["*"]``) ugate-quic binds UDP on the same host
and port once the TCP side is bound (``ugate_startup``; a port 0 is read back), and serves the
installed ALPNs there with the **shared listener's** name, options and rules — one port
number, every protocol, as DESIGN.md says. ``[quic] shared_port = false`` turns it off; a
dedicated ``quic`` listener is unaffected. A UDP port that cannot be bound is logged and
skipped: the TCP side serves on.
"""

from __future__ import annotations

import logging

from ugate_core import ConfigError, GatewayAPI, StashKey

from .alpn import AlpnHandler, collect_alpn
from .endpoint import QuicEndpoint, shared_port_enabled

log = logging.getLogger("ugate.quic")

_SHARED: StashKey[list[QuicEndpoint]] = StashKey()


async def start_shared(gw: GatewayAPI, own: list[AlpnHandler]) -> None:
    if not shared_port_enabled(gw):
        return
    started: list[QuicEndpoint] = []
    gw.stash[_SHARED] = started
    handlers: dict[str, AlpnHandler] | None = None
    for lc in gw.config.listeners:
        if lc.protocols != ("*",):
            continue
        if handlers is None:
            handlers = collect_alpn(gw, own)
        for host, port in gw.addresses(lc.name):
            ep = QuicEndpoint(lc, gw, handlers, host=host, port=port)
            try:
                await ep.start()
            except ConfigError as e:
                log.warning("quic_shared_port_skipped listener=%s address=%s:%d error=%r",
                            lc.name, host, port, str(e))
                continue
            started.append(ep)


async def stop_shared(gw: GatewayAPI) -> None:
    for ep in shared_endpoints(gw):
        await ep.aclose()


def shared_endpoints(gw: GatewayAPI) -> list[QuicEndpoint]:
    """The endpoints started beside shared ports (tests, admin)."""
    got: list[QuicEndpoint] | None = gw.stash.get(_SHARED, None)
    return list(got or ())
