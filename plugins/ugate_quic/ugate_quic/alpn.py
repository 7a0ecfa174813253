"""The ALPN extension point of ugate-quic's endpoint (public API for other plugins).

ugate-quic owns the UDP socket and the QUIC handshake; after it, the connection belongs to the
protocol whose ALPN the client chose. ugate-quic serves ``ugate/1`` itself (mesh streams); a
plugin serves another ALPN (ugate-webtransport: ``h3``) by implementing ``ugate_quic_alpn``::

    from ugate_core import hookimpl
    from ugate_quic.alpn import AlpnHandler

    @hookimpl
    def ugate_quic_alpn(gateway):
        return [AlpnHandler("h3", open_session)]

``open_session(conn)`` is called once per connection when its handshake completed, with a
:class:`QuicConn`; it returns an :class:`AlpnSession` that gets every later QUIC event of that
connection. The endpoint offers exactly the installed ALPNs in its TLS handshake: a client
that offers none of them fails the handshake (TLS ``no_application_protocol``).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ugate_core import ConfigError, hookspec

if TYPE_CHECKING:
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.events import QuicEvent

    from ugate_core import GatewayAPI, ListenerContext, StreamMeta

    from .qstream import QuicStream

__all__ = ["AlpnHandler", "AlpnSession", "QuicConn", "collect_alpn", "hookspecs"]


class QuicConn(Protocol):
    """One QUIC connection, as an ALPN handler sees it."""

    @property
    def quic(self) -> QuicConnection:
        """The sans-IO connection (aioquic): send on it, then call :meth:`transmit`."""
        ...

    @property
    def ctx(self) -> ListenerContext:
        """The listener that accepted the connection (its name, options, gateway)."""
        ...

    @property
    def meta(self) -> StreamMeta:
        """Connection facts: remote and local address, ``alpn``, ``protocol``."""
        ...

    def transmit(self) -> None:
        """Send what the connection has queued (call after sending on :attr:`quic`)."""
        ...

    def stream(self, stream_id: int, meta: StreamMeta) -> QuicStream:
        """A :class:`~ugate_quic.qstream.QuicStream` over ``stream_id`` (bounded writes)."""
        ...

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Close the whole connection with a QUIC application error."""
        ...


class AlpnSession(Protocol):
    """What an ALPN handler keeps per connection."""

    def quic_event(self, event: QuicEvent) -> None:
        """Every QUIC event after the handshake (streams, resets, datagrams, termination)."""
        ...


@dataclass(frozen=True)
class AlpnHandler:
    """``alpn``: the ALPN id served; ``open``: makes the session of one connection."""

    alpn: str
    open: Callable[[QuicConn], AlpnSession]
    description: str = ""
    #: its peers read datagrams up to 16 KiB (another ugate, never a browser): on a loopback
    #: path the endpoint then sends datagrams that large (docs/quic.md, "Speed")
    big_datagrams: bool = False


def ugate_quic_alpn(gateway: GatewayAPI) -> list[AlpnHandler] | None:
    """Return the ALPN protocols this plugin serves on ugate-quic's QUIC endpoint.

    Called when a ``quic`` listener starts. Each :class:`~ugate_quic.alpn.AlpnHandler` names
    an ALPN id (``h3``) and a function that gets each connection that negotiated it after its
    handshake and returns the session receiving that connection's QUIC events. Two handlers
    for one ALPN are a start-up error naming it.
    """


#: The hook specs ugate-quic adds for other plugins (returned by its ``ugate_hookspecs``).
hookspecs = types.SimpleNamespace(ugate_quic_alpn=hookspec(ugate_quic_alpn))


def collect_alpn(gateway: GatewayAPI, own: list[AlpnHandler]) -> dict[str, AlpnHandler]:
    """``own`` plus every installed plugin's handlers, by ALPN id (a duplicate is an error)."""
    out: dict[str, AlpnHandler] = {}
    got: list[Any] = list(own)
    for handlers in gateway.call_hook("ugate_quic_alpn"):
        got.extend(handlers)
    for h in got:
        if h.alpn in out:
            raise ConfigError("listeners", f"two QUIC handlers for ALPN {h.alpn!r}")
        out[h.alpn] = h
    return out
