"""The ``[hbone]`` table: HTTP/2 sizes, pools and the Istio trust settings.

Every key is optional::

    [hbone]
    trust_domain = ""                 # Istio trust domain, e.g. "cluster.local"
    ca_bundle = ""                    # PEM file of the Istio CA roots (root-cert.pem)
    stream_window = 4194304           # receive window of one tunnel (bytes)
    connection_window = 33554432      # receive window of one HTTP/2 connection (bytes)
    max_frame_size = 1048576          # largest DATA frame we accept (16384-16777215)
    max_streams = 1000                # concurrent tunnels a client may open on one connection
    max_connections_per_peer = 4      # dialer: HTTP/2 connections to one peer before queueing
    idle_timeout = 300.0              # close an HTTP/2 connection without tunnels after this
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

from ugate_core import ConfigError, StashKey, is_anchor, load_pem_bundle, pem_of
from ugate_core import options as opt

if TYPE_CHECKING:
    from ugate_core import GatewayAPI

_INTS: dict[str, tuple[int, int, int]] = {
    # key: (default, low, high)
    "stream_window": (4 << 20, 65535, (1 << 31) - 1),
    "connection_window": (32 << 20, 65535, (1 << 31) - 1),
    "max_frame_size": (1 << 20, 16384, (1 << 24) - 1),
    "max_streams": (1000, 1, 1 << 20),
    "max_connections_per_peer": (4, 1, 1024),
}
KEYS = frozenset({*_INTS, "trust_domain", "ca_bundle", "idle_timeout"})


@dataclass(frozen=True)
class HboneSettings:
    trust_domain: str = ""
    ca_bundle: str = ""
    stream_window: int = 4 << 20
    connection_window: int = 32 << 20
    max_frame_size: int = 1 << 20
    max_streams: int = 1000
    max_connections_per_peer: int = 4
    idle_timeout: float = 300.0
    #: the certificates of ``ca_bundle``
    ca_roots: tuple[x509.Certificate, ...] = field(default=(), repr=False)

    @property
    def ca_pem(self) -> str:
        return pem_of(self.ca_roots).decode("ascii")


def parse_settings(t: Mapping[str, Any]) -> HboneSettings:
    """Validate the ``[hbone]`` table (reads ``ca_bundle``); ConfigError names key and value."""
    for k in t:
        if k == "tune_malloc":
            raise ConfigError("hbone.tune_malloc", "moved: it is process-wide, set "
                              "[gateway] tune_malloc instead")
        if k not in KEYS:
            raise ConfigError(f"hbone.{k}", f"unknown key (known: {', '.join(sorted(KEYS))})")
    ints = {k: opt.integer(t, k, "hbone", default, lo=lo, hi=hi,
                           expect=f"an integer in {lo}-{hi}")
            for k, (default, lo, hi) in _INTS.items()}
    idle = opt.seconds(t, "idle_timeout", "hbone", 300.0, hi=86400, positive=True,
                       expect="a number of seconds (0-86400)")
    td = t.get("trust_domain", "")
    if not isinstance(td, str) or any(c in td for c in "/:?# "):
        raise ConfigError("hbone.trust_domain", f"{td!r} is not a trust domain "
                          "(e.g. 'cluster.local')")
    ca = t.get("ca_bundle", "")
    if not isinstance(ca, str):
        raise ConfigError("hbone.ca_bundle", f"{ca!r} is not a file name")
    roots: tuple[x509.Certificate, ...] = ()
    if ca:
        try:
            data = Path(ca).expanduser().read_bytes()
        except OSError as e:
            raise ConfigError("hbone.ca_bundle", f"{ca!r}: cannot read: {e.strerror}") from None
        try:
            roots = load_pem_bundle(data, repr(ca))
        except ValueError as e:
            raise ConfigError("hbone.ca_bundle", str(e)) from None
        if any(is_anchor(c) for c in roots):
            raise ConfigError("hbone.ca_bundle", f"{ca!r} holds the public mesh anchor, whose "
                              "private key is public: it can vouch for nothing")
    if td and not roots:
        raise ConfigError("hbone.trust_domain", f"{td!r} needs ca_bundle: the CA roots that "
                          "vouch for SPIFFE IDs of that trust domain")
    return HboneSettings(trust_domain=td.lower(), ca_bundle=ca, idle_timeout=float(idle),
                         ca_roots=roots, **ints)


_SETTINGS = StashKey[HboneSettings]("hbone.settings")


def settings_of(gw: GatewayAPI) -> HboneSettings:
    """The gateway's ``[hbone]`` settings, parsed once."""
    s = gw.stash.get(_SETTINGS, None)
    if s is None:
        s = gw.stash[_SETTINGS] = parse_settings(gw.config.section("hbone"))
    return s
