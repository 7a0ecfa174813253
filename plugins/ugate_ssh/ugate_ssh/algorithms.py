"""The SSH algorithms ugate offers, as a server (listener) and as a client (dialer, upstreams).

``hardened`` (the default) follows ssh-audit's OpenSSH hardening guide: no SHA-1 key exchange,
MAC or host key signature; no Diffie-Hellman group below 2048 bits, and no group exchange at all
(asyncssh's server hands out 1024-bit groups to a client that asks for them, and with no moduli
file to trim that is the only way to keep them out); no MAC with a 64-bit tag (``umac-64``) and
no encrypt-and-MAC (only ``-etm``); no NIST-curve key exchange; no compression (it also turns
the send and receive fast paths off). The ciphers are asyncssh's defaults, which are exactly the
ones the fast paths accelerate (chacha20-poly1305, AES-GCM, AES-CTR). The host key stays the
workload's P-256 key: it *is* the identity (ssh-audit flags the curve; that is by design).

What OpenSSH 9.2's ``ssh`` offers by default meets this set at ``curve25519-sha256`` and any
of the ciphers; newer OpenSSH at ``mlkem768x25519-sha256``.

``legacy``: asyncssh's defaults (adds ``diffie-hellman-group14-sha1``, group exchange,
``hmac-sha1``, ``umac-64``, NIST curves, ``zlib@openssh.com``), for peers too old for the
hardened set.
"""

from __future__ import annotations

from typing import Any

from asyncssh.encryption import get_encryption_algs
from asyncssh.kex import get_kex_algs
from asyncssh.mac import get_mac_algs
from asyncssh.public_key import get_certificate_algs, get_public_key_algs

from ugate_core import ConfigError

MODES = ("hardened", "legacy")

KEX = ("mlkem768x25519-sha256", "curve25519-sha256", "curve25519-sha256@libssh.org",
       "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512")
CIPHERS = ("chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com",
           "aes256-ctr", "aes192-ctr", "aes128-ctr")
MACS = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com",
        "umac-128-etm@openssh.com")
#: host key algorithms the dialer accepts: no SHA-1 (``ssh-rsa``), no DSA
HOST_KEYS = ("ssh-ed25519-cert-v01@openssh.com", "ecdsa-sha2-nistp256-cert-v01@openssh.com",
             "ecdsa-sha2-nistp384-cert-v01@openssh.com",
             "ecdsa-sha2-nistp521-cert-v01@openssh.com",
             "rsa-sha2-512-cert-v01@openssh.com", "rsa-sha2-256-cert-v01@openssh.com",
             "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
             "rsa-sha2-512", "rsa-sha2-256")


def algorithms_mode(v: Any, path: str) -> str:
    """Check an ``algorithms`` setting."""
    if v not in MODES:
        raise ConfigError(path, f"{v!r} is not one of {', '.join(map(repr, MODES))}")
    return str(v)


def _available(want: tuple[str, ...], have: list[bytes]) -> list[str]:
    """``want`` in order, without what this asyncssh cannot do (ML-KEM and umac depend on
    optional libraries): naming an unavailable algorithm would fail every connection."""
    return [a for a in want if a.encode() in have]


def options(mode: str, *, client: bool = False) -> dict[str, Any]:
    """Keyword arguments for asyncssh's connection options in ``mode``."""
    if mode == "legacy":
        return {}
    if mode != "hardened":
        raise ValueError(f"ssh algorithms {mode!r}: not one of {', '.join(MODES)}")
    out: dict[str, Any] = {
        "kex_algs": _available(KEX, get_kex_algs()),
        "encryption_algs": _available(CIPHERS, get_encryption_algs()),
        "mac_algs": _available(MACS, get_mac_algs()),
        "compression_algs": ["none"],
    }
    if client:
        out["server_host_key_algs"] = _available(
            HOST_KEYS, get_certificate_algs() + get_public_key_algs())
    return out
