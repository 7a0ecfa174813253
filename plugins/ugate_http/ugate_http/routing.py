"""Serving other plugins' routes (routes.py) on both fronts: what an answer may carry, the run of
one handler (405, 500, counting, logging), and an HTTP/2 stream as a core
:class:`~ugate_core.Stream` for an accepted RFC 8441 extended CONNECT.

The fronts' :class:`~ugate_http.routes.Exchange` classes live with them (``H1Route`` in the
HTTP/1.1 front, ``H2Route`` in the HTTP/2 one); this module is what they share.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, NoReturn, Protocol

from ugate_core import H2ErrorCode, ProtocolError, Stream, StreamMeta

from .h2conn import H2Exchange, StreamResetError
from .routes import Header, HttpRoute

if TYPE_CHECKING:
    from .routes import Exchange

log = logging.getLogger("ugate.http")

__all__ = ["H2Tunnel", "RouteAnswer", "RouteExchange", "handler_fields", "serve_route"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00\r\n]")
#: fields a handler may not set: the front writes the message's framing and connection
RESERVED = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive",
                      "upgrade", "proxy-connection", "te", "trailer"})


def handler_fields(headers: Iterable[Header]) -> list[Header]:
    """A handler's answer fields, checked (names lower-case); ``ValueError`` for a name that is
    not a token, a value with CR, LF or NUL, or a field the front sets itself."""
    out: list[Header] = []
    for name, value in headers:
        if _TOKEN.fullmatch(name) is None or _BAD_VALUE.search(value) is not None:
            raise ValueError(f"bad answer field {name[:60]!r}: {value[:60]!r}")
        low = name.lower()
        if low in RESERVED:
            raise ValueError(f"answer field {name!r} is the front's to set")
        out.append((low, value))
    return out


class RouteExchange:
    """What both fronts' :class:`~ugate_http.routes.Exchange` classes share: the answer's
    bookkeeping (one answer, counted), field lookup, and reading a body within a limit."""

    def __init__(self, route: HttpRoute) -> None:
        self.route = route
        #: a head (final answer or switch of protocols) was sent
        self.answered = False
        self.status = 0
        self.headers: list[Header] = []

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name]
        return ", ".join(values) if values else None

    def _count(self, status: int) -> None:
        raise NotImplementedError

    async def refuse(self, status: int, reason: str, message: str,
                     extra: list[Header] | None = None) -> None:
        raise NotImplementedError

    def _answering(self, status: int, *, final: bool = True) -> None:
        """The handler answers ``status`` now (a second answer is its bug: ProtocolError)."""
        if self.answered:
            raise ProtocolError("the exchange was answered already", "answered")
        if final and not 200 <= status <= 999:
            raise ValueError(f"status {status}: a final answer's status is 200-999")
        self.answered = True
        self.status = status
        self._count(status)

    async def _read_within(self, read: Callable[[], Awaitable[bytes]], limit: int,
                           declared: int | None) -> bytes:
        """The body ``read()`` gives until ``b""``; over ``limit`` bytes (or ``declared`` so)
        answers 413 and raises ProtocolError."""
        if declared is not None and declared > limit:
            await self._too_large(limit)
        parts: list[bytes] = []
        n = 0
        while data := await read():
            n += len(data)
            if n > limit:
                await self._too_large(limit)
            parts.append(data)
        return b"".join(parts)

    async def _too_large(self, limit: int) -> NoReturn:
        if not self.answered:
            await self.refuse(413, "body_too_large", f"{self.route.name}: request body over "
                              f"{limit} bytes")
        raise ProtocolError(f"request body over {limit} bytes", "body_too_large")

    async def _not_accepted(self, what: str) -> NoReturn:
        """``accept()`` on a request that does not switch to one of the route's protocols:
        400, and ProtocolError for the handler."""
        await self.refuse(400, "bad_upgrade", f"{self.route.name}: not {what}")
        raise ProtocolError(f"not {what}", "bad_upgrade")


class RouteAnswer(Protocol):
    """What :func:`serve_route` needs of a front's exchange beyond :class:`Exchange`."""

    #: a head (final answer or switch of protocols) was sent
    answered: bool

    async def refuse(self, status: int, reason: str, message: str,
                     extra: list[Header] | None = None) -> None:
        """Answer a refusal (counted and logged by the front)."""
        ...

    def cut(self) -> None:
        """The head is out but the exchange failed: end it so the client sees it cut."""
        ...


