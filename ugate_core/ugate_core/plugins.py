"""Finding and loading plugins: stevedore over the ``ugate`` entry-point group, into pluggy.

A plugin that fails to import is logged with its name and error, recorded (``ugate plugins``,
``/plugins``, the ``ugate_plugin_load_failures_total`` counter) and skipped: the gateway starts
without it.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy
from stevedore import NamedExtensionManager

from . import hookspecs
from .errors import ConfigError
from .options import did_you_mean

log = logging.getLogger("ugate.plugins")

GROUP = "ugate"


@dataclass
class PluginInfo:
    name: str
    module: str
    distribution: str
    version: str
    loaded: bool
    error: str = ""
    builtin: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "loaded": self.loaded,
            "error": self.error,
            "builtin": self.builtin,
        }


def _dist_of(ep: metadata.EntryPoint) -> tuple[str, str]:
    d = ep.dist
    if d is None:
        return "", ""
    return d.metadata["Name"] or "", d.version or ""


def installed_names() -> list[str]:
    """The names of every installed plugin (entry points of the ``ugate`` group)."""
    return sorted({ep.name for ep in metadata.entry_points(group=GROUP)})


def _check_names(names: list[str], available: list[str], where: str, indexed: bool) -> None:
    for i, n in enumerate(names):
        if n not in available:
            have = ", ".join(available) or "none"
            raise ConfigError(f"{where}[{i}]" if indexed else where,
                              f"{n!r} is not an installed plugin (installed: {have})"
                              f"{did_you_mean(n, available)}")


def selected_names(
    available: list[str], enable: tuple[str, ...] = (), disable: tuple[str, ...] = ()
) -> list[str]:
    """Apply ``UGATE_PLUGINS`` (comma-separated allow-list), config enable and disable.

    A name that is not installed is a :class:`ConfigError` with a did-you-mean: a typo
    would otherwise filter out the plugin it meant.
    """
    env = os.environ.get("UGATE_PLUGINS")
    allow: set[str] | None = None
    if env is not None:
        env_names = [n.strip() for n in env.split(",") if n.strip()]
        _check_names(env_names, available, "UGATE_PLUGINS", False)
        allow = set(env_names)
    _check_names(list(enable), available, "plugins.enable", True)
    _check_names(list(disable), available, "plugins.disable", True)
    if enable:
        allow = set(enable) if allow is None else allow & set(enable)
    return [n for n in available if (allow is None or n in allow) and n not in disable]


def create_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def load_plugins(
    pm: pluggy.PluginManager, enable: tuple[str, ...] = (), disable: tuple[str, ...] = ()
) -> list[PluginInfo]:
    """Register core built-ins and every selected entry point with ``pm``."""
    from . import _builtin

    infos = [
        PluginInfo("core", _builtin.__name__, "ugate-core", _core_version(), True, builtin=True)
    ]
    pm.register(_builtin, name="core")
    eps = {ep.name: ep for ep in metadata.entry_points(group=GROUP)}
    names = selected_names(sorted(eps), enable, disable)
    failures: dict[str, str] = {}

    def on_fail(_mgr: Any, ep: Any, exc: BaseException) -> None:
        msg = f"{type(exc).__name__}: {exc}"
        failures[ep.name] = msg
        log.error("plugin_load_failed plugin=%s module=%s error=%r", ep.name, ep.value, msg)

    # stevedore caches a group's entry points per process; plugins installed since (or a
    # changed sys.path) must be seen, and this runs once per gateway start
    NamedExtensionManager.ENTRY_POINT_CACHE.pop(GROUP, None)
    with warnings.catch_warnings():
        _quiet_import_warnings()
        mgr = (
            NamedExtensionManager(
                GROUP,
                names=names,
                name_order=True,
                on_load_failure_callback=on_fail,
                on_missing_entrypoints_callback=lambda _n: None,
            )
            if names
            else None
        )
    loaded: dict[str, Any] = {}
    if mgr is not None:
        for ext in mgr.extensions:
            loaded[ext.name] = ext.plugin
    specs = set(_SPEC_NAMES)
    spec_objects: list[tuple[str, Any]] = []
    for name, obj in loaded.items():
        try:
            for spec in _plugin_specs(obj):
                spec_objects.append((name, spec))
                specs.update(n for n in dir(spec) if n.startswith("ugate_"))
        except Exception as e:  # a broken ugate_hookspecs fails its plugin, not the load
            failures[name] = f"ugate_hookspecs: {type(e).__name__}: {e}"
            log.error("plugin_load_failed plugin=%s error=%r", name, failures[name])
    for name in names:
        ep = eps[name]
        dist, version = _dist_of(ep)
        if name in loaded and name not in failures:
            obj = loaded[name]
            if not isinstance(obj, ModuleType) and not hasattr(obj, "__dict__"):
                failures[name] = f"entry point {ep.value!r} is not a module or object"
            elif unknown := _unknown_hooks(obj, specs):
                failures[name] = f"implements unknown hooks (typo?): {', '.join(unknown)}"
                log.error("plugin_load_failed plugin=%s error=%r", name, failures[name])
            else:
                try:
                    pm.register(obj, name=name)
                except (ValueError, pluggy.PluginValidationError) as e:
                    failures[name] = f"{type(e).__name__}: {e}"
                    log.error("plugin_load_failed plugin=%s error=%r", name, failures[name])
        if name in failures:
            infos.append(PluginInfo(name, ep.value, dist, version, False, failures[name]))
        else:
            infos.append(PluginInfo(name, ep.value, dist, version, True))
    for name, spec in spec_objects:
        if name not in failures:
            pm.add_hookspecs(spec)
    pm.check_pending()
    return infos


_SPEC_NAMES = {n for n in dir(hookspecs) if n.startswith("ugate_")}


def _plugin_specs(obj: Any) -> list[Any]:
    """What ``obj``'s own ``ugate_hookspecs`` implementation returns (before registering)."""
    fn = getattr(obj, "ugate_hookspecs", None)
    if not callable(fn) or not hasattr(fn, hookspecs.PROJECT + "_impl"):
        return []
    return list(fn() or [])


def _unknown_hooks(obj: Any, specs: set[str] = _SPEC_NAMES) -> list[str]:
    """``@hookimpl`` functions whose name is not a hook spec: rejected before registering.
    ``@hookimpl(optionalhook=True)`` marks an implementation of another plugin's hook that
    may be absent (installed but disabled): pluggy keeps it unverified until a spec appears."""
    out = []
    for attr in dir(obj):
        if attr.startswith("ugate_") and attr not in specs:
            fn = getattr(obj, attr, None)
            opts = getattr(fn, hookspecs.PROJECT + "_impl", None) if callable(fn) else None
            if opts is not None and not opts.get("optionalhook"):
                out.append(attr)
    return out


def _quiet_import_warnings() -> None:
    """Plugins' libraries still name cryptography's DSA types at import, deprecated since
    cryptography 46 (dnspython's ``dnssecalgs``, asyncssh's key modules): loading the plugins
    printed nine warning lines into every program that embeds a gateway, about nothing its
    author can change. Only those, only while plugins are imported."""
    from cryptography.utils import CryptographyDeprecationWarning

    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning,
                            module=r"(dns|asyncssh)\.")


def _core_version() -> str:
    try:
        return metadata.version("ugate-core")
    except metadata.PackageNotFoundError:
        return "0+unknown"
