"""Listeners and admission: the shared or dedicated TCP port, ``max_connections``, and the
guard around every connection's handling.

One admission rule for every listener the gateway accepts on (this module's
:class:`Listener` and :class:`~ugate_core.tls.TlsListener`): a connection counts towards
``[gateway] max_connections`` from accept until its socket is closed — a handler may hand the
stream to a relay and return long before — and none is admitted while the gateway stops.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .errors import AuthError, DialError, ProtocolError
from .sniff import default_for, sniff_stream
from .stream import StreamClosedError, StreamMeta, TcpStream
from .types import ListenerContext

if TYPE_CHECKING:
    from .config import ListenerConfig
    from .metrics import Tally
    from .types import ListenerType

log = logging.getLogger("ugate")

__all__ = ["Admission", "Guard", "Listener", "peer_str"]


def peer_str(meta: StreamMeta) -> str:
    """``host:port`` of the client, for log lines (``-`` when unknown)."""
    return f"{meta.remote[0]}:{meta.remote[1]}" if meta.remote else "-"


class Admission:
    """``max_connections`` of one listener: :meth:`admit` when a connection is accepted,
    :meth:`release` once its socket closed (exactly once per admitted connection). The
    gateway sets :attr:`closed` when it stops; plain attributes, since this runs per accept."""

    __slots__ = ("active", "closed", "gw", "limit", "name")

    def __init__(self, gw: Any, name: str) -> None:
        self.gw = gw
        self.name = name
        #: ``[gateway] max_connections``
        self.limit: int = gw.config.gateway.max_connections
        #: connections admitted and not yet released
        self.active = 0
        #: the gateway stops: admit nothing more
        self.closed = False

    def admit(self, meta: StreamMeta | None = None) -> bool:
        """Count one more connection, or refuse it (counted and logged as
        ``max_connections``) when the gateway stops or the limit is reached."""
        if self.closed or self.active >= self.limit:
            self.gw.reject(self.name, "max_connections",
                           f"{self.active} connections open (max_connections)", meta)
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1


def refuse(gw: Any, listener: str, meta: StreamMeta, e: Exception) -> None:
    """What a connection's handling raised, as one log line and a counted refusal."""
    if isinstance(e, ProtocolError | AuthError):
        gw.reject(listener, e.reason, str(e), meta)
    elif isinstance(e, DialError):
        gw.log_refusal(listener, e.reason,
                       "dial_failed listener=%s client=%s target=%s reason=%s error=%r",
                       listener, peer_str(meta), meta.target, e.reason, str(e))
    elif isinstance(e, TimeoutError):
        gw.reject(listener, "handshake_timeout", "", meta)
    elif isinstance(e, StreamClosedError | ConnectionError):
        gw.reject(listener, "client_closed", str(e), meta)
    else:
        gw.metrics.reject(listener, "internal")
        log.error("listener_error listener=%s client=%s", listener, peer_str(meta),
                  exc_info=(type(e), e, e.__traceback__))


class Guard:
    """``with gateway.guard(listener, meta):`` around a connection's handling: the errors a
    protocol raises become one log line and a counted refusal (:func:`refuse`), never a crash
    (see :meth:`Gateway.guard <ugate_core.Gateway.guard>`)."""

    __slots__ = ("gw", "listener", "meta")

    def __init__(self, gw: Any, listener: str, meta: StreamMeta) -> None:
        self.gw = gw
        self.listener = listener
        self.meta = meta

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> bool:
        if e is None or not isinstance(e, Exception):  # CancelledError goes on
            return False
        refuse(self.gw, self.listener, self.meta, e)
        return True


class Listener:
    """A bound TCP listener of the gateway (dedicated protocol or shared port)."""

    def __init__(self, gw: Any, cfg: ListenerConfig, types: list[ListenerType]) -> None:
        self.gw = gw
        self.cfg = cfg
        self.types = types
        self.sniffing = len(types) != 1 or cfg.protocols == ("*",)
        self.default = default_for(cfg.default, types)
        self.ctx = ListenerContext(gw, cfg)
        self.server: asyncio.Server | None = None
        self.admission: Admission = gw.admission(cfg.name)
        #: the one address this listener is bound to (every accepted stream's ``meta.local``,
        #: shared, so no getsockname per connection); None for wildcard or several
        self.local: tuple[str, int] | None = None
        #: ``ugate_connections`` by protocol, looked up once
        self._connections: dict[str, Tally] = {}

    @property
    def active(self) -> int:
        """Connections open now (admitted, socket not yet closed)."""
        return self.admission.active

    def make_protocol(self) -> TcpStream:
        return _Accepted(self)

    def addresses(self) -> list[tuple[str, int]]:
        if self.server is None:
            return []
        return [s.getsockname()[:2] for s in self.server.sockets]

    async def handle(self, stream: TcpStream) -> None:
        # one coroutine from accept to the protocol's serve (this runs per connection); the
        # guard's rule (refuse) without a Guard object and its enter/exit calls
        gw, cfg = self.gw, self.cfg
        meta = stream.meta
        meta.listener = cfg.name
        try:
            if self.sniffing:
                res = await sniff_stream(
                    stream,
                    self.types,
                    timeout=cfg.sniff_timeout,
                    max_bytes=cfg.sniff_max,
                    default=self.default,
                )
                lt = res.listener
                if lt is None:
                    gw.reject(cfg.name, f"sniff_{res.reason}",
                              f"first bytes {res.prefix[:16]!r}", meta)
                    stream.abort()
                    return
            else:
                lt = self.types[0]
            meta.protocol = lt.name
            t = self._connections.get(lt.name)
            if t is None:
                t = self._connections[lt.name] = gw.metrics.tally(
                    gw.metrics.connections, cfg.name, lt.name)
            t.n += 1
            assert lt.serve is not None
            await lt.serve(stream, self.ctx)
        except asyncio.CancelledError:
            stream.abort()
            raise
        except Exception as e:
            refuse(gw, cfg.name, meta, e)
        finally:
            if not stream.is_closing() and not stream.relaying:
                stream.close()


class _Accepted(TcpStream):
    """An accepted TCP connection; starts its handler task on connection_made. It counts
    towards ``max_connections`` until the socket is closed (the handler may hand the stream
    to a relay and end long before)."""

    __slots__ = ("_admission", "_listener")

    def __init__(self, listener: Listener) -> None:
        super().__init__()
        self._listener = listener
        self._admission: Admission | None = None
        self.meta.local = listener.local

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        ln = self._listener
        adm = ln.admission
        if not adm.admit(self.meta):
            self.abort()
            return
        self._admission = adm
        ln.gw.spawn(ln.handle(self))

    def connection_lost(self, exc: Exception | None) -> None:
        adm = self._admission
        if adm is not None:
            self._admission = None
            adm.release()
        super().connection_lost(exc)
