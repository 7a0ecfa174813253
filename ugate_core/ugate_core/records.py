"""The record of one relayed stream: what ``/streams`` and the stream hooks see."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .relay import Relay, RelayStats
from .stream import StreamMeta

__all__ = ["StreamRecord"]


@dataclass(slots=True, eq=False)
class StreamRecord:
    """One relayed stream, as ``/streams`` and the stream hooks see it."""

    listener: str
    client: StreamMeta
    upstream: StreamMeta
    stats: RelayStats = field(default_factory=RelayStats)
    started: float = field(default_factory=time.monotonic)
    #: the running relay (``relay.cancel()`` ends it)
    relay: Relay | None = None
    #: the gateway's bookkeeping, called once when the relay ended
    on_end: Callable[[StreamRecord], None] | None = None
    #: called with this record once the relay ended and was accounted
    then: Callable[[StreamRecord], None] | None = None

    def _ended(self, _st: RelayStats) -> None:
        assert self.on_end is not None
        self.on_end(self)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.client.id,
            "listener": self.listener,
            "client": self.client.as_dict(),
            "upstream": self.upstream.as_dict(),
            "bytes_up": self.stats.up,
            "bytes_down": self.stats.down,
            "age": round(time.monotonic() - self.started, 3),
            "end": self.stats.end,
        }
