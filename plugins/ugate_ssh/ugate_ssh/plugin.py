"""ugate-ssh hooks: the ``ssh`` listener, the ``ssh`` and ``ssh-reverse`` dialers, the
``ssh-reverse`` discovery, and the ``[ssh] upstreams`` lifecycle."""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from ugate_core import (
    DialerType,
    DialRequest,
    Discovery,
    GatewayAPI,
    ListenerContext,
    ListenerType,
    Stream,
    hookimpl,
)

from .reverse import ReverseDiscovery, dial_reverse
from .server import OPTION_KEYS, check_options, has_auth, sniff
from .state import SshState

if logging.getLogger("asyncssh").level == logging.NOTSET:
    # asyncssh logs every channel at INFO; ugate logs its own one-line events
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


async def _serve(stream: Stream, ctx: ListenerContext) -> None:
    srv = await SshState.of(ctx.gateway).server(ctx)
    await srv.serve(stream, ctx)


async def _dial_ssh(req: DialRequest) -> Stream:
    return await SshState.of(req.gateway).pool.dial(req)


async def _dial_reverse(req: DialRequest) -> Stream:
    return await dial_reverse(SshState.of(req.gateway).reverse, req)


@hookimpl
def ugate_listener_types() -> list[ListenerType]:
    return [
        ListenerType(
            name="ssh",
            serve=_serve,
            sniff=sniff,
            relays=True,
            has_auth=has_auth,
            check_options=check_options,
            option_keys=frozenset(OPTION_KEYS),
            description="SSH server (public keys, mesh IDs, OpenSSH certificates): "
            "direct-tcpip (-W/-L/-D/-J) and tcpip-forward (-R) by mesh name",
        )
    ]


@hookimpl
def ugate_dialer_types() -> list[DialerType]:
    return [
        DialerType("ssh", _dial_ssh, "direct-tcpip channel over a pooled SSH connection to "
                   "the endpoint (a gateway or sshd), host key checked against the identity",
                   verifies=frozenset({"id", "spki_sha256"})),
        DialerType("ssh-reverse", _dial_reverse, "forwarded-tcpip channel back to an SSH "
                   "client that asked for tcpip-forward (ssh -R)",
                   verifies=frozenset({"id"})),
    ]


@hookimpl
def ugate_config_sections() -> list[str]:
    return ["ssh"]


@hookimpl
def ugate_discovery(gateway: GatewayAPI) -> list[Discovery]:
    return [ReverseDiscovery(SshState.of(gateway).reverse)]


@hookimpl
def ugate_startup(gateway: GatewayAPI) -> None:
    from .client import start_upstreams

    start_upstreams(SshState.of(gateway))


@hookimpl
def ugate_shutdown(gateway: GatewayAPI) -> Awaitable[None] | None:
    return SshState.of(gateway).aclose()
