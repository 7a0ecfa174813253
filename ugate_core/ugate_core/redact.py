"""Secrets out of what the admin endpoint shows: :func:`redact` a config tree.

Two tests, applied everywhere in the tree (core sections, plugin sections, listener options):

* the *key*: a name whose words (split at ``_``, ``-`` and case changes) include a secret word
  (``password``, ``token``, ``secret``, ``key``, ``psk``, ``users``, ...) has its values
  replaced, but tables and lists under it keep their shape, so ``users = {alice = "pw"}``
  shows as ``{"alice": "<redacted>"}``. Names of files (``token_file``, ``key_path``) and
  public material (``public_key``) are not secrets. Keys with a dot are names (``[hosts]``
  entries), not setting names, and are judged by their values only.
* the *value*: a string that looks like a credential wherever it is: a PEM private key, a
  ``Bearer``/``Basic`` authorization value, a URL with a password (only the password goes),
  a ``user:password`` pair.

What is left out is marked :data:`REDACTED`. Unknown secrets under innocent names cannot be
found this way; plugins should name their secret settings with one of the words below.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: what a hidden value shows as
REDACTED = "<redacted>"

#: words of a key name that make its values secret
SECRET_WORDS = frozenset({
    "password", "passwords", "passwd", "pass", "pwd", "passphrase", "secret", "secrets",
    "token", "tokens", "key", "keys", "privkey", "apikey", "psk", "credential",
    "credentials", "creds", "users", "authorization", "cookie", "bearer", "salt", "otp",
})
#: words that make a key name a place or a public thing (its value is shown)
PUBLIC_WORDS = frozenset({
    "file", "files", "path", "paths", "dir", "public", "pub", "id", "type", "authorized", "ca",
})

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_PEM_PRIVATE = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_AUTH_VALUE = re.compile(r"\s*(bearer|basic|digest|token)\s+\S", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/@:\s]*:)(?P<pw>[^/@\s]+)(?=@)",
                           re.IGNORECASE)
#: ``name:secret`` where nothing says it is an address (no port digits, no path)
_USER_PASS = re.compile(r"[A-Za-z0-9._-]+:(?![0-9]+$)[^\s/:@]{6,}")


def secret_key(name: str) -> bool:
    """True if a setting named ``name`` holds a secret (see the module docstring)."""
    if "." in name:
        return False
    words = {w.lower() for w in _WORD.findall(name)}
    return bool(words & SECRET_WORDS) and not words & PUBLIC_WORDS


def redact_value(value: str) -> str:
    """``value`` with whatever looks like a credential replaced by :data:`REDACTED`."""
    if _PEM_PRIVATE.search(value) or _AUTH_VALUE.match(value):
        return REDACTED
    if "://" in value:
        return _URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED, value)
    if _USER_PASS.fullmatch(value) and not _looks_like_identity(value):
        return REDACTED
    return value


def _looks_like_identity(value: str) -> bool:
    """``KIND:VALUE`` identities (``id:…``, ``spki_sha256:…``) are public: shown."""
    from .types import IDENTITY_KINDS

    return value.partition(":")[0] in IDENTITY_KINDS


def redact(tree: Any, *, hide: bool = False) -> Any:
    """A copy of ``tree`` (TOML-like: tables, lists, scalars) without secrets. ``hide``
    replaces every scalar below (the tree is under a secret key)."""
    if isinstance(tree, Mapping):
        return {k: redact(v, hide=hide or secret_key(str(k))) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [redact(v, hide=hide) for v in tree]
    if hide:
        return REDACTED
    if isinstance(tree, str):
        return redact_value(tree)
    return tree
