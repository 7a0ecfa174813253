"""ugate-webtransport hooks: the ``h3`` ALPN on ugate-quic's endpoint, the ``webtransport``
listener (UDP, HTTP/3 only: for browsers), the ``[webtransport]`` config table, and (with
ugate-http installed) the certificate hashes route."""

from __future__ import annotations

import importlib.util

from ugate_core import GatewayAPI, ListenerConfig, ListenerType, RunningListener, hookimpl
from ugate_quic.alpn import AlpnHandler
from ugate_quic.endpoint import OPTION_KEYS, check_browser_options, start_quic_listener

from .session import open_session, settings_of


def h3_handler() -> AlpnHandler:
    return AlpnHandler("h3", open_session, "HTTP/3 with WebTransport sessions")


@hookimpl
def ugate_quic_alpn(gateway: GatewayAPI) -> list[AlpnHandler]:
    settings_of(gateway)  # a bad [webtransport] table fails the listener's start
    return [h3_handler()]


async def _start(cfg: ListenerConfig, gw: GatewayAPI) -> RunningListener:
    settings_of(gw)
    return await start_quic_listener(cfg, gw, [h3_handler()], only=True)


@hookimpl
def ugate_listener_types() -> list[ListenerType]:
    return [ListenerType(
        name="webtransport", start=_start, relays=True, check_options=check_browser_options,
        option_keys=OPTION_KEYS,
        description="QUIC on UDP for browsers: HTTP/3 and WebTransport only (ALPN h3), "
                    "datagrams of at most 1452 bytes")]


@hookimpl
def ugate_config_sections(gateway: GatewayAPI) -> list[str]:
    settings_of(gateway)  # `ugate config check` names a bad key
    return ["webtransport"]


# ugate_http_routes is ugate-http's hook: implemented only where ugate-http is installed, and
# optional (a hook no loaded plugin specifies is refused at load, and ugate-http may be
# installed but disabled)
if importlib.util.find_spec("ugate_http") is not None:
    from .http_route import routes

    @hookimpl(optionalhook=True)
    def ugate_http_routes(gateway: GatewayAPI) -> list[object]:
        return list(routes(gateway))
