"""ugate-webtransport hooks: the ``h3`` ALPN on ugate-quic's endpoint, the ``[webtransport]``
config table."""

from __future__ import annotations

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
