"""The ``[dns]`` config table, validated into :class:`DnsSettings`.

Every error names the key and the value: ``dns.servers[0]: 'x:y': port 'y' is not a number``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.DS

from ugate_core import ConfigError, parse_hostport
from ugate_core import options as opt

KEYS = {
    "servers", "zones", "search", "timeout", "retries", "deadline", "cache_min_ttl",
    "cache_max_ttl", "cache_size", "trust_anchor", "trust_anchor_file", "ptr_confirm",
}


@dataclass(frozen=True)
class Anchor:
    """A DNSSEC trust anchor for ``zone``: DS digests and/or DNSKEYs of its key-signing key."""

    zone: dns.name.Name
    ds: tuple[dns.rdtypes.ANY.DS.DS, ...] = ()
    keys: tuple[dns.rdtypes.ANY.DNSKEY.DNSKEY, ...] = ()


@dataclass(frozen=True)
class DnsSettings:
    servers: tuple[tuple[str, int], ...]
    zones: tuple[dns.name.Name, ...] = ()
    search: tuple[dns.name.Name, ...] = ()
    #: seconds per query attempt to one server
    timeout: float = 0.5
    #: extra rounds over all servers after the first
    retries: int = 1
    #: a whole resolve (all queries, DNSSEC chain included) gives up after this
    deadline: float = 1.5
    cache_min_ttl: float = 0.0
    cache_max_ttl: float = 3600.0
    cache_size: int = 10000
    anchors: Mapping[dns.name.Name, Anchor] = field(default_factory=dict)
    ptr_confirm: bool = True

    def in_zones(self, name: dns.name.Name) -> bool:
        return any(name.is_subdomain(z) for z in self.zones)

    def anchor_for(self, name: dns.name.Name) -> Anchor | None:
        """The closest trust anchor at or above ``name``."""
        best: Anchor | None = None
        for zone, a in self.anchors.items():
            if name.is_subdomain(zone) and (best is None or len(zone) > len(best.zone)):
                best = a
        return best


def system_servers(path: str = "/etc/resolv.conf") -> tuple[tuple[str, int], ...]:
    """The ``nameserver`` lines of resolv.conf, port 53."""
    out: list[tuple[str, int]] = []
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            out.append((parts[1].split("%")[0], 53))
    return tuple(out)


def _name(value: Any, path: str) -> dns.name.Name:
    if not isinstance(value, str) or not value.strip(". "):
        raise ConfigError(path, f"{value!r} is not a domain name")
    try:
        return dns.name.from_text(value.strip().lower())
    except Exception as e:
        raise ConfigError(path, f"{value!r} is not a domain name: {e}") from None


def _list(t: Mapping[str, Any], key: str) -> list[Any]:
    v = t.get(key, [])
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list):
        raise ConfigError(f"dns.{key}", f"{v!r} is not a list")
    return v


def _num(t: Mapping[str, Any], key: str, default: float, lo: float = 0.0) -> float:
    return opt.number(t, key, "dns", default, lo=lo)


def parse_anchor_line(line: str, path: str) -> tuple[dns.name.Name, dns.rdata.Rdata]:
    """``owner [TTL] [IN] DS|DNSKEY rdata`` (zone-file syntax, as keymgr and dig print it)."""
    toks = line.split()
    if len(toks) < 3:
        raise ConfigError(path, f"{line!r} is not 'zone. DS ...' or 'zone. DNSKEY ...'")
    owner = _name(toks[0], path)
    i = 1
    while i < len(toks) and (toks[i].isdigit() or toks[i].upper() == "IN"):
        i += 1
    if i >= len(toks) or toks[i].upper() not in ("DS", "DNSKEY"):
        raise ConfigError(path, f"{line!r}: record type must be DS or DNSKEY")
    rdtype = dns.rdatatype.from_text(toks[i].upper())
    try:
        rd = dns.rdata.from_text(dns.rdataclass.IN, rdtype, " ".join(toks[i + 1 :]))
    except Exception as e:
        raise ConfigError(path, f"{line!r}: bad {toks[i].upper()} data: {e}") from None
    if isinstance(rd, dns.rdtypes.ANY.DNSKEY.DNSKEY) and not rd.flags & 0x0100:
        raise ConfigError(path, f"{line!r}: DNSKEY without the zone-key flag (256/257)")
    return owner, rd


def _anchors(t: Mapping[str, Any]) -> dict[dns.name.Name, Anchor]:
    lines: list[tuple[str, str]] = []
    for i, v in enumerate(_list(t, "trust_anchor")):
        if not isinstance(v, str):
            raise ConfigError(f"dns.trust_anchor[{i}]", f"{v!r} is not a string")
        lines.append((v, f"dns.trust_anchor[{i}]"))
    f = t.get("trust_anchor_file", "")
    if not isinstance(f, str):
        raise ConfigError("dns.trust_anchor_file", f"{f!r} is not a path")
    if f:
        try:
            text = Path(f).expanduser().read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError("dns.trust_anchor_file",
                              f"{f!r}: cannot read: {e.strerror}") from None
        for n, ln in enumerate(text.splitlines(), 1):
            ln = ln.split(";", 1)[0].strip()
            if ln:
                lines.append((ln, f"dns.trust_anchor_file {f}:{n}"))
    ds: dict[dns.name.Name, list[dns.rdtypes.ANY.DS.DS]] = {}
    keys: dict[dns.name.Name, list[dns.rdtypes.ANY.DNSKEY.DNSKEY]] = {}
    for line, path in lines:
        owner, rd = parse_anchor_line(line, path)
        if isinstance(rd, dns.rdtypes.ANY.DS.DS):
            ds.setdefault(owner, []).append(rd)
        elif isinstance(rd, dns.rdtypes.ANY.DNSKEY.DNSKEY):
            keys.setdefault(owner, []).append(rd)
    return {
        z: Anchor(z, tuple(ds.get(z, ())), tuple(keys.get(z, ())))
        for z in sorted(set(ds) | set(keys))
    }


def parse_settings(t: Mapping[str, Any], discovery_timeout: float = 2.0) -> DnsSettings:
    """Validate the ``[dns]`` table; ``discovery_timeout`` is core's per-discovery limit."""
    if not isinstance(t, Mapping):
        raise ConfigError("dns", f"{t!r} is not a table")
    for k in t:
        if k not in KEYS:
            raise ConfigError(f"dns.{k}", f"unknown key (known: {', '.join(sorted(KEYS))})")
    servers: list[tuple[str, int]] = []
    for i, v in enumerate(_list(t, "servers")):
        host, port = parse_hostport(v, f"dns.servers[{i}]", 53)
        if not 1 <= port <= 65535:
            raise ConfigError(f"dns.servers[{i}]", f"{v!r}: port {port} is not a port (1-65535)")
        servers.append((host, port))
    if "servers" not in t:
        servers = list(system_servers())
    zones = tuple(_name(v, f"dns.zones[{i}]") for i, v in enumerate(_list(t, "zones")))
    search = tuple(_name(v, f"dns.search[{i}]") for i, v in enumerate(_list(t, "search")))
    zones += tuple(s for s in search if s not in zones)  # a search suffix is a zone too
    retries = int(_num(t, "retries", 1))
    limit = discovery_timeout
    # defaults follow core's limit, so a small discovery.timeout alone is a valid config
    timeout = _num(t, "timeout", min(0.5, round(limit * 0.9, 3)), 0.01)
    default_deadline = round(min(limit * 0.9, max(timeout * (retries + 1) * 2, timeout)), 3)
    deadline = _num(t, "deadline", default_deadline, 0.01)
    if deadline >= limit:
        raise ConfigError("dns.deadline", f"{deadline:g}s must be below discovery.timeout "
                          f"({limit:g}s), or core gives up on dns first")
    if timeout > deadline:
        src = "" if "deadline" in t else ", from discovery.timeout"
        raise ConfigError("dns.timeout", f"{timeout:g}s is longer than dns.deadline "
                          f"({deadline:g}s{src})")
    lo = _num(t, "cache_min_ttl", 0.0)
    hi = _num(t, "cache_max_ttl", 3600.0)
    if hi < lo:
        raise ConfigError("dns.cache_max_ttl", f"{hi:g} is below dns.cache_min_ttl {lo:g}")
    ptr = opt.boolean(t, "ptr_confirm", "dns", True)
    return DnsSettings(
        servers=tuple(servers),
        zones=zones,
        search=search,
        timeout=timeout,
        retries=retries,
        deadline=deadline,
        cache_min_ttl=lo,
        cache_max_ttl=hi,
        cache_size=int(_num(t, "cache_size", 10000, 1)),
        anchors=_anchors(t),
        ptr_confirm=ptr,
    )


def names_for(settings: DnsSettings, fqdn: str) -> Sequence[dns.name.Name]:
    """The names to look up for ``fqdn``: itself if inside ``zones``; a single label with each
    ``search`` suffix. Empty when the discovery does not answer for the name."""
    try:
        name = dns.name.from_text(fqdn)
    except Exception:
        return []
    out: list[dns.name.Name] = []
    if "." not in fqdn:
        out = [dns.name.Name(name.labels[:-1] + s.labels) for s in settings.search]
    elif settings.in_zones(name):
        out = [name]
    return [n for n in out if settings.in_zones(n)]
