"""ugate-ws hooks: the ``/.well-known/ugate/ws`` route on ugate-http's listeners, the
dedicated ``ws`` listener and the ``ws``/``wss`` dialers."""

from __future__ import annotations

from ugate_core import IDENTITY_KINDS, DialerType, GatewayAPI, ListenerType, hookimpl
from ugate_http.routes import HttpRoute

from . import h1
from .dialer import dial_ws, dial_wss
from .path import PREFIX
from .server import serve_exchange
from .services import services_of
from .settings import SECTION, settings_of


@hookimpl
def ugate_http_routes(gateway: GatewayAPI) -> list[HttpRoute]:
    async def handle(ex: object) -> None:
        await serve_exchange(ex, gateway)  # type: ignore[arg-type]

    ws = frozenset({"websocket"})
    return [HttpRoute(PREFIX, handle, protocols=ws, name="ws"),
            *(HttpRoute(path, handle, protocols=ws, name=f"ws:{s.protocol}")
              for path, s in sorted(services_of(gateway).items()))]


@hookimpl
def ugate_listener_types() -> list[ListenerType]:
    return [
        ListenerType(
            name="ws",
            serve=h1.serve,
            relays=True,
            option_keys=frozenset(),
            description="WebSocket (HTTP/1.1 Upgrade) on its own port: "
            f"{PREFIX}/<host>:<port> is one stream to host:port",
        ),
        ListenerType(
            name="wss",
            start=h1.start_wss_listener,
            relays=True,
            option_keys=frozenset({"client_cert"}),
            check_options=h1.check_wss_options,
            description="WebSocket over TLS on its own port (the workload certificate; a "
            "client certificate's mesh ID and SPIFFE ID authenticate the client)",
        ),
    ]


@hookimpl
def ugate_dialer_types(gateway: GatewayAPI) -> list[DialerType]:
    settings_of(gateway)  # validates [ws] when plugins load
    services_of(gateway)  # [ws] serve against the listener types (collected before dialers)
    return [
        DialerType("ws", dial_ws, "WebSocket to a peer gateway (or websockify): the stream is "
                   f"the peer's {PREFIX}/<name>:<port>, optionally through an HTTP proxy"),
        DialerType("wss", dial_wss, "WebSocket over mTLS: the peer must prove the expected "
                   "identity, like the tls dialer", verifies=frozenset(IDENTITY_KINDS),
                   secure=True),
    ]


@hookimpl
def ugate_config_sections(gateway: GatewayAPI) -> list[str]:
    settings_of(gateway)  # `ugate config check` names a bad key or value
    return [SECTION]


@hookimpl
def ugate_startup(gateway: GatewayAPI) -> None:
    settings_of(gateway)
    services_of(gateway)
