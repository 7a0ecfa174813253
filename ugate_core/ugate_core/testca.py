"""A small certificate authority for tests: root → (intermediate →) leaves with SPIFFE URI
SANs (EC P-256), written as the files cert-manager, SPIRE or an Istio CA leave behind (a chain
PEM with the leaf first, a 0600 key PEM, the root PEM). Tests only: the keys live in memory
and in the test's directory.

    ca = TestCA.create(tmp_path / "ca")
    chain, key = ca.issue("a", "spiffe://cluster.local/ns/default/sa/a")
    # [identity] cert_file = chain, key_file = key, trust_bundles = [ca.root_file]
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .certs import IdentityKey, pem_of

_HOUR = dt.timedelta(hours=1)


def _usage(ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )


def _ca_cert(subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
             signer: ec.EllipticCurvePrivateKey, path_length: int) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _HOUR).not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_usage(True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                       critical=False)
        .sign(signer, hashes.SHA256())
    )


@dataclass
class TestCA:
    """A root, and an intermediate that signs the leaves when ``intermediate`` is set."""

    __test__ = False  # not a pytest test class

    dir: Path
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    signer_key: ec.EllipticCurvePrivateKey
    intermediates: tuple[x509.Certificate, ...]

    @classmethod
    def create(cls, d: Path, name: str = "Test CA", *, intermediate: bool = True) -> TestCA:
        d.mkdir(parents=True, exist_ok=True)
        rk = ec.generate_private_key(ec.SECP256R1())
        rname = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test"),
                           x509.NameAttribute(NameOID.COMMON_NAME, f"{name} root")])
        root = _ca_cert(rname, rk, rname, rk, 1)
        ca = cls(d, rk, root, rk, ())
        if intermediate:
            ik = ec.generate_private_key(ec.SECP256R1())
            iname = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test"),
                               x509.NameAttribute(NameOID.COMMON_NAME, f"{name} intermediate")])
            ca.signer_key, ca.intermediates = ik, (_ca_cert(iname, ik, rname, rk, 0),)
        (d / "root.pem").write_bytes(pem_of([root]))
        return ca

    @property
    def root_file(self) -> Path:
        """PEM of the root: what ``trust_bundles`` (or Envoy's ``trusted_ca``) names."""
        return self.dir / "root.pem"

    @property
    def _issuer(self) -> x509.Name:
        return (self.intermediates[-1] if self.intermediates else self.root).subject

    def leaf(self, spiffe: str = "", *, dns: tuple[str, ...] = (),
             key: IdentityKey | None = None,
             valid: tuple[dt.datetime, dt.datetime] | None = None) -> tuple[
                 x509.Certificate, IdentityKey]:
        """A leaf (server and client auth) for ``key`` (a new P-256 key by default)."""
        k = key if key is not None else ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        start, end = valid or (now - _HOUR, now + dt.timedelta(days=1))
        san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe)] if spiffe else []
        san += [x509.DNSName(n) for n in dns]
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "test")]))
            .issuer_name(self._issuer)
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.signer_key.public_key()), critical=False)
        )
        if san:  # SPIFFE: the SAN extension is critical when the subject is empty-ish
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=True)
        return b.sign(self.signer_key, hashes.SHA256()), k

    def issue(self, name: str, spiffe: str = "", *, dns: tuple[str, ...] = (),
              key: IdentityKey | None = None) -> tuple[Path, Path]:
        """Write ``<name>.crt`` (leaf, then intermediates) and ``<name>.key`` (0600) the way
        cert-manager or SPIRE's helper do: each file replaced by a rename. Returns both."""
        cert, k = self.leaf(spiffe, dns=dns, key=key)
        c, kp = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        write_files(c, kp, (cert, *self.intermediates), k)
        return c, kp


def write_files(cert_path: Path, key_path: Path, chain: tuple[x509.Certificate, ...],
                key: IdentityKey) -> None:
    """Replace both files by rename (new inodes), the key created 0600."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    for path, data, mode in ((key_path, pem, 0o600), (cert_path, pem_of(chain), 0o644)):
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)


__all__ = ["TestCA", "write_files"]
