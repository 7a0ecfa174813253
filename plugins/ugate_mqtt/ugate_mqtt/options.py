"""The mqtt listener's options (see the README for each key)."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ugate_core import ConfigError, StashKey
from ugate_core import options as opt

from .codec import DEFAULT_MAX_CLIENT_ID, DEFAULT_MAX_SIZE, MAX_VARINT

KEYS = ("broker", "broker_port", "routes", "credentials", "broker_username",
        "broker_password", "require_identity", "jwt_audience", "jwt_max_lifetime",
        "server_reference", "max_connect_size", "max_client_id", "predial")
CREDENTIALS = ("auto", "forward", "strip", "rewrite")
_ROUTE_KEYS = ("client_id", "username", "broker")


@dataclass(frozen=True)
class Route:
    """``client_id`` and/or ``username`` glob patterns (both must match) → ``broker``."""

    broker: str
    client_id: str | None = None
    username: str | None = None

    def matches(self, client_id: str, username: str | None) -> bool:
        if self.client_id is not None and not fnmatch.fnmatchcase(client_id, self.client_id):
            return False
        return self.username is None or (
            username is not None and fnmatch.fnmatchcase(username, self.username))


@dataclass(frozen=True)
class MqttOptions:
    broker: str = ""
    broker_port: int = 1883
    routes: tuple[Route, ...] = ()
    credentials: str = "auto"
    broker_username: str | None = None
    broker_password: str | None = None
    require_identity: bool = False
    jwt_audience: str = "mqtt"
    jwt_max_lifetime: float = 3600.0
    server_reference: str = ""
    max_connect_size: int = DEFAULT_MAX_SIZE
    max_client_id: int = DEFAULT_MAX_CLIENT_ID
    predial: bool = False


#: parsed options per listener, kept in the gateway's stash
OPTIONS = StashKey[dict[str, MqttOptions]]("mqtt.options")


def _broker(v: Any, path: str, port: int) -> str:
    host, p = opt.parse_hostport(v, path, port)
    return f"[{host}]:{p}" if ":" in host else f"{host}:{p}"


def parse_options(options: Mapping[str, Any], path: str) -> MqttOptions:
    """The listener's keys (core refuses keys no protocol of the listener declares)."""
    port = opt.integer(options, "broker_port", path, 1883, lo=1, hi=65535)
    broker = opt.string(options, "broker", path, "", expect="a broker name (host[:port])")
    if broker:
        broker = _broker(broker, f"{path}.broker", port)
    raw_routes = options.get("routes", [])
    if not isinstance(raw_routes, list):
        raise ConfigError(f"{path}.routes", f"{raw_routes!r} is not a list of tables")
    routes = []
    for i, r in enumerate(raw_routes):
        rp = f"{path}.routes[{i}]"
        if not isinstance(r, Mapping):
            raise ConfigError(rp, f"{r!r} is not a table (client_id, username, broker)")
        opt.check_keys(r, _ROUTE_KEYS, rp)
        if "broker" not in r:
            raise ConfigError(rp, "a route needs a broker")
        cid = opt.string(r, "client_id", rp, "") or None
        user = opt.string(r, "username", rp, "") or None
        if cid is None and user is None:
            raise ConfigError(rp, "a route needs a client_id or username pattern")
        routes.append(Route(_broker(opt.string(r, "broker", rp, ""), f"{rp}.broker", port),
                            cid, user))
    creds = opt.one_of(options, "credentials", path, "auto", CREDENTIALS)
    bu = opt.string(options, "broker_username", path, "") or None
    bp = opt.string(options, "broker_password", path, "") or None
    if creds == "rewrite" and bu is None:
        raise ConfigError(f"{path}.credentials", "'rewrite' needs broker_username")
    if creds != "rewrite" and (bu is not None or bp is not None):
        raise ConfigError(f"{path}.broker_username",
                          "broker credentials are sent only with credentials = 'rewrite'")
    return MqttOptions(
        broker=broker,
        broker_port=port,
        routes=tuple(routes),
        credentials=creds,
        broker_username=bu,
        broker_password=bp,
        require_identity=opt.boolean(options, "require_identity", path, False),
        jwt_audience=opt.string(options, "jwt_audience", path, "mqtt") or "mqtt",
        jwt_max_lifetime=opt.seconds(options, "jwt_max_lifetime", path, 3600.0, lo=1.0,
                                     hi=86400.0),
        server_reference=opt.string(options, "server_reference", path, ""),
        max_connect_size=opt.integer(options, "max_connect_size", path, DEFAULT_MAX_SIZE,
                                     lo=64, hi=MAX_VARINT),
        max_client_id=opt.integer(options, "max_client_id", path, DEFAULT_MAX_CLIENT_ID,
                                  lo=1, hi=65535),
        predial=_predial(options, path, broker),
    )


def _predial(options: Mapping[str, Any], path: str, broker: str) -> bool:
    v = opt.boolean(options, "predial", path, False)
    if v and not broker:
        raise ConfigError(f"{path}.predial", "predial needs a fixed broker (the broker key)")
    return v


def check_options(options: Mapping[str, Any], path: str) -> None:
    parse_options(options, path)


def has_auth(options: Mapping[str, Any]) -> bool:
    """Clients must prove an identity (mTLS or a mesh token) when ``require_identity``."""
    return options.get("require_identity") is True
