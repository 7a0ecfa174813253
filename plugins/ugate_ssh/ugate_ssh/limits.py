"""Per-source admission for the ``ssh`` listener: OpenSSH's ``PerSourceMaxStartups``,
``PerSourceNetBlockSize`` and ``PerSourcePenalties``, sans-IO (time is passed in as ``now``).

One global ``max_unauthenticated`` alone lets a single source that opens 64 connections and
sends only a banner lock every real user out until the login deadline. So each source (an IPv4
address, or an IPv6 /64: one customer's network, as OpenSSH counts) may hold only
``max_per_source`` unauthenticated connections; and a source whose connections keep ending
without a login (refused keys, no attempt, login deadline passed) collects penalty seconds
that decay with time; once they reach ``penalty_min`` it is refused until they have run out.

Memory is bounded: open counts exist only for sources holding a slot (so at most the global
cap), penalties for at most ``max_sources`` sources. When the penalty table is full, expired
entries are dropped; if none has expired, a new source is not recorded (OpenSSH's
``overflow:permissive``): the cap per source still holds for it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

#: how a connection that held an unauthenticated slot ended, for penalties
AUTH_FAIL = "auth_fail"  # offered keys, none accepted
NO_AUTH = "no_auth"  # left without offering an acceptable key (a banner, a key scan)
AUTH_TIMEOUT = "auth_timeout"  # still not logged in at the deadline


@dataclass(frozen=True)
class SourceLimits:
    """The settings; seconds for penalties (0 turns one kind off)."""

    max_per_source: int = 10
    prefix_v4: int = 32
    prefix_v6: int = 64
    penalty_auth_fail: float = 5.0
    penalty_no_auth: float = 1.0
    penalty_auth_timeout: float = 10.0
    penalty_min: float = 15.0
    penalty_max: float = 600.0
    max_sources: int = 65536

    def seconds(self, outcome: str) -> float:
        return {AUTH_FAIL: self.penalty_auth_fail, NO_AUTH: self.penalty_no_auth,
                AUTH_TIMEOUT: self.penalty_auth_timeout}[outcome]


def source_of(remote: tuple[str, int] | None, prefix_v4: int = 32, prefix_v6: int = 64) -> str:
    """The network a client address is counted under: ``198.51.100.7/32``, ``2001:db8::/64``;
    an IPv4-mapped IPv6 address counts as IPv4. No address (a stream from inside the
    gateway, e.g. an upstream's forward): ``-``, one shared source."""
    if not remote:
        return "-"
    host = remote[0].split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = prefix_v4 if ip.version == 4 else prefix_v6
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@dataclass
class _Penalty:
    until: float
    active: bool = False


@dataclass
class SourceTable:
    """Open unauthenticated connections and penalties per source."""

    limits: SourceLimits
    open: dict[str, int] = field(default_factory=dict)
    #: insertion order is roughly expiry order (an update moves an entry to the end)
    penalties: dict[str, _Penalty] = field(default_factory=dict)
    #: new sources not recorded because the table was full
    overflowed: int = 0

    def refusal(self, source: str, now: float) -> tuple[str, str] | None:
        """``(reason, detail)`` if ``source`` may not open another connection now."""
        p = self.penalties.get(source)
        if p is not None:
            if p.until <= now:
                del self.penalties[source]
            elif p.active:
                return ("source_penalty", f"source {source} is refused for another "
                        f"{p.until - now:.0f}s after repeated failed logins")
        n = self.open.get(source, 0)
        if n >= self.limits.max_per_source:
            return ("max_unauthenticated_per_source", f"{n} connections from {source} are "
                    f"authenticating (max_unauthenticated_per_source="
                    f"{self.limits.max_per_source})")
        return None

    def opened(self, source: str) -> None:
        self.open[source] = self.open.get(source, 0) + 1

    def closed(self, source: str) -> None:
        n = self.open.get(source, 0) - 1
        if n > 0:
            self.open[source] = n
        else:
            self.open.pop(source, None)

    def penalize(self, source: str, outcome: str, now: float) -> float:
        """Add ``outcome``'s seconds to ``source``; returns the seconds it is now refused for
        (0: not refused)."""
        lim = self.limits
        secs = lim.seconds(outcome)
        if secs <= 0:
            return 0.0
        p = self.penalties.pop(source, None)
        if p is None:
            self._make_room(now)
            if len(self.penalties) >= lim.max_sources:
                self.overflowed += 1
                return 0.0
            p = _Penalty(now)
        p.until = min(max(p.until, now) + secs, now + lim.penalty_max)
        was = p.active
        p.active = p.active or p.until - now >= lim.penalty_min
        self.penalties[source] = p
        return p.until - now if p.active and not was else 0.0

    def _make_room(self, now: float) -> None:
        d = self.penalties
        while len(d) >= self.limits.max_sources:
            first = next(iter(d))
            if d[first].until > now:
                return
            del d[first]
