"""The files an identity comes from: the workload key (0600, created on first start) and,
with ``[identity] cert_file``, a chain issued outside ugate for a key (cert-manager, SPIRE, an
Istio CA's output), read again when the files change (:class:`CertFiles`)."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from .certs import IdentityKey, file_signature, is_anchor, load_pem_bundle
from .errors import UgateError
from .ids import id_of_public_key

KEY_TYPES = ("p256", "ed25519")
_MAX_KEY_FILE = 64 * 1024


class IdentityError(UgateError):
    """The workload key cannot be used (bad permissions, unreadable, wrong type), or
    ``cert_file`` does not hold a usable certificate for it."""


# ------------------------------------------------------------------------------ key files
def _fail(path: Path, msg: str) -> IdentityError:
    return IdentityError(f"key file {path}: {msg}")


def read_key_file(path: Path) -> IdentityKey | None:
    """The key in ``path``; ``None`` if there is no file. Refuses loose permissions."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _fail(path, f"cannot open: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _fail(path, "not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise _fail(path, f"mode {mode:04o} lets other users read or change the private "
                        f"key; it must be 0600 (chmod 600 {path}). Refusing to use it")
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            raise _fail(path, f"owned by uid {st.st_uid}, not by this user "
                        f"(uid {os.geteuid()}). Refusing to use it")
        data = os.read(fd, _MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_KEY_FILE:
        raise _fail(path, f"larger than {_MAX_KEY_FILE} bytes: not a key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise _fail(path, "not an unencrypted PEM private key (PKCS#8 or SEC1). Fix it, or "
                    "move it away to create a new identity (a new key is a new ID)") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    kind = key.curve.name if isinstance(key, ec.EllipticCurvePrivateKey) else type(key).__name__
    raise _fail(path, f"holds a {kind} key; identities are EC P-256 or Ed25519")


def generate_key(key_type: str) -> IdentityKey:
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"key type {key_type!r} is not one of {', '.join(KEY_TYPES)}")


def create_key_file(path: Path, key_type: str) -> IdentityKey:
    """Write a new key to ``path`` (0600 from creation on); if another process won the race
    to create it, use theirs."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = generate_key(key_type)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(tmp, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as e:
        raise _fail(path, f"cannot create: {e.strerror}") from None
    try:
        view = memoryview(pem)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic, and fails if the key appeared meanwhile
    except FileExistsError:
        os.unlink(tmp)
        existing = read_key_file(path)
        if existing is None:
            raise _fail(path, "vanished while creating it") from None
        return existing
    except OSError:  # no hard links here: create in place, still exclusive
        os.unlink(tmp)
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
    else:
        os.unlink(tmp)
    return key


def load_or_create_key(path: Path, key_type: str = "p256") -> tuple[IdentityKey, bool]:
    """(key, created): the key in ``path``, created on first use."""
    key = read_key_file(path)
    if key is not None:
        return key, False
    return create_key_file(path, key_type), True


# ------------------------------------------------------------------------------ cert_file
_MAX_CHAIN_FILE = 1 << 20
#: (device, inode, size, mtime_ns) of the certificate file and of the key file
FilesSignature = tuple[tuple[int, int, int, int], ...]


@dataclass(frozen=True)
class LoadedCert:
    """A key and the chain issued for it (leaf first), as read from :class:`CertFiles`."""

    key: IdentityKey
    chain: tuple[x509.Certificate, ...]
    signature: FilesSignature


class CertFiles:
    """A certificate chain issued outside ugate (cert-manager, SPIRE, an Istio CA's output)
    and its key, in two files; :meth:`load` reads both and checks that they belong together.

    The key file is held to :func:`read_key_file`'s rules (0600, our uid); its key is the
    workload's identity, so the mesh ID is still the hash of the key the peer proves.
    """

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        self.cert_path = cert_path
        self.key_path = key_path

    def signature(self) -> FilesSignature:
        return file_signature(self.cert_path, self.key_path)

    def _fail(self, msg: str) -> IdentityError:
        return IdentityError(f"identity.cert_file {str(self.cert_path)!r}: {msg}")

    def load(self, now: dt.datetime) -> LoadedCert:
        sig = self.signature()
        try:
            with open(self.cert_path, "rb") as f:
                data = f.read(_MAX_CHAIN_FILE + 1)
        except OSError as e:
            raise self._fail(f"cannot read: {e.strerror}") from None
        if len(data) > _MAX_CHAIN_FILE:
            raise self._fail(f"larger than {_MAX_CHAIN_FILE} bytes: not a certificate chain")
        try:
            chain = load_pem_bundle(data, "chain")
        except ValueError as e:
            raise self._fail(str(e)) from None
        key = read_key_file(self.key_path)
        if key is None:
            raise IdentityError(f"identity.key_file {str(self.key_path)!r}: missing; "
                                "cert_file needs the key its leaf was issued for")
        leaf = chain[0]
        try:
            leaf_key_id = id_of_public_key(leaf.public_key())
        except (ValueError, TypeError):
            leaf_key_id = type(leaf.public_key()).__name__
        if leaf_key_id != id_of_public_key(key):
            raise self._fail(
                f"the leaf (first certificate) is for key {leaf_key_id}, not for the key in "
                f"identity.key_file {str(self.key_path)!r} ({id_of_public_key(key)}); the "
                "leaf must come first, then its intermediates")
        if now > leaf.not_valid_after_utc or now < leaf.not_valid_before_utc:
            raise self._fail(
                f"the leaf is valid {leaf.not_valid_before_utc.isoformat()} to "
                f"{leaf.not_valid_after_utc.isoformat()}, not now ({now.isoformat()})")
        if any(is_anchor(c) for c in chain[1:]):
            raise self._fail("the chain holds the public mesh anchor: issue the certificate "
                             "from your CA, or leave cert_file empty to use the anchor's")
        return LoadedCert(key, tuple(chain), sig)


def cert_spiffe(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier)
            if u.startswith("spiffe://")]
    return uris[0] if len(uris) == 1 else None


def cert_dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(n.lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName))


__all__ = [
    "KEY_TYPES",
    "CertFiles",
    "FilesSignature",
    "IdentityError",
    "LoadedCert",
    "cert_dns_names",
    "cert_spiffe",
    "create_key_file",
    "generate_key",
    "load_or_create_key",
    "read_key_file",
]
