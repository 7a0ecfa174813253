"""Certificates a browser accepts by hash (WebTransport ``serverCertificateHashes``).

A page that cannot verify ugate's certificate by name pins it by SHA-256 instead; Chromium
accepts that only for an ECDSA P-256 certificate valid at most 14 days. The QUIC endpoint
therefore presents short-lived certificates over the **workload key** (so a mesh dialer still
sees the key whose hash is the mesh ID), self-signed, with the SANs of the workload
certificate, and rotates them:

* each certificate is valid 13 days (from an hour before it was made);
* two exist at any time, ``current`` (presented) and ``next`` (made :data:`STEP` later in
  the cycle); every :data:`STEP` (6 days) ``next`` becomes ``current`` and a new ``next`` is
  made. A page that fetched both hashes keeps connecting across a rotation.

With a key that is not P-256 (``[identity] key_type = "ed25519"``) there are none: the endpoint
presents the workload certificate chain, and browsers cannot connect by hash. A listener with
``browser_certs = false`` presents the workload chain too (for peers that verify a CA or SPIFFE
chain over QUIC).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ugate_core import GatewayAPI, StashKey

LIFETIME = dt.timedelta(days=13)
BACKDATE = dt.timedelta(hours=1)
STEP = dt.timedelta(days=6)


@dataclass(frozen=True)
class BrowserCert:
    cert: x509.Certificate
    made: dt.datetime

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()


def make_cert(key: ec.EllipticCurvePrivateKey, san: x509.SubjectAlternativeName | None,
              name: str, now: dt.datetime) -> BrowserCert:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])])
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
         .public_key(key.public_key())
         .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
         .not_valid_before(now - BACKDATE).not_valid_after(now - BACKDATE + LIFETIME)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if san is not None:
        b = b.add_extension(san, critical=False)
    return BrowserCert(b.sign(key, hashes.SHA256()), now)


class BrowserCerts:
    """The rotating pair for one gateway (kept in its stash: :func:`browser_certs`)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, leaf: x509.Certificate,
                 name: str, now: dt.datetime | None = None) -> None:
        self.key = key
        try:
            self.san: x509.SubjectAlternativeName | None = (
                leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            self.san = None
        self.name = name
        t = now or dt.datetime.now(dt.UTC)
        self.current = make_cert(key, self.san, name, t)
        self.next = make_cert(key, self.san, name, t)
        self.rotations = 0

    def rotate_if_due(self, now: dt.datetime | None = None) -> bool:
        """Rotate once :data:`STEP` has passed since ``current`` took over; True if it did."""
        t = now or dt.datetime.now(dt.UTC)
        if t < self.current.made + STEP:
            return False
        # ``next`` was made up to STEP ago; as current it serves from now for STEP more
        self.current = BrowserCert(self.next.cert, t)
        self.next = make_cert(self.key, self.san, self.name, t)
        self.rotations += 1
        return True

    def hashes(self) -> list[str]:
        """SHA-256 (hex) of ``current`` and ``next``: what a page passes as
        ``serverCertificateHashes``."""
        self.rotate_if_due()
        return [self.current.sha256, self.next.sha256]

    def as_json(self) -> dict[str, object]:
        self.rotate_if_due()
        return {"algorithm": "sha-256", "hashes": self.hashes(),
                "not_after": [c.cert.not_valid_after_utc.isoformat()
                              for c in (self.current, self.next)]}


_CERTS: StashKey[BrowserCerts | None] = StashKey()


def browser_certs(gw: GatewayAPI) -> BrowserCerts | None:
    """This gateway's rotating browser certificates, ``None`` if its key is not P-256."""
    if _CERTS in gw.stash:
        return gw.stash[_CERTS]
    ident = gw.identity
    key = ident.key
    got = None
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        got = BrowserCerts(key, ident.cert_chain()[0], ident.id.lower())
    gw.stash[_CERTS] = got
    return got