async def serve_route(ex: Exchange, answer: RouteAnswer, route: HttpRoute, listener: str
                      ) -> None:
    """Run ``route``'s handler on ``ex``: 405 for a method it does not take (an extended
    CONNECT whose protocol it accepts is its own method), 500 when the handler answers
    nothing or raises before answering, a cut exchange when it raises after."""
    protocol = ex.protocol
    if ex.method == "CONNECT" and ex.http_version == "2":
        if protocol is None or protocol not in route.protocols:
            await answer.refuse(400, "bad_request", f"{route.name}: extended CONNECT for "
                                f"protocol {protocol!r}, which this path does not accept")
            return
    elif route.methods and ex.method not in route.methods:
        await answer.refuse(405, "method_not_allowed",
                            f"{route.name}: method {ex.method} not allowed",
                            [("allow", ", ".join(sorted(route.methods)))])
        return
    try:
        await route.handle(ex)
    except asyncio.CancelledError:
        raise
    except ProtocolError as e:
        if not answer.answered:  # (body() answered its own 413 already)
            status = getattr(e, "status", 400)
            await answer.refuse(status if isinstance(status, int) else 400, e.reason, str(e))
        return
    except Exception as e:
        log.warning("http_route_error listener=%s route=%s method=%s path=%s error=%r",
                    listener, route.name, ex.method, ex.path[:200], e)
        if answer.answered:
            answer.cut()
        else:
            await answer.refuse(500, "route_error", f"{route.name}: the handler failed")
        return
    if not answer.answered:
        await answer.refuse(500, "route_unanswered", f"{route.name}: the handler gave no "
                            "answer")


class H2Tunnel(Stream):
    """An HTTP/2 request stream taken over as a byte stream (an accepted extended CONNECT):
    DATA both ways within the flow-control windows (the peer gets credit back as this stream's
    reader takes the bytes), END_STREAM as end of file, RST_STREAM as a reset."""

    def __init__(self, ex: H2Exchange, meta: StreamMeta) -> None:
        super().__init__(meta)
        self.ex = ex
        self._resumed: asyncio.Future[None] | None = None
        #: the connection forgot the stream (both sides ended): lost once the pump is done
        self._forgotten = False
        ex.on_writable = self._writable
        ex.on_finish = self._finished
        self._pump = asyncio.get_running_loop().create_task(self._receive())

    def __repr__(self) -> str:
        return f"<H2Tunnel {self.ex!r}>"

    async def _receive(self) -> None:
        ex = self.ex
        try:
            while True:
                while self._reading_paused:
                    fut = self._resumed = asyncio.get_running_loop().create_future()
                    await fut
                data = await ex.read()
                if not data:
                    self._on_eof()
                    if self._forgotten:
                        self._on_lost(None)
                    return
                if not self._closing:  # closed by us: the peer's bytes are dropped
                    self._on_data(data)
        except StreamResetError as e:
            self._on_lost(ConnectionResetError(str(e)))

    def _finished(self) -> None:
        """The connection forgot the stream: ended both ways (lost once the pump delivered
        the peer's last bytes), or failed."""
        err = self.ex.error
        if err is not None:
            self._on_lost(ConnectionResetError(str(err)))
            self._pump.cancel()
        elif self._eof:
            self._on_lost(None)
        else:
            self._forgotten = True

    def _writable(self) -> None:
        if self._write_paused:
            self._resume_writing()

    def _do_write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            if not self.ex.write(data):
                self._pause_writing()
        except StreamResetError:
            pass  # the stream is gone: _on_lost tells the reader

    def _do_write_eof(self) -> None:
        ex = self.ex
        if not ex.ending and ex.error is None:
            ex.write(b"", end=True)

    def _do_close(self) -> None:
        self._do_write_eof()
        self._reading_paused = False  # the pump reads on (and drops) until the peer's end
        self._wake_pump()

    def _do_abort(self) -> None:
        self.ex.reset(H2ErrorCode.CANCEL)
        self._pump.cancel()

    def _do_pause_reading(self) -> None:
        pass  # the pump stops reading: no credit goes back to the peer

    def _do_resume_reading(self) -> None:
        self._wake_pump()

    def _wake_pump(self) -> None:
        fut, self._resumed = self._resumed, None
        if fut is not None and not fut.done():
            fut.set_result(None)
