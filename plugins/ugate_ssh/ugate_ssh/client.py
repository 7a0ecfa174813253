"""The ``ssh`` dialer and ``[ssh] upstreams``: this gateway as an SSH client.

One SSH connection per peer (endpoint, user, expected identity) carries many streams as
``direct-tcpip`` channels. Connections are made lazily, reused while alive, kept alive with
keepalive requests, and made again on the next dial after a drop. The peer's host key must prove
the expected identity: the destination's identities, else the mesh ID in the endpoint's name
(``<id>.m``); with neither, the dial is refused rather than trusting any key.

The transport under an SSH connection comes from :meth:`Gateway.dial`, so a peer may itself be
reachable only through another tunnel (``<id>.m`` names via an upstream's reverse forward).

Upstreams ("stay connected"): the gateway keeps a connection to each upstream gateway and asks
it for remote forwards, so it can be reached with no inbound port: the upstream routes
``<this-id>.m:PORT`` back over the connection, where ``PORT`` is served as configured (by
default port 22 runs this gateway's own SSH server, so peers can ``ssh -J`` through it).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncssh

from ugate_core import (
    ConfigError,
    Destination,
    DialError,
    DialRequest,
    Endpoint,
    ExpectedIdentity,
    ListenerContext,
    Stream,
    StreamMeta,
    expected_identities_for,
    format_hostport,
    parse_hostport,
    parse_identity,
)

from . import algorithms
from .adapters import ChannelStream, StreamTransport
from .algorithms import algorithms_mode
from .keys import mesh_id, spki_sha256

if TYPE_CHECKING:
    from .state import SshState

log = logging.getLogger("ugate.ssh")

#: how many SSH connections deep a transport may nest (SSH over a stream from another dial)
MAX_DEPTH = 4
_depth: contextvars.ContextVar[int] = contextvars.ContextVar("ugate_ssh_depth", default=0)

SECTION_KEYS = {"user", "key", "keepalive_interval", "upstreams", "algorithms"}
UPSTREAM_KEYS = {"address", "identity", "user", "forward"}


# ------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Upstream:
    address: str
    host: str
    port: int
    identities: tuple[ExpectedIdentity, ...]
    user: str
    #: forwarded port → ``host:port`` to dial, or ``@listener`` to serve with that listener
    forward: Mapping[int, str]


@dataclass(frozen=True)
class ClientSettings:
    user: str = "ugate"
    key: str = ""
    keepalive_interval: float = 30.0
    upstreams: tuple[Upstream, ...] = ()
    #: :mod:`.algorithms` mode: ``hardened`` or ``legacy``
    algorithms: str = "hardened"


def parse_section(sec: Mapping[str, Any], listeners: set[str]) -> ClientSettings:
    """Validate the ``[ssh]`` table; errors name the key path and the value."""
    for k in sec:
        if k not in SECTION_KEYS:
            raise ConfigError(f"ssh.{k}", f"unknown key (known: {', '.join(sorted(SECTION_KEYS))})")
    user = sec.get("user", "ugate")
    if not isinstance(user, str) or not user:
        raise ConfigError("ssh.user", f"{user!r} is not a user name")
    key = sec.get("key", "")
    if not isinstance(key, str):
        raise ConfigError("ssh.key", f"{key!r} is not a file name")
    ka = sec.get("keepalive_interval", 30.0)
    if isinstance(ka, bool) or not isinstance(ka, int | float) or ka < 0:
        raise ConfigError("ssh.keepalive_interval", f"{ka!r} is not a number >= 0")
    ups = sec.get("upstreams", [])
    if not isinstance(ups, list):
        raise ConfigError("ssh.upstreams", f"{ups!r} is not a list of tables")
    out = []
    for i, u in enumerate(ups):
        p = f"ssh.upstreams[{i}]"
        if isinstance(u, str):
            u = {"address": u}
        if not isinstance(u, Mapping):
            raise ConfigError(p, f"{u!r} is not a table (address, identity, user, forward)")
        for k in u:
            if k not in UPSTREAM_KEYS:
                raise ConfigError(f"{p}.{k}", f"unknown key (known: "
                                  f"{', '.join(sorted(UPSTREAM_KEYS))})")
        addr = u.get("address", "")
        host, port = parse_hostport(addr, f"{p}.address")
        idv = u.get("identity", [])
        idv = [idv] if isinstance(idv, str) else idv
        if not isinstance(idv, list):
            raise ConfigError(f"{p}.identity", f"{idv!r} is not a list of KIND:VALUE")
        idents = tuple(parse_identity(v, f"{p}.identity[{j}]") for j, v in enumerate(idv))
        if not idents and not expected_identities_for(host):
            raise ConfigError(f"{p}.identity", f"missing: which key must {addr!r} prove? "
                              "(e.g. identity = \"id:<ID from 'ugate id' there>\")")
        fw = u.get("forward", {"22": "@ssh"} if "ssh" in listeners else {})
        if not isinstance(fw, Mapping):
            raise ConfigError(f"{p}.forward", f"{fw!r} is not a table of PORT = target")
        forward: dict[int, str] = {}
        for ps, target in fw.items():
            if not str(ps).isdigit() or not 1 <= int(ps) <= 65535:
                raise ConfigError(f"{p}.forward.{ps}", f"{ps!r} is not a port (1-65535)")
            if not isinstance(target, str):
                raise ConfigError(f"{p}.forward.{ps}", f"{target!r} is not 'host:port' or "
                                  "'@listener'")
            if target.startswith("@"):
                if target[1:] not in listeners:
                    raise ConfigError(f"{p}.forward.{ps}", f"{target!r}: no listener named "
                                      f"{target[1:]!r} (have: {', '.join(sorted(listeners))})")
            else:
                parse_hostport(target, f"{p}.forward.{ps}")
            forward[int(ps)] = target
        uu = u.get("user", user)
        if not isinstance(uu, str) or not uu:
            raise ConfigError(f"{p}.user", f"{uu!r} is not a user name")
        out.append(Upstream(addr, host, port, idents, uu, forward))
    return ClientSettings(user, key, float(ka), tuple(out),
                          algorithms_mode(sec.get("algorithms", "hardened"), "ssh.algorithms"))


# ---------------------------------------------------------------------------- host keys
def expected_for(req_idents: tuple[ExpectedIdentity, ...], *names: str
                 ) -> tuple[ExpectedIdentity, ...]:
    """What the SSH peer must prove: given identities, else the ID in a mesh name."""
    if req_idents:
        return req_idents
    for n in names:
        found = expected_identities_for(n)
        if found:
            return found
    return ()


def key_matches(key: asyncssh.SSHKey, expected: tuple[ExpectedIdentity, ...]) -> bool:
    for e in expected:
        if e.kind == "id" and mesh_id(key) == e.value.upper().rstrip("="):
            return True
        if e.kind == "spki_sha256" and spki_sha256(key) == e.value.lower():
            return True
    return False


class _ClientOwner(asyncssh.SSHClient):
    def __init__(self, expected: tuple[ExpectedIdentity, ...]) -> None:
        self.expected = expected
        self.mismatch = ""

    def validate_host_public_key(self, host: str, addr: str, port: int,
                                 key: asyncssh.SSHKey) -> bool:
        if key_matches(key, self.expected):
            return True
        want = ", ".join(f"{e.kind}:{e.value}" for e in self.expected)
        # the host key as the kinds expected, so both sides read alike
        got = ", ".join(f"spki_sha256:{spki_sha256(key)}" if k == "spki_sha256" else
                        f"id:{mesh_id(key)}" for k in dict.fromkeys(e.kind for e in self.expected))
        self.mismatch = f"host key mismatch: expected {want}, presented {got}"
        return False


class _StreamTunnel:
    """asyncssh ``tunnel`` argument: run the SSH connection over an existing core Stream."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    async def create_connection(self, session_factory: Any, host: str, port: int
                                ) -> tuple[Any, Any]:
        conn = session_factory()
        t = StreamTransport(self.stream, conn)
        t.start()
        return t, conn

    def close(self) -> None:
        self.stream.close()

    async def wait_closed(self) -> None:
        await self.stream.wait_closed()


