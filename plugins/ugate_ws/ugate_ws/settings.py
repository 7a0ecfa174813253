"""The ``[ws]`` table: limits, origins, served paths and the dialer's proxy. Every key is
optional (tokens are core's ``[tokens]`` table, :mod:`ugate_core.tokens`)::

    [ws]
    max_message = 65536         # largest message either way (bytes); larger closes with 1009
    idle_timeout = 300.0        # close a WebSocket with no frame either way for this long
    proxy = ""                  # dialer: an HTTP proxy (host:port) reached with CONNECT
    origins = []                # browser pages (Origin) allowed besides the same origin; "*": any
    serve = {}                  # path -> listener protocol its WebSockets carry, besides the
                                # default "/mqtt" = "mqtt" ("" removes a path)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ugate_core import ConfigError, StashKey
from ugate_core import options as opt

from .path import PREFIX

if TYPE_CHECKING:
    from ugate_core import GatewayAPI

SECTION = "ws"
KEYS = ("max_message", "idle_timeout", "proxy", "origins", "serve")
#: keys that moved to core's ``[tokens]`` (one table for every plugin's browser tokens)
MOVED = {"token_keys": "[tokens] trusted_keys", "token_audience": "[tokens] audience",
         "token_max_lifetime": "[tokens] max_lifetime"}
#: the served paths before ``serve``'s own entries (which add to them; ``""`` removes one):
#: the path MQTT's WebSocket clients (mqtt.js, Paho) use by default, applied only when the
#: ``mqtt`` protocol is installed (:mod:`ugate_ws.services`)
DEFAULT_SERVE = {"/mqtt": "mqtt"}
_SERVE_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")


@dataclass(frozen=True)
class WsSettings:
    max_message: int = 64 * 1024
    idle_timeout: float = 300.0
    proxy: tuple[str, int] | None = None
    origins: tuple[str, ...] = ()
    #: the config's path -> listener protocol entries (``""``: none), over ``DEFAULT_SERVE``
    serve: Mapping[str, str] = field(default_factory=dict)


def parse_settings(t: Mapping[str, Any]) -> WsSettings:
    """Validate the ``[ws]`` table; ConfigError names key and value."""
    opt.moved(t, MOVED, SECTION)
    opt.check_keys(t, KEYS, SECTION)
    return WsSettings(
        max_message=opt.integer(t, "max_message", SECTION, 64 * 1024, lo=1, hi=16 << 20,
                                expect="a number of bytes in 1..16777216"),
        idle_timeout=opt.seconds(t, "idle_timeout", SECTION, 300.0, hi=86400, positive=True),
        proxy=opt.hostport(t, "proxy", SECTION),
        origins=tuple(o.rstrip("/").lower() for o in opt.strings(
            t, "origins", SECTION, expect="a list of origins (https://app.example)")),
        serve=parse_serve(t),
    )


def parse_serve(t: Mapping[str, Any]) -> dict[str, str]:
    """``serve``: a table of path -> protocol name (``""`` takes a default path out)."""
    v = t.get("serve", {})
    if not isinstance(v, Mapping):
        raise ConfigError(f"{SECTION}.serve", f"{v!r} is not a table of paths to protocols "
                          '({ "/mqtt" = "mqtt" })')
    out: dict[str, str] = {}
    for path, proto in v.items():
        kp = f'{SECTION}.serve."{path}"'
        if not isinstance(proto, str):
            raise ConfigError(kp, f"{proto!r} is not a protocol name")
        norm = path.rstrip("/") or "/"
        if not _SERVE_PATH.fullmatch(path) or norm == "/":
            raise ConfigError(kp, "not a path: '/' then a name (\"/mqtt\"), no query")
        if norm == PREFIX or norm.startswith(PREFIX + "/") or PREFIX.startswith(norm + "/"):
            raise ConfigError(kp, f"overlaps the destination paths {PREFIX}/<host>:<port>")
        if norm in out:
            raise ConfigError(kp, f"{norm!r} is given twice")
        out[norm] = proto
    return out


_SETTINGS: StashKey[WsSettings] = StashKey("ugate_ws.settings")


def settings_of(gateway: GatewayAPI) -> WsSettings:
    """The gateway's ``[ws]`` settings, parsed once."""
    s = gateway.stash.get(_SETTINGS, None)
    if s is None:
        s = gateway.stash[_SETTINGS] = parse_settings(gateway.config.section(SECTION))
    return s
