"""Short-lived signed tokens: how a browser, which cannot send a client certificate or a
``Proxy-Authorization`` header, proves who it is to a WebSocket listener beyond loopback.

A token is ``<payload>.<signature>``, both unpadded base64url: ``payload`` is compact JSON
``{"kid": <signer's mesh ID>, "sub": <subject>, "aud": <audience>, "exp": <unix seconds>}``
and ``signature`` is the Ed25519 signature of the payload's base64url text. The gateway
accepts it when ``kid`` names one of ``[ws] token_keys``, the signature verifies, ``aud`` is
this gateway's audience, and ``now < exp <= now + token_max_lifetime``. The subject becomes
the client's verified user name: ``[[rules]]`` name it ``user:<sub>``. A token says who the
client is, never where it may go.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from ugate_core import AuthError, id_of_public_key

#: longest token accepted (a subject of a few hundred bytes fits easily)
MAX_TOKEN = 2048


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(key: ed25519.Ed25519PrivateKey, subject: str, audience: str,
               lifetime: float = 300.0, now: float | None = None) -> str:
    """A token for ``subject``, valid at ``audience`` for ``lifetime`` seconds."""
    t = time.time() if now is None else now
    payload = {"kid": id_of_public_key(key.public_key()), "sub": subject, "aud": audience,
               "exp": int(t + lifetime)}
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_b64(key.sign(body.encode('ascii')))}"


def verify_token(token: str, keys: Mapping[str, ed25519.Ed25519PublicKey], audience: str,
                 max_lifetime: float, now: float | None = None) -> str:
    """The token's subject, or :class:`AuthError` saying what is wrong (reasons
    ``token_malformed``, ``token_unknown_key``, ``token_signature``, ``token_audience``,
    ``token_expired``, ``token_lifetime``)."""
    t = time.time() if now is None else now
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
                and isinstance(aud, str) and isinstance(exp, int)):
            raise ValueError("needs kid, sub, aud (strings) and exp (an integer)")
    except (ValueError, binascii.Error, UnicodeDecodeError) as e:
        raise AuthError(f"token is malformed: {e}", "token_malformed") from None
    key = keys.get(kid)
    if key is None:
        raise AuthError(f"token signed by {kid[:16]!r}, not a key in [ws] token_keys",
                        "token_unknown_key")
    try:
        key.verify(sig, body.encode("ascii"))
    except (InvalidSignature, UnicodeEncodeError):
        raise AuthError(f"token of {sub!r}: bad signature", "token_signature") from None
    if aud != audience:
        raise AuthError(f"token of {sub!r} is for audience {aud!r}, not {audience!r}",
                        "token_audience")
    if exp <= t:
        raise AuthError(f"token of {sub!r} expired {int(t - exp)} s ago", "token_expired")
    if exp > t + max_lifetime:
        raise AuthError(f"token of {sub!r} is valid {int(exp - t)} s from now, more than "
                        f"[ws] token_max_lifetime ({int(max_lifetime)} s)", "token_lifetime")
    return sub
