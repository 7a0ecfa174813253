"""Configuration: one TOML file, validated into frozen dataclasses.

Every error names the key path and the value: ``listeners.main.listen: '1.2.3.4:99999' port
99999 is not a port (1-65535)``. Keys a section does not know are errors too (typos are the
most common config bug), with a did-you-mean. Two checks need the loaded plugins and run in
:meth:`Gateway.check <ugate_core.Gateway.check>`: a listener's keys other than core's
(:data:`LISTENER_KEYS`) are its protocols' ``options``, judged against the union of what
those protocols declare; top-level tables other than core's (:data:`CORE_SECTIONS`) must be
claimed by a loaded plugin (``ugate_config_sections``).
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from . import options as _opt
from .errors import ConfigError
from .h2.flood import FloodLimits
from .options import parse_hostport
from .policy import Rule, Target, parse_rules, targets
from .tokens import TokenSettings
from .tokens import parse_settings as _tokens
from .types import IDENTITY_KINDS, Endpoint, ExpectedIdentity


@functools.lru_cache(maxsize=4096)  # asked per connection (the policy: is the client local?)
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class GatewaySettings:
    state_dir: str = ""
    drain_timeout: float = 10.0
    handshake_timeout: float = 10.0
    connect_timeout: float = 5.0
    idle_timeout: float = 3600.0
    max_connections: int = 10000
    #: raise glibc's mmap/trim thresholds for the process (:mod:`ugate_core.malloc`)
    tune_malloc: bool = True
    #: HTTP/2 servers (h2c, HTTPS, HBONE): a client's stream resets and cheap frames (PING,
    #: SETTINGS, PRIORITY, empty frames) allowed in a burst and per ``h2_flood_window``
    #: seconds; beyond them GOAWAY ENHANCE_YOUR_CALM (:mod:`ugate_core.h2.flood`)
    h2_max_resets: int = 1000
    h2_max_control_frames: int = 1000
    h2_flood_window: float = 10.0
    #: rejection log lines per reason and listener per ``reject_log_window`` seconds; the
    #: rest are summed up in one line (``ugate_rejections_total`` counts every one)
    reject_log_burst: int = 10
    reject_log_window: float = 10.0

    @property
    def h2_limits(self) -> FloodLimits:
        return FloodLimits(resets=self.h2_max_resets, control=self.h2_max_control_frames,
                           window=self.h2_flood_window)


@dataclass(frozen=True)
class AdminConfig:
    listen: str = "127.0.0.1:15000"
    #: listening beyond loopback must be asked for, and needs ``token_file``
    allow_remote: bool = False
    #: a file holding the bearer token every request must carry (re-read when it changes)
    token_file: str = ""
    #: more names a request's ``Host`` may give (the listen address and the loopback names
    #: always work): what a scraper or a person calls this admin endpoint
    allowed_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class RoutingConfig:
    #: names no discovery knows, and IP literals, are dialed with the system resolver
    direct: bool = True


@dataclass(frozen=True)
class DiscoveryConfig:
    order: tuple[str, ...] = ("xds", "k8s", "dns", "local")
    timeout: float = 2.0
    cache_min_ttl: float = 0.0
    cache_max_ttl: float = 300.0


@dataclass(frozen=True)
class PluginsConfig:
    enable: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()


@dataclass(frozen=True)
class ListenerConfig:
    name: str
    listen: str
    host: str
    port: int
    protocols: tuple[str, ...]
    sniff_timeout: float = 3.0
    sniff_max: int = 4096
    default: str = ""
    allow: tuple[str, ...] = ()
    target: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def path(self) -> str:
        return f"listeners.{self.name}"

    @functools.cached_property
    def allow_targets(self) -> tuple[Target, ...]:
        """``allow`` parsed (checked when the config was read)."""
        return targets(self.allow, f"{self.path}.allow")


@dataclass(frozen=True)
class HostConfig:
    name: str
    endpoints: tuple[Endpoint, ...]
    protocol: str = "tcp"
    identities: tuple[ExpectedIdentity, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    gateway: GatewaySettings = GatewaySettings()
    admin: AdminConfig = AdminConfig()
    routing: RoutingConfig = RoutingConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    plugins: PluginsConfig = PluginsConfig()
    listeners: tuple[ListenerConfig, ...] = ()
    hosts: tuple[HostConfig, ...] = ()
    #: ``[[rules]]``: which clients may reach which destinations (:mod:`ugate_core.policy`)
    rules: tuple[Rule, ...] = ()
    #: ``[tokens]``: whose signed tokens name browser clients (:mod:`ugate_core.tokens`)
    tokens: TokenSettings = field(default_factory=TokenSettings)
    #: top-level tables not known to core: plugin settings (``[ssh]``, ``[dns]``, ...)
    sections: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<embedded default>"
    raw: Mapping[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> Mapping[str, Any]:
        """A plugin's own top-level table, ``{}`` if absent."""
        v = self.sections.get(name, {})
        return v if isinstance(v, Mapping) else {}


