"""Bounds on what a peer may make an HTTP/2 connection do for frames that cost it nothing.

A peer's RST_STREAM costs it 13 bytes and costs us a stream's whole setup (a request
object, a task, maybe a dial) — the "rapid reset" attack (CVE-2023-44487) opens and resets
streams as fast as it can send them, never exceeding SETTINGS_MAX_CONCURRENT_STREAMS. PING,
SETTINGS, PRIORITY, empty DATA or CONTINUATION frames and WINDOW_UPDATEs cost the peer as
little and make us parse, answer or wake streams. :class:`FloodLimits` says how many of each
a connection may send; beyond them the codec sends GOAWAY ``ENHANCE_YOUR_CALM`` and stops
(see ``docs/h2.md``, "Floods"), as nghttp2, Envoy and Go's x/net/http2 do.

Each kind of event takes a token from its own bucket, ``burst`` tokens deep and refilled at
``burst / window`` tokens per second: up to ``burst`` events at once, then ``burst`` per
``window`` seconds sustained. The clock is read only when such an event arrives, never per
DATA frame.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FloodLimits:
    """How much of the cheap frames one HTTP/2 connection's peer may send."""

    #: streams the peer ended by a reset: its RST_STREAM on an open stream, and streams we
    #: reset because of it (refused beyond SETTINGS_MAX_CONCURRENT_STREAMS, malformed); nghttp2
    #: allows a burst of 1000 then 33 a second, Envoy 500 when over half of all streams
    resets: int = 1000
    #: PING, SETTINGS, PRIORITY, frames of unknown types, empty DATA without END_STREAM,
    #: empty CONTINUATION without END_HEADERS, frames on streams already reset
    control: int = 1000
    #: the seconds over which ``resets`` and ``control`` refill
    window: float = 10.0
    #: WINDOW_UPDATEs the peer may send per DATA frame we sent (beyond a first ``control``):
    #: a receiver needs about two (stream and connection); Envoy allows 10
    window_updates_per_data: int = 10

    def __post_init__(self) -> None:
        if self.resets < 1 or self.control < 1 or self.window <= 0 \
                or self.window_updates_per_data < 1:
            raise ValueError(f"FloodLimits: every limit must be positive: {self}")


class Bucket:
    """A token bucket: :meth:`take` is False once ``burst`` events came faster than ``burst``
    per ``window`` seconds."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, burst: int, window: float, now: float) -> None:
        self.burst = float(burst)
        self.rate = burst / window
        self.tokens = float(burst)
        self.last = now

    def take(self, now: float) -> bool:
        t = self.tokens + (now - self.last) * self.rate
        if t > self.burst:
            t = self.burst
        self.last = now
        if t < 1.0:
            self.tokens = t
            return False
        self.tokens = t - 1.0
        return True


DEFAULT_LIMITS = FloodLimits()

__all__ = ["DEFAULT_LIMITS", "Bucket", "FloodLimits"]
