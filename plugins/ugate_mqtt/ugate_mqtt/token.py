"""Mesh tokens: a device's password is a short-lived ES256 JWT signed by its mesh key.

The user name is the device's mesh ID, the hash of its public key; the token carries that
public key in its ``jwk`` header, so the gateway can check both that the key hashes to the ID
and that the key signed the token. The claims: ``aud`` (the listener's ``jwt_audience``),
``iat`` and ``exp`` (a lifetime of at most ``jwt_max_lifetime``), optionally ``sub`` (then it
must be the ID too).

``python -m ugate_mqtt.token KEY.pem [AUDIENCE] [SECONDS]`` prints the user name and a token
for a P-256 key in PEM (a ugate state directory's ``key.pem``).
"""

from __future__ import annotations

import base64
import json
import sys
import time
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from ugate_core import id_of_public_key, normalize_id

#: tokens longer than this are refused before any parsing
MAX_TOKEN = 4096
#: clock skew tolerated on ``iat`` and ``exp``
LEEWAY = 30.0


class TokenError(Exception):
    """The token does not prove the identity it names; the text says why."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(s: str, what: str) -> bytes:
    # isascii first: str.isalnum() is true for letters beyond ASCII (a jwk coordinate is JSON,
    # where "\u00e9" is one), which base64 refuses with a ValueError (fuzz_token.py)
    if (len(s) % 4 == 1 or not s.isascii()
            or not s.replace("-", "").replace("_", "").isalnum()):
        raise TokenError(f"{what} is not base64url")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _coord(n: int) -> str:
    return b64url(n.to_bytes(32, "big"))


def looks_like_token(password: bytes | None) -> bool:
    """A compact JWS whose header is JSON (``eyJ``: base64url of ``{"``)."""
    return password is not None and password.startswith(b"eyJ") and password.count(b".") == 2


def mint(key: ec.EllipticCurvePrivateKey, audience: str = "mqtt", lifetime: float = 300.0,
         now: float | None = None, **claims: Any) -> tuple[str, str]:
    """(user name, password) for a device holding ``key`` (P-256)."""
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("ES256 needs a P-256 key")
    nums = key.public_key().public_numbers()
    header = {"alg": "ES256", "typ": "JWT",
              "jwk": {"kty": "EC", "crv": "P-256", "x": _coord(nums.x), "y": _coord(nums.y)}}
    t = time.time() if now is None else now
    ident = id_of_public_key(key)
    body = {"aud": audience, "iat": int(t), "exp": int(t + lifetime), "sub": ident, **claims}
    signing = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
               + b64url(json.dumps(body, separators=(",", ":")).encode()))
    r, s = decode_dss_signature(key.sign(signing.encode(), ec.ECDSA(hashes.SHA256())))
    return ident, signing + "." + b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def _json(part: str, what: str) -> dict[str, Any]:
    try:
        v = json.loads(unb64url(part, what))
    except (ValueError, UnicodeDecodeError, RecursionError):  # JSON nested deep enough stops
        # the decoder with RecursionError (a 4 KiB token holds ~1,500 levels)
        raise TokenError(f"{what} is not JSON") from None
    if not isinstance(v, dict):
        raise TokenError(f"{what} is not a JSON object")
    return v


def _public_key(jwk: Any) -> ec.EllipticCurvePublicKey:
    if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise TokenError("the jwk header is not a P-256 EC key")
    x, y = jwk.get("x"), jwk.get("y")
    if not isinstance(x, str) or not isinstance(y, str):
        raise TokenError("the jwk header lacks x or y")
    xb, yb = unb64url(x, "jwk x"), unb64url(y, "jwk y")
    if len(xb) != 32 or len(yb) != 32:
        raise TokenError("jwk coordinates are not 32 bytes")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + xb + yb)
    except ValueError:
        raise TokenError("the jwk point is not on P-256") from None


def verify(username: str, password: bytes, *, audience: str, max_lifetime: float,
           now: float | None = None) -> str:
    """The mesh ID that ``password`` proves for ``username``; TokenError otherwise."""
    ident = normalize_id(username)
    if ident is None:
        raise TokenError(f"user name {username[:64]!r} is not a mesh ID")
    if len(password) > MAX_TOKEN:
        raise TokenError(f"token of {len(password)} bytes is longer than {MAX_TOKEN}")
    try:
        text = password.decode("ascii")
    except UnicodeDecodeError:
        raise TokenError("token is not ASCII") from None
    parts = text.split(".")
    if len(parts) != 3:
        raise TokenError("token is not a compact JWS (three parts)")
    header = _json(parts[0], "token header")
    if header.get("alg") != "ES256":
        raise TokenError(f"token alg {str(header.get('alg'))[:16]!r} is not ES256")
    pub = _public_key(header.get("jwk"))
    if id_of_public_key(pub) != ident:
        raise TokenError(f"the token's key is not the key of {ident}")
    sig = unb64url(parts[2], "token signature")
    if len(sig) != 64:
        raise TokenError("ES256 signature is not 64 bytes")
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    try:
        pub.verify(der, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise TokenError(f"token signature does not verify with the key of {ident}") from None
    claims = _json(parts[1], "token claims")
    t = time.time() if now is None else now
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int | float) or not isinstance(exp, int | float):
        raise TokenError("token lacks iat or exp")
    if exp <= t - LEEWAY:
        raise TokenError(f"token expired {t - exp:.0f}s ago")
    if iat > t + LEEWAY:
        raise TokenError("token issued in the future")
    if exp - iat > max_lifetime:
        raise TokenError(f"token lifetime {exp - iat:.0f}s is longer than {max_lifetime:g}s")
    aud = claims.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    if audience not in auds:
        raise TokenError(f"token audience {str(aud)[:64]!r} is not {audience!r}")
    sub = claims.get("sub")
    if sub is not None and (not isinstance(sub, str) or normalize_id(sub) != ident):
        raise TokenError("token subject is not the user name's ID")
    return ident


def main(argv: list[str]) -> int:
    if not 2 <= len(argv) <= 4:
        print(__doc__.strip().splitlines()[-2].strip(), file=sys.stderr)
        return 2
    with open(argv[1], "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        print(f"{argv[1]}: not an EC key", file=sys.stderr)
        return 1
    user, pw = mint(key, argv[2] if len(argv) > 2 else "mqtt",
                    float(argv[3]) if len(argv) > 3 else 300.0)
    print(user)
    print(pw)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
