"""The ``hbone`` and ``hbonec`` dialers: CONNECT ``name:port`` through a peer gateway or ztunnel.

``Destination(protocol="hbone", endpoints=(Endpoint("10.0.0.7", 15008),))`` means: open an
HTTP/2 CONNECT stream to ``<destination name>:<requested port>`` on that peer. Streams to one
peer share HTTP/2 connections: a pool per (address, expected identities) keeps up to
``[hbone] max_connections_per_peer`` connections, fills each up to the peer's
SETTINGS_MAX_CONCURRENT_STREAMS, opens the next one when all are full and queues beyond that;
a dropped or GOAWAY'd connection is replaced on the next dial.

mTLS (``hbone``): we present the workload certificate (TLS 1.3, ALPN h2) and the peer must
prove ``destination.identities``, or what a mesh name says (``<id>.m`` →
:func:`ugate_core.ids.expected_identities_for`), or — with ``[hbone] trust_domain`` — a SPIFFE
ID of that trust domain signed by ``[hbone] ca_bundle``. A mismatch is
``DialError("identity", "... expected X, presented Y")``, logged and counted in
``ugate_identity_failures_total{protocol="hbone",direction="dial"}``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field

from ugate_core import (
    DialError,
    DialRequest,
    ExpectedIdentity,
    GatewayAPI,
    StashKey,
    Stream,
    StreamMeta,
    TcpStream,
    TlsStream,
    count_identity_failure,
    expected_identities_for,
    is_ip,
    peer_certificates,
    tls_dial_error,
    verify_peer,
)

from .authority import PASSED_HEADERS, format_authority
from .h2stream import H2Stream, Header
from .listener import check_spiffe, presented, roots_of
from .session import H2Session
from .settings import HboneSettings, settings_of

log = logging.getLogger("ugate.hbone")

#: the HBONE port, used when an endpoint names no port
HBONE_PORT = 15008
_RETRIES = 3


@dataclass(frozen=True)
class PeerKey:
    tls: bool
    host: str
    port: int
    expected: tuple[ExpectedIdentity, ...]
    sni: str


@dataclass
class _Peer:
    sessions: list[H2Session] = field(default_factory=list)
    connecting: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: connection attempts so far, and the last one's error (waiters fail with it)
    attempts: int = 0
    failed: DialError | None = None


def reason_for_status(status: int | None) -> str:
    """DialError reason for a CONNECT refused with ``status``."""
    if status in (401, 403, 407):
        return "denied"
    if status == 400:
        return "bad_address"
    if status == 404:
        return "no_route"
    if status in (502, 503, 504):
        return "unreachable"
    return "refused"


class Pool:
    """HTTP/2 connections of one gateway to its HBONE peers."""

    def __init__(self, gw: GatewayAPI) -> None:
        self.gw = gw
        self.peers: dict[PeerKey, _Peer] = {}
        self._client_ctx: ssl.SSLContext | None = None
        self.connections_opened = 0

    # ------------------------------------------------------------------ public
    async def dial(self, req: DialRequest, *, tls: bool) -> Stream:
        dest = req.destination
        st = settings_of(self.gw)
        host = req.endpoint.host
        port = req.endpoint.port or HBONE_PORT
        expected: tuple[ExpectedIdentity, ...] = ()
        if tls:
            expected = self._expected(req, st)
        sni = "" if is_ip(host) else host
        key = PeerKey(tls, host, port, expected, sni)
        authority = format_authority(dest.name, req.port)
        headers: list[Header] = [(b":method", b"CONNECT"), (b":authority", authority.encode())]
        src = req.source
        if src is not None:
            for name in PASSED_HEADERS:
                v = src.extra.get(name)
                if isinstance(v, str) and v:
                    headers.append((name.encode(), v.encode("latin-1", "replace")))
        protocol = "hbone" if tls else "hbonec"
        for attempt in range(_RETRIES):
            sess = await self._session(key, req, st)
            tm = sess.transport.meta
            meta = StreamMeta(protocol=protocol, local=tm.local, remote=tm.remote, sni=tm.sni,
                              alpn=tm.alpn, peer_id=tm.peer_id, target=authority
                              ).copy_extra(tm)
            try:
                s = sess.open_stream(headers, meta)
            except ConnectionRefusedError:
                continue
            assert s.response is not None
            try:
                await s.response
            except ConnectionRefusedError as e:  # GOAWAY before the peer saw it: retry
                log.info("hbone_retry target=%s peer=%s:%d attempt=%d error=%r", authority, host,
                         port, attempt + 1, str(e))
                continue
            except ConnectionError as e:
                raise DialError("unreachable", f"{dest.name}: HBONE peer {req.endpoint}: "
                                f"CONNECT {authority} failed: {e}") from None
            except asyncio.CancelledError:
                s.abort()
                raise
            status = s.status
            if status is not None and 200 <= status < 300:
                s.established = True
                return s
            s.abort()
            raise DialError(reason_for_status(status), f"{dest.name}: HBONE peer "
                            f"{req.endpoint} answered {status} to CONNECT {authority}")
        raise DialError("unreachable", f"{dest.name}: HBONE peer {req.endpoint} refused "
                        f"CONNECT {authority} {_RETRIES} times (GOAWAY)")

    def close(self) -> None:
        """GOAWAY every connection: running tunnels finish, no new ones start."""
        for p in self.peers.values():
            for sess in p.sessions:
                sess.goaway()
        self.peers.clear()

    # ------------------------------------------------------------------ internals
    def _expected(self, req: DialRequest, st: HboneSettings) -> tuple[ExpectedIdentity, ...]:
        dest = req.destination
        exp = (dest.identities or expected_identities_for(dest.name)
               or expected_identities_for(req.endpoint.host))
        if exp:
            return tuple(exp)
        if st.trust_domain:
            return (ExpectedIdentity("ca", st.ca_pem),)
        raise DialError("identity", f"{dest.name}: no identity to expect from HBONE peer "
                        f"{req.endpoint}: the name is not a mesh name (<id>.m), discovery gave "
                        "none and [hbone] trust_domain is not set")

    async def _session(self, key: PeerKey, req: DialRequest, st: HboneSettings) -> H2Session:
        """A connection to the peer with room for one more stream (connects or waits)."""
        peer = self.peers.get(key)
        if peer is None:
            peer = self.peers[key] = _Peer()
        while True:
            peer.sessions = [s for s in peer.sessions if s.usable]
            best: H2Session | None = None
            room = 0
            for s in peer.sessions:
                c = s.capacity()
                if c > room:
                    best, room = s, c
            if best is not None:
                return best
            if not peer.connecting and len(peer.sessions) < st.max_connections_per_peer:
                peer.connecting += 1
                peer.attempts += 1
                try:
                    sess = await self._connect(key, req, st, peer)
                except DialError as e:
                    peer.failed = e
                    raise
                except OSError as e:
                    peer.failed = DialError(
                        "refused" if isinstance(e, ConnectionRefusedError) else "unreachable",
                        f"{req.destination.name}: HBONE peer {key.host}:{key.port}: "
                        f"{e.strerror or e}")
                    raise peer.failed from None
                finally:
                    peer.connecting -= 1
                    peer.wake.set()
                peer.failed = None
                peer.sessions.append(sess)
                continue
            seen = peer.attempts
            peer.wake.clear()
            await peer.wake.wait()
            if peer.attempts == seen + 1 and peer.failed is not None and not peer.connecting:
                raise peer.failed  # the connection we waited for failed

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = self._client_ctx
        if ctx is None:
            ctx = self.gw.identity.client_ssl_context(["h2"])
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            self._client_ctx = ctx
        return ctx

    async def _connect(self, key: PeerKey, req: DialRequest, st: HboneSettings,
                       peer: _Peer) -> H2Session:
        gw = self.gw
        dest = req.destination
        where = f"{dest.name}: HBONE peer {key.host}:{key.port}"
        loop = asyncio.get_running_loop()
        meta = StreamMeta(protocol="hbone" if key.tls else "hbonec")
        transport: Stream
        if key.tls:
            gw.identity.renew_if_needed()
            tls = TlsStream(meta)
            try:
                t, _ = await loop.create_connection(
                    lambda: tls, key.host, key.port, ssl=self._ssl_context(),
                    server_hostname=key.sni, ssl_handshake_timeout=req.timeout,
                )
            except ssl.SSLError as e:
                err = tls_dial_error(where, e)  # an alert from the peer: tls_alert, named
                if err.reason == "identity":
                    count_identity_failure(gw, "hbone", "dial")
                raise err from None
            sslobj = t.get_extra_info("ssl_object")
            leaf, chain = peer_certificates(sslobj)
            try:
                meta.peer_id = verify_peer(leaf, key.expected, where, chain=chain,
                                           trust_roots=roots_of(gw, st))
                assert leaf is not None
                spiffe = check_spiffe(leaf, chain, gw, st, where, required=any(
                    e.kind == "ca" and e.value == st.ca_pem for e in key.expected))
            except DialError as e:
                count_identity_failure(gw, "hbone", "dial")
                msg = f"{e} (certificate URI SANs: {presented(leaf) if leaf else '-'})"
                log.warning("identity_mismatch protocol=hbone direction=dial target=%s peer=%s:%d "
                            "error=%r", dest.name, key.host, key.port, msg)
                tls.abort()
                raise DialError("identity", msg) from None
            if spiffe:
                meta.extra["spiffe"] = spiffe
            meta.alpn = sslobj.selected_alpn_protocol()
            meta.sni = key.sni or None
            if meta.alpn != "h2":
                tls.abort()
                raise DialError("refused", f"{where}: the peer did not accept ALPN h2 "
                                f"(negotiated {meta.alpn!r})")
            transport = tls
        else:
            tcp = TcpStream(meta)
            await loop.create_connection(lambda: tcp, key.host, key.port)
            transport = tcp
        sess = H2Session(transport, st, client=True,
                         name=f"{meta.protocol}->{key.host}:{key.port}",
                         on_change=peer.wake.set)
        sess.start()
        try:
            async with asyncio.timeout(req.timeout):
                await sess.remote_settings
        except (TimeoutError, ConnectionError) as e:
            sess.close(ConnectionAbortedError("no SETTINGS"))
            raise DialError("unreachable", f"{where}: no HTTP/2 SETTINGS from the peer "
                            f"({e or 'timeout'})") from None
        except asyncio.CancelledError:
            sess.close(ConnectionAbortedError("dial cancelled"))
            raise
        self.connections_opened += 1
        log.info("hbone_connected peer=%s:%d protocol=%s peer_id=%s max_streams=%d", key.host,
                 key.port, meta.protocol, meta.peer_id or "-",
                 sess.peer_max_streams)
        return sess


_POOL = StashKey[Pool]("hbone.pool")


def pool_of(gw: GatewayAPI) -> Pool:
    """The gateway's HBONE client pool, made on first use."""
    p = gw.stash.get(_POOL, None)
    if p is None:
        p = gw.stash[_POOL] = Pool(gw)
    return p


def close_pool(gw: GatewayAPI) -> None:
    p = gw.stash.pop(_POOL, None)
    if p is not None:
        p.close()


async def dial_hbone(req: DialRequest) -> Stream:
    """HTTP/2 CONNECT over mTLS through the endpoint (a peer gateway or ztunnel)."""
    return await pool_of(req.gateway).dial(req, tls=True)


async def dial_hbonec(req: DialRequest) -> Stream:
    """HTTP/2 CONNECT over plaintext h2c through the endpoint (trusted networks only)."""
    return await pool_of(req.gateway).dial(req, tls=False)




__all__ = ["H2Stream", "Pool", "dial_hbone", "dial_hbonec", "pool_of", "reason_for_status"]
