"""Short-lived signed tokens: how a client that cannot send a client certificate or a custom
header (a browser: WebSocket, WebTransport, WebRTC signaling) proves who it is.

A token is ``<payload>.<signature>``, both unpadded base64url. ``payload`` is compact JSON
``{"aud": <audience>, "exp": <unix seconds>, "kid": <signer's mesh ID>, "sub": <subject>}``;
``signature`` signs the payload's base64url text with the signer's mesh key: Ed25519, or
ECDSA P-256 with SHA-256 (``r || s``, 32 bytes each) — the two workload key types, so
``ugate token`` can sign with a gateway's own key whichever type it has. The key decides the
algorithm (``kid`` names the key), so a token cannot choose a weaker one.

A gateway accepts a token when ``kid`` is one of ``[tokens] trusted_keys``, the signature
verifies, ``aud`` is its audience, and ``now < exp <= now + max_lifetime``; the subject
becomes the client's verified user name (``user:<sub>`` in ``[[rules]]``). A token says who
the client is, never where it may go. The ``[tokens]`` table (every key optional)::

    [tokens]
    trusted_keys = []     # public keys whose tokens are accepted: PEM files (ugate id --json
                          # prints public_key_pem), or inline base64 DER ("MCowBQYDK2VwAyEA...")
    audience = ""         # what a token's "aud" must say; "": this gateway's mesh ID
    max_lifetime = 3600   # refuse tokens valid longer than this from now (seconds, <= 7 days)

Refusals are :class:`~ugate_core.AuthError` with a reason (``token_malformed``,
``token_unknown_key``, ``token_signature``, ``token_audience``, ``token_expired``,
``token_lifetime``) and a message for the log, which never holds the token.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from . import options as _opt
from .errors import AuthError, ConfigError
from .ids import id_of_public_key

__all__ = [
    "MAX_TOKEN",
    "TokenKey",
    "TokenSettings",
    "TokenSigner",
    "load_trusted_keys",
    "make_token",
    "parse_settings",
    "verify_token",
]

SECTION = "tokens"
#: longest token accepted (a subject of a few hundred bytes fits easily)
MAX_TOKEN = 2048
#: the longest ``max_lifetime`` allowed: a token cannot be revoked, only outlived
MAX_LIFETIME = 7 * 86400.0

TokenKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
TokenSigner = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey

# base64 of the DER SubjectPublicKeyInfo (the body of the PEM form) of each key type
_INLINE = re.compile(r"MCowBQYDK2VwAyEA[A-Za-z0-9+/]{43}="
                     r"|MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE[A-Za-z0-9+/]{86}==")


@dataclass(frozen=True)
class TokenSettings:
    """The ``[tokens]`` table (module docs); ``trusted_keys`` as written, loaded by
    :func:`load_trusted_keys`."""

    trusted_keys: tuple[str, ...] = ()
    audience: str = ""
    max_lifetime: float = 3600.0


def parse_settings(t: Mapping[str, Any]) -> TokenSettings:
    """Validate the ``[tokens]`` table; ConfigError names the key and the value."""
    _opt.check_keys(t, TokenSettings.__dataclass_fields__, SECTION)
    return TokenSettings(
        trusted_keys=_opt.strings(t, "trusted_keys", SECTION,
                                  expect="a list of keys (PEM files or base64)"),
        audience=_opt.string(t, "audience", SECTION, ""),
        max_lifetime=_opt.seconds(t, "max_lifetime", SECTION, 3600.0, hi=MAX_LIFETIME,
                                  positive=True),
    )


def _check_type(key: object, what: str, path: str) -> TokenKey:
    if isinstance(key, ed25519.Ed25519PublicKey) or (
            isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)):
        return key
    kind = key.curve.name if isinstance(key, ec.EllipticCurvePublicKey) else type(key).__name__
    raise ConfigError(path, f"{what}: a {kind} key; token keys are Ed25519 or EC P-256 "
                      "(mesh keys)")


def load_public_key(text: str, path: str) -> TokenKey:
    """A public key: inline (base64 of its DER SubjectPublicKeyInfo) or a PEM file's name."""
    if _INLINE.fullmatch(text):
        return _check_type(load_der_public_key(base64.b64decode(text)), "inline key", path)
    try:
        key = load_pem_public_key(Path(text).expanduser().read_bytes())
    except OSError as e:
        raise ConfigError(path, f"{text!r}: cannot read: {e.strerror or e}") from None
    except ValueError as e:
        raise ConfigError(path, f"{text!r}: not a PEM public key: {e}") from None
    return _check_type(key, repr(text), path)


