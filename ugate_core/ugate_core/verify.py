"""Checking a TLS peer's certificate against expected identities, as DANE would.

Runs right after the handshake on the certificate the peer proved it holds the key of
(``ssl_object.getpeercert(binary_form=True)``). Every kind in
:data:`ugate_core.types.IDENTITY_KINDS` is understood; the expectations are alternatives (the
peer must match one), as several TLSA records for one name are.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import ssl
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification as xv

from .certs import is_anchor, load_pem_bundle
from .errors import DialError
from .ids import id_of_public_key, normalize_id
from .types import IDENTITY_KINDS, ExpectedIdentity

_HASHES = {
    "spki_sha256": ("spki", hashlib.sha256),
    "spki_sha512": ("spki", hashlib.sha512),
    "cert_sha256": ("cert", hashlib.sha256),
    "cert_sha512": ("cert", hashlib.sha512),
}


def peer_certificates(ssl_object: Any) -> tuple[bytes | None, tuple[bytes, ...]]:
    """(leaf DER, the other certificates the peer sent, DER) of a finished handshake.

    Works with ``ssl.SSLObject`` / ``ssl.SSLSocket`` under asyncio and uvloop. The chain comes
    from ``get_unverified_chain`` (public from Python 3.13, an internal method of the same
    name on 3.10-3.12); without it only the leaf is returned.
    """
    leaf = ssl_object.getpeercert(binary_form=True)
    if not leaf:
        return None, ()
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is None:
        getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    chain: list[bytes] = []
    if getter is not None:
        try:
            items = getter() or []
        except (ssl.SSLError, ValueError):
            items = []
        for c in items:
            der = c if isinstance(c, bytes) else c.public_bytes(2)  # _ssl.ENCODING_DER
            chain.append(der)
    if chain and chain[0] == leaf:
        chain.pop(0)
    return leaf, tuple(chain[:10])


def describe(e: ExpectedIdentity) -> str:
    """Short human form of an expectation, for error messages."""
    if e.kind == "ca":
        try:
            certs = _bundle(e.value)
        except ValueError:
            return "ca <unreadable bundle>"
        cn = certs[0].subject.rfc4514_string() or "<empty subject>"
        more = f" +{len(certs) - 1}" if len(certs) > 1 else ""
        return f"ca [{cn}{more}]"
    v = e.value if len(e.value) <= 72 else e.value[:64] + "…"
    return f"{e.kind} {v}"


def describe_all(expected: Sequence[ExpectedIdentity]) -> str:
    if len(expected) == 1:
        return describe(expected[0])
    return "one of [" + ", ".join(describe(e) for e in expected) + "]"


@functools.lru_cache(maxsize=128)
def _bundle(pem: str) -> tuple[x509.Certificate, ...]:
    return load_pem_bundle(pem, "ca identity")


def _hex(value: str) -> bytes | None:
    try:
        return bytes.fromhex(value.replace(":", "").replace(" ", "").strip())
    except ValueError:
        return None


def chain_error(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    now: dt.datetime,
) -> str | None:
    """``None`` if ``leaf`` chains (RFC 5280, via ``intermediates``) to one of ``roots``.

    Otherwise why not. The public mesh anchor never counts as a root here: its key is public.
    """
    real = [r for r in roots if not is_anchor(r)]
    if not real:
        return "no trust roots (the public mesh anchor does not count)"
    builder = (
        xv.PolicyBuilder()
        .store(xv.Store(real))
        .time(now)
        .max_chain_depth(8)
        .extension_policies(
            ca_policy=xv.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=xv.ExtensionPolicy.permit_all(),
        )
    )
    try:
        builder.build_client_verifier().verify(leaf, list(intermediates))
    except xv.VerificationError as e:
        return f"chain does not verify: {e}"
    return None


def leaf_id(cert_der: bytes) -> str:
    """The mesh ID of the key in a DER certificate (ValueError/TypeError if unusable)."""
    return id_of_public_key(x509.load_der_x509_certificate(cert_der).public_key())


def verified_spiffe(
    cert_der: bytes, chain: Sequence[bytes], trust_roots: Sequence[x509.Certificate],
    now: dt.datetime | None = None,
) -> str | None:
    """The leaf's SPIFFE URI if the leaf chains to ``trust_roots`` (never to the anchor)."""
    if not trust_roots:
        return None
    try:
        cert = x509.load_der_x509_certificate(cert_der)
        inter = [x509.load_der_x509_certificate(d) for d in chain]
        # extensions are parsed lazily: a malformed or duplicate one raises here (ValueError,
        # DuplicateExtension), and the bytes are the peer's
        uris = [u for u in _uris(cert) if u.startswith("spiffe://")]
    except Exception:  # an unusable certificate proves no SPIFFE ID
        return None
    if len(uris) != 1:
        return None
    when = now if now is not None else dt.datetime.now(dt.UTC)
    return uris[0] if chain_error(cert, inter, trust_roots, when) is None else None


