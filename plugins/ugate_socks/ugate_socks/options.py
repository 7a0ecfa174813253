"""The socks5 listener's options: ``users`` (a table) and ``users_file`` (``name:password`` lines).

Both may be given; a name in both takes the ``users`` table's password. The file is re-read
when its modification time changes, so passwords can be rotated without a restart.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from typing import Any

from ugate_core import ConfigError
from ugate_core import options as opt

KEYS = ("users", "users_file")

_file_cache: dict[str, tuple[int, int, dict[str, str]]] = {}


def has_auth(options: Mapping[str, Any]) -> bool:
    """True when the listener configures users (then clients must authenticate)."""
    return bool(options.get("users")) or bool(options.get("users_file"))


def check_options(options: Mapping[str, Any], path: str) -> None:
    """Validate this plugin's keys.

    Other keys may belong to the other protocols of a shared port, so they are accepted,
    except near-misses of ours (``user``, ``users_files``): a typo there would silently turn
    authentication off.
    """
    for k in options:
        if k not in KEYS:
            close = opt.near_miss(k, KEYS, cutoff=0.8)
            if close:
                raise ConfigError(f"{path}.{k}", f"unknown key; did you mean {close!r}?")
    users = options.get("users", {})
    if not isinstance(users, Mapping):
        raise ConfigError(f"{path}.users", f"{users!r} is not a table of name = \"password\"")
    for name, pw in users.items():
        _check_user(name, pw, f"{path}.users.{name}")
    uf = opt.string(options, "users_file", path, "", expect="a string (a file path)")
    if uf:
        load_users_file(uf, f"{path}.users_file")


def _check_user(name: str, pw: Any, path: str) -> None:
    if not isinstance(pw, str):
        raise ConfigError(path, f"{type(pw).__name__} value: the password must be a string")
    if not 1 <= len(name.encode()) <= 255:
        raise ConfigError(path, f"user name {name!r} must be 1-255 bytes (RFC 1929)")
    if len(pw.encode()) > 255:
        raise ConfigError(path, f"password of {name!r} is {len(pw.encode())} bytes; "
                          "RFC 1929 allows at most 255")


def load_users_file(filename: str, path: str = "users_file") -> dict[str, str]:
    """``name:password`` per line; blank lines and ``#`` comments are skipped."""
    fn = os.path.expanduser(filename)
    try:
        st = os.stat(fn)
        hit = _file_cache.get(fn)
        if hit is not None and hit[:2] == (st.st_mtime_ns, st.st_size):
            return hit[2]
        with open(fn, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, f"{filename!r}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(path, f"{filename!r}: not UTF-8: {e.reason}") from None
    users: dict[str, str] = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, pw = line.partition(":")
        if not sep or not name:
            raise ConfigError(path, f"{filename!r} line {i}: not 'name:password'")
        _check_user(name, pw, f"{path} ({filename!r} line {i})")
        users[name] = pw
    _file_cache[fn] = (st.st_mtime_ns, st.st_size, users)
    return users


def users_of(options: Mapping[str, Any], path: str = "") -> dict[str, str]:
    """Every configured user and password (the file first, then the ``users`` table)."""
    out: dict[str, str] = {}
    uf = options.get("users_file")
    if isinstance(uf, str) and uf:
        out.update(load_users_file(uf, f"{path}.users_file" if path else "users_file"))
    users = options.get("users")
    if isinstance(users, Mapping):
        out.update({str(k): str(v) for k, v in users.items()})
    return out


def password_ok(users: Mapping[str, str], user: str, password: str) -> bool:
    """Constant-time comparison; an unknown user costs the same as a wrong password."""
    want = users.get(user)
    got = password.encode("utf-8", "surrogateescape")
    if want is None:
        hmac.compare_digest(got, got)
        return False
    return hmac.compare_digest(want.encode(), got)
