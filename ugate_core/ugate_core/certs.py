"""Certificates for self-assigned identities, and the ``ssl`` contexts that carry them.

Python's ``ssl`` has no verify callback: a server that asks for a client certificate fails
the handshake unless OpenSSL can chain that certificate to a trusted CA. So every workload's
leaf certificate is issued by the **public mesh anchor**: a CA whose private key is derived
from a published string (:data:`ANCHOR_SEED`), so anyone can compute it and its signature
proves nothing. It only gets a mesh peer's certificate past OpenSSL's chain check; the real
check is the key: the handshake's CertificateVerify proves the peer holds the leaf's private
key, and :func:`ugate_core.verify.verify_peer` then compares that key with the expected ID or
TLSA hash. Never put the anchor in a trust store that believes names; see docs/identity.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import ipaddress
import os
import secrets
import ssl
import tempfile
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: the published seed of the public mesh anchor's private key
ANCHOR_SEED = b"ugate public mesh anchor v1: this private key is public; never trust it for names"
ANCHOR_NAME = x509.Name([
    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ugate"),
    x509.NameAttribute(NameOID.COMMON_NAME, "ugate public mesh anchor (its private key is public)"),
])
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_ANCHOR_FROM = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
_ANCHOR_TO = dt.datetime(2125, 1, 1, tzinfo=dt.UTC)

IdentityKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@functools.cache
def anchor_key() -> ec.EllipticCurvePrivateKey:
    """The anchor's P-256 key: scalar = SHA-256(:data:`ANCHOR_SEED`) mod (n - 1) + 1."""
    d = int.from_bytes(hashlib.sha256(ANCHOR_SEED).digest(), "big") % (_P256_ORDER - 1) + 1
    return ec.derive_private_key(d, ec.SECP256R1())


def _sign(builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    try:  # RFC 6979 signatures make the anchor certificate byte-identical everywhere
        return builder.sign(key, hashes.SHA256(), ecdsa_deterministic=True)
    except TypeError:  # cryptography < 44
        return builder.sign(key, hashes.SHA256())


@functools.cache
def anchor_certificate() -> x509.Certificate:
    """The anchor's self-signed CA certificate (fixed fields; valid 2025-2125)."""
    key = anchor_key()
    pub = key.public_key()
    b = (
        x509.CertificateBuilder()
        .subject_name(ANCHOR_NAME)
        .issuer_name(ANCHOR_NAME)
        .public_key(pub)
        .serial_number(1)
        .not_valid_before(_ANCHOR_FROM)
        .not_valid_after(_ANCHOR_TO)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
    )
    return _sign(b, key)


def anchor_pem() -> bytes:
    """PEM of the anchor certificate: ``curl --cacert`` / ``openssl s_client -CAfile``."""
    return anchor_certificate().public_bytes(serialization.Encoding.PEM)


def is_anchor(cert: x509.Certificate) -> bool:
    """True if ``cert`` carries the public anchor's key (it must never vouch for names)."""
    return cert.public_key() == anchor_key().public_key()


def issue_leaf(
    key: IdentityKey,
    *,
    common_name: str,
    dns_names: Sequence[str],
    ips: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
    uris: Sequence[str] = (),
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    """A leaf certificate for ``key``, issued by the public mesh anchor."""
    ca = anchor_key()
    pub = key.public_key()
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    san += [x509.IPAddress(ip) for ip in ips]
    san += [x509.UniformResourceIdentifier(u) for u in uris]
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ugate mesh"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]))
        .issuer_name(ANCHOR_NAME)
        .public_key(pub)
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                   ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()), critical=False
        )
    )
    return b.sign(ca, hashes.SHA256())


