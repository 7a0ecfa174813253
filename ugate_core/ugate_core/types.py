"""The objects plugins return from hooks: listener and dialer types, discoveries, destinations."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .api import GatewayAPI
    from .config import ListenerConfig
    from .stream import Stream, StreamMeta


class Sniff(enum.Enum):
    """Answer of a listener type's ``sniff(prefix)`` on the shared port."""

    MATCH = "match"
    NO = "no"
    NEED_MORE = "need_more"


@dataclass(frozen=True)
class Endpoint:
    """One address a destination can be reached at. ``port=None`` keeps the requested port."""

    host: str
    port: int | None = None

    def __str__(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return h if self.port is None else f"{h}:{self.port}"


IDENTITY_KINDS = (
    "id", "spki_sha256", "spki_sha512", "spki", "cert_sha256", "cert_sha512", "cert",
    "spiffe", "ca",
)


@dataclass(frozen=True)
class ExpectedIdentity:
    """Who must be on the other end of a dial.

    ``kind`` is one of :data:`IDENTITY_KINDS`: ``id`` (a mesh ID: base32 of the key's hash);
    ``spki_sha256`` / ``spki_sha512`` / ``spki`` (hex hash or full DER of the peer's
    SubjectPublicKeyInfo: DANE selector 1, matching 1/2/0); ``cert_sha256`` / ``cert_sha512`` /
    ``cert`` (the same over the whole certificate: DANE selector 0); ``spiffe`` (a SPIFFE URI
    SAN); ``ca`` (PEM CA bundle in ``value``: the peer's chain must end there, DANE usage 2).
    """

    kind: str
    value: str


@dataclass(frozen=True)
class Destination:
    """What discovery knows about a name: where it lives and how to reach it."""

    name: str
    endpoints: tuple[Endpoint, ...]
    #: dialer type name: ``tcp``, ``ssh``, ``hbone``, ...
    protocol: str = "tcp"
    #: the peer must prove one of these (empty: no identity check beyond the dialer's own)
    identities: tuple[ExpectedIdentity, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    #: seconds this answer may be cached
    ttl: float = 30.0
    #: which discovery produced it
    source: str = ""


@runtime_checkable
class Discovery(Protocol):
    """A metadata system that maps names to destinations."""

    name: str

    async def resolve(self, fqdn: str, port: int) -> Destination | None:
        """The destination for ``fqdn`` (lower-case, no trailing dot), or ``None``."""
        ...


@dataclass
class ListenerContext:
    """What a listener's ``serve`` gets besides the stream."""

    gateway: GatewayAPI
    config: ListenerConfig

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def options(self) -> Mapping[str, Any]:
        return self.config.options

    def reject(self, reason: str, detail: str = "", meta: StreamMeta | None = None) -> None:
        """Log and count a refused connection or request."""
        self.gateway.reject(self.config.name, reason, detail, meta)


Serve = Callable[["Stream", ListenerContext], Awaitable[None]]
Starter = Callable[["ListenerConfig", "GatewayAPI"], Awaitable["RunningListener"]]


class RunningListener(Protocol):
    """A listener that owns its own socket (UDP/QUIC, ...)."""

    def addresses(self) -> list[tuple[str, int]]: ...

    async def aclose(self) -> None: ...


@dataclass
class ListenerType:
    """A protocol the gateway can accept.

    Stream protocols give ``serve``; they run on a dedicated TCP port or on the shared port,
    where ``sniff`` chooses them from the first bytes. Protocols that own their socket give
    ``start`` instead.
    """

    name: str
    serve: Serve | None = None
    sniff: Callable[[bytes], Sniff] | None = None
    start: Starter | None = None
    #: True if it forwards to destinations chosen by the client (SOCKS, HTTP proxy, ...):
    #: then a listener beyond loopback needs auth or an allow rule (no open relay).
    relays: bool = True
    #: returns True if ``options`` configure client authentication
    has_auth: Callable[[Mapping[str, Any]], bool] = lambda options: False
    #: validates ``options``; raises ConfigError naming ``path``
    check_options: Callable[[Mapping[str, Any], str], None] | None = None
    #: ALPN ids this protocol serves inside TLS: a TLS front (shared port) that terminated a
    #: connection with one of these hands the decrypted stream to ``serve``
    #: (``meta.alpn``, ``meta.sni`` and the client's verified ``meta.peer_id`` are set).
    alpn: tuple[str, ...] = ()
    #: when several protocols serve the same ALPN (HBONE and HTTPS both speak ``h2``), the TLS
    #: front prefers the one whose wish matches whether the client presented a certificate:
    #: True (mesh peers: HBONE), False (browsers, curl: HTTPS), None (no preference)
    tls_client_cert: bool | None = None
    #: the listener keys this protocol reads besides core's. Core rejects any key that
    #: neither core nor a protocol of the listener declares (a typo'd ``allow`` would be a
    #: silently missing rule); the default declares none. ``None`` opts out: the protocol
    #: judges unknown keys in ``check_options`` itself, and on a shared port with it core
    #: then refuses only near-misses of its own keys.
    option_keys: frozenset[str] | None = frozenset()
    description: str = ""
    #: filled in by the plugin loader
    plugin: str = ""


Dial = Callable[["DialRequest"], Awaitable["Stream"]]


@dataclass
class DialRequest:
    """One attempt to reach ``endpoint`` of ``destination`` on ``port``."""

    gateway: GatewayAPI
    destination: Destination
    endpoint: Endpoint
    port: int
    timeout: float
    source: StreamMeta | None = None
    #: connect only to addresses :meth:`Gateway.screen_addresses` returns: the client is
    #: beyond loopback and was allowed by a wildcard, so resolved loopback, link-local,
    #: metadata and the gateway's own addresses are refused
    screen: bool = False

    @property
    def host(self) -> str:
        return self.endpoint.host

    @property
    def target_port(self) -> int:
        return self.endpoint.port if self.endpoint.port is not None else self.port


@dataclass
class DialerType:
    """A way to reach a destination (``tcp``, ``ssh``, ``hbone``, ...)."""

    name: str
    dial: Dial
    description: str = ""
    #: the :data:`IDENTITY_KINDS` this dialer proves on its peer. A destination that expects
    #: identities none of which it can prove is never dialed (reason ``identity``), and a
    #: ``hosts`` entry naming a kind it cannot prove is a config error: an expected identity
    #: is never silently ignored. Empty: it proves nothing (``tcp``).
    verifies: frozenset[str] = frozenset()
    plugin: str = ""
    #: the stream it returns is encrypted, and the peer it reaches (the endpoint, or the far
    #: gateway of a tunnel) proved an expected identity: what an ``https`` round trip needs
    secure: bool = False


class IdentitySource(Protocol):
    """Where this workload's key comes from (file by default)."""

    def load(self, gateway: GatewayAPI) -> Any:
        """Return the workload identity (see :mod:`ugate_core.identity`)."""
        ...
