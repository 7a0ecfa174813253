"""The plugin registry: load plugins, collect the types their hooks give, and check a config
against them (listener protocols and keys, top-level tables).

Pure bookkeeping over a pluggy ``PluginManager``: no sockets, no event loop. The gateway calls
these once at load and check time and keeps the results in its own attributes, so the
per-connection path never goes through here.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import pluggy

from . import plugins as _plugins
from .config import CORE_SECTIONS, LISTENER_KEYS
from .errors import ConfigError
from .options import did_you_mean
from .sniff import NO_DEFAULT

if TYPE_CHECKING:
    from .config import Config, ListenerConfig
    from .metrics import Metrics
    from .policy import Policy
    from .types import DialerType, ListenerType

log = logging.getLogger("ugate")

__all__ = [
    "check_hosts",
    "check_listener_keys",
    "check_listeners",
    "check_sections",
    "collect",
    "load",
    "results",
    "types_for",
    "why_no_protocols",
]


def load(pm: pluggy.PluginManager, config: Config, metrics: Metrics, *, given: bool
         ) -> list[_plugins.PluginInfo]:
    """Load the selected plugins into ``pm`` (unless the manager was ``given`` filled in) and
    count what loaded and what failed."""
    pc = config.plugins
    if not given:
        infos = _plugins.load_plugins(pm, pc.enable, pc.disable)
    else:
        infos = [_plugins.PluginInfo(n or "?", "", "", "", True)
                 for n, _ in pm.list_name_plugin()]
    for p in infos:
        if not p.loaded:
            metrics.plugin_load_failures.labels(p.name).inc()
    metrics.plugins_loaded.set(sum(1 for p in infos if p.loaded))
    return infos


def results(caller: Any, gateway: object) -> list[tuple[str, Any]]:
    """Every implementation's answer to a ``(gateway)`` hook, as (plugin name, result), in
    load order."""
    out = []
    for impl in reversed(caller.get_hookimpls()):
        res = impl.function(*[{"gateway": gateway}[a] for a in impl.argnames])
        out.append((impl.plugin_name, res))
    return out


def collect(caller: Any, gateway: object, what: str) -> dict[str, Any]:
    """The named types the plugins give (listener or dialer types), by name; two plugins
    giving one name is a ``ConfigError`` naming both."""
    found: dict[str, Any] = {}
    for plugin, lst in results(caller, gateway):
        for t in lst or []:
            if t.name in found:
                raise ConfigError(
                    "", f"{what} {t.name!r} is given by plugins {found[t.name].plugin!r} "
                    f"and {plugin!r}; disable one (plugins.disable)"
                )
            t.plugin = plugin
            found[t.name] = t
    return found


def types_for(lc: ListenerConfig, listener_types: dict[str, ListenerType]
              ) -> list[ListenerType]:
    """The listener types ``lc.protocols`` selects (``*``: every one that can sniff)."""
    if lc.protocols == ("*",):
        return [t for t in listener_types.values() if t.sniff is not None]
    out = []
    for i, name in enumerate(lc.protocols):
        t = listener_types.get(name)
        if t is None:
            have = ", ".join(sorted(listener_types)) or "none"
            raise ConfigError(
                f"{lc.path}.protocols[{i}]",
                f"{name!r} is not an installed protocol (installed: {have})",
            )
        if len(lc.protocols) > 1 and t.sniff is None and t.start is None:
            raise ConfigError(
                f"{lc.path}.protocols[{i}]",
                f"{name!r} cannot share a port (it has no sniffer); give it its own listener",
            )
        out.append(t)
    return out


def check_listener_keys(lc: ListenerConfig, types: list[ListenerType]) -> None:
    """A listener's keys are core's and its protocols': on a shared port the union of
    every selected protocol's. Anything else is a typo (``alow`` is a missing rule). A
    protocol that declares no ``option_keys`` leaves unknown keys to its own check; even
    then a near-miss of a core key is refused."""
    known: set[str] = set()
    judged = True
    for t in types:
        if t.option_keys is None:
            judged = False
        else:
            known |= t.option_keys
    for k in lc.options:
        if k in known:
            continue
        if judged or did_you_mean(k, LISTENER_KEYS):
            names = ", ".join(t.name for t in types) or "none installed"
            raise ConfigError(
                f"{lc.path}.{k}",
                f"unknown key (core knows: {', '.join(sorted(LISTENER_KEYS))}; protocols "
                f"{names} know: {', '.join(sorted(known)) or 'no options'})"
                f"{did_you_mean(k, LISTENER_KEYS | known)}",
            )


def check_listeners(config: Config, listener_types: dict[str, ListenerType], policy: Policy,
                    authorize_hook: bool) -> None:
    """Every listener names installed protocols, keys they know, valid options, and — beyond
    loopback, when it relays — a rule for who may reach what (``authorize_hook``: a plugin
    implements ``ugate_authorize`` and decides instead)."""
    for lc in config.listeners:
        types = types_for(lc, listener_types)
        if lc.default not in {"", NO_DEFAULT, *(t.name for t in types)}:
            raise ConfigError(f"{lc.path}.default", f"{lc.default!r} is not one of this "
                              f"listener's protocols (or \"none\")")
        check_listener_keys(lc, types)
        for t in types:
            if t.check_options is not None:
                t.check_options(lc.options, lc.path)
        if len(types) == 1 and types[0].name == "tcp" and not lc.target:
            raise ConfigError(f"{lc.path}.target", "missing: the tcp listener forwards to "
                              "a fixed 'host:port'")
        relaying = [t.name for t in types if t.relays]
        if (relaying and not lc.loopback and not lc.allow
                and not policy.for_listener(lc.name) and not authorize_hook):
            # a verified key, certificate or password says who; only a rule says what
            # they may reach, and without one this listener would relay for nobody or,
            # worse, be read as relaying for everybody
            raise ConfigError(
                f"{lc.path}.listen",
                f"{lc.listen!r} is reachable beyond loopback and relays "
                f"({', '.join(relaying)}) but no rule says who may reach what: add "
                f"'allow = [...]' to {lc.path} or a [[rules]] entry (clients, to) for it "
                "(docs/security.md); refusing to run an open relay",
            )


def check_hosts(config: Config, dialer_types: dict[str, DialerType]) -> None:
    """Every ``hosts`` entry names an installed dialer that can prove its identities."""
    for h in config.hosts:
        path = f"hosts.{h.name!r}" if "." in h.name else f"hosts.{h.name}"
        dialer = dialer_types.get(h.protocol)
        if dialer is None:
            have = ", ".join(sorted(dialer_types))
            hint = did_you_mean(h.protocol, dialer_types)
            raise ConfigError(f"{path}.protocol", f"{h.protocol!r} has no installed dialer "
                              f"(installed: {have}){hint}")
        for i, e in enumerate(h.identities):
            if e.kind not in dialer.verifies:
                can = ", ".join(sorted(dialer.verifies)) or "no identity at all"
                raise ConfigError(
                    f"{path}.identity[{i}]",
                    f"'{e.kind}:...' cannot be checked by protocol {h.protocol!r} (it "
                    f"proves {can}): use a protocol that proves its peer (tls, hbone, "
                    "ssh), or remove the identity",
                )


def check_sections(pm: pluggy.PluginManager, gateway: object, config: Config,
                   infos: list[_plugins.PluginInfo]) -> None:
    """Every top-level table belongs to core or to a loaded plugin."""
    claimed: dict[str, str] = {}
    for plugin, names in results(pm.hook.ugate_config_sections, gateway):
        for n in names or []:
            claimed[n] = plugin
    idle = {p.name for p in infos if not p.loaded} | set(
        _plugins.installed_names()) - {p.name for p in infos}
    for name in config.sections:
        if name in claimed:
            continue
        if name in idle:
            log.warning("config_table_ignored table=%s reason='plugin %s is installed but "
                        "not loaded'", name, name)
            continue
        known = ", ".join(sorted(CORE_SECTIONS | set(claimed)))
        raise ConfigError(name, f"unknown table (known: {known})"
                          f"{did_you_mean(name, CORE_SECTIONS | set(claimed))}")


def why_no_protocols(config: Config, infos: list[_plugins.PluginInfo]) -> str:
    """Why no plugin gives protocols: none installed, filtered out, or failed to load."""
    seen = {p.name for p in infos}
    left_out = sorted(set(_plugins.installed_names()) - seen)
    failed = sorted(p.name for p in infos if not p.loaded)
    if left_out:
        env = os.environ.get("UGATE_PLUGINS")
        pc = config.plugins
        how = [f"UGATE_PLUGINS={env!r}"] if env is not None else []
        how += [f"plugins.enable={list(pc.enable)}"] if pc.enable else []
        how += [f"plugins.disable={list(pc.disable)}"] if pc.disable else []
        return (f"installed but not selected ({', '.join(how) or 'filtered'}): "
                f"{', '.join(left_out)}")
    if failed:
        return f"failed to load (see 'ugate plugins'): {', '.join(failed)}"
    return "no protocol plugins installed; pip install ugate-socks ugate-http ..."
