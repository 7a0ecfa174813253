"""Prometheus metrics, one registry per gateway (several gateways can live in one process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest


class Tally:
    """A counter (or gauge) child for per-request paths: ``tally.n += k`` is a plain integer
    addition (a prometheus ``inc()`` is four calls and a lock); what it holds is added to its
    prometheus child each time the registry is collected, so every reading is exact. (A
    gauge's tally may go below zero between readings.)"""

    __slots__ = ("child", "n")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.n = 0


class _Fold:
    """Registered first in the registry: collecting it folds the tallies into their counters
    before those are collected."""

    def __init__(self, tallies: dict[tuple[int, tuple[str, ...]], Tally]) -> None:
        self.tallies = tallies

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        for t in self.tallies.values():
            if t.n:
                n, t.n = t.n, 0
                t.child.inc(n)
        return []


class Metrics:
    """The counters every part of the gateway shares. Plugins may add their own on ``registry``."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self._tallies: dict[tuple[int, tuple[str, ...]], Tally] = {}
        r.register(_Fold(self._tallies))
        self.connections = Counter(
            "ugate_connections", "Accepted connections", ["listener", "protocol"], registry=r
        )
        self.rejections = Counter(
            "ugate_rejections",
            "Connections or requests refused, by listener and reason",
            ["listener", "reason"],
            registry=r,
        )
        self.dials = Counter(
            "ugate_dials", "Dial attempts by dialer and result", ["dialer", "result"], registry=r
        )
        self.dial_errors = Counter(
            "ugate_dial_errors", "Failed dials by reason", ["reason"], registry=r
        )
        self.bytes = Counter(
            "ugate_relay_bytes",
            "Bytes relayed, by listener and direction (up: client to destination)",
            ["listener", "direction"],
            registry=r,
        )
        self.streams_active = Gauge(
            "ugate_streams_active", "Relayed streams now open", ["listener"], registry=r
        )
        self.streams = Counter(
            "ugate_streams", "Relayed streams by how they ended", ["listener", "end"], registry=r
        )
        self.h2_resets = Counter(
            "ugate_h2_resets",
            "HTTP/2 streams a client ended by a reset (by=peer: its RST_STREAM on an open "
            "stream; by=refused: ours, refusing or rejecting a stream it opened), counted "
            "when its connection ends",
            ["listener", "by"],
            registry=r,
        )
        self.plugin_load_failures = Counter(
            "ugate_plugin_load_failures", "Plugins that failed to load", ["plugin"], registry=r
        )
        self.plugins_loaded = Gauge("ugate_plugins_loaded", "Plugins loaded", registry=r)
        self.discovery = Counter(
            "ugate_discovery_lookups",
            "Name lookups by discovery and result (hit, miss, error, timeout, cached)",
            ["discovery", "result"],
            registry=r,
        )

        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: ``labels()`` costs microseconds per call, and the
        per-connection path touches several metrics."""
        key = (id(metric), labels)
        c = self._children.get(key)
        if c is None:
            if len(self._children) > 100_000:  # label values from config, not from clients
                self._children.clear()
            c = self._children[key] = metric.labels(*labels)
        return c

    def tally(self, metric: Any, *labels: str) -> Tally:
        """A :class:`Tally` for ``metric.labels(*labels)`` (label values from config or a small
        fixed set, never from clients: tallies are kept for the gateway's life)."""
        key = (id(metric), labels)
        t = self._tallies.get(key)
        if t is None:
            t = self._tallies[key] = Tally(self.child(metric, *labels))
        return t

    def reject(self, listener: str, reason: str) -> None:
        self.tally(self.rejections, listener, reason).n += 1

    def render(self) -> bytes:
        return generate_latest(self.registry)
