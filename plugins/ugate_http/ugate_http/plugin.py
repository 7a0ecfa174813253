"""Hook implementations of the ``http`` plugin (thin: the protocol lives beside this file)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

from ugate_core import ListenerType, hookimpl

from .h1front import close_state, serve
from .options import KEYS, check_options, has_auth
from .roundtripper import GatewayRoundTripper
from .routes import hookspecs
from .sniff import sniff

if TYPE_CHECKING:
    from ugate_core import GatewayAPI, RoundTripper


@hookimpl
def ugate_listener_types() -> list[ListenerType]:
    return [
        ListenerType(
            name="http",
            serve=serve,
            sniff=sniff,
            relays=True,
            has_auth=has_auth,
            check_options=check_options,
            option_keys=frozenset(KEYS),
            # behind the TLS front: h2 from clients without a certificate (browsers, curl);
            # mesh peers with one go to HBONE
            alpn=("h2",),
            tls_client_cert=False,
            description="HTTP/1.1 forward proxy (CONNECT, absolute URIs) and reverse proxy "
            "(route by Host; option mode); HTTP/2 reverse proxy (h2c, Upgrade: h2c, h2 by "
            "ALPN)",
        )
    ]


@hookimpl
def ugate_hookspecs() -> list[object]:
    return [hookspecs]  # ugate_http_routes: other plugins' paths (routes.py)


@hookimpl
def ugate_config_sections() -> list[str]:
    return ["http"]  # the round tripper's options


@hookimpl
def ugate_round_tripper(gateway: GatewayAPI) -> RoundTripper:
    return GatewayRoundTripper(gateway)


@hookimpl
def ugate_shutdown(gateway: GatewayAPI) -> Awaitable[None] | None:
    return close_state(gateway)
