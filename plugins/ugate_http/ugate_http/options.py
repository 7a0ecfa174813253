"""The ``http`` listener's options, validated into a frozen :class:`HttpOptions`.

A listener's table is shared by every protocol on a shared port (``protocols = ["*"]``), so
keys this plugin does not know are left to the others, except near-misses of ours
(``user``, ``max_header_byte``): a typo there would silently change behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ugate_core import ConfigError, ExpectedIdentity, normalize_id, parse_identity
from ugate_core import options as opt

from .h1 import DEFAULT_MAX_HEADER_BYTES

MODES = ("forward", "reverse", "auto")


@dataclass(frozen=True)
class HttpOptions:
    #: ``forward``: CONNECT and absolute-URI requests (a proxy); ``reverse``: route each
    #: request by its Host; ``auto``: the request's form decides
    mode: str = "forward"
    users: Mapping[str, str] = field(default_factory=dict)
    #: mesh identities (``id:<mesh ID>``, ``spiffe://<trust domain>/<path>``) whose TLS
    #: client certificate (the shared port's TLS front) authenticates a client without a
    #: password
    identities: tuple[ExpectedIdentity, ...] = ()
    realm: str = "ugate"
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    keepalive_timeout: float = 60.0
    response_timeout: float = 60.0
    default_port: int = 80
    forwarded: bool = True
    pool_max_idle: int = 32
    pool_idle_timeout: float = 60.0
    #: serve HTTP/2: h2c prior knowledge and ``Upgrade: h2c`` (reverse/auto mode), ``h2``
    #: by ALPN behind the TLS front
    h2: bool = True
    #: concurrent streams a client may open on one HTTP/2 connection
    h2_max_streams: int = 128
    #: receive windows: per stream, and per connection (bounds memory per client)
    h2_stream_window: int = 1 << 20
    h2_connection_window: int = 16 << 20
    #: answer common requests from callbacks (express.py); false: every request in the task
    express: bool = True

    @property
    def auth(self) -> bool:
        """Every request must authenticate (a password or a listed mesh identity)."""
        return bool(self.users or self.identities)


KEYS = tuple(HttpOptions.__dataclass_fields__)


def has_auth(options: Mapping[str, Any]) -> bool:
    """True when the listener names users or identities: then every request must
    authenticate."""
    return bool(options.get("users") or options.get("identities"))


#: what a client certificate that the TLS front verified tells a request (``meta.peer_id``,
#: ``meta.extra["spiffe"]``)
IDENTITY_KINDS = ("id", "spiffe")


def _identities(options: Mapping[str, Any], path: str) -> tuple[ExpectedIdentity, ...]:
    values = opt.strings(options, "identities", path, ())
    out = []
    for i, v in enumerate(values):
        where = f"{path}.identities[{i}]"
        e = parse_identity(v, where)
        if e.kind not in IDENTITY_KINDS:
            raise ConfigError(where, f"{v!r}: only 'id:<mesh ID>' and "
                              "'spiffe://<trust domain>/<path>' name a client here")
        if e.kind == "id":
            mesh_id = normalize_id(e.value)
            if mesh_id is None:
                raise ConfigError(where, f"{v!r}: {e.value!r} is not a mesh ID (52 base32 "
                                  "characters, see 'ugate id')")
            e = ExpectedIdentity("id", mesh_id)
        out.append(e)
    return tuple(out)


def _num(options: Mapping[str, Any], key: str, path: str, default: float, lo: float) -> float:
    return opt.number(options, key, path, default, lo=lo, expect=f"a number >= {lo:g}")


def _int(options: Mapping[str, Any], key: str, path: str, default: int, lo: int,
         hi: int) -> int:
    return opt.integer(options, key, path, default, lo=lo, hi=hi, expect=f"in {lo}..{hi}")


def parse_options(options: Mapping[str, Any], path: str) -> HttpOptions:
    """Validate this plugin's keys and return them; errors name ``path.key`` and the value."""
    for k in options:
        if k not in KEYS:
            close = opt.near_miss(k, KEYS, cutoff=0.8)
            if close:
                raise ConfigError(f"{path}.{k}", f"unknown key; did you mean {close!r}?")
    d = HttpOptions()
    mode = opt.one_of(options, "mode", path, d.mode, MODES)
    users = options.get("users", {})
    if not isinstance(users, Mapping):
        raise ConfigError(f"{path}.users", f"{users!r} is not a table of name = \"password\"")
    for name, pw in users.items():
        if not isinstance(pw, str):
            raise ConfigError(f"{path}.users.{name}",
                              f"{type(pw).__name__} value: the password must be a string")
        if not name or ":" in name:
            raise ConfigError(f"{path}.users.{name}",
                              f"user name {name!r} must be non-empty and have no ':' (Basic)")
    realm = options.get("realm", d.realm)
    if (not isinstance(realm, str) or not realm or not realm.isascii()
            or not realm.isprintable() or any(c in realm for c in '"\\')):
        raise ConfigError(f"{path}.realm", f"{realm!r} must be a non-empty printable ASCII "
                          "string without quotes or backslashes")
    forwarded = opt.boolean(options, "forwarded", path, d.forwarded)
    h2 = opt.boolean(options, "h2", path, d.h2)
    express = opt.boolean(options, "express", path, d.express)
    return HttpOptions(
        mode=mode,
        users=dict(users),
        identities=_identities(options, path),
        realm=realm,
        max_header_bytes=_int(options, "max_header_bytes", path, d.max_header_bytes, 1024,
                              16 << 20),
        keepalive_timeout=_num(options, "keepalive_timeout", path, d.keepalive_timeout, 0.01),
        response_timeout=_num(options, "response_timeout", path, d.response_timeout, 0.01),
        default_port=_int(options, "default_port", path, d.default_port, 1, 65535),
        forwarded=forwarded,
        pool_max_idle=_int(options, "pool_max_idle", path, d.pool_max_idle, 0, 100_000),
        pool_idle_timeout=_num(options, "pool_idle_timeout", path, d.pool_idle_timeout, 0.01),
        h2=h2,
        h2_max_streams=_int(options, "h2_max_streams", path, d.h2_max_streams, 1, 100_000),
        h2_stream_window=_int(options, "h2_stream_window", path, d.h2_stream_window, 65535,
                              (1 << 31) - 1),
        h2_connection_window=_int(options, "h2_connection_window", path,
                                  d.h2_connection_window, 65535, (1 << 31) - 1),
        express=express,
    )


def check_options(options: Mapping[str, Any], path: str) -> None:
    parse_options(options, path)
