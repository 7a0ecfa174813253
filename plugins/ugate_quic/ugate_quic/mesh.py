"""``ugate/1``: mesh streams over QUIC, both the listener side and the ``quic`` dialer.

Every client-opened bidirectional stream carries one mesh stream: core's preamble
(``host:port`` → status, :mod:`ugate_core.preamble_io`), then payload both ways; QUIC FIN is
half-close, RESET_STREAM / STOP_SENDING a reset.

**Who the client is.** aioquic's TLS server asks for no client certificate (qh3's cannot at
all; aioquic has only a private, test-only switch), so the client
proves its key on its first unidirectional stream (:func:`auth_message`): its certificate and
a signature, by the workload key, over ``"ugate/1 client auth\\0" + SHA-256(server
certificate DER)``. The signature is bound to the certificate the server presented in *this*
handshake, so a server the client talked to cannot replay it to another (a
relaying impostor presents its own certificate, not the victim's). An empty stream (FIN only)
says "no key". Streams wait for that answer (at most ``[gateway] handshake_timeout``), then
go through policy as ``id:<mesh ID>`` or as an unauthenticated client.

**Who the server is.** The dialer checks the server's certificate against the destination's
expected identities (mesh ID from an ``<id>.m`` name, ``[hosts] identity``, TLSA from
discovery) exactly like core's ``tls`` dialer, before any stream is opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import ssl
from dataclasses import dataclass, field

from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import QuicEvent, StreamDataReceived
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ugate_core import (
    DialError,
    DialRequest,
    ExpectedIdentity,
    GatewayAPI,
    PreambleError,
    StashKey,
    Stream,
    StreamClosedError,
    StreamMeta,
    count_identity_failure,
    expected_identities_for,
    format_hostport,
    id_of_public_key,
    open_preamble,
    serve_preamble,
    verified_spiffe,
)

from .alpn import AlpnHandler, QuicConn
from .endpoint import (
    ERR_REFUSED,
    MAX_DATAGRAM,
    MIN_DATAGRAM,
    Batch,
    QuicPeer,
    base_configuration,
    check_section,
    grow_socket_buffers,
    is_loopback,
    option,
)
from .lib import new_stream_id, peer_certificates, presented_certificate
from .qstream import RESET_CODE, QuicStream

log = logging.getLogger("ugate.quic")

ALPN = "ugate/1"
_LABEL = b"ugate/1 client auth\x00"
_AUTH_VERSION = 1
_MAX_AUTH = 16 * 1024  # a certificate chain and a signature: a few KiB


# ------------------------------------------------------------------------------ client auth
def _signed_data(server_cert_der: bytes) -> bytes:
    return _LABEL + hashlib.sha256(server_cert_der).digest()


def auth_message(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | None,
                 cert_der: bytes, server_cert_der: bytes) -> bytes:
    """The client's proof: ``01 | u16 len | certificate DER | u16 len | signature``; empty
    for a client with no key."""
    if key is None:
        return b""
    data = _signed_data(server_cert_der)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        sig = key.sign(data, ec.ECDSA(hashes.SHA256()))
    else:
        sig = key.sign(data)
    return (bytes([_AUTH_VERSION]) + len(cert_der).to_bytes(2, "big") + cert_der
            + len(sig).to_bytes(2, "big") + sig)


class AuthFailed(Exception):
    """The client's proof does not verify; the message says why."""


