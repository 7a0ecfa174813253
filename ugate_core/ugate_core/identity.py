"""This workload's self-assigned identity: its key, ID, VIP, names and certificates.

``gateway.identity`` is an :class:`Identity`, loaded on first use through the
``ugate_identity`` hook; core's default (:class:`FileIdentitySource`) keeps the key in
``<state_dir>/key.pem`` (created 0600 on first start). See docs/identity.md.

Config, the top-level ``[identity]`` table (all optional)::

    key_type = "p256"          # or "ed25519"; used only when the key is created
    key_file = ""              # default <state_dir>/key.pem
    cert_file = ""             # a CA-issued chain (leaf first) for key_file's key; re-read
                               # when it changes; instead of the anchor-issued leaf
    domain = ""                # mesh domain: adds <id>.m.<domain> and <id>.h.<domain>
    trust_domain = ""          # adds the SAN spiffe://<trust_domain>/ns/<namespace>/sa/<sa>
    namespace = "default"
    service_account = "default"
    trust_bundles = []         # PEM CA files: who may vouch for SPIFFE IDs (Istio roots)
                               # and whose client certificates pass the TLS handshake;
                               # re-read when they change
    cert_days = 13.0           # leaf lifetime; renewed after two thirds of it
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from .certs import (
    IdentityKey,
    anchor_pem,
    client_context,
    file_signature,
    is_anchor,
    issue_leaf,
    load_chain,
    load_pem_bundle,
    pem_of,
    server_context,
)
from .errors import ConfigError
from .ids import (
    expected_identities_for,
    id_of_public_key,
    id_of_raw,
    mesh_fqdns,
    pin_sha256,
    raw_public_key,
    spki_sha256,
    vip_of_raw,
)
from .keyfiles import (
    KEY_TYPES,
    CertFiles,
    FilesSignature,
    IdentityError,
    LoadedCert,
    cert_dns_names,
    cert_spiffe,
    create_key_file,
    generate_key,
    load_or_create_key,
    read_key_file,
)
from .types import ExpectedIdentity
from .verify import verify_peer

if TYPE_CHECKING:
    from .api import GatewayAPI

log = logging.getLogger("ugate.identity")


#: issues the certificate chain (leaf first) for an identity at a time; default: the anchor
ChainIssuer = Callable[["Identity", dt.datetime], Sequence[x509.Certificate]]


class Identity:
    """A workload identity. ``key`` is never logged; ``repr`` shows only public facts."""

    def __init__(
        self,
        key: IdentityKey,
        *,
        domain: str = "",
        trust_domain: str = "",
        namespace: str = "default",
        service_account: str = "default",
        cert_days: float = 13.0,
        trust_roots: Sequence[x509.Certificate] = (),
        issuer: ChainIssuer | None = None,
        source: str = "",
        cert_files: CertFiles | None = None,
        loaded: LoadedCert | None = None,
        trust_files: Sequence[str] = (),
    ) -> None:
        self.domain = domain.strip(".").lower()
        self._set_key(key)
        self.spiffe: str | None = (
            f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}" if trust_domain
            else None
        )
        #: DNS SANs of a ``cert_file`` leaf: names the TLS front terminates as ours
        self.cert_names: tuple[str, ...] = ()
        self.cert_days = cert_days
        self.trust_roots: tuple[x509.Certificate, ...] = tuple(trust_roots)
        self.source = source
        self._issuer = issuer
        self._chain: tuple[x509.Certificate, ...] = ()
        self._renew_at = 0.0
        self._contexts: weakref.WeakSet[ssl.SSLContext] = weakref.WeakSet()
        self._files = cert_files
        self._files_sig: FilesSignature = ()
        self._files_bad: FilesSignature = ()
        #: the trust_bundles files ``trust_roots`` came from, re-read when they change
        self._trust_files = tuple(trust_files)
        self._trust_sig: FilesSignature = self._trust_signature()
        self._trust_bad: FilesSignature = ()
        #: contexts that present another certificate but trust our roots (``follow_trust``)
        self._trusting: weakref.WeakSet[ssl.SSLContext] = weakref.WeakSet()
        if cert_files is not None:
            self._use_loaded(loaded or cert_files.load(dt.datetime.now(dt.UTC)))

    def _set_key(self, key: IdentityKey) -> None:
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise IdentityError(f"identity key type {type(key).__name__} is not supported "
                                "(EC P-256 or Ed25519)")
        self.key = key
        raw = raw_public_key(key)
        self.id: str = id_of_raw(raw)
        self.vip = vip_of_raw(raw)
        self.fqdns: tuple[str, ...] = mesh_fqdns(self.id, self.domain)
        self.spki_sha256: str = spki_sha256(key)
        self.pin_sha256: str = pin_sha256(key)
        self._key_pem: bytes | None = None

    def __repr__(self) -> str:
        return f"Identity(id={self.id}, vip={self.vip}, key_type={self.key_type})"

    @property
    def key_type(self) -> str:
        return "ed25519" if isinstance(self.key, ed25519.Ed25519PrivateKey) else "p256"

    # ------------------------------------------------------------------ public forms
    def ssh_public_key(self) -> str:
        """OpenSSH one-line form (``ecdsa-sha2-nistp256 AAAA...`` / ``ssh-ed25519 AAAA...``)."""
        return self.key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ).decode("ascii")

    def public_key_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def private_key_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM (for asyncssh / ssl loading). Never log it."""
        if self._key_pem is None:
            self._key_pem = self.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        return self._key_pem

    def expected(self) -> tuple[ExpectedIdentity, ...]:
        """What a peer dialing us expects: our ID."""
        return (ExpectedIdentity("id", self.id),)

    # ------------------------------------------------------------------ certificates
    def _issue(self, now: dt.datetime) -> tuple[x509.Certificate, ...]:
        if self._issuer is not None:
            chain = tuple(self._issuer(self, now))
            if not chain or chain[0].public_key() != self.key.public_key():
                raise IdentityError(f"identity {self.id}: the issuer returned a certificate "
                                    "for another key")
            return chain
        return (issue_leaf(
            self.key,
            common_name=self.id.lower(),
            dns_names=self.fqdns,
            ips=[self.vip],
            uris=[self.spiffe] if self.spiffe else [],
            not_before=now - dt.timedelta(hours=1),
            not_after=now + dt.timedelta(days=self.cert_days),
        ),)

    @property
    def cert_files(self) -> CertFiles | None:
        """Where an externally issued chain and key come from (``[identity] cert_file``)."""
        return self._files

    def _use_loaded(self, got: LoadedCert) -> None:
        if got.key.public_key() != self.key.public_key():
            old = self.id
            self._set_key(got.key)
            log.warning("identity_key_changed old_id=%s new_id=%s cert_file=%s: the mesh ID "
                        "is the hash of the key, so a new key is a new ID (the SSH host key "
                        "follows at the next start)", old, self.id, self._files and
                        self._files.cert_path)
        self._chain = got.chain
        self._files_sig = got.signature
        self._files_bad = ()
        leaf = got.chain[0]
        self.spiffe = cert_spiffe(leaf)
        self.cert_names = cert_dns_names(leaf)
        chain_pem, key_pem = pem_of(self._chain), self.private_key_pem()
        for ctx in list(self._contexts):
            load_chain(ctx, chain_pem, key_pem)
        log.info("certificate_loaded id=%s cert_file=%s subject=%s spiffe=%s not_after=%s "
                 "serial=%x chain=%d", self.id, self._files and self._files.cert_path,
                 leaf.subject.rfc4514_string() or "-", self.spiffe or "-",
                 leaf.not_valid_after_utc.isoformat(), leaf.serial_number, len(got.chain))

    def _trust_signature(self) -> FilesSignature:
        return file_signature(*(Path(f).expanduser() for f in self._trust_files))

    def follow_trust(self, ctx: ssl.SSLContext) -> None:
        """Teach ``ctx`` (a server context with its own certificate, e.g. a configured
        certificate under ``require_client_cert``) roots added to ``trust_bundles`` later."""
        self._trusting.add(ctx)

    def _reload_trust(self) -> None:
        """Read ``trust_bundles`` again when the files changed (a CA root rotation).

        Every decision that believes a name (``spiffe``, ``ca``, ``meta.extra["spiffe"]``)
        uses :attr:`trust_roots`, which is replaced. The server contexts only learn the new
        roots (OpenSSL cannot forget a CA in a context): a client whose root was removed
        still passes the handshake, and is then worth its key's ID and nothing more, as an
        anchor-issued client is.
        """
        sig = self._trust_signature()
        if sig == self._trust_sig or sig == self._trust_bad:
            return
        try:
            roots = load_trust_bundles(self._trust_files)
        except ConfigError as e:
            self._trust_bad = sig
            log.warning("trust_bundles_reload_failed error=%r: still using the previous "
                        "%d roots", str(e), len(self.trust_roots))
            return
        added = [r for r in roots if r not in self.trust_roots]
        removed = sum(1 for r in self.trust_roots if r not in roots)
        self.trust_roots, self._trust_sig, self._trust_bad = roots, sig, ()
        if added:
            cadata = pem_of(added).decode("ascii")
            for ctx in [*self._contexts, *self._trusting]:
                ctx.load_verify_locations(cadata=cadata)
        log.info("trust_bundles_reloaded roots=%d added=%d removed=%d", len(roots),
                 len(added), removed)

    def _reload_files(self, files: CertFiles, t: float) -> bool:
        sig = files.signature()
        if sig == self._files_sig or sig == self._files_bad:
            return False
        try:
            got = files.load(dt.datetime.fromtimestamp(t, dt.UTC))
        except IdentityError as e:
            # half-written (certificate and key from different issuances), expired, ...:
            # keep presenting the current chain; try again when the files change again
            self._files_bad = sig
            log.warning("certificate_reload_failed cert_file=%s error=%r: still presenting "
                        "serial %x", files.cert_path, str(e), self._chain[0].serial_number)
            return False
        if isinstance(got.key, ed25519.Ed25519PrivateKey) != isinstance(
                self.key, ed25519.Ed25519PrivateKey):
            # a context holds one certificate per key type: the old one would stay beside it
            self._files_bad = sig
            log.warning("certificate_reload_failed cert_file=%s error=%r: still presenting "
                        "serial %x", files.cert_path, f"the key type changed from "
                        f"{self.key_type} to {type(got.key).__name__}: restart to change it",
                        self._chain[0].serial_number)
            return False
        self._use_loaded(got)
        return True

    def renew_if_needed(self, now: float | None = None) -> bool:
        """Issue a new certificate once two thirds of the current one's life have passed;
        with ``cert_file``, read the chain and key again when the files changed (and
        ``trust_bundles`` when theirs did).

        Contexts made by :meth:`server_ssl_context` / :meth:`client_ssl_context` are reloaded
        in place. Cheap when nothing is due (two ``stat`` calls with ``cert_file``): call it
        before each handshake.
        """
        t = time.time() if now is None else now
        if self._trust_files:
            self._reload_trust()
        if self._files is not None:
            return self._reload_files(self._files, t)
        if self._chain and t < self._renew_at:
            return False
        when = dt.datetime.fromtimestamp(t, dt.UTC)
        self._chain = self._issue(when)
        leaf = self._chain[0]
        start = leaf.not_valid_before_utc.timestamp()
        end = leaf.not_valid_after_utc.timestamp()
        self._renew_at = max(t + 1.0, start + (end - start) * 2 / 3)
        chain_pem, key_pem = pem_of(self._chain), self.private_key_pem()
        for ctx in list(self._contexts):
            load_chain(ctx, chain_pem, key_pem)
        log.info("certificate_issued id=%s not_after=%s serial=%x", self.id,
                 leaf.not_valid_after_utc.isoformat(), leaf.serial_number)
        return True

    def cert_chain(self) -> tuple[x509.Certificate, ...]:
        """The current chain, leaf first (renewed before expiry)."""
        self.renew_if_needed()
        return self._chain

    def cert_pem(self) -> bytes:
        """PEM of the current chain, leaf first (renewed before expiry)."""
        return pem_of(self.cert_chain())

    def cert_der(self) -> bytes:
        return self.cert_chain()[0].public_bytes(serialization.Encoding.DER)

    def trust_pem(self) -> bytes:
        """PEM of the configured trust bundles (without the public anchor)."""
        return pem_of(self.trust_roots)

    # ------------------------------------------------------------------ TLS
    def server_ssl_context(
        self, alpn: list[str] | None = None, *, require_client_cert: bool = False
    ) -> ssl.SSLContext:
        """A new server context with our certificate, asking for a client certificate.

        A client certificate must chain to the public mesh anchor (every ugate's does) or to
        a trust bundle; check whom it belongs to with :meth:`verify_peer` after the handshake.
        """
        self.renew_if_needed()
        ctx = server_context(pem_of(self._chain), self.private_key_pem(),
                             self.trust_pem(), alpn, require_client_cert=require_client_cert)
        self._contexts.add(ctx)
        return ctx

    def client_ssl_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        """A new client context with our certificate; accepts any server certificate, so
        the caller MUST :meth:`verify_peer` before using the connection."""
        self.renew_if_needed()
        ctx = client_context(pem_of(self._chain), self.private_key_pem(), alpn)
        self._contexts.add(ctx)
        return ctx

    def verify_peer(
        self, cert_der: bytes | None, expected: Sequence[ExpectedIdentity], name: str,
        chain: Sequence[bytes] = (),
    ) -> str:
        """:func:`ugate_core.verify.verify_peer` with this identity's trust bundles."""
        return verify_peer(cert_der, expected, name, chain=chain, trust_roots=self.trust_roots)


