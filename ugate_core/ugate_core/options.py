"""Option validators: one set for core's config and every plugin's tables and listener keys.

Each reads ``table[key]`` (or ``default`` when absent), checks it, and returns it typed; a bad
value raises :class:`~ugate_core.ConfigError` naming the key path and the value:
``listeners.s.max_channels: 0 is not an integer >= 1``. ``path`` is the table's path
(``"dns"``, ``"listeners.main"``); the error names ``path.key``.

A range error says what was expected; ``expect`` words it differently where a table's
established messages say it their own way (``"a number of seconds (0-86400)"``).

::

    from ugate_core import options as opt

    timeout = opt.seconds(t, "timeout", "echo", 5.0, positive=True)
    mode = opt.one_of(t, "mode", "echo", "plain", ("plain", "upper"))
    opt.check_keys(t, {"timeout", "mode"}, "echo")
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = [
    "boolean",
    "check_keys",
    "did_you_mean",
    "existing_file",
    "hostport",
    "integer",
    "key_path",
    "moved",
    "near_miss",
    "number",
    "one_of",
    "parse_hostport",
    "seconds",
    "string",
    "strings",
]


def key_path(path: str, key: str) -> str:
    """``path.key`` (``key`` alone at the top level)."""
    return f"{path}.{key}" if path else key


def did_you_mean(name: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """``"; did you mean 'allow'?"`` for a near-miss of one of ``choices``, else ``""``."""
    close = near_miss(name, choices, cutoff)
    return f"; did you mean {close!r}?" if close else ""


def near_miss(name: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The one of ``choices`` that ``name`` most likely misspells, if any."""
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=cutoff)
    return close[0] if close else None


def check_keys(t: Mapping[str, Any], known: Iterable[str], path: str) -> None:
    """Every key of ``t`` is one of ``known``: else ``unknown key (known: ...)`` with a
    did-you-mean (a typo is the commonest config bug)."""
    allowed = set(known)
    for k in t:
        if k not in allowed:
            raise ConfigError(key_path(path, k), f"unknown key (known: "
                              f"{', '.join(sorted(allowed))}){did_you_mean(k, allowed)}")


def moved(t: Mapping[str, Any], where: Mapping[str, str], path: str) -> None:
    """A key of ``t`` that now lives elsewhere is an error saying where (``where``: old key
    -> its new home, ``"[tokens] trusted_keys"``), before it could pass for a typo."""
    for k, new in where.items():
        if k in t:
            raise ConfigError(key_path(path, k), f"moved to {new}")


def _range(lo: float, hi: float | None, positive: bool, fmt: str) -> str:
    if hi is not None:
        return f" in {lo:{fmt}}..{hi:{fmt}}" if not positive else f" in (0, {hi:{fmt}}]"
    return " > 0" if positive else f" >= {lo:{fmt}}"


def number(t: Mapping[str, Any], key: str, path: str, default: float, *, lo: float = 0.0,
           hi: float | None = None, positive: bool = False, expect: str = "") -> float:
    """A number (int or float, not a bool) in ``lo..hi`` (``positive``: above 0)."""
    v = t.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ConfigError(key_path(path, key), f"{v!r} is not {expect or 'a number'}")
    if v < lo or (hi is not None and v > hi) or (positive and v <= 0):
        what = expect or "a number" + _range(lo, hi, positive, "g")
        raise ConfigError(key_path(path, key), f"{v!r} is not {what}")
    return float(v)


def seconds(t: Mapping[str, Any], key: str, path: str, default: float, *, lo: float = 0.0,
            hi: float | None = None, positive: bool = False, expect: str = "") -> float:
    """A duration in seconds: :func:`number`, worded as one."""
    rng = _range(lo, hi, positive, "g") if lo or hi is not None or positive else ""
    return number(t, key, path, default, lo=lo, hi=hi, positive=positive,
                  expect=expect or f"a number of seconds{rng}")


