"""The ``tls`` listener and dialer (stunnel-like) with mesh identities.

* dialer ``tls``: TCP + TLS with the workload certificate; the server must prove a key that
  matches ``destination.identities`` or, if discovery gave none, what the name itself says
  (``<id>.m`` → that ID: :func:`ugate_core.ids.expected_identities_for`). The verified ID is
  the returned stream's ``meta.peer_id``.
* listener ``tls``: TLS termination on its own port with the workload certificate, asking for
  a client certificate (``meta.peer_id`` = the client's verified ID), then forwarding to
  ``target``. It owns its socket (a ``start`` listener) and hands each accepted socket, before
  a byte is read, to ``loop.connect_accepted_socket(ssl=...)``, so handshake failures come back
  to be logged and counted.

Both stay in the event loop's own TLS (``create_connection`` / ``connect_accepted_socket``
with ``ssl=``, also under uvloop); the stream is a :class:`TlsStream`, a :class:`TcpStream`
over the SSL transport, so it stays in push mode. TLS has no half-close in asyncio:
``write_eof`` stops sending and closes once the peer is done (see :class:`TlsStream`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from cryptography import x509
from prometheus_client import Counter

from . import tls_front
from .config import ListenerConfig, parse_identity
from .errors import AuthError, ConfigError, DialError, ProtocolError
from .ids import expected_identities_for, remember_key
from .listeners import peer_str
from .router import is_ip
from .stash import StashKey
from .stream import StreamMeta, TcpStream
from .types import (
    IDENTITY_KINDS,
    DialerType,
    DialRequest,
    ExpectedIdentity,
    ListenerType,
    RunningListener,
)
from .verify import leaf_id, peer_certificates, verified_spiffe

if TYPE_CHECKING:
    from .api import GatewayAPI
    from .listeners import Admission
    from .stream import Stream

log = logging.getLogger("ugate.tls")

#: per gateway: ``ugate_identity_failures_total``
_FAILURES = StashKey[Counter]("tls.identity_failures")
#: per gateway: the dialer's client context
_CLIENT_CTX = StashKey[ssl.SSLContext]("tls.client_ctx")


def identity_failures(gateway: GatewayAPI) -> Counter:
    """``ugate_identity_failures_total{protocol, direction}``: peers that proved the wrong key
    (``direction`` is ``dial`` or ``accept``). Other protocols (ssh, hbone) count here too."""
    c = gateway.stash.get(_FAILURES, None)
    if c is None:
        c = Counter("ugate_identity_failures", "Peers whose identity did not match, by "
                    "protocol and direction (dial, accept)", ["protocol", "direction"],
                    registry=gateway.metrics.registry)
        gateway.stash[_FAILURES] = c
    return c


def count_identity_failure(gateway: GatewayAPI, protocol: str, direction: str = "dial") -> None:
    identity_failures(gateway).labels(protocol, direction).inc()


class TlsStream(TcpStream):
    """A TcpStream over an asyncio or uvloop SSL transport (push mode).

    asyncio's SSL transports cannot half-close (no ``write_eof``; closing sends close_notify
    and stops reading). On the client side (the dialer) ``write_eof`` therefore *lingers*: no
    more bytes go out, bytes still come in, and the connection closes when the server
    finishes or after :attr:`linger` seconds without a byte from it; so a request-then-EOF
    client still gets its whole reply. On the server side (``linger = 0``) ``write_eof``
    closes at once: the server is done answering, and its close is the client's EOF.
    """

    #: seconds without incoming data after our write_eof before the connection closes;
    #: 0 closes at once
    linger: float = 5.0

    def __init__(self, meta: StreamMeta | None = None) -> None:
        super().__init__(meta)
        self._linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check
        t = cast(asyncio.Transport, transport)
        self.transport = t
        t.set_write_buffer_limits(high=256 * 1024)
        sock = t.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer, local = t.get_extra_info("peername"), t.get_extra_info("sockname")
        if isinstance(peer, tuple):
            self.meta.remote = (str(peer[0]), int(peer[1]))
        if isinstance(local, tuple):
            self.meta.local = (str(local[0]), int(local[1]))

    def data_received(self, data: bytes) -> None:
        if self._linger is not None:
            self._arm_linger()
        self._on_data(data)

    def eof_received(self) -> bool:
        self._cancel_linger()
        self._on_eof()
        return False  # TLS cannot stay half-open in asyncio: let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_linger()
        alert = tls_alert(exc) if exc is not None else None
        if alert is not None:
            # TLS 1.3: a server refuses our certificate after our side of the handshake is
            # done, so the alert ends an established stream: name it in the stream's error
            # (what a later write/drain raises) and in the log, not just "reset"
            msg = alert_message(alert, _tls_reason(cast(BaseException, exc)))
            log.info("tls_alert_received protocol=%s target=%s remote=%s error=%r",
                     self.meta.protocol, self.meta.target or "-",
                     peer_str(self.meta), msg)
            exc = ConnectionResetError(msg)
        super().connection_lost(exc)

    def can_write_eof(self) -> bool:
        return self.transport is not None

    def _do_write_eof(self) -> None:
        if self._eof or self._lost or self.linger <= 0:
            self.close()
        else:
            self._arm_linger()

    def _arm_linger(self) -> None:
        self._cancel_linger()
        self._linger = asyncio.get_running_loop().call_later(self.linger, self._linger_over)

    def _cancel_linger(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def _linger_over(self) -> None:
        self._linger = None
        self.close()

    @property
    def ssl_object(self) -> Any:
        t = self.transport
        return None if t is None else t.get_extra_info("ssl_object")


def _tls_reason(e: BaseException) -> str:
    if isinstance(e, ssl.SSLError):
        why = str(e.reason or e.strerror or e)
        detail = getattr(e, "verify_message", None)  # SSLCertVerificationError: OpenSSL's why
        return f"{why}: {detail}" if detail else why
    return str(e) or type(e).__name__


#: OpenSSL's name of an alert the peer sent: SSLV3_ALERT_BAD_CERTIFICATE,
#: TLSV1_ALERT_UNKNOWN_CA, TLSV13_ALERT_CERTIFICATE_REQUIRED, TLSV1_UNRECOGNIZED_NAME
_ALERT = re.compile(r"(?:SSLV3|TLSV1|TLSV13)_ALERT_([A-Z0-9_]+)|TLSV1_(UNRECOGNIZED_NAME)")
#: alerts that mean "I do not accept your certificate" (RFC 8446 §6.2)
_CERT_ALERTS = frozenset({
    "bad_certificate", "unsupported_certificate", "certificate_revoked", "certificate_expired",
    "certificate_unknown", "unknown_ca", "access_denied", "certificate_required",
})


def tls_alert(e: BaseException) -> str | None:
    """The RFC name of the TLS alert the peer sent (``unknown_ca``), if ``e`` is one."""
    if not isinstance(e, ssl.SSLError) or not e.reason:
        return None
    m = _ALERT.fullmatch(str(e.reason))
    return None if m is None else str(m.group(1) or m.group(2)).lower()


def alert_message(alert: str, raw: str) -> str:
    """``the peer sent TLS alert unknown_ca (TLSV1_ALERT_UNKNOWN_CA): ...``."""
    why = ": it does not accept our certificate" if alert in _CERT_ALERTS else ""
    return f"the peer sent TLS alert {alert} ({raw}){why}"


def tls_dial_error(what: str, e: ssl.SSLError) -> DialError:
    """A failed TLS handshake as a DialError: an alert from the peer is ``tls_alert`` and named
    (``unknown_ca``: the peer refused our certificate), not ``unreachable``; a certificate
    problem on our side is ``identity``; anything else ``unreachable``."""
    why = _tls_reason(e)
    alert = tls_alert(e)
    if alert is not None:
        return DialError("tls_alert", f"{what}: TLS handshake failed: {alert_message(alert, why)}")
    reason = "identity" if "CERTIFICATE" in why.upper() else "unreachable"
    return DialError(reason, f"{what}: TLS handshake failed: {why}")


def _remember(leaf: bytes | None) -> None:
    if leaf:
        with contextlib.suppress(ValueError, TypeError):
            remember_key(x509.load_der_x509_certificate(leaf).public_key())


# ------------------------------------------------------------------------------ dialer
async def dial_tls(req: DialRequest) -> Stream:
    """TCP + TLS to the endpoint; the peer must prove an expected identity."""
    gw = req.gateway
    dest = req.destination
    expected = dest.identities or expected_identities_for(dest.name)
    if not expected:
        raise DialError("identity", f"{dest.name}: no identity to expect: the name is not a "
                        "mesh name (<id>.m, <id>.h.<domain>) and discovery gave none")
    ident = gw.identity
    ident.renew_if_needed()
    ctx = gw.stash.get(_CLIENT_CTX, None)
    if ctx is None:
        ctx = gw.stash[_CLIENT_CTX] = ident.client_ssl_context()
    meta = StreamMeta(protocol="tls")
    loop = asyncio.get_running_loop()
    sni = None if is_ip(dest.name) else dest.name
    stream = TlsStream(meta)
    host = (await gw.screen_addresses(req))[0] if req.screen else req.host
    try:
        # uvloop returns its SSL protocol as the second item, asyncio ours: use ``stream``
        transport, _ = await loop.create_connection(
            lambda: stream, host, req.target_port, ssl=ctx,
            server_hostname=sni or "", ssl_handshake_timeout=req.timeout,
        )
    except ssl.SSLError as e:
        err = tls_dial_error(f"{dest.name}: {req.endpoint}", e)
        if err.reason == "identity":
            count_identity_failure(gw, "tls", "dial")
        raise err from None
    sslobj = transport.get_extra_info("ssl_object")
    leaf, chain = peer_certificates(sslobj)
    try:
        peer = ident.verify_peer(leaf, expected, f"{dest.name} at {req.endpoint}", chain)
    except DialError as e:
        count_identity_failure(gw, "tls", "dial")
        log.warning("identity_mismatch protocol=tls direction=dial target=%s endpoint=%s "
                    "error=%r", dest.name, req.endpoint, str(e))
        stream.abort()
        raise
    _remember(leaf)
    meta.peer_id = peer
    meta.sni = sni
    meta.alpn = sslobj.selected_alpn_protocol()
    return stream


# ------------------------------------------------------------------------------ listener
_LISTENER_KEYS = {"require_client_cert", "alpn", "peers"}


def check_listener_options(options: Mapping[str, Any], path: str) -> None:
    for k, v in options.items():
        p = f"{path}.{k}"
        if k not in _LISTENER_KEYS:
            continue  # core rejects keys no protocol of the listener declared (option_keys)
        if k == "require_client_cert" and not isinstance(v, bool):
            raise ConfigError(p, f"{v!r} is not true or false")
        if k in ("alpn", "peers") and (
            not isinstance(v, list) or not all(isinstance(x, str) for x in v)
        ):
            raise ConfigError(p, f"{v!r} is not a list of strings")
    for i, v in enumerate(options.get("peers", [])):
        parse_identity(v, f"{path}.peers[{i}]")


_sni_seen: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _on_sni(sslobj: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
    if name:
        _sni_seen[sslobj] = name[:253]


def _bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for ``host:port`` (every address a name resolves to)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for fam, typ, proto, _, addr in infos:
            if (fam, addr) in seen:
                continue
            seen.add((fam, addr))
            s = socket.socket(fam, typ, proto)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(addr)
            s.listen(4096)
            s.setblocking(False)
    except OSError:
        for s in socks:
            s.close()
        raise
    return socks


class TlsListener:
    """A running ``tls`` listener (:class:`~ugate_core.types.RunningListener`).

    It accepts sockets itself and hands each, before a byte is read, to
    ``loop.connect_accepted_socket(ssl=...)``: the loop's own TLS (asyncio's or uvloop's)
    does the handshake, and a failed handshake comes back here to be logged and counted.
    (``start_tls`` on an accepted transport would race: uvloop starts reading right after
    ``connection_made`` even if the protocol paused, so the ClientHello could be lost.)
    """

    #: protocol name on metrics, logs and ``meta.protocol``; subclasses (HBONE) set their own
    protocol = "tls"
    #: whether the listener forwards every connection to ``target``
    needs_target = True

    def __init__(self, cfg: ListenerConfig, gw: GatewayAPI) -> None:
        if self.needs_target and not cfg.target:
            raise ConfigError(f"{cfg.path}.target", "missing: the tls listener forwards to a "
                              "fixed 'host:port'")
        self.cfg = cfg
        self.gw = gw
        self.socks: list[socket.socket] = []
        self._accepting: list[asyncio.Task[None]] = []
        #: ``max_connections``, counted like every listener's (:mod:`ugate_core.listeners`)
        self.admission = gw.admission(cfg.name)
        opts = cfg.options
        self.peers: tuple[ExpectedIdentity, ...] = tuple(
            parse_identity(v, f"{cfg.path}.peers[{i}]")
            for i, v in enumerate(opts.get("peers", []))
        )
        self.ssl_ctx = gw.identity.server_ssl_context(
            list(opts.get("alpn", [])) or None,
            require_client_cert=bool(opts.get("require_client_cert", False)) or bool(self.peers),
        )
        self.ssl_ctx.sni_callback = _on_sni

    async def start(self) -> None:
        cfg = self.cfg
        try:
            self.socks = _bind(cfg.host, cfg.port)
        except OSError as e:
            raise ConfigError(f"{cfg.path}.listen", f"cannot listen on {cfg.listen!r}: "
                              f"{e.strerror or e}") from None
        loop = asyncio.get_running_loop()
        self._accepting = [loop.create_task(self._accept(s)) for s in self.socks]
        log.info("listening listener=%s address=%s protocols=%s target=%s", cfg.name,
                 ",".join(f"{h}:{p}" for h, p in self.addresses()), self.protocol,
                 cfg.target if self.needs_target else "-")

    def addresses(self) -> list[tuple[str, int]]:
        return [s.getsockname()[:2] for s in self.socks if s.fileno() >= 0]

    async def aclose(self) -> None:
        for t in self._accepting:
            t.cancel()
        await asyncio.gather(*self._accepting, return_exceptions=True)
        for s in self.socks:
            s.close()

    async def _accept(self, lsock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _addr = await loop.sock_accept(lsock)
            except OSError as e:  # EMFILE, ECONNABORTED...: back off a little
                log.warning("accept_failed listener=%s error=%r", self.cfg.name, str(e))
                await asyncio.sleep(0.1)
                continue
            self.accepted(conn)

    @property
    def active(self) -> int:
        """Connections open now (admitted, socket not yet closed)."""
        return self.admission.active

    def accepted(self, conn: socket.socket) -> None:
        if not self.admission.admit():
            conn.close()
            return
        self.gw.spawn(self.handle(conn))

    async def handle(self, conn: socket.socket) -> None:
        gw, name = self.gw, self.cfg.name
        meta = StreamMeta(protocol=self.protocol, listener=name)
        with contextlib.suppress(OSError):
            peer = conn.getpeername()
            meta.remote = (str(peer[0]), int(peer[1]))
        gw.metrics.tally(gw.metrics.connections, name, self.protocol).n += 1
        # counts until its socket closes; before the handshake succeeded, until then
        stream = _AcceptedTls(meta, self.admission)
        tls: TlsStream | None = None
        try:
            with gw.guard(name, meta):
                tls = await self._handshake(conn, meta, stream)
                await self.serve_tls(tls, meta)
        except asyncio.CancelledError:
            if tls is not None:
                tls.abort()
            raise
        finally:
            if tls is None:
                conn.close()
                stream.release()  # no transport: connection_lost will not come
            elif not tls.is_closing() and not tls.relaying:
                tls.close()

    async def serve_tls(self, tls: TlsStream, meta: StreamMeta) -> None:
        """What runs on a connection once its handshake succeeded: forward to ``target``.
        Subclasses override it (HBONE serves HTTP/2 CONNECT here)."""
        await self.gw.forward(tls, self.cfg.target, route=True)

    async def _handshake(self, conn: socket.socket, meta: StreamMeta, tls: TlsStream
                         ) -> TlsStream:
        gw = self.gw
        gw.identity.renew_if_needed()  # reloads self.ssl_ctx in place when due
        loop = asyncio.get_running_loop()
        timeout = gw.config.gateway.handshake_timeout
        tls.linger = 0  # the server side closes when its target is done
        try:
            # uvloop returns its SSL protocol as the second item, asyncio ours: use ``tls``
            transport, _ = await loop.connect_accepted_socket(
                lambda: tls, conn, ssl=self.ssl_ctx, ssl_handshake_timeout=timeout
            )
        except (ssl.SSLError, ConnectionError, OSError) as e:
            why = _tls_reason(e)
            if "longer than" in why:
                raise ProtocolError(f"TLS handshake not finished within {timeout:g}s",
                                    "handshake_timeout") from None
            if "CERTIFICATE" in why.upper():
                count_identity_failure(gw, self.protocol, "accept")
            alert = tls_alert(e)
            if alert is not None:  # the client refused us (our certificate, say): name it
                why = alert_message(alert, why)
            elif "VERIFY_FAILED" in why.upper():
                why += (" (the client certificate chains to neither the public mesh anchor nor "
                        "a configured trust bundle)")
            raise ProtocolError(f"TLS handshake failed: {why}", "tls_handshake") from None
        sslobj = transport.get_extra_info("ssl_object")
        meta.sni = _sni_seen.pop(sslobj, None)
        meta.alpn = sslobj.selected_alpn_protocol()
        leaf, chain = peer_certificates(sslobj)
        if leaf is None:
            return tls
        try:
            meta.peer_id = (gw.identity.verify_peer(leaf, self.peers, "client", chain)
                            if self.peers else leaf_id(leaf))
        except (DialError, ValueError, TypeError) as e:
            count_identity_failure(gw, "tls", "accept")
            tls.abort()
            raise AuthError(f"client identity not allowed: {e}", "identity") from None
        spiffe = verified_spiffe(leaf, chain, gw.identity.trust_roots)
        if spiffe:
            meta.extra["spiffe"] = spiffe
        _remember(leaf)
        return tls


class _AcceptedTls(TlsStream):
    """A connection a :class:`TlsListener` accepted: it counts towards ``max_connections``
    until its socket closes (the handler may hand it to a relay and end before)."""

    def __init__(self, meta: StreamMeta, admission: Admission) -> None:
        super().__init__(meta)
        self._admission: Admission | None = admission

    def release(self) -> None:
        adm = self._admission
        if adm is not None:
            self._admission = None
            adm.release()

    def connection_lost(self, exc: Exception | None) -> None:
        self.release()
        super().connection_lost(exc)


async def start_tls_listener(cfg: ListenerConfig, gw: GatewayAPI) -> RunningListener:
    ln = TlsListener(cfg, gw)
    await ln.start()
    return ln


def _check_all(options: Mapping[str, Any], path: str) -> None:
    check_listener_options(options, path)
    tls_front.check_options(options, path)


def listener_type() -> ListenerType:
    """``tls``: on its own port (``protocols = ["tls"]``) terminate and forward to ``target``;
    on a shared port, the TLS front (:mod:`ugate_core.tls_front`): SNI passthrough or
    termination, then ALPN dispatch."""
    return ListenerType(
        name="tls",
        start=start_tls_listener,
        sniff=tls_front.sniff,
        serve=tls_front.serve,
        relays=False,
        check_options=_check_all,
        option_keys=frozenset(_LISTENER_KEYS) | tls_front.OPTION_KEYS,
        description="TLS: terminate with the workload certificate and forward (own port), or "
        "route by SNI and dispatch by ALPN (shared port)",
    )


def dialer_type() -> DialerType:
    return DialerType(
        "tls", dial_tls,
        "TLS with the workload certificate; the server must prove the expected identity "
        "(<id>.m names, TLSA/K8s/xDS identities)",
        verifies=frozenset(IDENTITY_KINDS), secure=True,
    )