# ------------------------------------------------------------------------------- validation
def _table(v: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise ConfigError(path, f"{v!r} is not a table")
    return v


def _check_keys(t: Mapping[str, Any], allowed: set[str], path: str) -> None:
    _opt.check_keys(t, allowed, path)


def _num(t: Mapping[str, Any], key: str, path: str, default: float, lo: float = 0) -> float:
    return _opt.number(t, key, path, default, lo=lo)


def _int(t: Mapping[str, Any], key: str, path: str, default: int, lo: int = 0) -> int:
    return _opt.integer(t, key, path, default, lo=lo)


def parse_identity(value: str, path: str) -> ExpectedIdentity:
    kind, sep, rest = value.partition(":")
    kinds = IDENTITY_KINDS
    if not sep or kind not in kinds or not rest:
        raise ConfigError(path, f"{value!r} is not KIND:VALUE with KIND one of {', '.join(kinds)}")
    if kind == "spiffe":
        rest = value  # keep the full URI
    return ExpectedIdentity(kind, rest)


#: the keys core reads in every ``[listeners.NAME]`` table; the rest are protocol options
LISTENER_KEYS = frozenset({
    "listen", "protocols", "sniff_timeout", "sniff_max", "default", "allow", "target",
})


def _listener(name: str, t: Mapping[str, Any]) -> ListenerConfig:
    path = f"listeners.{name}"
    listen = _opt.string(t, "listen", path, "")
    if not listen:
        raise ConfigError(f"{path}.listen", "missing (e.g. '127.0.0.1:15008')")
    host, port = parse_hostport(listen, f"{path}.listen")
    protocols = _opt.strings(t, "protocols", path, ("*",))
    if not protocols:
        raise ConfigError(f"{path}.protocols", "empty: name at least one protocol or '*'")
    target = _opt.string(t, "target", path, "")
    if target:
        parse_hostport(target, f"{path}.target")
    allow = _opt.strings(t, "allow", path, ())
    targets(allow, f"{path}.allow")  # a bad pattern is an error now, not a silent non-match
    return ListenerConfig(
        name=name,
        listen=listen,
        host=host,
        port=port,
        protocols=protocols,
        sniff_timeout=_num(t, "sniff_timeout", path, 3.0, 0.01),
        sniff_max=_int(t, "sniff_max", path, 4096, 16),
        default=_opt.string(t, "default", path, ""),
        allow=allow,
        target=target,
        options={k: v for k, v in t.items() if k not in LISTENER_KEYS},
    )


def _host(name: str, t: Mapping[str, Any]) -> HostConfig:
    path = f"hosts.{name!r}" if "." in name else f"hosts.{name}"
    _check_keys(t, {"endpoints", "protocol", "identity", "labels"}, path)
    eps = []
    for i, e in enumerate(_opt.strings(t, "endpoints", path, ())):
        p = f"{path}.endpoints[{i}]"
        if e.startswith("[") or e.count(":") == 1:
            h, port = parse_hostport(e, p)
            eps.append(Endpoint(h, port))
        else:
            eps.append(Endpoint(e.strip("[]"), None))
    if not eps:
        raise ConfigError(f"{path}.endpoints", "missing: list at least one 'host:port'")
    idents = _opt.strings(t, "identity", path, ())
    labels = _table(t.get("labels", {}), f"{path}.labels")
    for k, v in labels.items():
        if not isinstance(v, str):
            raise ConfigError(f"{path}.labels.{k}", f"{v!r} is not a string")
    return HostConfig(
        name=name.lower().rstrip("."),
        endpoints=tuple(eps),
        protocol=_opt.string(t, "protocol", path, "tcp"),
        identities=tuple(
            parse_identity(v, f"{path}.identity[{i}]") for i, v in enumerate(idents)
        ),
        labels=dict(labels),
    )


_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")


def _host_name(value: str, path: str) -> str:
    """A host name or IP address without port (IPv6 with or without brackets), lower-cased;
    IPv6 comes back bracketed, as it appears in a ``Host`` header."""
    h = value.strip().lower()
    bare = h[1:-1] if h.startswith("[") and h.endswith("]") else h
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        if ":" in h or _HOST_NAME.fullmatch(h) is None:
            raise ConfigError(path, f"{value!r} is not a host name or IP address (no port: "
                              "the admin's own port is implied)") from None
        return h
    return f"[{ip}]" if ip.version == 6 else str(ip)


def _admin(a: Mapping[str, Any]) -> AdminConfig:
    """``[admin]``: beyond loopback only when asked for (``allow_remote``) and with a
    credential (``token_file``), so the endpoint never answers the network unauthenticated."""
    _check_keys(a, set(AdminConfig.__dataclass_fields__), "admin")
    d = AdminConfig()
    listen = _opt.string(a, "listen", "admin", d.listen)
    allow_remote = _opt.boolean(a, "allow_remote", "admin", d.allow_remote)
    token_file = _opt.string(a, "token_file", "admin", d.token_file)
    allowed_hosts = tuple(_host_name(h, f"admin.allowed_hosts[{i}]") for i, h in
                          enumerate(_opt.strings(a, "allowed_hosts", "admin", d.allowed_hosts)))
    if listen:
        host, _ = parse_hostport(listen, "admin.listen")
        if not is_loopback(host):
            if not allow_remote:
                raise ConfigError("admin.listen", f"{listen!r} is beyond loopback: the admin "
                                  "endpoint shows config and streams; set [admin] "
                                  "allow_remote = true and token_file to expose it")
            if not token_file:
                raise ConfigError("admin.listen", f"{listen!r} is beyond loopback and [admin] "
                                  "token_file is not set: refusing an unauthenticated admin "
                                  "endpoint")
    return AdminConfig(listen=listen, allow_remote=allow_remote, token_file=token_file,
                       allowed_hosts=allowed_hosts)


#: top-level tables core reads; any other table must belong to a loaded plugin
CORE_SECTIONS = frozenset({
    "gateway", "admin", "routing", "discovery", "plugins", "listeners", "hosts", "rules",
    "tokens",
})


def parse(data: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Validate a decoded TOML document into a :class:`Config`."""
    g = _table(data.get("gateway", {}), "gateway")
    _check_keys(g, set(GatewaySettings.__dataclass_fields__), "gateway")
    d = GatewaySettings()
    gateway = GatewaySettings(
        state_dir=_opt.string(g, "state_dir", "gateway", d.state_dir),
        drain_timeout=_num(g, "drain_timeout", "gateway", d.drain_timeout),
        handshake_timeout=_num(g, "handshake_timeout", "gateway", d.handshake_timeout, 0.01),
        connect_timeout=_num(g, "connect_timeout", "gateway", d.connect_timeout, 0.01),
        idle_timeout=_num(g, "idle_timeout", "gateway", d.idle_timeout),
        max_connections=_int(g, "max_connections", "gateway", d.max_connections, 1),
        tune_malloc=_opt.boolean(g, "tune_malloc", "gateway", d.tune_malloc),
        h2_max_resets=_int(g, "h2_max_resets", "gateway", d.h2_max_resets, 1),
        h2_max_control_frames=_int(g, "h2_max_control_frames", "gateway",
                                   d.h2_max_control_frames, 1),
        h2_flood_window=_num(g, "h2_flood_window", "gateway", d.h2_flood_window, 0.01),
        reject_log_burst=_int(g, "reject_log_burst", "gateway", d.reject_log_burst, 1),
        reject_log_window=_num(g, "reject_log_window", "gateway", d.reject_log_window, 0.01),
    )
    admin = _admin(_table(data.get("admin", {}), "admin"))
    r = _table(data.get("routing", {}), "routing")
    _check_keys(r, {"direct"}, "routing")
    dc = _table(data.get("discovery", {}), "discovery")
    _check_keys(dc, set(DiscoveryConfig.__dataclass_fields__), "discovery")
    dd = DiscoveryConfig()
    p = _table(data.get("plugins", {}), "plugins")
    _check_keys(p, {"enable", "disable"}, "plugins")
    ls = _table(data.get("listeners", {}), "listeners")
    listeners = tuple(_listener(n, _table(v, f"listeners.{n}")) for n, v in ls.items())
    seen: dict[tuple[str, int], str] = {}
    for lc in listeners:
        key = (lc.host, lc.port)
        if lc.port and key in seen:
            raise ConfigError(
                f"{lc.path}.listen", f"{lc.listen!r} is also used by listeners.{seen[key]}"
            )
        seen[key] = lc.name
    hs = _table(data.get("hosts", {}), "hosts")
    hosts = tuple(_host(n, _table(v, f"hosts.{n}")) for n, v in hs.items())
    rules = parse_rules(data.get("rules"))
    names = {lc.name for lc in listeners}
    for rule in rules:
        for i, n in enumerate(rule.listeners):
            if n not in names:
                raise ConfigError(f"{rule.path}.listeners[{i}]", f"{n!r} is not a listener "
                                  f"(listeners: {', '.join(sorted(names)) or 'none'})")
    return Config(
        gateway=gateway,
        admin=admin,
        routing=RoutingConfig(direct=_opt.boolean(r, "direct", "routing", True)),
        discovery=DiscoveryConfig(
            order=_opt.strings(dc, "order", "discovery", dd.order),
            timeout=_num(dc, "timeout", "discovery", dd.timeout, 0.01),
            cache_min_ttl=_num(dc, "cache_min_ttl", "discovery", dd.cache_min_ttl),
            cache_max_ttl=_num(dc, "cache_max_ttl", "discovery", dd.cache_max_ttl),
        ),
        plugins=PluginsConfig(
            enable=_opt.strings(p, "enable", "plugins", ()),
            disable=_opt.strings(p, "disable", "plugins", ()),
        ),
        listeners=listeners,
        hosts=hosts,
        rules=rules,
        tokens=_tokens(_table(data.get("tokens", {}), "tokens")),
        sections={k: v for k, v in data.items() if k not in CORE_SECTIONS},
        source=source,
        raw=dict(data),
    )


def loads(text: str, source: str = "<string>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"{source}: not valid TOML: {e}") from None
    return parse(data, source)


def load(path: str | os.PathLike[str]) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError("", f"{p}: cannot read: {e.strerror}") from None
    return loads(text, str(p))


def default_text() -> str:
    return resources.files("ugate_core").joinpath("default.toml").read_text(encoding="utf-8")


def load_default() -> Config:
    return loads(default_text(), "<embedded default>")
