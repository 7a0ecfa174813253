"""Browser tokens for WebRTC signaling: a user name and an expiry, signed with HMAC-SHA256.

``ugw1.<user>.<expiry unix seconds>.<base64url HMAC-SHA256(secret, "ugw1.<user>.<expiry>")>``

The gateway keeps no token list: whoever holds ``[webrtc] token_secret_file`` mints tokens
(:func:`make_token`, or ``python -m ugate_webrtc.tokens USER SECONDS``), and the gateway checks
the signature and the expiry. A valid token makes the session's streams come from
``user:<name>`` (``extra["user_verified"]``): only ``[[rules]]`` naming that user decide what
they reach.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import sys
import time
from pathlib import Path

PREFIX = "ugw1"
_USER = re.compile(r"^[A-Za-z0-9_@:+-]{1,64}$")


def _sig(secret: bytes, body: str) -> str:
    mac = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def make_token(secret: bytes, user: str, ttl: float, now: float | None = None) -> str:
    """A token for ``user`` valid ``ttl`` seconds from ``now``."""
    if not _USER.match(user):
        raise ValueError(f"token user {user!r}: 1-64 of A-Z a-z 0-9 _ @ : + -")
    exp = int((time.time() if now is None else now) + ttl)
    body = f"{PREFIX}.{user}.{exp}"
    return f"{body}.{_sig(secret, body)}"


def check_token(secret: bytes, token: str, now: float | None = None) -> tuple[str | None, str]:
    """``(user, "")`` for a valid token, else ``(None, reason)`` (``bad_token``,
    ``expired_token``). The signature is compared in constant time before the expiry is
    read, so an expired token says so only when it is genuine."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != PREFIX or not secret:
        return None, "bad_token"
    body = ".".join(parts[:3])
    if not hmac.compare_digest(_sig(secret, body).encode(), parts[3].encode()):
        return None, "bad_token"
    try:
        exp = int(parts[2])
    except ValueError:
        return None, "bad_token"
    if exp < (time.time() if now is None else now):
        return None, "expired_token"
    return parts[1], ""


class SecretFile:
    """The HMAC key, read from a file and re-read when the file changes (rotation)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path).expanduser() if path else None
        self._stamp: tuple[int, int, int] | None = None
        self._secret = b""

    def get(self) -> bytes:
        if self.path is None:
            return b""
        try:
            st = self.path.stat()
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            if stamp != self._stamp:
                self._secret = self.path.read_bytes().strip()
                self._stamp = stamp
        except OSError:
            self._secret, self._stamp = b"", None  # unreadable: no token verifies
        return self._secret


def main(argv: list[str]) -> int:
    """``python -m ugate_webrtc.tokens USER SECONDS`` with ``UGATE_WEBRTC_SECRET_FILE``."""
    if len(argv) != 2 or "UGATE_WEBRTC_SECRET_FILE" not in os.environ:
        print("usage: UGATE_WEBRTC_SECRET_FILE=FILE python -m ugate_webrtc.tokens USER SECONDS",
              file=sys.stderr)
        return 2
    secret = SecretFile(os.environ["UGATE_WEBRTC_SECRET_FILE"]).get()
    print(make_token(secret, argv[0], float(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
