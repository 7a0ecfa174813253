"""ugate-webtransport hooks: the ``h3`` ALPN on ugate-quic's endpoint, the ``[webtransport]``
config table, and (with ugate-http installed) the certificate hashes route."""

from __future__ import annotations

import importlib.util

from ugate_core import GatewayAPI, hookimpl
from ugate_quic.alpn import AlpnHandler

from .session import open_session, settings_of


@hookimpl
def ugate_quic_alpn(gateway: GatewayAPI) -> list[AlpnHandler]:
    settings_of(gateway)  # a bad [webtransport] table fails the listener's start
    return [AlpnHandler("h3", open_session, "HTTP/3 with WebTransport sessions")]


@hookimpl
def ugate_config_sections() -> list[str]:
    return ["webtransport"]


# ugate_http_routes is ugate-http's hook: implemented only where ugate-http is installed, and
# optional (a hook no loaded plugin specifies is refused at load, and ugate-http may be
# installed but disabled)
if importlib.util.find_spec("ugate_http") is not None:
    from .http_route import routes

    @hookimpl(optionalhook=True)
    def ugate_http_routes(gateway: GatewayAPI) -> list[object]:
        return list(routes(gateway))