def load_trusted_keys(settings: TokenSettings) -> dict[str, TokenKey]:
    """``trusted_keys`` by key id (the signer's mesh ID); ConfigError names the entry."""
    keys: dict[str, TokenKey] = {}
    for i, text in enumerate(settings.trusted_keys):
        k = load_public_key(text, f"{SECTION}.trusted_keys[{i}]")
        keys[id_of_public_key(k)] = k
    return keys


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: TokenSigner, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"an EC key on {key.curve.name}; token keys are Ed25519 or P-256")
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _verify(key: TokenKey, sig: bytes, data: bytes) -> None:
    """Raises InvalidSignature."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        key.verify(sig, data)
        return
    if len(sig) != 64:
        raise InvalidSignature
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    key.verify(der, data, ec.ECDSA(hashes.SHA256()))


def make_token(key: TokenSigner, subject: str, audience: str, lifetime: float = 300.0,
               now: float | None = None) -> str:
    """A token for ``subject``, valid at ``audience`` for ``lifetime`` seconds, signed with
    ``key`` (Ed25519 or P-256; its mesh ID becomes ``kid``)."""
    if not subject:
        raise ValueError("a token needs a subject")
    t = time.time() if now is None else now
    payload = {"kid": id_of_public_key(key.public_key()), "sub": subject, "aud": audience,
               "exp": int(t + lifetime)}
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_b64(_sign(key, body.encode('ascii')))}"


def _parse(token: str) -> tuple[str, bytes, str, str, str, int]:
    """``(body, signature, kid, sub, aud, exp)`` or AuthError ``token_malformed``."""
    if len(token) > MAX_TOKEN:
        raise AuthError(f"token of {len(token)} characters (at most {MAX_TOKEN})",
                        "token_malformed")
    body, dot, sig_text = token.partition(".")
    try:
        if not dot:
            raise ValueError("no '.'")
        sig = _unb64(sig_text)
        payload = json.loads(_unb64(body))
        if not isinstance(payload, dict):
            raise ValueError("payload is not an object")
        kid, sub, aud, exp = (payload.get(k) for k in ("kid", "sub", "aud", "exp"))
        if not (isinstance(kid, str) and isinstance(sub, str) and sub
                and isinstance(aud, str) and isinstance(exp, int) and not isinstance(exp, bool)
                and 0 <= exp < 1 << 40):
            raise ValueError("needs kid, sub, aud (strings) and exp (unix seconds)")
    except (ValueError, RecursionError, binascii.Error) as e:  # JSON and UnicodeDecodeError
        # are ValueErrors; a payload nested deep enough stops json with RecursionError
        raise AuthError(f"token is malformed: {str(e)[:80]}", "token_malformed") from None
    return body, sig, kid, sub, aud, exp


def verify_token(token: str, keys: Mapping[str, TokenKey], audience: str,
                 max_lifetime: float, now: float | None = None) -> str:
    """The token's subject, or :class:`~ugate_core.AuthError` saying what is wrong (reasons
    in the module docs). The subject is named in messages only once the signature verified."""
    t = time.time() if now is None else now
    body, sig, kid, sub, aud, exp = _parse(token)
    key = keys.get(kid)
    if key is None:
        raise AuthError(f"token signed by {kid[:16]!r}, not a key in [tokens] trusted_keys",
                        "token_unknown_key")
    try:
        _verify(key, sig, body.encode("ascii"))
    except InvalidSignature:
        raise AuthError(f"token signed by {kid[:16]!r}: bad signature",
                        "token_signature") from None
    if aud != audience:
        raise AuthError(f"token of {sub[:64]!r} is for audience {aud[:64]!r}, not "
                        f"{audience!r}", "token_audience")
    if exp <= t:
        raise AuthError(f"token of {sub[:64]!r} expired {int(t - exp)} s ago", "token_expired")
    if exp > t + max_lifetime:
        raise AuthError(f"token of {sub[:64]!r} is valid {int(exp - t)} s from now, more than "
                        f"[tokens] max_lifetime ({int(max_lifetime)} s)", "token_lifetime")
    return sub