# ------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class IdentitySettings:
    key_type: str = "p256"
    key_file: str = ""
    domain: str = ""
    trust_domain: str = ""
    namespace: str = "default"
    service_account: str = "default"
    trust_bundles: tuple[str, ...] = ()
    cert_days: float = 13.0
    cert_file: str = ""


def parse_settings(t: Mapping[str, Any]) -> IdentitySettings:
    """Validate the ``[identity]`` table; ConfigError names the key and the value."""
    d = IdentitySettings()
    known = set(IdentitySettings.__dataclass_fields__)
    for k in t:
        if k not in known:
            raise ConfigError(f"identity.{k}", f"unknown key (known: {', '.join(sorted(known))})")
    out: dict[str, Any] = {}
    for k in ("key_type", "key_file", "domain", "trust_domain", "namespace", "service_account",
              "cert_file"):
        v = t.get(k, getattr(d, k))
        if not isinstance(v, str):
            raise ConfigError(f"identity.{k}", f"{v!r} is not a string")
        out[k] = v
    if out["key_type"] not in KEY_TYPES:
        raise ConfigError("identity.key_type", f"{out['key_type']!r} is not one of "
                          f"{', '.join(KEY_TYPES)}")
    for k in ("trust_domain", "namespace", "service_account"):
        if any(c in out[k] for c in "/ ?#"):
            raise ConfigError(f"identity.{k}", f"{out[k]!r} cannot be part of a SPIFFE ID")
    tb = t.get("trust_bundles", [])
    if isinstance(tb, str):
        tb = [tb]
    if not isinstance(tb, list) or not all(isinstance(x, str) for x in tb):
        raise ConfigError("identity.trust_bundles", f"{tb!r} is not a list of file names")
    days = t.get("cert_days", d.cert_days)
    if isinstance(days, bool) or not isinstance(days, int | float) or not 0.01 <= days <= 3650:
        raise ConfigError("identity.cert_days", f"{days!r} is not a number of days "
                          "(0.01-3650)")
    return IdentitySettings(trust_bundles=tuple(tb), cert_days=float(days), **out)


