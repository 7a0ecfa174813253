"""The lane contract: what the express lanes (``express.py``, ``h2express.py``) use of the
front whose requests they carry. The HTTP/1.1 front (:class:`~ugate_http.h1front.H1Front`)
implements :class:`H1Lane`, the HTTP/2 one (:class:`~ugate_http.h2front.H2Front`)
:class:`H2Lane`; the lanes depend on these protocols, never on the front classes, so no front
module and lane module import each other.

Both offer the same verbs: ``count`` an answer's status, ``fail`` (answer a refusal, counted
and logged), ``answer`` (pass an upstream's response on, as the front's task would), ``handle``
/ ``proxy`` (the front's task takes a request over from the start) and the hand-off of an
exchange back to the front's task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from ugate_core import ListenerContext, Stream

from .client import Reply, UpstreamPool
from .h1 import Request
from .h2conn import H2Exchange
from .h2msg import H2Request
from .reader import EventReader
from .state import PluginState

__all__ = ["H1Lane", "H2Lane", "RequestBody"]


class RequestBody(Protocol):
    """A client's request body as a front hands it to the upstream pool."""

    @property
    def count(self) -> int:
        """Bytes read so far."""
        ...

    @property
    def done(self) -> bool:
        """Read to its end."""
        ...

    async def read(self) -> bytes: ...


class _Front(Protocol):
    """What both fronts give their lanes."""

    @property
    def stream(self) -> Stream:
        """The client connection."""
        ...

    @property
    def ctx(self) -> ListenerContext: ...

    @property
    def state(self) -> PluginState: ...

    @property
    def pool(self) -> UpstreamPool:
        """The listener's HTTP/1.1 upstream pool."""
        ...

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    def count(self, status: int) -> None:
        """Count an answer's status."""
        ...


class H1Lane(_Front, Protocol):
    """The HTTP/1.1 front, as its express and raw lanes use it."""

    @property
    def reader(self) -> EventReader:
        """The client connection's request reader."""
        ...

    @property
    def lname(self) -> str:
        """The listener's name."""
        ...

    @property
    def express(self) -> object | None:
        """The exchange in the express lane now, if any."""
        ...

    async def fail(self, status: int, reason: str, message: str,
                   extra: list[tuple[str, str]] | None = None) -> bool:
        """Answer a refusal and end the connection (False)."""
        ...

    async def handle(self, req: Request) -> bool:
        """Answer ``req`` from the start; True if the connection stays open."""
        ...

    async def answer(self, req: Request, resp: Reply, address: str, target: str,
                     body: RequestBody | None, upgrade: str | None, t0: float) -> bool:
        """Pass the upstream's response on; True if the connection stays open."""
        ...

    def express_done(self, keep: bool, *, handoff: bool = True) -> None:
        """The express exchange ended; ``keep``: the client connection stays open."""
        ...

    def express_handoff(self, step: Callable[[], Awaitable[bool]]) -> None:
        """Give the express exchange back to the front's task, which runs ``step``."""
        ...


class H2Lane(_Front, Protocol):
    """The HTTP/2 front, as its express lane uses it."""

    @property
    def peer(self) -> str:
        """The client's address, for logs."""
        ...

    async def fail(self, ex: H2Exchange, status: int, reason: str, message: str,
                   extra: list[tuple[str, str]] | None = None) -> None:
        """Answer a refusal on the stream."""
        ...

    async def proxy(self, ex: H2Exchange, req: H2Request) -> None:
        """Answer ``req`` from the start (credentials, fields, upstream)."""
        ...

    async def answer(self, ex: H2Exchange, req: H2Request, resp: Reply, address: str,
                     body: RequestBody | None, t0: float) -> None:
        """Pass the upstream's response on."""
        ...

    def express_handoff(self, ex: H2Exchange, step: Awaitable[None]) -> None:
        """Give stream ``ex`` back to a task of the front, which runs ``step`` for it."""
        ...

    def express_forget(self, ex: H2Exchange) -> None:
        """Stream ``ex`` left the express lane (ended or failed)."""
        ...