def _uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(u) for u in san.get_values_for_type(x509.UniformResourceIdentifier)]


def _digest(kind: str, cert: x509.Certificate, cert_der: bytes) -> bytes:
    """The bytes an spki/cert kind compares: the DER or its hash."""
    what, fn = _HASHES.get(kind, (kind, None))
    data = (
        cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if what == "spki" else cert_der
    )
    return fn(data).digest() if fn is not None else data


def presented(
    expected: Sequence[ExpectedIdentity], peer_id: str, cert: x509.Certificate, cert_der: bytes,
) -> str:
    """What the peer showed, as the kinds that were expected (so both sides of an error read
    alike: ``spki_sha256 <hex>`` against ``spki_sha256 <hex>``), plus its mesh ID."""
    out: list[str] = []
    for kind in dict.fromkeys(e.kind for e in expected):
        if kind == "id":
            out.append(f"id {peer_id}")
        elif kind in ("spki", "cert") or kind in _HASHES:
            out.append(describe(ExpectedIdentity(kind, _digest(kind, cert, cert_der).hex())))
        elif kind == "spiffe":
            uris = [u for u in _uris(cert) if u.startswith("spiffe://")]
            out.append(f"spiffe {', '.join(uris)}" if uris else "no spiffe URI")
        elif kind == "ca":
            issuer = cert.issuer.rfc4514_string() or "<empty issuer>"
            out.append(f"a certificate issued by [{issuer}]")
    if "id" not in (e.kind for e in expected):
        out.append(f"mesh ID {peer_id}")
    return out[0] if len(out) == 1 else f"{out[0]} ({', '.join(out[1:])})"


def _match(
    e: ExpectedIdentity,
    peer_id: str,
    cert: x509.Certificate,
    cert_der: bytes,
    inter: Sequence[x509.Certificate],
    trust_roots: Sequence[x509.Certificate],
    now: dt.datetime,
) -> tuple[bool, str]:
    kind = e.kind
    if kind == "id":
        want = normalize_id(e.value)
        return (want is not None and want == peer_id), ""
    if kind in ("spki", "cert") or kind in _HASHES:
        want_b = _hex(e.value)
        return (want_b is not None and want_b == _digest(kind, cert, cert_der)), ""
    if kind == "spiffe":
        if e.value not in _uris(cert):
            return False, ""
        err = chain_error(cert, inter, trust_roots, now)
        return err is None, f"{e.value}: {err} ([identity] trust_bundles)" if err else ""
    if kind == "ca":
        try:
            roots = _bundle(e.value)
        except ValueError as ex:
            return False, str(ex)
        err = chain_error(cert, inter, roots, now)
        return err is None, f"{describe(e)}: {err}" if err else ""
    return False, f"unknown identity kind {kind!r} (known: {', '.join(IDENTITY_KINDS)})"


def verify_peer(
    cert_der: bytes | None,
    expected: Sequence[ExpectedIdentity],
    name: str,
    *,
    chain: Sequence[bytes] = (),
    trust_roots: Sequence[x509.Certificate] = (),
    now: dt.datetime | None = None,
) -> str:
    """Check the peer's leaf certificate against ``expected``; return the peer's mesh ID.

    ``chain`` holds the other certificates the peer sent (for ``ca`` / ``spiffe``);
    ``trust_roots`` are the configured trust bundles that ``spiffe`` expectations need.
    Raises ``DialError("identity", "<name>: ... expected <X>, presented <Y>")``, where Y is
    the peer's value of the same kind as X (:func:`presented`).
    """
    if not expected:
        raise DialError("identity", f"{name}: no expected identity to check the peer against")
    if not cert_der:
        raise DialError("identity", f"{name}: identity mismatch: expected "
                        f"{describe_all(expected)}, presented no certificate")
    try:
        cert = x509.load_der_x509_certificate(cert_der)
        peer_id = id_of_public_key(cert.public_key())
    except (ValueError, TypeError) as ex:
        raise DialError("identity", f"{name}: the peer's certificate is unusable: {ex}") from None
    inter: list[x509.Certificate] = []
    for der in chain:
        try:
            inter.append(x509.load_der_x509_certificate(der))
        except ValueError:
            continue
    when = now if now is not None else dt.datetime.now(dt.UTC)
    reasons: list[str] = []
    for e in expected:
        ok, why = _match(e, peer_id, cert, cert_der, inter, trust_roots, when)
        if ok:
            return peer_id
        if why:
            reasons.append(why)
    extra = f" ({'; '.join(reasons)})" if reasons else ""
    raise DialError("identity", f"{name}: identity mismatch: expected {describe_all(expected)}, "
                    f"presented {presented(expected, peer_id, cert, cert_der)}{extra}")
