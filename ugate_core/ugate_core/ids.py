"""Mesh IDs, VIPs and mesh names: pure functions of a public key (no I/O).

* ID: RFC 4648 base32, no padding, upper case, of SHA-256 of the raw public key (P-256: the
  65-byte uncompressed point ``04 || X || Y``); an Ed25519 key's 32 raw bytes are encoded as-is,
  without hashing. This is what Go ``ugate/meshauth`` (``PublicKeyBase32SHA``) computes, so IDs
  interoperate. DNS names use the ID lower-cased.
* VIP: ``fd00::/64`` with the last 8 bytes of the raw public key as the interface ID (Go
  meshauth's ``Pub2VIP``). A VIP is not invertible to an ID: :func:`remember_key` records the
  keys this process has verified so that a dial to a VIP knows whom to expect.
* Mesh names: ``<id>.m``, ``<id>.h.mesh.internal`` and, with a mesh domain, ``<id>.m.<domain>``
  and ``<id>.h.<domain>``. A dial to any name of that shape must reach the key behind ``<id>``
  (see :func:`expected_identities_for`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .types import ExpectedIdentity

#: the /64 every VIP lives in
VIP_NETWORK = ipaddress.IPv6Network("fd00::/64")
#: the mesh suffixes that do not depend on configuration
MESH_SUFFIXES = ("m", "h.mesh.internal")

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey


def _public(key: Any) -> PublicKey:
    """The public half of ``key`` (a public key passes through)."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
                  | rsa.RSAPrivateKey):
        return key.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
                  | rsa.RSAPublicKey):
        return key
    raise TypeError(f"unsupported key type {type(key).__name__} (want EC, Ed25519 or RSA)")


def raw_public_key(key: Any) -> bytes:
    """The raw public key, as Go meshauth marshals it.

    EC: the uncompressed point (65 bytes for P-256); Ed25519: its 32 bytes; RSA (only seen
    on CA-issued peers, e.g. Istio workload certificates): PKCS#1 DER.
    """
    pub = _public(key)
    if isinstance(pub, ed25519.Ed25519PublicKey):
        return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if isinstance(pub, rsa.RSAPublicKey):
        return pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    return pub.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def id_of_raw(raw: bytes) -> str:
    """The mesh ID of raw public key bytes (hashed when longer than 32 bytes, like Go)."""
    digest = hashlib.sha256(raw).digest() if len(raw) > 32 else raw
    return base64.b32encode(digest).decode("ascii").rstrip("=")


def id_of_public_key(pub: Any) -> str:
    """The mesh ID (upper-case base32, no padding) of a public or private key."""
    return id_of_raw(raw_public_key(pub))


def vip_of_raw(raw: bytes) -> ipaddress.IPv6Address:
    """``fd00::/64`` + the last 8 bytes of the raw public key (of its SHA-1 beyond 65 bytes)."""
    tail = hashlib.sha1(raw).digest()[-8:] if len(raw) > 65 else raw[-8:]
    return ipaddress.IPv6Address(VIP_NETWORK.network_address.packed[:8] + tail)


def vip_of_public_key(pub: Any) -> ipaddress.IPv6Address:
    return vip_of_raw(raw_public_key(pub))


def spki_der(pub: Any) -> bytes:
    """DER SubjectPublicKeyInfo: what TLSA selector 1 and curl's ``--pinnedpubkey`` hash."""
    return _public(pub).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def spki_sha256(pub: Any) -> str:
    """Hex SHA-256 of the SPKI: the data of a TLSA ``3 1 1`` record."""
    return hashlib.sha256(spki_der(pub)).hexdigest()


def pin_sha256(pub: Any) -> str:
    """curl's ``--pinnedpubkey`` value: ``sha256//`` + base64 of the SPKI SHA-256."""
    return "sha256//" + base64.b64encode(hashlib.sha256(spki_der(pub)).digest()).decode()


def mesh_fqdns(mesh_id: str, domain: str = "") -> tuple[str, ...]:
    """The names a workload answers to: ``<id>.m``, ``<id>.h.mesh.internal`` (+ domain)."""
    label = mesh_id.lower()
    names = [f"{label}.{s}" for s in MESH_SUFFIXES]
    d = domain.strip(".").lower()
    if d:
        names += [f"{label}.m.{d}", f"{label}.h.{d}"]
    return tuple(names)


def normalize_id(value: str) -> str | None:
    """Canonical (upper-case, unpadded) form of a mesh ID, or ``None`` if it is not one."""
    v = value.strip().rstrip("=").upper()
    if len(v) != 52:
        return None
    try:
        raw = base64.b32decode(v + "====")
    except (binascii.Error, ValueError):
        return None
    return v if len(raw) == 32 else None


def id_from_name(name: str) -> str | None:
    """The ID in a mesh name (``<id>.m[.<domain>]``, ``<id>.h.<domain>``), else ``None``."""
    labels = name.strip().rstrip(".").lower().split(".")
    if len(labels) < 2:
        return None
    second = labels[1]
    if not (second == "m" or (second == "h" and len(labels) >= 3)):
        return None
    return normalize_id(labels[0])


# ------------------------------------------------------------------------------ VIP → ID
_known: dict[ipaddress.IPv6Address, str] = {}
_KNOWN_MAX = 65536


def remember_key(pub: Any) -> str:
    """Record the ID of a verified public key under its VIP; returns the ID.

    The first key seen for a VIP keeps it: a later key with the same 64 bits (found by brute
    force, ~2^64 key generations) cannot take over a VIP this process already maps.
    """
    mesh_id = id_of_public_key(pub)
    if len(_known) >= _KNOWN_MAX:
        _known.clear()
    _known.setdefault(vip_of_public_key(pub), mesh_id)
    return mesh_id


def id_for_vip(addr: str | ipaddress.IPv6Address) -> str | None:
    """The ID whose VIP is ``addr``, if this process has seen that key."""
    try:
        ip = ipaddress.ip_address(addr) if isinstance(addr, str) else addr
    except ValueError:
        return None
    if not isinstance(ip, ipaddress.IPv6Address) or ip not in VIP_NETWORK:
        return None
    return _known.get(ip)


def is_vip(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return isinstance(ip, ipaddress.IPv6Address) and ip in VIP_NETWORK


def expected_identities_for(name: str) -> tuple[ExpectedIdentity, ...]:
    """What a dial to ``name`` must find without asking anyone.

    A mesh name (``<id>.m``, ``<id>.h.mesh.internal``, ``<id>.m.<domain>``, ``<id>.h.<domain>``)
    or a VIP this process knows (:func:`remember_key`) → ``(ExpectedIdentity("id", ID),)``;
    anything else → ``()`` (discovery must say: TLSA records, K8s, xDS, config).
    """
    mesh_id = id_from_name(name)
    if mesh_id is None and is_vip(name):
        mesh_id = id_for_vip(name.strip("[]"))
    return (ExpectedIdentity("id", mesh_id),) if mesh_id else ()
