"""The QUIC endpoint: one UDP socket, aioquic connections, each handed to a protocol by ALPN.

A ``quic`` listener (``protocols = ["quic"]``) binds UDP on its ``listen`` address — by
convention the shared TCP port's number — and serves every ALPN installed: ``ugate/1``
(mesh streams, :mod:`ugate_quic.mesh`) and what other plugins add (:mod:`ugate_quic.alpn`).
The server certificate holds the workload key (its hash is the mesh ID): a short-lived one
browsers can pin by hash (:mod:`ugate_quic.certs`), or the workload chain. Bounds: at most
``max_connections`` connections (more get a CONNECTION_CLOSE at once), a handshake deadline
(``[gateway] handshake_timeout``), an address-validating Retry when ``retry = true`` (a
flood of Initial packets from spoofed sources then costs one stateless packet each).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterator, Mapping
from typing import Any, cast

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    QuicEvent,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)

from ugate_core import (
    ConfigError,
    GatewayAPI,
    ListenerConfig,
    ListenerContext,
    RunningListener,
    StreamMeta,
)
from ugate_core import options as opt

from .alpn import AlpnHandler, AlpnSession, collect_alpn
from .certs import BrowserCerts, browser_certs
from .lib import (
    StreamCredit,
    peer_address,
    send_buffered,
    set_max_datagram_size,
    use_identity,
)
from .qstream import RESET_CODE, QuicStream

log = logging.getLogger("ugate.quic")
# aioquic logs two INFO lines per connection (version, ALPN): unbounded under a flood of
# handshakes, where ugate's own refusal log is rate-bounded. Quiet unless configured.
_aioquic_log = logging.getLogger("quic")
if _aioquic_log.level == logging.NOTSET:
    _aioquic_log.setLevel(logging.WARNING)

#: seconds a stream we closed keeps taking (and dropping) the peer's bytes before we send
#: STOP_SENDING
LINGER = 1.0

#: application error codes of a connection close
NO_ERROR = 0x0
ERR_REFUSED = 0x101  # a limit or the ALPN: nothing more will be served on this connection
ERR_HANDSHAKE_TIMEOUT = 0x102

#: the largest UDP payload QUIC may send on any path (RFC 9000 14); aioquic's default
MIN_DATAGRAM = 1200
#: what a datagram may be at most here: aioquic writes a STREAM frame's length in two bytes
#: (< 16384), and a larger datagram's frames do not parse on the other side
MAX_DATAGRAM = 16384
#: kernel buffers of each UDP socket (capped by net.core.rmem_max / wmem_max): the default
#: ~208 KiB drops a burst of a 1 MiB window, and every drop costs a loss recovery
SOCKET_BUFFER = 4 << 20

OPTION_KEYS = frozenset({"max_connections", "max_streams", "retry", "idle_timeout",
                        "browser_certs", "max_datagram_size"})
DEFAULTS: dict[str, Any] = {"max_connections": 1000, "max_streams": 256, "retry": False,
                            "idle_timeout": 60.0, "browser_certs": True,
                            "max_datagram_size": 0}  # 0: automatic (docs/quic.md)


#: the largest datagram a listener that serves browsers may send: Chromium reads ~1450
#: bytes of a datagram (an IPv6 path's 1500-byte MTU less its headers is 1452)
BROWSER_MAX_DATAGRAM = 1452


def check_options(options: Mapping[str, Any], path: str,
                  max_datagram: int = MAX_DATAGRAM) -> None:
    for k in ("max_connections", "max_streams"):
        opt.integer(options, k, path, DEFAULTS[k], lo=1)
    opt.boolean(options, "retry", path, DEFAULTS["retry"])
    opt.seconds(options, "idle_timeout", path, DEFAULTS["idle_timeout"])
    opt.boolean(options, "browser_certs", path, DEFAULTS["browser_certs"])
    opt.integer(options, "max_datagram_size", path, MIN_DATAGRAM, lo=MIN_DATAGRAM,
                hi=max_datagram)


def check_browser_options(options: Mapping[str, Any], path: str) -> None:
    """A listener for browsers only: ``max_datagram_size`` at most
    :data:`BROWSER_MAX_DATAGRAM`."""
    check_options(options, path, BROWSER_MAX_DATAGRAM)


def check_section(gw: GatewayAPI) -> int:
    """``[quic]``: ``max_datagram_size`` (the dialer's, returned; 0 when not set: automatic)
    and ``shared_port``."""
    t = gw.config.section("quic")
    opt.check_keys(t, {"max_datagram_size", "shared_port"}, "quic")
    opt.boolean(t, "shared_port", "quic", True)
    if "max_datagram_size" not in t:
        return 0
    return opt.integer(t, "max_datagram_size", "quic", MIN_DATAGRAM, lo=MIN_DATAGRAM,
                       hi=MAX_DATAGRAM)


def shared_port_enabled(gw: GatewayAPI) -> bool:
    """``[quic] shared_port`` (default true): UDP beside every shared TCP port."""
    check_section(gw)
    return bool(gw.config.section("quic").get("shared_port", True))


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and an IPv4-mapped loopback address (a dual-stack socket's)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def grow_socket_buffers(transport: asyncio.BaseTransport | None) -> None:
    """Ask for :data:`SOCKET_BUFFER` bytes of kernel buffer each way on a UDP socket."""
    sock = None if transport is None else transport.get_extra_info("socket")
    if sock is None:
        return
    for name in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, name, SOCKET_BUFFER)


#: datagrams read from a UDP socket per wakeup at most (asyncio reads one)
BATCH = 64
_Address = Any  # what recvfrom returns: (host, port) or (host, port, flowinfo, scope_id)


class Batch:
    """What else is queued on a UDP socket once asyncio delivered one datagram: read in the
    same callback (Python has no ``recvmmsg``: ``recvfrom`` on a non-blocking duplicate of
    the socket until it would block), so that the connections it touched transmit once for
    the batch, not once per datagram (aioquic builds and checks a packet on every transmit)."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        ts = transport.get_extra_info("socket")
        self._sock: socket.socket | None = None if ts is None else ts.dup()
        if self._sock is not None:
            self._sock.setblocking(False)

    def more(self) -> Iterator[tuple[bytes, _Address]]:
        sock = self._sock
        if sock is None:
            return
        for _ in range(BATCH - 1):
            try:
                yield sock.recvfrom(65536)
            except OSError:  # nothing more (EAGAIN), or an ICMP error asyncio will report
                return

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class BatchingServer(QuicServer):
    """aioquic's server protocol (routes datagrams to connections by connection id), reading
    a batch per wakeup (:class:`Batch`) and transmitting once per connection after it."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.touched: set[QuicPeer] | None = None
        self._batch: Batch | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._batch = Batch(transport)

    def datagram_received(self, data: bytes | str, addr: _Address) -> None:
        touched: set[QuicPeer] = set()
        self.touched = touched
        try:
            super().datagram_received(data, addr)
            if self._batch is not None:
                for d, a in self._batch.more():
                    super().datagram_received(d, a)
        finally:
            self.touched = None
        for peer in touched:
            peer.transmit()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._batch is not None:
            self._batch.close()


def option(ctx: ListenerContext, key: str) -> Any:
    return ctx.options.get(key, DEFAULTS[key])


def base_configuration(gw: GatewayAPI, *, is_client: bool, alpn: list[str],
                       idle_timeout: float = 60.0,
                       max_datagram_size: int = MIN_DATAGRAM) -> QuicConfiguration:
    """A QUIC configuration presenting this workload's certificate and key."""
    ident = gw.identity
    ident.renew_if_needed()
    cfg = QuicConfiguration(is_client=is_client, alpn_protocols=alpn,
                            idle_timeout=idle_timeout, max_datagram_frame_size=65536,
                            max_datagram_size=max_datagram_size)
    use_identity(cfg, ident)
    return cfg


class QuicPeer(QuicConnectionProtocol):
    """One QUIC connection (either side): dispatches by ALPN, owns its streams."""

    def __init__(self, quic: QuicConnection, stream_handler: Any = None, *,
                 ctx: ListenerContext | None = None, meta: StreamMeta | None = None,
                 handlers: Mapping[str, AlpnHandler] | None = None,
                 endpoint: QuicEndpoint | None = None, auto_datagram: bool = False) -> None:
        super().__init__(quic)
        #: a listener's automatic datagram size: raised for a mesh peer on loopback
        self._auto_datagram = auto_datagram
        self.credit = StreamCredit(quic, quic.configuration.max_stream_data)
        self._ctx = ctx
        self._meta = meta if meta is not None else StreamMeta(protocol="quic")
        self.handlers = handlers or {}
        self.endpoint = endpoint
        self.session: AlpnSession | None = None
        self.streams: dict[int, QuicStream] = {}
        self._watched: set[QuicStream] = set()
        self.closed_reason: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._highest_bidi = -1
        #: a dialer's own socket, read in batches (a listener's server reads for all)
        self.batch: Batch | None = None

    # --------------------------------------------------------------- QuicConn
    @property
    def quic(self) -> QuicConnection:
        return self._quic

    @property
    def ctx(self) -> ListenerContext:
        assert self._ctx is not None
        return self._ctx

    @property
    def meta(self) -> StreamMeta:
        return self._meta

    def stream(self, stream_id: int, meta: StreamMeta, prefix: bytes = b"") -> QuicStream:
        s = QuicStream(self, stream_id, meta, prefix)
        self.streams[stream_id] = s
        self.credit.tracked.add(stream_id)
        return s

    def close(self, error_code: int = NO_ERROR, reason: str = "") -> None:
        if self.closed_reason is None:
            self.closed_reason = reason or "closed"
        self._quic.close(error_code=error_code, reason_phrase=reason)
        self.transmit()

    # --------------------------------------------------------------- streams
    def send_buffered(self, stream_id: int) -> int:
        return send_buffered(self._quic, stream_id)

    def watch(self, s: QuicStream) -> None:
        self._watched.add(s)

    def forget(self, s: QuicStream) -> None:
        if self.streams.get(s.stream_id) is s:
            del self.streams[s.stream_id]
        self._watched.discard(s)
        self.credit.tracked.discard(s.stream_id)
        self.credit.held.discard(s.stream_id)

    def linger(self, stream_id: int) -> None:
        """A stream we closed while the peer still sends: grant it no more credit, and after
        :data:`LINGER` seconds ask the peer to stop (STOP_SENDING)."""
        self.credit.tracked.add(stream_id)
        self.credit.held.add(stream_id)
        asyncio.get_running_loop().call_later(LINGER, self._stop_lingering, stream_id)

    def _stop_lingering(self, stream_id: int) -> None:
        self.credit.tracked.discard(stream_id)
        self.credit.held.discard(stream_id)
        if self.closed_reason is None:
            with contextlib.suppress(Exception):  # it may have ended meanwhile
                self._quic.stop_stream(stream_id, RESET_CODE)
            self.transmit()

    def accepts_new(self, stream_id: int) -> bool:
        """True once per peer-opened bidirectional stream id, in increasing order: late
        frames of a stream that ended never open it again."""
        if stream_id <= self._highest_bidi:
            return False
        self._highest_bidi = stream_id
        return True

    def hold(self, s: QuicStream, held: bool) -> None:
        """Stop (or resume) granting ``s``'s peer more credit: its reader is paused."""
        if held:
            self.credit.held.add(s.stream_id)
        else:
            self.credit.held.discard(s.stream_id)
            self._transmit_soon()  # the new credit goes out now

    def transmit_soon(self) -> None:
        self._transmit_soon()

    def transmit(self) -> None:
        super().transmit()
        if self._watched:
            for s in list(self._watched):
                s.check_writable()
                if not s.write_paused:
                    self._watched.discard(s)

    def stream_event(self, ev: QuicEvent) -> bool:
        """Deliver a stream event to a known :class:`QuicStream`; False if unknown."""
        if isinstance(ev, StreamDataReceived):
            s = self.streams.get(ev.stream_id)
            if s is None:
                return False
            s.feed(ev.data, ev.end_stream)
            return True
        if isinstance(ev, StreamReset):
            s = self.streams.get(ev.stream_id)
            if s is not None:
                s.peer_reset(ev.error_code)
            return True
        if isinstance(ev, StopSendingReceived):
            s = self.streams.get(ev.stream_id)
            if s is not None:
                s.peer_stopped(ev.error_code)
            return True
        return False

    # --------------------------------------------------------------- events
    def datagram_received(self, data: bytes | str, addr: _Address) -> None:
        now = self._loop.time()
        self._quic.receive_datagram(cast(bytes, data), addr, now=now)
        if self.batch is not None:
            for d, a in self.batch.more():
                self._quic.receive_datagram(d, a, now=now)
        self._process_events()
        server = None if self.endpoint is None else self.endpoint.server
        if server is not None and server.touched is not None:
            server.touched.add(self)  # the server transmits once for its batch
            return
        self.transmit()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.batch is not None:
            self.batch.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._ctx is not None and self._deadline is None:
            timeout = self._ctx.gateway.config.gateway.handshake_timeout
            self._deadline = asyncio.get_running_loop().call_later(timeout, self._too_slow)

    def _too_slow(self) -> None:
        if not self._connected and self.closed_reason is None:
            self.ctx.reject("handshake_timeout", "QUIC handshake not finished in time",
                            self._meta)
            self.close(ERR_HANDSHAKE_TIMEOUT, "handshake timeout")

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            if self._deadline is not None:
                self._deadline.cancel()
            self._meta.alpn = event.alpn_protocol
            h = self.handlers.get(event.alpn_protocol or "")
            if h is None:
                if self._ctx is not None:  # a server: say why, count it
                    self.ctx.reject("alpn", f"no protocol for ALPN {event.alpn_protocol!r}",
                                    self._meta)
                    self.close(ERR_REFUSED, f"no protocol for ALPN {event.alpn_protocol!r}")
                return
            if (self._auto_datagram and h.big_datagrams
                    and is_loopback(peer_address(self._quic)[0])):
                # another ugate on this host: loopback's MTU (64 KiB) carries the largest
                # datagram aioquic builds; 1200-byte ones cost ~13x the packets
                set_max_datagram_size(self._quic, MAX_DATAGRAM)
            self.session = h.open(self)
            return
        if isinstance(event, ConnectionTerminated):
            if self._deadline is not None:
                self._deadline.cancel()
            why = event.reason_phrase or f"error 0x{event.error_code:x}"
            if self.closed_reason is None:
                self.closed_reason = f"connection closed: {why}"
                if self._ctx is not None and not self._connected:
                    # a failed handshake (no common ALPN, bad TLS, ...): say so, count it
                    self.ctx.reject("handshake", why, self._meta)
            exc = ConnectionResetError(f"QUIC connection closed: {why}")
            for s in list(self.streams.values()):
                s.connection_lost(exc)
            if self.endpoint is not None:
                self.endpoint.connections.discard(self)
        if self.session is not None:
            self.session.quic_event(event)


class QuicEndpoint:
    """A running ``quic`` listener (core's ``RunningListener``)."""

    def __init__(self, cfg: ListenerConfig, gw: GatewayAPI,
                 handlers: dict[str, AlpnHandler], *, host: str | None = None,
                 port: int | None = None) -> None:
        self.ctx = ListenerContext(gw, cfg)
        #: where to bind: the listener's own address, or (shared port) the TCP side's
        self.host = cfg.host if host is None else host
        self.port = cfg.port if port is None else port
        self.handlers = handlers
        self.connections: set[QuicPeer] = set()
        self.server: BatchingServer | None = None
        self.cfg: QuicConfiguration | None = None
        self.certs: BrowserCerts | None = None

    def _make(self, quic: QuicConnection, stream_handler: Any = None) -> QuicPeer:
        if self.certs is not None and self.cfg is not None and self.certs.rotate_if_due():
            self.cfg.certificate = self.certs.current.cert
            log.info("browser_certificate_rotated listener=%s sha256=%s", self.ctx.name,
                     self.certs.current.sha256)
        meta = StreamMeta(protocol="quic", listener=self.ctx.name)
        peer = QuicPeer(quic, ctx=self.ctx, meta=meta, handlers=self.handlers, endpoint=self,
                        auto_datagram=not option(self.ctx, "max_datagram_size"))
        if len(self.connections) >= option(self.ctx, "max_connections"):
            self.ctx.reject("max_connections", "too many QUIC connections", meta)
            asyncio.get_running_loop().call_soon(peer.close, ERR_REFUSED, "too many connections")
            return peer
        self.connections.add(peer)
        return peer

    async def start(self) -> None:
        lc = self.ctx.config
        gw = self.ctx.gateway
        cfg = base_configuration(gw, is_client=False, alpn=list(self.handlers),
                                 idle_timeout=float(option(self.ctx, "idle_timeout")),
                                 max_datagram_size=int(option(self.ctx, "max_datagram_size"))
                                 or MIN_DATAGRAM)
        if option(self.ctx, "browser_certs"):
            self.certs = browser_certs(gw)
            if self.certs is not None:  # the workload key, in a certificate browsers pin
                cfg.certificate, cfg.certificate_chain = self.certs.current.cert, []
        self.cfg = cfg
        try:
            _, self.server = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: BatchingServer(configuration=cfg, create_protocol=self._make,
                                       retry=bool(option(self.ctx, "retry"))),
                local_addr=(self.host, self.port))
        except OSError as e:
            raise ConfigError(f"{lc.path}.listen", f"cannot listen on UDP "
                              f"{self.host}:{self.port}: {e}") from None
        grow_socket_buffers(self.server._transport)
        log.info("listening listener=%s address=%s protocols=quic(udp) alpn=%s", lc.name,
                 ",".join(f"{h}:{p}" for h, p in self.addresses()), ",".join(self.handlers))

    def addresses(self) -> list[tuple[str, int]]:
        if self.server is None or self.server._transport is None:
            return []
        name = self.server._transport.get_extra_info("sockname")
        return [(str(name[0]), int(name[1]))]

    async def aclose(self) -> None:
        for c in list(self.connections):
            c.close(NO_ERROR, "gateway shutting down")
        if self.server is not None:
            self.server.close()


async def start_quic_listener(cfg: ListenerConfig, gw: GatewayAPI, own: list[AlpnHandler],
                              *, only: bool = False) -> RunningListener:
    """An endpoint serving ``own`` and (unless ``only``) every installed plugin's ALPNs."""
    handlers = {h.alpn: h for h in own} if only else collect_alpn(gw, own)
    ep = QuicEndpoint(cfg, gw, handlers)
    await ep.start()
    return ep