# ---------------------------------------------------------------------------------- pool
@dataclass(frozen=True)
class PeerKey:
    host: str
    port: int
    user: str
    identities: tuple[ExpectedIdentity, ...]

    def __str__(self) -> str:
        return f"{self.user}@{format_hostport(self.host, self.port)}"


@dataclass(eq=False)
class _Peer:
    conn: asyncssh.SSHClientConnection | None = None
    connecting: asyncio.Future[asyncssh.SSHClientConnection] | None = None
    listeners: list[Any] = field(default_factory=list)


class SshClientPool:
    """SSH client connections of one gateway, one per :class:`PeerKey`."""

    def __init__(self, state: SshState) -> None:
        self.state = state
        self.gateway = state.gateway
        names = {lc.name for lc in self.gateway.config.listeners}
        self.settings = parse_section(self.gateway.config.section("ssh"), names)
        self.peers: dict[PeerKey, _Peer] = {}
        #: streams that arrived through an upstream's reverse forward
        self.tasks: set[asyncio.Task[Any]] = set()
        #: one reconnecting loop per upstream
        self.loops: set[asyncio.Task[Any]] = set()
        self._closing = False

    def key(self) -> asyncssh.SSHKey:
        return self.state.host_key(self.settings.key)

    async def connection(self, pk: PeerKey, timeout: float) -> asyncssh.SSHClientConnection:
        """A live connection to ``pk``: the pooled one, or a new one (single flight)."""
        peer = self.peers.setdefault(pk, _Peer())
        if peer.conn is not None and not peer.conn.is_closed():
            return peer.conn
        if peer.connecting is None:
            fut: asyncio.Future[asyncssh.SSHClientConnection] = \
                asyncio.get_running_loop().create_future()
            peer.connecting = fut
            try:
                conn = await self._connect(pk, timeout)
            except BaseException as e:
                fut.set_exception(e)
                fut.exception()
                raise
            finally:
                peer.connecting = None
            peer.conn = conn
            fut.set_result(conn)
            return conn
        return await asyncio.shield(peer.connecting)

    async def _connect(self, pk: PeerKey, timeout: float) -> asyncssh.SSHClientConnection:
        if not pk.identities:
            raise DialError("identity", f"ssh peer {pk}: no expected identity (give the "
                            "destination an identity, e.g. hosts.NAME.identity = "
                            "[\"id:<ID>\"], or dial an <id>.m name)")
        depth = _depth.get()
        if depth >= MAX_DEPTH:
            raise DialError("unreachable", f"ssh peer {pk}: tunnels nest deeper than "
                            f"{MAX_DEPTH}; is a route pointing at itself?")
        tok = _depth.set(depth + 1)
        try:
            stream = await self._transport(pk.host, pk.port, timeout)
        finally:
            _depth.reset(tok)
        owner = _ClientOwner(pk.identities)
        try:
            conn = await asyncio.wait_for(asyncssh.connect(
                pk.host, pk.port,
                tunnel=_StreamTunnel(stream),
                client_factory=lambda: owner,
                config=[],
                username=pk.user,
                client_keys=[self.key()],
                agent_path=None,
                known_hosts=([], [], []),
                password_auth=False,
                kbdint_auth=False,
                gss_host=None,
                host_based_auth=False,
                keepalive_interval=self.settings.keepalive_interval,
                keepalive_count_max=3,
                client_version="ugate",
                **algorithms.options(self.settings.algorithms, client=True),
            ), timeout)
        except asyncssh.HostKeyNotVerifiable as e:
            stream.abort()
            raise DialError("identity", f"ssh peer {pk}: {owner.mismatch or e}") from None
        except asyncssh.PermissionDenied as e:
            stream.abort()
            raise DialError("denied", f"ssh peer {pk}: authentication as {pk.user!r} with "
                            f"key id={mesh_id(self.key())} refused: {e.reason}") from None
        except TimeoutError:
            stream.abort()
            raise DialError("timeout", f"ssh peer {pk}: no SSH handshake within "
                            f"{timeout:g}s") from None
        except (asyncssh.Error, OSError) as e:
            stream.abort()
            raise DialError("unreachable", f"ssh peer {pk}: {e}") from None
        hk = conn.get_server_host_key()
        log.info("ssh_connected peer=%s peer_id=%s", pk, mesh_id(hk) if hk else "-")
        return conn

    async def _transport(self, host: str, port: int, timeout: float) -> Stream:
        """The byte stream under an SSH connection: whatever the router says reaches
        ``host:port`` (a reverse tunnel, another SSH hop, ...), plain TCP when the route for
        ``host`` is this very SSH hop (a ``hosts`` entry naming the peer itself)."""
        gw = self.gateway
        dest, _ = await gw.resolve(format_hostport(host, port))
        if dest.protocol == "ssh" and any(
            ep.host == host and (ep.port or 22) == port for ep in dest.endpoints
        ):
            dest = Destination(name=host, endpoints=(Endpoint(host, port),), source="ssh")
        try:
            return await gw.dial_destination(dest, port, timeout=timeout)
        except DialError as e:
            gw.metrics.dial_errors.labels(e.reason).inc()
            raise

    async def open(self, pk: PeerKey, host: str, port: int, meta: StreamMeta,
                   timeout: float) -> ChannelStream:
        """A ``direct-tcpip`` channel to ``host:port`` through ``pk`` (one retry on a stale
        connection)."""
        orig = meta.remote or ("", 0)
        for attempt in (1, 2):
            conn = await self.connection(pk, timeout)
            try:
                _, session = await conn.create_connection(
                    lambda: ChannelStream(meta), host, port, orig[0], orig[1])
            except asyncssh.ChannelOpenError as e:
                if conn.is_closed() and attempt == 1:
                    continue  # the pooled connection died under us: one fresh try
                reason = "denied" if e.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED \
                    else "refused"
                raise DialError(reason, f"{format_hostport(host, port)} via ssh peer {pk}: "
                                f"{e.reason}") from None
            except (asyncssh.Error, OSError) as e:
                conn.abort()
                if attempt == 2:
                    raise DialError("unreachable", f"ssh peer {pk}: connection lost: "
                                    f"{e}") from None
                continue
            assert isinstance(session, ChannelStream)
            return session
        raise AssertionError("unreachable")

    async def dial(self, req: DialRequest) -> Stream:
        dest = req.destination
        ep = req.endpoint
        port = ep.port if ep.port is not None else 22
        pk = PeerKey(ep.host, port, self.settings.user,
                     expected_for(dest.identities, ep.host, dest.name))
        src = req.source
        meta = StreamMeta(protocol="ssh", remote=src.remote if src else None,
                          peer_id=None, target=format_hostport(dest.name, req.port))
        stream = await self.open(pk, dest.name, req.port, meta, req.timeout)
        stream.meta.peer_id = pk.identities[0].value if pk.identities[0].kind == "id" else None
        return stream

    # --------------------------------------------------------------------------- upstreams
    def start_upstreams(self) -> None:
        for up in self.settings.upstreams:
            t = asyncio.get_running_loop().create_task(self._upstream(up))
            self.loops.add(t)
            t.add_done_callback(self.loops.discard)

    async def _upstream(self, up: Upstream) -> None:
        gw = self.gateway
        pk = PeerKey(up.host, up.port, up.user, expected_for(up.identities, up.host))
        backoff = 0.5
        while not self._closing:
            try:
                conn = await self.connection(pk, gw.config.gateway.connect_timeout)
                for port, target in up.forward.items():
                    await conn.create_server(self._forward_factory(up, port, target), "", port)
                log.info("ssh_upstream_connected upstream=%s forwards=%s", pk,
                         ",".join(str(p) for p in up.forward) or "-")
                backoff = 0.5
                await conn.wait_closed()
                log.warning("ssh_upstream_lost upstream=%s", pk)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("ssh_upstream_failed upstream=%s error=%r retry_in=%.1fs", pk,
                            str(e), backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    def _forward_factory(self, up: Upstream, port: int, target: str) -> Any:
        def factory(orig_host: str, orig_port: int) -> ChannelStream:
            meta = StreamMeta(protocol="ssh-upstream", listener=f"ssh-upstream:{port}",
                              remote=(orig_host, orig_port), target=target)
            return ChannelStream(meta, on_open=lambda cs: self._spawn(self._inbound(cs, target)))
        return factory

    def _spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def _inbound(self, cs: ChannelStream, target: str) -> None:
        """A connection that arrived through an upstream's reverse forward."""
        gw = self.gateway
        try:
            if target.startswith("@"):
                lc = next(lc for lc in gw.config.listeners if lc.name == target[1:])
                ctx = ListenerContext(gw, lc)
                cs.meta.listener = lc.name
                srv = await self.state.server(ctx)
                await srv.serve(cs, ctx)
            else:
                up = await gw.dial(target)
                await gw.relay(cs, up)
        except DialError as e:
            log.info("dial_failed listener=ssh-upstream target=%s reason=%s error=%r", target,
                     e.reason, str(e))
        except Exception:
            log.exception("ssh_upstream_inbound_error target=%s", target)
        finally:
            if not cs.is_closing():
                cs.abort()

    async def stop_upstreams(self) -> None:
        """No more reconnecting; streams that came in through upstreams keep running."""
        self._closing = True
        for t in list(self.loops):
            t.cancel()
        await asyncio.gather(*self.loops, return_exceptions=True)

    async def aclose(self) -> None:
        await self.stop_upstreams()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for p in self.peers.values():
            if p.conn is not None:
                p.conn.close()
        for p in self.peers.values():
            if p.conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(p.conn.wait_closed(), 1)


def start_upstreams(state: SshState) -> None:
    """Validate ``[ssh]`` and start the upstream connections (if any)."""
    pool = state.pool
    if pool.settings.upstreams:
        pool.start_upstreams()
