"""ugate core: plugin contract, config, gateway runtime, relay, sniffing, routing.

Plugins import only from here.
"""

from .api import GatewayAPI
from .config import Config, ListenerConfig, load, load_default, loads, parse
from .errors import AuthError, ConfigError, DialError, PluginError, ProtocolError, UgateError
from .gateway import Gateway
from .h2 import PREFACE as H2_PREFACE
from .h2 import (
    FloodLimits as H2FloodLimits,
)
from .h2 import (
    H2Codec,
    H2ConnectionError,
    H2Endpoint,
    H2Error,
    H2ErrorCode,
    H2Flow,
    H2Handler,
    H2Setting,
    H2UsageError,
)
from .h2 import code_name as h2_code_name
from .hookspecs import hookimpl
from .identity import FileIdentitySource, Identity, IdentityError
from .ids import (
    expected_identities_for,
    id_from_name,
    id_of_public_key,
    mesh_fqdns,
    remember_key,
    vip_of_public_key,
)
from .listeners import Admission
from .metrics import Tally
from .options import did_you_mean, parse_hostport
from .records import StreamRecord
from .redact import redact
from .relay import Relay, RelayStats, relay, start_relay
from .roundtrip import BytesBody, HttpRequest, HttpResponse, RoundTripper
from .router import is_ip, match_name, split_address
from .sniff import choose as sniff_choose
from .stash import Stash, StashKey
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
from .tls import TlsStream, count_identity_failure
from .types import (
    IDENTITY_KINDS,
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
from .verify import peer_certificates, verify_peer

__all__ = [
    "H2_PREFACE",
    "IDENTITY_KINDS",
    "Admission",
    "AuthError",
    "BytesBody",
    "Config",
    "ConfigError",
    "Destination",
    "DialError",
    "DialRequest",
    "DialerType",
    "Discovery",
    "Endpoint",
    "ExpectedIdentity",
    "FileIdentitySource",
    "Gateway",
    "GatewayAPI",
    "H2Codec",
    "H2ConnectionError",
    "H2Endpoint",
    "H2Error",
    "H2ErrorCode",
    "H2FloodLimits",
    "H2Flow",
    "H2Handler",
    "H2Setting",
    "H2UsageError",
    "HttpRequest",
    "HttpResponse",
    "Identity",
    "IdentityError",
    "IdentitySource",
    "ListenerConfig",
    "ListenerContext",
    "ListenerType",
    "MemoryStream",
    "PluginError",
    "ProtocolError",
    "Receiver",
    "Relay",
    "RelayStats",
    "RoundTripper",
    "RunningListener",
    "Sniff",
    "Stash",
    "StashKey",
    "Stream",
    "StreamClosedError",
    "StreamMeta",
    "StreamRecord",
    "Tally",
    "TcpStream",
    "TlsStream",
    "UgateError",
    "count_identity_failure",
    "did_you_mean",
    "expected_identities_for",
    "format_hostport",
    "h2_code_name",
    "hookimpl",
    "id_from_name",
    "id_of_public_key",
    "is_ip",
    "load",
    "load_default",
    "loads",
    "match_name",
    "mesh_fqdns",
    "parse",
    "parse_hostport",
    "peer_certificates",
    "redact",
    "relay",
    "remember_key",
    "sniff_choose",
    "split_address",
    "start_relay",
    "stream_pair",
    "verify_peer",
    "vip_of_public_key",
]
