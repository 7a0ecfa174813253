"""The ``hbone`` listener on its own port: mTLS (TLS 1.3, ALPN h2, client certificate required),
then HTTP/2 CONNECT tunnels (:mod:`ugate_hbone.server`).

It is core's :class:`ugate_core.tls.TlsListener` (accept loop, the loop's own TLS handshake,
handshake failures logged and counted) with a different job after the handshake: check the
client against the listener's ``peers`` and the ``[hbone]`` trust domain, then serve HTTP/2.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cryptography import x509

from ugate_core import (
    AuthError,
    ConfigError,
    DialError,
    ExpectedIdentity,
    ListenerConfig,
    ListenerContext,
    ProtocolError,
    StreamMeta,
    TlsListener,
    TlsStream,
    count_identity_failure,
    format_hostport,
    normalize_id,
    parse_identity,
    peer_certificates,
    verified_spiffe,
    verify_peer,
)

from .server import serve_connection
from .settings import HboneSettings, settings_of

if TYPE_CHECKING:
    from ugate_core import GatewayAPI, RunningListener

log = logging.getLogger("ugate.hbone")

OPTION_KEYS = frozenset({"peers"})


def check_options(options: Mapping[str, Any], path: str) -> None:
    """``peers``: identities (``KIND:VALUE``) allowed to open tunnels; empty = any verified."""
    peers = options.get("peers", [])
    if not isinstance(peers, list) or not all(isinstance(x, str) for x in peers):
        raise ConfigError(f"{path}.peers", f"{peers!r} is not a list of 'KIND:VALUE' strings")
    for i, v in enumerate(peers):
        e = parse_identity(v, f"{path}.peers[{i}]")
        if e.kind == "id" and normalize_id(e.value) is None:
            raise ConfigError(f"{path}.peers[{i}]", f"{v!r}: {e.value!r} is not a mesh ID "
                              "(52 base32 characters, see 'ugate id')")


def presented(leaf: bytes) -> str:
    """The URI SANs of a DER certificate (for error messages), ``-`` if none."""
    try:
        san = x509.load_der_x509_certificate(leaf).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return "-"
    return ",".join(str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)) \
        or "-"


def roots_of(gw: GatewayAPI, st: HboneSettings) -> tuple[x509.Certificate, ...]:
    """Who may vouch for SPIFFE IDs: ``[hbone] ca_bundle`` and ``[identity] trust_bundles``."""
    return st.ca_roots + tuple(gw.identity.trust_roots)


def check_spiffe(
    leaf: bytes, chain: tuple[bytes, ...], gw: GatewayAPI, st: HboneSettings, who: str,
    *, required: bool,
) -> str | None:
    """The peer's SPIFFE ID if its certificate chains to the trust roots; with a trust domain
    configured it must lie in it. DialError(``identity``) otherwise, or if ``required``
    and there is none."""
    spiffe = verified_spiffe(leaf, chain, roots_of(gw, st))
    td = st.trust_domain
    if spiffe is not None and td and not spiffe.startswith(f"spiffe://{td}/"):
        raise DialError("identity", f"{who}: SPIFFE ID {spiffe} is outside trust domain {td!r}")
    if spiffe is None and required:
        raise DialError("identity", f"{who}: presented no SPIFFE ID in trust domain {td!r} "
                        f"signed by [hbone] ca_bundle {st.ca_bundle!r}")
    return spiffe


class HboneListener(TlsListener):
    """A running ``hbone`` listener (:class:`~ugate_core.types.RunningListener`): core's TLS
    accept loop and handshake, with HTTP/2 CONNECT served after it."""

    protocol = "hbone"
    needs_target = False

    def __init__(self, cfg: ListenerConfig, gw: GatewayAPI) -> None:
        self.settings = settings_of(gw)
        self.allowed: tuple[ExpectedIdentity, ...] = tuple(
            parse_identity(v, f"{cfg.path}.peers[{i}]")
            for i, v in enumerate(cfg.options.get("peers", []))
        )
        # HBONE takes each tunnel's target from its CONNECT (no fixed target) and checks
        # peers itself (with [hbone] roots), so core's TlsListener gets only TLS options
        super().__init__(dataclasses.replace(
            cfg, options={"alpn": ["h2"], "require_client_cert": True},
        ), gw)
        self.ctx = ListenerContext(gw, cfg)
        self.ssl_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        if self.settings.ca_roots:
            self.ssl_ctx.load_verify_locations(cadata=self.settings.ca_pem)

    async def start(self) -> None:
        await super().start()
        log.info("hbone_listening listener=%s address=%s tls=1.3 alpn=h2 peers=%d", self.cfg.name,
                 ",".join(f"{h}:{p}" for h, p in self.addresses()), len(self.allowed))

    async def serve_tls(self, tls: TlsStream, meta: StreamMeta) -> None:
        self._check_client(tls, meta)
        await serve_connection(tls, self.ctx, protocol="hbone")

    def _check_client(self, tls: TlsStream, meta: StreamMeta) -> None:
        gw, st = self.gw, self.settings
        if meta.alpn not in (None, "h2"):
            raise ProtocolError(f"client negotiated ALPN {meta.alpn!r}, not h2", "alpn")
        leaf, chain = peer_certificates(tls.ssl_object)
        if leaf is None:
            raise AuthError("HBONE requires a client certificate; the client sent none",
                            "client_cert_required")
        try:
            spiffe = check_spiffe(leaf, chain, gw, st, "client", required=False)
            if self.allowed:
                verify_peer(leaf, self.allowed, "client", chain=chain,
                            trust_roots=roots_of(gw, st))
        except DialError as e:
            count_identity_failure(gw, "hbone", "accept")
            msg = f"{e} (certificate URI SANs: {presented(leaf)})"
            gw.log_refusal(self.cfg.name, "identity", "identity_mismatch protocol=hbone "
                           "direction=accept listener=%s client=%s error=%r", self.cfg.name,
                           _addr(meta), msg, level=logging.WARNING)
            tls.abort()
            raise AuthError(f"client identity not allowed: {msg}", "identity") from None
        if spiffe:
            meta.extra["spiffe"] = spiffe
        else:
            meta.extra.pop("spiffe", None)


async def start_hbone_listener(cfg: ListenerConfig, gw: GatewayAPI) -> RunningListener:
    ln = HboneListener(cfg, gw)
    await ln.start()
    return ln


def _addr(meta: StreamMeta) -> str:
    r = meta.remote
    return "-" if r is None else format_hostport(r[0], r[1])
