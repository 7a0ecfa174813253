"""The RoundTrip API: HTTP-shaped calls through the gateway.

``await gateway.round_trip(HttpRequest(...)) -> HttpResponse`` sends a request through
discovery, policy, identity checks and the upstream pools of whichever plugin provides HTTP
(``ugate_round_tripper`` hook; ``ugate-http`` does). Front ends of other protocols (an HTTP/2
server, WebTransport, ...) use the same call to forward requests without importing that
plugin. Bodies are read piecewise: ``read()`` returns ``b""`` at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .stream import StreamMeta


class Body(Protocol):
    """A message body read piecewise: ``read()`` returns ``b""`` at the end."""

    async def read(self) -> bytes: ...


class BytesBody:
    """A body held in memory."""

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    async def read(self) -> bytes:
        data, self._data = self._data, None
        return data or b""


@dataclass
class HttpRequest:
    """One request. ``authority`` is ``name:port`` (routing by name); ``target`` the
    origin-form path with query. ``headers`` are end-to-end fields (no hop-by-hop, no
    framing: ``length`` gives the body size when known)."""

    method: str
    authority: str
    target: str = "/"
    headers: Sequence[tuple[str, str]] = ()
    body: Body | None = None
    length: int | None = None
    #: ``"https"``: sent only over a ``secure`` dialer (encrypted, peer verified), else
    #: ``DialError("insecure")`` before any byte; ``"http"``: over the destination's dialer
    scheme: str = "http"
    #: the client on whose behalf this runs (policy); ``None`` for embedding programs
    source: StreamMeta | None = None


@dataclass
class HttpResponse:
    """A response head; read the body with ``read()`` until ``b""``, then ``close()``."""

    status: int
    headers: Sequence[tuple[str, str]] = ()
    body: Body | None = None
    trailers: Sequence[tuple[str, str]] = field(default_factory=tuple)

    async def read(self) -> bytes:
        return b"" if self.body is None else await self.body.read()

    async def read_all(self, limit: int = 64 << 20) -> bytes:
        """The whole body (ValueError past ``limit`` bytes)."""
        out = bytearray()
        while chunk := await self.read():
            out += chunk
            if len(out) > limit:
                raise ValueError(f"response body larger than {limit} bytes")
        return bytes(out)

    def header(self, name: str) -> str | None:
        n = name.lower()
        return next((v for k, v in self.headers if k.lower() == n), None)

    async def close(self) -> None:
        """Release the upstream connection (reads what is left of the body, bounded)."""
        closer = getattr(self.body, "aclose", None)
        if closer is not None:
            await closer()


class RoundTripper(Protocol):
    """What the ``ugate_round_tripper`` hook returns."""

    async def round_trip(self, request: HttpRequest) -> HttpResponse: ...