def integer(t: Mapping[str, Any], key: str, path: str, default: int, *, lo: int = 0,
            hi: int | None = None, expect: str = "") -> int:
    """An integer (not a bool) in ``lo..hi``."""
    v = t.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(key_path(path, key), f"{v!r} is not an integer")
    if v < lo or (hi is not None and v > hi):
        what = expect or "an integer" + _range(lo, hi, False, "d")
        raise ConfigError(key_path(path, key), f"{v!r} is not {what}")
    return v


def boolean(t: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    """``true`` or ``false`` (not 1, not ``"yes"``)."""
    v = t.get(key, default)
    if not isinstance(v, bool):
        raise ConfigError(key_path(path, key), f"{v!r} is not true or false")
    return v


def string(t: Mapping[str, Any], key: str, path: str, default: str, *,
           expect: str = "") -> str:
    """A string."""
    v = t.get(key, default)
    if not isinstance(v, str):
        raise ConfigError(key_path(path, key), f"{v!r} is not {expect or 'a string'}")
    return v


def strings(t: Mapping[str, Any], key: str, path: str, default: Sequence[str] = (), *,
            expect: str = "") -> tuple[str, ...]:
    """A list of strings; a lone string is a list of one."""
    v = t.get(key, list(default))
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(key_path(path, key), f"{v!r} is not {expect or 'a list of strings'}")
    return tuple(v)


def one_of(t: Mapping[str, Any], key: str, path: str, default: str,
           choices: Sequence[str]) -> str:
    """One of ``choices`` (with a did-you-mean for a near-miss)."""
    v = t.get(key, default)
    if not isinstance(v, str) or v not in choices:
        hint = did_you_mean(v, choices) if isinstance(v, str) else ""
        raise ConfigError(key_path(path, key),
                          f"{v!r} is not one of {', '.join(choices)}{hint}")
    return v


def parse_hostport(value: str, path: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``host`` (with ``default_port``) → (host, port)."""
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"{value!r} is not host:port")
    host, port_s = value, None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ConfigError(path, f"{value!r}: missing ']'")
        host = value[1:end]
        rest = value[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(path, f"{value!r} is not host:port")
            port_s = rest[1:]
    elif value.count(":") == 1:
        host, port_s = value.split(":")
    elif value.count(":") > 1:
        raise ConfigError(path, f"{value!r}: IPv6 addresses need brackets, [addr]:port")
    if port_s is None:
        if default_port is None:
            raise ConfigError(path, f"{value!r} has no port")
        return host, default_port
    if not (port_s.isascii() and port_s.isdigit()):  # isdigit alone: '\u00b2', '\u0661'
        raise ConfigError(path, f"{value!r}: port {port_s!r} is not a number")
    port = int(port_s)
    if not 0 <= port <= 65535:
        raise ConfigError(path, f"{value!r}: port {port} is not a port (0-65535)")
    if not host:
        raise ConfigError(path, f"{value!r} has no host")
    return host, port


def hostport(t: Mapping[str, Any], key: str, path: str, default: str = "", *,
             default_port: int | None = None) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port``; ``host`` alone with ``default_port``) → (host, port);
    ``None`` when the key is absent and ``default`` empty."""
    v = t.get(key, default)
    if v == "" and key not in t:
        return None
    return parse_hostport(v, key_path(path, key), default_port)


def existing_file(t: Mapping[str, Any], key: str, path: str, default: str = "", *,
                  must_exist: bool = True, expect: str = "") -> str:
    """A file name, returned as given; with ``must_exist``, of an existing file (``~``
    expanded for the check). ``""`` (the default) means none."""
    v = t.get(key, default)
    if not isinstance(v, str):
        raise ConfigError(key_path(path, key), f"{v!r} is not {expect or 'a file name'}")
    if not v:
        return v
    if must_exist and not Path(v).expanduser().is_file():
        raise ConfigError(key_path(path, key), f"{v!r}: no such file")
    return v
