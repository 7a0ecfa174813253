"""Client authentication policy, without I/O: which public keys and certificates get in.

:func:`evaluate` looks at the key blob a client offers (``publickey`` method, RFC 4252 §7)
and answers :class:`Accepted` (with the mesh ID of the client key) or :class:`Refused` (with a
stable reason for the counter and a detail for the log). The signature over the session is
checked by asyncssh afterwards; only keys accepted here are ever offered to it.

Three ways in: a key listed in ``authorized_keys``; a key whose mesh ID is in ``allow_ids``;
an OpenSSH user certificate signed by a key in ``ca_keys`` (or an authorized_keys line marked
``cert-authority``), valid now, and naming the user (or one of the configured principals).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import asyncssh

from .keys import KeyEntry, mesh_id

#: OpenSSH ``SSH2_CERT_TYPE_USER``
CERT_TYPE_USER = 1
MAX_KEY_BLOB = 16384


@dataclass(frozen=True)
class AuthPolicy:
    keys: tuple[KeyEntry, ...] = ()
    cas: tuple[KeyEntry, ...] = ()
    allow_ids: frozenset[str] = frozenset()
    #: accepted certificate principals for every CA (empty: the SSH user name)
    principals: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.keys or self.cas or self.allow_ids)


@dataclass(frozen=True, kw_only=True)
class Accepted:
    """The client may log in with ``key`` (for a certificate: the certified key)."""

    key: asyncssh.SSHKey
    peer_id: str
    how: str  # authorized_key | allow_id | certificate
    detail: str = ""
    ca: asyncssh.SSHKey | None = None


@dataclass(frozen=True, kw_only=True)
class Refused:
    """No entry: ``reason`` is the counter label, ``detail`` says what was offered."""

    reason: str
    detail: str


Verdict = Accepted | Refused


def key_algorithm(blob: bytes) -> str | None:
    """The algorithm name at the start of an SSH key blob, ``None`` if malformed."""
    if len(blob) < 4:
        return None
    (n,) = struct.unpack(">I", blob[:4])
    if n == 0 or n > 64 or 4 + n > len(blob):
        return None
    try:
        alg = blob[4 : 4 + n].decode("ascii")
    except UnicodeDecodeError:
        return None
    return alg if alg.isprintable() and " " not in alg else None


def _find(entries: Iterable[KeyEntry], key: asyncssh.SSHKey) -> KeyEntry | None:
    pub = key.public_data
    return next((e for e in entries if e.key.public_data == pub), None)


def evaluate(policy: AuthPolicy, username: str, blob: bytes) -> Verdict:
    """Decide on one offered key blob. Never raises on malformed input."""
    if len(blob) > MAX_KEY_BLOB:
        return Refused(reason="auth_bad_key", detail=f"key blob of {len(blob)} bytes")
    alg = key_algorithm(blob)
    if alg is None:
        return Refused(reason="auth_bad_key", detail="malformed key blob")
    text = alg.encode("ascii") + b" " + base64.b64encode(blob)
    if alg.endswith("-cert-v01@openssh.com"):
        return _evaluate_cert(policy, username, text, alg)
    try:
        key = asyncssh.import_public_key(text)
    except (asyncssh.KeyImportError, ValueError) as e:
        return Refused(reason="auth_bad_key", detail=f"{alg}: {e}")
    pid = mesh_id(key)
    entry = _find(policy.keys, key)
    if entry is not None:
        return Accepted(key=key, peer_id=pid, how="authorized_key", detail=entry.comment)
    if pid in policy.allow_ids:
        return Accepted(key=key, peer_id=pid, how="allow_id")
    return Refused(reason="auth_unknown_key",
                   detail=f"{alg} key id={pid} user={username!r} is not authorized")


def _evaluate_cert(policy: AuthPolicy, username: str, text: bytes, alg: str) -> Verdict:
    try:
        cert = asyncssh.import_certificate(text)
    except (asyncssh.KeyImportError, ValueError) as e:
        return Refused(reason="auth_bad_cert", detail=f"{alg}: {e}")
    if not isinstance(cert, asyncssh.SSHCertificate) or cert.is_x509:
        return Refused(reason="auth_bad_cert", detail=f"{alg}: not an OpenSSH certificate")
    signer: asyncssh.SSHKey = cert.signing_key  # type: ignore[attr-defined]
    principals: tuple[str, ...] = tuple(cert.principals)  # type: ignore[attr-defined]
    pid = mesh_id(cert.key)
    ca = _find(policy.cas, signer) or _find((e for e in policy.keys if e.ca), signer)
    if ca is None:
        return Refused(reason="auth_cert_untrusted_ca",
                       detail=f"certificate for id={pid} signed by CA id={mesh_id(signer)}, "
                       "which is not in ca_keys")
    wanted = ca.principals or policy.principals
    try:
        # type, validity window; the principal check is ours (below) when principals are set
        cert.validate(CERT_TYPE_USER, None if wanted else username)  # type: ignore[attr-defined]
    except ValueError as e:
        msg = str(e)
        reason = ("auth_cert_expired" if "expired" in msg else
                  "auth_cert_not_yet_valid" if "not yet" in msg else
                  "auth_cert_principal" if "principal" in msg else "auth_cert_type")
        return Refused(reason=reason, detail=f"certificate id={pid} principals="
                       f"{','.join(principals) or '-'} user={username!r}: {msg}")
    if not principals:
        return Refused(reason="auth_cert_principal",
                       detail=f"certificate id={pid} lists no principals")
    if wanted and not set(wanted) & set(principals):
        return Refused(reason="auth_cert_principal",
                       detail=f"certificate id={pid} principals={','.join(principals)} "
                       f"has none of {','.join(wanted)}")
    return Accepted(key=cert.key, peer_id=pid, how="certificate",
                    detail=",".join(principals), ca=signer)
