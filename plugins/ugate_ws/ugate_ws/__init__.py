"""ugate-ws: WebSocket listener (through ugate-http's routes, or on its own port) and
``ws``/``wss`` dialers for ugate. One WebSocket is one stream: ``/.well-known/ugate/ws/
<host>:<port>``, or a listener protocol on a ``[ws] serve`` path (``/mqtt``: MQTT)."""

from .path import PREFIX, path_for, target_of
from .server import accept_key, open_server, serve_exchange
from .transport import WsTransport

__all__ = [
    "PREFIX",
    "WsTransport",
    "accept_key",
    "open_server",
    "path_for",
    "serve_exchange",
    "target_of",
]
