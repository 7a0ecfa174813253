"""ugate-quic hooks: the ``quic`` listener (one UDP endpoint, ALPN dispatch) and dialer."""

from __future__ import annotations

from collections.abc import Awaitable

from ugate_core import (
    IDENTITY_KINDS,
    DialerType,
    GatewayAPI,
    ListenerConfig,
    ListenerType,
    RunningListener,
    hookimpl,
)

from .alpn import hookspecs
from .endpoint import OPTION_KEYS, check_options, check_section, start_quic_listener
from .mesh import alpn_handler, close_pool, dial_quic
from .shared import start_shared, stop_shared


async def _start(cfg: ListenerConfig, gw: GatewayAPI) -> RunningListener:
    return await start_quic_listener(cfg, gw, [alpn_handler()])


@hookimpl
def ugate_hookspecs() -> list[object]:
    return [hookspecs]  # ugate_quic_alpn: other plugins' ALPN protocols (alpn.py)


@hookimpl
def ugate_listener_types() -> list[ListenerType]:
    return [ListenerType(
        name="quic", start=_start, relays=True, check_options=check_options,
        option_keys=OPTION_KEYS,
        description="QUIC on UDP: mesh streams (ALPN ugate/1) and other plugins' ALPNs (h3)")]


@hookimpl
def ugate_config_sections() -> list[str]:
    return ["quic"]


@hookimpl
def ugate_dialer_types(gateway: GatewayAPI) -> list[DialerType]:
    check_section(gateway)  # a bad [quic] table fails at load ('ugate config check' too)
    return [DialerType("quic", dial_quic, "mesh streams over QUIC (ALPN ugate/1) through a "
                       "peer gateway; one pooled connection per peer",
                       verifies=frozenset(IDENTITY_KINDS), secure=True)]


@hookimpl
def ugate_startup(gateway: GatewayAPI) -> Awaitable[None]:
    return start_shared(gateway, [alpn_handler()])  # UDP beside each shared TCP port


@hookimpl
def ugate_shutdown(gateway: GatewayAPI) -> Awaitable[None]:
    return _shutdown(gateway)


async def _shutdown(gateway: GatewayAPI) -> None:
    await stop_shared(gateway)
    await close_pool(gateway)
