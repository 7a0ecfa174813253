"""ugate core: plugin contract, config, gateway runtime, relay, sniffing, routing.

The public API is what this module exports (``__all__``) and these documented modules:

* ``ugate_core.options`` — option validators (``number``, ``integer``, ``seconds``,
  ``boolean``, ``string``, ``strings``, ``one_of``, ``hostport``, ``existing_file``,
  ``check_keys``, ``moved``) raising :class:`ConfigError` with the key path;
* ``ugate_core.tokens`` — signed tokens that name browser clients (``make_token``,
  ``verify_token``, the ``[tokens]`` table); a plugin verifies one with
  :meth:`GatewayAPI.verify_token`;
* ``ugate_core.testing`` — the pytest plugin with shared fixtures (tests only).

Plugins import only from these (``from ugate_core import options as opt`` is the form for the
module). Everything else under ``ugate_core`` is internal and may change; a test
(``ugate_core/tests/test_public_api.py``) fails when an in-tree plugin imports a core module
outside this list, or a ``_private`` name of another distribution. A plugin is typed against
:class:`GatewayAPI` (what it may use of the gateway), keeps per-gateway state in
``gateway.stash`` under a :class:`StashKey`, and validates its config with
``ugate_core.options``.
"""

from .api import GatewayAPI
from .certs import is_anchor, load_pem_bundle, pem_of
from .config import Config, ListenerConfig, load, load_default, loads, parse, parse_identity
from .deadline import Deadline
from .errors import (
    AuthError,
    ConfigError,
    DialError,
    DiscoveryError,
    PluginError,
    ProtocolError,
    UgateError,
)
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
    H2StreamRefused,
    H2StreamReset,
    H2UsageError,
)
from .h2 import code_name as h2_code_name
from .h2 import goaway_error as h2_goaway_error
from .h2 import refused_by_goaway as h2_refused_by_goaway
from .h2 import reset_by_peer as h2_reset_by_peer
from .h2 import stream_error as h2_stream_error
from .h2 import unprocessed as h2_unprocessed
from .hookspecs import hookimpl, hookspec
from .identity import FileIdentitySource, Identity, IdentityError
from .ids import (
    expected_identities_for,
    id_from_name,
    id_of_public_key,
    mesh_fqdns,
    normalize_id,
    remember_key,
    vip_of_public_key,
)
from .listeners import Admission
from .message_stream import MessageStream, MessageTransport, message_stream_pair
from .metrics import Tally
from .options import did_you_mean, parse_hostport
from .preamble import (
    PreambleAcceptor,
    PreambleError,
    PreambleOpener,
    PreambleReceived,
    StatusReceived,
)
from .preamble_io import AcceptedPreamble, accept_preamble, open_preamble, serve_preamble
from .records import StreamRecord
from .redact import redact
from .relay import Relay, RelayStats, relay, start_relay
from .roundtrip import Body, BytesBody, HttpRequest, HttpResponse, RoundTripper
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
from .tls import TlsListener, TlsStream, count_identity_failure, tls_dial_error
from .tokens import make_token, verify_token
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
from .verify import peer_certificates, verified_spiffe, verify_peer

__all__ = [
    "H2_PREFACE",
    "IDENTITY_KINDS",
    "AcceptedPreamble",
    "Admission",
    "AuthError",
    "Body",
    "BytesBody",
    "Config",
    "ConfigError",
    "Deadline",
    "Destination",
    "DialError",
    "DialRequest",
    "DialerType",
    "Discovery",
    "DiscoveryError",
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
    "H2StreamRefused",
    "H2StreamReset",
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
    "MessageStream",
    "MessageTransport",
    "PluginError",
    "PreambleAcceptor",
    "PreambleError",
    "PreambleOpener",
    "PreambleReceived",
    "ProtocolError",
    "Receiver",
    "Relay",
    "RelayStats",
    "RoundTripper",
    "RunningListener",
    "Sniff",
    "Stash",
    "StashKey",
    "StatusReceived",
    "Stream",
    "StreamClosedError",
    "StreamMeta",
    "StreamRecord",
    "Tally",
    "TcpStream",
    "TlsListener",
    "TlsStream",
    "UgateError",
    "accept_preamble",
    "count_identity_failure",
    "did_you_mean",
    "expected_identities_for",
    "format_hostport",
    "h2_code_name",
    "h2_goaway_error",
    "h2_refused_by_goaway",
    "h2_reset_by_peer",
    "h2_stream_error",
    "h2_unprocessed",
    "hookimpl",
    "hookspec",
    "id_from_name",
    "id_of_public_key",
    "is_anchor",
    "is_ip",
    "load",
    "load_default",
    "load_pem_bundle",
    "loads",
    "make_token",
    "match_name",
    "mesh_fqdns",
    "message_stream_pair",
    "normalize_id",
    "open_preamble",
    "parse",
    "parse_hostport",
    "parse_identity",
    "peer_certificates",
    "pem_of",
    "redact",
    "relay",
    "remember_key",
    "serve_preamble",
    "sniff_choose",
    "split_address",
    "start_relay",
    "stream_pair",
    "tls_dial_error",
    "verified_spiffe",
    "verify_peer",
    "verify_token",
    "vip_of_public_key",
]