def load_trust_bundles(files: Sequence[str]) -> tuple[x509.Certificate, ...]:
    out: list[x509.Certificate] = []
    for i, f in enumerate(files):
        path = f"identity.trust_bundles[{i}]"
        try:
            data = Path(f).expanduser().read_bytes()
        except OSError as e:
            raise ConfigError(path, f"{f!r}: cannot read: {e.strerror}") from None
        try:
            certs = load_pem_bundle(data, repr(f))
        except ValueError as e:
            raise ConfigError(path, str(e)) from None
        if any(is_anchor(c) for c in certs):
            raise ConfigError(path, f"{f!r} holds the public mesh anchor, whose private key "
                              "is public: it can vouch for nothing")
        out += certs
    return tuple(out)


class FileIdentitySource:
    """Core's default identity source: a key file in the state directory."""

    name = "file"

    def __init__(self, section: Mapping[str, Any]) -> None:
        self.settings = parse_settings(section)

    def key_path(self, gateway: GatewayAPI) -> Path:
        s = self.settings
        return Path(s.key_file).expanduser() if s.key_file else gateway.state_dir / "key.pem"

    def load(self, gateway: GatewayAPI) -> Identity:
        s = self.settings
        path = self.key_path(gateway)
        files: CertFiles | None = None
        loaded: LoadedCert | None = None
        if s.cert_file:  # the key comes with the certificate: never create one
            files = CertFiles(Path(s.cert_file).expanduser(), path)
            loaded = files.load(dt.datetime.now(dt.UTC))
            key, created = loaded.key, False
        else:
            key, created = load_or_create_key(path, s.key_type)
        ident = Identity(
            key, domain=s.domain, trust_domain=s.trust_domain, namespace=s.namespace,
            service_account=s.service_account, cert_days=s.cert_days,
            trust_roots=load_trust_bundles(s.trust_bundles), source=f"file:{path}",
            cert_files=files, loaded=loaded, trust_files=s.trust_bundles,
        )
        if created:
            log.info("identity_created id=%s key_type=%s key_file=%s", ident.id,
                     ident.key_type, path)
        elif ident.key_type != s.key_type and "key_type" in gateway.config.section("identity"):
            log.warning("identity_key_type_differs key_file=%s file=%s config=%s: the key in "
                        "the file is the identity; key_type applies to new keys only", path,
                        ident.key_type, s.key_type)
        log.info("identity id=%s vip=%s key_type=%s key_file=%s", ident.id, ident.vip,
                 ident.key_type, path)
        return ident


__all__ = [
    "CertFiles",
    "ExpectedIdentity",
    "FileIdentitySource",
    "Identity",
    "IdentityError",
    "IdentitySettings",
    "anchor_pem",
    "create_key_file",
    "expected_identities_for",
    "generate_key",
    "id_of_public_key",
    "load_or_create_key",
    "parse_settings",
    "read_key_file",
    "verify_peer",
]
