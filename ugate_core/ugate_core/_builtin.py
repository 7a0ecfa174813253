"""Core's own plugin: ``tcp`` and ``tls`` listeners and dialers, ``local`` discovery and the
file-based identity.

Registered through the same hooks as external plugins.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from . import tls
from .hookspecs import hookimpl
from .identity import FileIdentitySource
from .router import LocalDiscovery, is_ip
from .stream import StreamMeta, TcpStream
from .types import (
    DialerType,
    DialRequest,
    Discovery,
    IdentitySource,
    ListenerContext,
    ListenerType,
)

if TYPE_CHECKING:
    from .api import GatewayAPI
    from .stream import Stream


async def _serve_tcp(stream: Stream, ctx: ListenerContext) -> None:
    await ctx.gateway.forward(stream, ctx.config.target, wait=False, route=True)


async def dial_tcp(req: DialRequest) -> Stream:
    """Open a kernel TCP connection to the endpoint (the system resolver resolves names)."""
    loop = asyncio.get_running_loop()
    host = req.host
    if req.screen:  # a name chosen by a client beyond loopback: never to this host's addresses
        host = (await req.gateway.screen_addresses(req))[0]
    # whom we dial is known: no getpeername per connection when it is an address
    meta = StreamMeta(protocol="tcp",
                      remote=(host, req.target_port) if is_ip(host) else None)
    _, proto = await loop.create_connection(lambda: TcpStream(meta), host, req.target_port)
    return proto


@hookimpl
def ugate_listener_types() -> list[ListenerType]:
    return [
        ListenerType(
            name="tcp",
            serve=_serve_tcp,
            relays=False,
            option_keys=frozenset(),
            description="forward every connection to the fixed 'target' host:port",
        ),
        tls.listener_type(),
    ]


@hookimpl
def ugate_dialer_types() -> list[DialerType]:
    return [DialerType("tcp", dial_tcp, "plain TCP connection"), tls.dialer_type()]


@hookimpl
def ugate_discovery(gateway: GatewayAPI) -> list[Discovery]:
    return [LocalDiscovery(gateway.config.hosts)]


@hookimpl
def ugate_config_sections() -> list[str]:
    return ["identity"]


@hookimpl
def ugate_identity(gateway: GatewayAPI) -> IdentitySource:
    """The key file in the state directory (validates ``[identity]``; loads nothing yet)."""
    return FileIdentitySource(gateway.config.section("identity"))