def check_auth(msg: bytes, server_cert_der: bytes) -> bytes | None:
    """The client's certificate DER if ``msg`` proves its key, ``None`` for "no key"."""
    if not msg:
        return None
    if msg[0] != _AUTH_VERSION or len(msg) < 5:
        raise AuthFailed(f"client auth: unknown version {msg[0]} or truncated")
    n = int.from_bytes(msg[1:3], "big")
    cert_der = msg[3:3 + n]
    rest = msg[3 + n:]
    if len(cert_der) != n or len(rest) < 2 or len(rest) != 2 + int.from_bytes(rest[:2], "big"):
        raise AuthFailed("client auth: truncated message")
    sig = rest[2:]
    try:
        pub = x509.load_der_x509_certificate(cert_der).public_key()
    except Exception as e:  # whatever the library makes of the client's bytes
        # (ValueError, InvalidVersion, UnsupportedAlgorithm for an unknown key OID, found by
        # fuzz_client_auth.py) is the client's failure to prove a key, not the server's
        raise AuthFailed(f"client auth: unusable certificate: {e}") from None
    data = _signed_data(server_cert_der)
    try:
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(sig, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(pub, ed25519.Ed25519PublicKey):
            pub.verify(sig, data)
        else:
            raise AuthFailed(f"client auth: key type {type(pub).__name__} not supported")
    except InvalidSignature:
        raise AuthFailed("client auth: the signature does not verify (not bound to this "
                         "server's certificate, or not by the certificate's key)") from None
    return cert_der


# ------------------------------------------------------------------------------ server side
class MeshServerSession:
    """The ``ugate/1`` side of one accepted connection."""

    def __init__(self, conn: QuicConn) -> None:
        self.conn = conn
        self.ctx = conn.ctx
        self.gw = conn.ctx.gateway
        self.auth: asyncio.Future[StreamMeta] = asyncio.get_running_loop().create_future()
        self._auth_buf = bytearray()
        self._auth_sid: int | None = None
        self._max_streams = int(option(self.ctx, "max_streams"))
        self._server_cert = presented_certificate(conn.quic)

    def quic_event(self, ev: QuicEvent) -> None:
        peer = self.conn
        assert isinstance(peer, QuicPeer)
        if peer.stream_event(ev) or not isinstance(ev, StreamDataReceived):
            return
        sid = ev.stream_id
        if sid % 4 == 2:  # client-initiated unidirectional: the auth stream (the first only)
            if self._auth_sid is None:
                self._auth_sid = sid
            if sid != self._auth_sid or self.auth.done():
                return
            self._auth_buf += ev.data
            if len(self._auth_buf) > _MAX_AUTH:
                self._fail_auth(f"client auth message longer than {_MAX_AUTH} bytes")
            elif ev.end_stream:
                self._finish_auth()
            return
        if sid % 4 != 0 or not peer.accepts_new(sid):
            return  # not a new client stream: late bytes of one that ended are dropped
        if len(peer.streams) >= self._max_streams:  # live streams, relayed or not
            self.ctx.reject("max_streams", f"more than {self._max_streams} streams on one "
                            "QUIC connection", peer.meta)
            with contextlib.suppress(Exception):
                peer.quic.reset_stream(sid, ERR_REFUSED)
                peer.quic.stop_stream(sid, ERR_REFUSED)
            peer.transmit_soon()
            return
        meta = StreamMeta(protocol="quic", listener=self.ctx.name, remote=peer.meta.remote,
                          local=peer.meta.local, alpn=ALPN)
        s = peer.stream(sid, meta)
        s.feed(ev.data, ev.end_stream)
        self.gw.spawn(self._serve(s))

    def _finish_auth(self) -> None:
        meta = StreamMeta()
        try:
            cert_der = check_auth(bytes(self._auth_buf), self._server_cert)
            if cert_der is not None:
                meta.peer_id = id_of_public_key(
                    x509.load_der_x509_certificate(cert_der).public_key())
                spiffe = verified_spiffe(cert_der, (), self.gw.identity.trust_roots)
                if spiffe is not None:
                    meta.extra["spiffe"] = spiffe
        except AuthFailed as e:
            self._fail_auth(str(e))
            return
        self.conn.meta.peer_id = meta.peer_id
        log.debug("quic_auth listener=%s peer=%s", self.ctx.name, meta.peer_id or "-")
        self.auth.set_result(meta)

    def _fail_auth(self, why: str) -> None:
        count_identity_failure(self.gw, "quic", "accept")
        self.ctx.reject("auth", why, self.conn.meta)
        if not self.auth.done():
            self.auth.set_exception(AuthFailed(why))
            self.auth.exception()  # retrieved: streams that wait see it; none may
        self.conn.close(ERR_REFUSED, "client authentication failed")

    async def _serve(self, s: QuicStream) -> None:
        try:
            async with asyncio.timeout(self.gw.config.gateway.handshake_timeout):
                who = await asyncio.shield(self.auth)
        except TimeoutError:
            self.ctx.reject("handshake_timeout", "no client auth stream in time", s.meta)
            s.reset()
            return
        except AuthFailed:
            s.reset()
            return
        s.meta.peer_id = who.peer_id
        s.meta.copy_extra(who)
        with self.gw.guard(self.ctx.name, s.meta):
            await serve_preamble(s, self.ctx)


def open_server_session(conn: QuicConn) -> MeshServerSession:
    return MeshServerSession(conn)


def alpn_handler() -> AlpnHandler:
    return AlpnHandler(ALPN, open_server_session, "mesh streams: preamble per stream",
                       big_datagrams=True)


# ------------------------------------------------------------------------------ dialer
class MeshClientSession:
    """The dialing side: streams it opened; server-opened streams are refused."""

    def __init__(self, conn: QuicConn) -> None:
        self.conn = conn

    def quic_event(self, ev: QuicEvent) -> None:
        peer = self.conn
        assert isinstance(peer, QuicPeer)
        if peer.stream_event(ev) or not isinstance(ev, StreamDataReceived):
            return
        if ev.stream_id % 2 == 1:  # server-initiated: ugate/1 has none
            with contextlib.suppress(Exception):
                peer.quic.stop_stream(ev.stream_id, ERR_REFUSED)
            peer.transmit_soon()


@dataclass
class _Pool:
    peers: dict[tuple[str, int, tuple[ExpectedIdentity, ...]], QuicPeer] = field(
        default_factory=dict)
    locks: dict[tuple[str, int, tuple[ExpectedIdentity, ...]], asyncio.Lock] = field(
        default_factory=dict)


_POOL: StashKey[_Pool] = StashKey()


def pool_of(gw: GatewayAPI) -> _Pool:
    p = gw.stash.get(_POOL, None)
    if p is None:
        p = gw.stash[_POOL] = _Pool()
    return p


def open_stream_id(peer: QuicPeer, unidirectional: bool) -> int:
    """A new locally-initiated stream id."""
    return new_stream_id(peer.quic, unidirectional)


async def _connect(req: DialRequest, host: str, expected: tuple[ExpectedIdentity, ...],
                   sni: str | None) -> QuicPeer:
    gw = req.gateway
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, req.target_port, type=socket.SOCK_DGRAM)
    family, _, _, _, addr = infos[0]
    mds = check_section(gw) or (MAX_DATAGRAM if is_loopback(str(addr[0])) else MIN_DATAGRAM)
    cfg = base_configuration(gw, is_client=True, alpn=[ALPN], max_datagram_size=mds)
    cfg.verify_mode = ssl.CERT_NONE  # the mesh identity is checked below, like core's tls
    cfg.server_name = sni
    handlers = {ALPN: AlpnHandler(ALPN, MeshClientSession)}
    meta = StreamMeta(protocol="quic", remote=(str(addr[0]), int(addr[1])))
    transport, proto = await loop.create_datagram_endpoint(
        lambda: QuicPeer(QuicConnection(configuration=cfg), meta=meta, handlers=handlers),
        local_addr=("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
    grow_socket_buffers(transport)
    proto.batch = Batch(transport)
    peer = proto
    name = f"{req.destination.name} at {req.endpoint}"
    try:
        peer.connect((str(addr[0]), int(addr[1])))
        async with asyncio.timeout(req.timeout):
            await peer.wait_connected()
    except (TimeoutError, ConnectionError) as e:
        peer.close(ERR_REFUSED, "handshake failed")
        peer._transport.close() if peer._transport is not None else None
        why = "timeout" if isinstance(e, TimeoutError) else "unreachable"
        raise DialError(why, f"{name}: QUIC handshake failed: "
                        f"{peer.closed_reason or type(e).__name__}") from None
    leaf, chain = peer_certificates(peer.quic)
    try:
        peer_id = gw.identity.verify_peer(leaf, expected, name, chain)
    except DialError as e:
        count_identity_failure(gw, "quic", "dial")
        log.warning("identity_mismatch protocol=quic direction=dial target=%s endpoint=%s "
                    "error=%r", req.destination.name, req.endpoint, str(e))
        peer.close(ERR_REFUSED, "identity mismatch")
        raise
    meta.peer_id = peer_id
    ident = gw.identity
    sid = open_stream_id(peer, True)
    peer.quic.send_stream_data(sid, auth_message(ident.key, ident.cert_der(), leaf or b""),
                               end_stream=True)
    peer.transmit()
    return peer


async def _peer_for(req: DialRequest) -> QuicPeer:
    dest = req.destination
    expected = tuple(dest.identities or expected_identities_for(dest.name))
    if not expected:
        raise DialError("identity", f"{dest.name}: no identity to expect: the name is not a "
                        "mesh name (<id>.m, <id>.h.<domain>) and discovery gave none")
    host = (await req.gateway.screen_addresses(req))[0] if req.screen else req.host
    key = (host, req.target_port, expected)
    pool = pool_of(req.gateway)
    lock = pool.locks.setdefault(key, asyncio.Lock())
    async with lock:
        peer = pool.peers.get(key)
        if peer is None or peer.closed_reason is not None:
            sni = None if _is_ip(dest.name) else dest.name
            peer = await _connect(req, host, expected, sni)
            pool.peers[key] = peer
        return peer


def _is_ip(name: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in name else socket.AF_INET, name)
    except OSError:
        return False
    return True


_REASON = {400: "bad_address", 401: "denied", 403: "denied", 502: "unreachable",
           503: "no_route", 504: "timeout"}
_WORDS = frozenset({"bad_address", "timeout", "refused", "unreachable", "identity",
                    "insecure", "no_route", "no_dialer", "denied"})


async def dial_quic(req: DialRequest) -> Stream:
    """One mesh stream to ``destination.name:port`` through the peer gateway's ``quic``
    listener, on a pooled, verified connection."""
    peer = await _peer_for(req)
    target = format_hostport(req.destination.name, req.port)
    meta = StreamMeta(protocol="quic", remote=peer.meta.remote, peer_id=peer.meta.peer_id,
                      alpn=ALPN)
    s = peer.stream(open_stream_id(peer, False), meta)
    try:
        st = await open_preamble(s, target, timeout=req.timeout)
    except (TimeoutError, StreamClosedError, PreambleError, ConnectionError) as e:
        s.reset()
        raise DialError("unreachable", f"{target} over quic at {req.endpoint}: "
                        f"{peer.closed_reason or e or type(e).__name__}") from None
    if not st.ok:
        s.close()
        reason = st.reason if st.reason in _WORDS else _REASON.get(st.status, "unreachable")
        raise DialError(reason, f"{target}: the peer answered {st.status} {st.reason}".rstrip())
    return s


async def close_pool(gw: GatewayAPI) -> None:
    pool = gw.stash.get(_POOL, None)
    if pool is None:
        return
    for peer in pool.peers.values():
        with contextlib.suppress(Exception):
            peer.close(0, "gateway shutting down")
        if peer._transport is not None:
            peer._transport.close()
    pool.peers.clear()


__all__ = ["ALPN", "RESET_CODE", "alpn_handler", "auth_message", "check_auth", "close_pool",
           "dial_quic", "pool_of"]