def load_pem_bundle(data: bytes | str, what: str) -> tuple[x509.Certificate, ...]:
    """Every certificate in a PEM bundle; ValueError naming ``what`` if there is none."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        certs = x509.load_pem_x509_certificates(raw)
    except ValueError as e:
        raise ValueError(f"{what}: not a PEM certificate bundle ({e})") from None
    if not certs:
        raise ValueError(f"{what}: no certificate in it")
    return tuple(certs)


def pem_of(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


# ------------------------------------------------------------------------------ ssl contexts
def load_chain(ctx: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    """``ctx.load_cert_chain`` from memory: a memfd on Linux, else a 0600 temp file.

    ``ssl`` only loads certificates and keys from files; the key never touches a disk here
    unless the platform lacks ``memfd_create``, and then only for the duration of the call.
    """
    blob = chain_pem + key_pem
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None and os.path.isdir("/proc/self/fd"):
        fd = memfd("ugate-tls", getattr(os, "MFD_CLOEXEC", 0))
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view):]
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
            return
        finally:
            os.close(fd)
    with tempfile.TemporaryDirectory(prefix="ugate-tls-") as d:  # mode 0700
        path = os.path.join(d, "chain.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            ctx.load_cert_chain(path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)


#: TLS 1.2 cipher suites where 1.2 remains (public certificates on the TLS front): ECDHE key
#: exchange with an AEAD cipher only; no CBC (``-SHA``, ``-SHA256``, ``-SHA384``), no RSA key
#: exchange, no DHE. TLS 1.3's suites are all AEAD and are not affected by this list.
PUBLIC_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def _mesh(ctx: ssl.SSLContext, alpn: Sequence[str] | None) -> ssl.SSLContext:
    """What every identity (mesh, mTLS) context shares: TLS 1.3 only, no resumption.

    TLS 1.3 only, because TLS 1.2 resumes by session ID from OpenSSL's server-side cache
    (Python cannot turn that cache off) and offers CBC suites; a resumed session skips the
    certificate and its CertificateVerify, so the peer would not prove its key again. TLS 1.3
    resumes only with tickets, and servers issue none (``num_tickets = 0``). HBONE (Istio's
    ztunnel, Envoy in ambient mode) and Go's crypto/tls speak TLS 1.3.
    """
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.options |= ssl.OP_NO_TICKET
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def public_server_context(cert_file: str, key_file: str,
                          alpn: Sequence[str] | None = None) -> ssl.SSLContext:
    """A server context for a configured (public, CA-issued) certificate on the TLS front.

    It authenticates no client, so it keeps TLS 1.2 for older HTTPS clients, with
    :data:`PUBLIC_TLS12_CIPHERS` only, and OpenSSL's usual session resumption (tickets and
    session IDs): resuming skips nothing that decides who the client is.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(PUBLIC_TLS12_CIPHERS)
    ctx.load_cert_chain(cert_file, key_file)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def _client_auth(ctx: ssl.SSLContext, trust_pem: bytes, required: bool) -> ssl.SSLContext:
    ctx.load_verify_locations(cadata=(anchor_pem() + trust_pem).decode("ascii"))
    ctx.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL
    ctx.check_hostname = False
    # no resumption: every connection proves its key again (and renewal stays simple)
    ctx.num_tickets = 0
    return ctx


def server_context(
    chain_pem: bytes,
    key_pem: bytes,
    trust_pem: bytes,
    alpn: Sequence[str] | None = None,
    *,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """A server context that presents our chain and asks for (or requires) a client cert;
    TLS 1.3 only, no resumption (:func:`_mesh`).

    OpenSSL accepts client certificates that chain to the anchor or to ``trust_pem``; which
    key the client holds is checked after the handshake (``verify_peer``).
    """
    ctx = _mesh(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), alpn)
    load_chain(ctx, chain_pem, key_pem)
    return _client_auth(ctx, trust_pem, require_client_cert)


def mtls_server_context(cert_file: str, key_file: str, trust_pem: bytes,
                        alpn: Sequence[str] | None = None) -> ssl.SSLContext:
    """A configured certificate (TLS front ``certificates``) on a listener that requires
    client certificates: the identity server context's rules, not the public front's.

    TLS 1.3 only without resumption, a client certificate required that chains to the anchor
    or to ``trust_pem`` (``[identity] trust_bundles``): choosing that SNI must not let a client
    skip ``require_client_cert`` or resume a session without proving its key.
    """
    ctx = _mesh(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), alpn)
    ctx.load_cert_chain(cert_file, key_file)
    return _client_auth(ctx, trust_pem, True)


#: what :func:`file_signature` gives a file that cannot be stat'ed
_MISSING = (0, 0, -1, 0)


def file_signature(*paths: str | os.PathLike[str]) -> tuple[tuple[int, int, int, int], ...]:
    """(device, inode, size, mtime_ns) of each file, following symlinks; a missing file has
    its own value. Cheap (one ``stat`` each), so callers compare it before every handshake:
    a file replaced by rename (Kubernetes' ``..data`` symlink swap, cert-manager, SPIRE's
    helper) or rewritten in place changes it."""
    out: list[tuple[int, int, int, int]] = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            out.append(_MISSING)
            continue
        out.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def client_context(
    chain_pem: bytes, key_pem: bytes, alpn: Sequence[str] | None = None
) -> ssl.SSLContext:
    """A client context that presents our chain and lets OpenSSL accept any server cert;
    TLS 1.3 only (:func:`_mesh`; a client resumes only when given a session, which ugate
    never does).

    ``CERT_NONE`` here is not "no verification": OpenSSL still verifies the server's
    handshake signature with the key in its certificate; the caller must then check that key
    (``verify_peer``) before sending a byte. Self-signed peers (Go meshauth) pass this way.
    """
    ctx = _mesh(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), alpn)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    load_chain(ctx, chain_pem, key_pem)
    return ctx
