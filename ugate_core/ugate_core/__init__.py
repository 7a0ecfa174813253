"""ugate core: plugin contract, config, gateway runtime, relay, sniffing, routing.

Plugins import only from here.
"""

from .config import Config, ListenerConfig, load, load_default, loads, parse, parse_hostport
from .errors import AuthError, ConfigError, DialError, PluginError, ProtocolError, UgateError
from .gateway import Gateway, StreamRecord
from .hookspecs import hookimpl
from .relay import RelayStats, relay
from .router import match_name, split_address
from .sniff import choose as sniff_choose
from .stream import (
    MemoryStream,
    Receiver,
    Stream,
    StreamClosedError,
    StreamMeta,
    TcpStream,
    format_hostport,
    stream_pair,
)
from .types import (
    Destination,
    DialerType,
    DialRequest,
    Discovery,
    Endpoint,
    ExpectedIdentity,
    IdentitySource,
    ListenerContext,
    ListenerType,
    RunningListener,
    Sniff,
)

__all__ = [
    "AuthError",
    "Config",
    "ConfigError",
    "Destination",
    "DialError",
    "DialRequest",
    "DialerType",
    "Discovery",
    "Endpoint",
    "ExpectedIdentity",
    "Gateway",
    "IdentitySource",
    "ListenerConfig",
    "ListenerContext",
    "ListenerType",
    "MemoryStream",
    "PluginError",
    "ProtocolError",
    "Receiver",
    "RelayStats",
    "RunningListener",
    "Sniff",
    "Stream",
    "StreamClosedError",
    "StreamMeta",
    "StreamRecord",
    "TcpStream",
    "UgateError",
    "format_hostport",
    "hookimpl",
    "load",
    "load_default",
    "loads",
    "match_name",
    "parse",
    "parse_hostport",
    "relay",
    "sniff_choose",
    "split_address",
    "stream_pair",
]
