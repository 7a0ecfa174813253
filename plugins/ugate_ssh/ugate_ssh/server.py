"""The ``ssh`` listener: an asyncssh server over a core Stream.

Public-key authentication only (keys, mesh IDs, OpenSSH certificates: :mod:`.auth`). After
authentication a client may open ``direct-tcpip`` channels (``ssh -W``, ``-L``, ``-D``, ``-J``),
dialed through the gateway's router, and ask for ``tcpip-forward`` (``ssh -R``), registered under
its mesh name (:mod:`.reverse`). Shell, exec and subsystem sessions are refused with a message.
Every refusal is logged with a reason and counted on ``ugate_rejections_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncssh

from ugate_core import (
    ConfigError,
    DialError,
    ListenerContext,
    Sniff,
    Stream,
    StreamMeta,
    format_hostport,
)
from ugate_core import options as opt

from . import algorithms
from .adapters import ChannelStream, StreamTransport
from .algorithms import algorithms_mode
from .auth import Accepted, AuthPolicy, Refused, evaluate
from .keys import fqdn_of_id, id_list, load_key_list
from .limits import AUTH_FAIL, AUTH_TIMEOUT, NO_AUTH, SourceLimits, SourceTable, source_of
from .reverse import Forward, VirtualListener, register_name

if TYPE_CHECKING:
    from .state import SshState

log = logging.getLogger("ugate.ssh")

PREFIX = b"SSH-2.0-"
SESSION_REFUSED = ("ugate: shell, exec and subsystem sessions are disabled on this gateway; "
                   "use port forwarding: ssh -N -L/-R/-D, ssh -W or ssh -J")


def sniff(prefix: bytes) -> Sniff:
    """``SSH-2.0-`` → MATCH; a proper prefix of it → NEED_MORE; anything else → NO."""
    n = min(len(prefix), len(PREFIX))
    if prefix[:n] != PREFIX[:n]:
        return Sniff.NO
    return Sniff.MATCH if len(prefix) >= len(PREFIX) else Sniff.NEED_MORE


# ------------------------------------------------------------------------------------ options
OPTION_KEYS = {
    "authorized_keys", "ca_keys", "principals", "allow_ids", "auth_timeout", "max_channels",
    "max_unauthenticated", "remote_forward", "keepalive_interval", "host_key",
    "max_unauthenticated_per_source", "source_prefix_v4", "source_prefix_v6",
    "penalty_auth_fail", "penalty_no_auth", "penalty_auth_timeout", "penalty_min",
    "penalty_max", "penalty_max_sources", "algorithms",
}


@dataclass(frozen=True)
class ServerSettings:
    policy: AuthPolicy = field(default_factory=AuthPolicy)
    #: seconds from connect to successful authentication; ``None``: gateway.handshake_timeout
    auth_timeout: float | None = None
    max_channels: int = 256
    max_unauthenticated: int = 64
    sources: SourceLimits = field(default_factory=SourceLimits)
    remote_forward: bool = True
    keepalive_interval: float = 60.0
    host_key: str = ""
    #: :mod:`.algorithms` mode: ``hardened`` or ``legacy``
    algorithms: str = "hardened"


def _num(o: Mapping[str, Any], k: str, path: str, default: float, lo: float) -> float:
    return opt.number(o, k, path, default, lo=lo, expect=f"a number >= {lo:g}")


def _int(o: Mapping[str, Any], k: str, path: str, default: int, lo: int,
         hi: int | None = None) -> int:
    return opt.integer(o, k, path, default, lo=lo, hi=hi,
                       expect=f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else ""))


def _source_limits(o: Mapping[str, Any], path: str) -> SourceLimits:
    d = SourceLimits()
    return SourceLimits(
        max_per_source=_int(o, "max_unauthenticated_per_source", path, d.max_per_source, 1),
        prefix_v4=_int(o, "source_prefix_v4", path, d.prefix_v4, 0, 32),
        prefix_v6=_int(o, "source_prefix_v6", path, d.prefix_v6, 0, 128),
        penalty_auth_fail=_num(o, "penalty_auth_fail", path, d.penalty_auth_fail, 0),
        penalty_no_auth=_num(o, "penalty_no_auth", path, d.penalty_no_auth, 0),
        penalty_auth_timeout=_num(o, "penalty_auth_timeout", path, d.penalty_auth_timeout, 0),
        penalty_min=_num(o, "penalty_min", path, d.penalty_min, 0.001),
        penalty_max=_num(o, "penalty_max", path, d.penalty_max, 0),
        max_sources=_int(o, "penalty_max_sources", path, d.max_sources, 1),
    )


def parse_options(o: Mapping[str, Any], path: str) -> ServerSettings:
    """Validate an ``ssh`` listener's options; errors name the key and the value.

    Keys of other protocols sharing the port are left alone, but a near-miss of one of ours
    (``authorised_keys``) is an error: a typo there would silently lock everyone out or in.
    """
    for k in o:
        if k not in OPTION_KEYS:
            close = opt.near_miss(k, OPTION_KEYS, cutoff=0.8)
            if close:
                raise ConfigError(f"{path}.{k}", f"unknown key; did you mean {close!r}?")
    keys = load_key_list(o.get("authorized_keys"), f"{path}.authorized_keys")
    cas = load_key_list(o.get("ca_keys"), f"{path}.ca_keys", ca=True)
    principals = opt.strings(o, "principals", path, expect="a list of names")
    rf = opt.boolean(o, "remote_forward", path, True)
    hk = opt.existing_file(o, "host_key", path, must_exist=False)
    at = o.get("auth_timeout")
    return ServerSettings(
        algorithms=algorithms_mode(o.get("algorithms", "hardened"), f"{path}.algorithms"),
        policy=AuthPolicy(
            keys=tuple(e for e in keys if not e.ca),
            cas=tuple(cas) + tuple(e for e in keys if e.ca),
            allow_ids=id_list(o.get("allow_ids"), f"{path}.allow_ids"),
            principals=principals,
        ),
        auth_timeout=None if at is None else _num(o, "auth_timeout", path, 10.0, 0.1),
        max_channels=_int(o, "max_channels", path, 256, 1),
        max_unauthenticated=_int(o, "max_unauthenticated", path, 64, 1),
        sources=_source_limits(o, path),
        remote_forward=rf,
        keepalive_interval=_num(o, "keepalive_interval", path, 60.0, 0),
        host_key=hk,
    )


def check_options(o: Mapping[str, Any], path: str) -> None:
    parse_options(o, path)


def has_auth(o: Mapping[str, Any]) -> bool:
    """SSH always authenticates clients (public keys only): never an open relay."""
    return True


# ------------------------------------------------------------------------------- connection
@dataclass(eq=False)
class _ConnState:
    server: SshServer
    ctx: ListenerContext
    meta: StreamMeta
    auth_done: asyncio.Future[bool]
    pending: Accepted | None = None
    accepted: Accepted | None = None
    refusal: Refused | None = None
    channels: int = 0
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


class _ServerConnection(asyncssh.SSHServerConnection):
    """asyncssh's server connection with ugate's key decision in front of its own checks."""

    ugate: _ConnState

    async def validate_public_key(self, username: str, key_data: bytes, msg: bytes,
                                  signature: bytes) -> bool:
        st = self.ugate
        verdict = evaluate(st.server.settings.policy, username, key_data)
        if isinstance(verdict, Refused):
            st.refusal = verdict
            log.debug("ssh_key_refused listener=%s reason=%s detail=%r", st.ctx.name,
                      verdict.reason, verdict.detail)
            return False
        st.pending = verdict
        try:
            ok = await super().validate_public_key(username, key_data, msg, signature)
        finally:
            st.pending = None
        if ok and msg:
            st.accepted = verdict
        elif not ok:
            st.refusal = Refused(
                reason="auth_bad_signature" if msg else "auth_rejected",
                detail=f"key id={verdict.peer_id} user={username!r}: "
                       + ("signature did not verify" if msg else "key options refused it"),
            )
        return ok


class _Owner(asyncssh.SSHServer):
    """Per-connection callbacks from asyncssh."""

    conn: _ServerConnection

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        assert isinstance(conn, _ServerConnection)
        self.conn = conn

    def connection_lost(self, exc: Exception | None) -> None:
        st = self.conn.ugate
        if not st.auth_done.done():
            st.auth_done.set_result(False)

    def begin_auth(self, username: str) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        p = self.conn.ugate.pending
        return p is not None and p.how != "certificate" and \
            p.key.public_data == key.public_data

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        p = self.conn.ugate.pending
        return p is not None and p.ca is not None and p.ca.public_data == key.public_data

    def auth_completed(self) -> None:
        st = self.conn.ugate
        a = st.accepted
        if a is None:  # cannot happen: only publickey is offered
            self.conn.abort()
            return
        st.meta.peer_id = a.peer_id
        st.meta.user = str(self.conn.get_extra_info("username") or "")
        log.info("ssh_auth listener=%s client=%s user=%s peer_id=%s how=%s", st.ctx.name,
                 _peer(st.meta), st.meta.user, a.peer_id, a.how)
        if not st.auth_done.done():
            st.auth_done.set_result(True)

    # --------------------------------------------------------------------- channels
    def _take_channel(self, what: str) -> None:
        st = self.conn.ugate
        limit = st.server.settings.max_channels
        if st.channels >= limit:
            st.ctx.reject("max_channels", f"{what}: {st.channels} channels open (max_channels="
                          f"{limit})", st.meta)
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_RESOURCE_SHORTAGE, f"ugate: too many channels (max {limit})")
        st.channels += 1

    def session_requested(self) -> bool:
        st = self.conn.ugate
        st.ctx.reject("session_disabled", "shell/exec/subsystem session refused", st.meta)
        raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                                        SESSION_REFUSED)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                             orig_port: int) -> Awaitable[ChannelStream]:
        self._take_channel(f"direct-tcpip {format_hostport(dest_host, dest_port)}")
        return self.conn.ugate.server.open_direct(self.conn, dest_host, dest_port)

    def server_requested(self, listen_host: str, listen_port: int) -> bool | VirtualListener:
        return self.conn.ugate.server.open_forward(self.conn, listen_host, listen_port)

    def unix_connection_requested(self, dest_path: str) -> bool:
        st = self.conn.ugate
        st.ctx.reject("unix_forward_disabled", f"direct-streamlocal {dest_path!r}", st.meta)
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        st = self.conn.ugate
        st.ctx.reject("unix_forward_disabled", f"streamlocal-forward {listen_path!r}", st.meta)
        return False


def _peer(meta: StreamMeta) -> str:
    return format_hostport(*meta.remote) if meta.remote else "-"


# ----------------------------------------------------------------------------------- server
class SshServer:
    """One ``ssh`` listener's settings, asyncssh options and counters."""

    def __init__(self, state: SshState, ctx: ListenerContext, settings: ServerSettings,
                 options: asyncssh.SSHServerConnectionOptions) -> None:
        self.state = state
        self.settings = settings
        self.options = options
        self.name = ctx.name
        self.unauthenticated = 0
        self.sources = SourceTable(settings.sources)
        self.connections: set[_ServerConnection] = set()

    @classmethod
    async def create(cls, state: SshState, ctx: ListenerContext) -> SshServer:
        settings = parse_options(ctx.options, ctx.config.path)
        key = state.host_key(settings.host_key)
        at = settings.auth_timeout or ctx.gateway.config.gateway.handshake_timeout
        options = await asyncssh.SSHServerConnectionOptions.construct(
            server_factory=_Owner,
            server_host_keys=[key],
            public_key_auth=True,
            password_auth=False,
            kbdint_auth=False,
            host_based_auth=False,
            gss_host=None,
            allow_pty=False,
            x11_forwarding=False,
            agent_forwarding=False,
            login_timeout=at + 5,  # backstop: ours below fires first and says why
            keepalive_interval=settings.keepalive_interval,
            server_version="ugate",
            **algorithms.options(settings.algorithms),
        )
        if settings.policy.empty:
            log.warning("ssh_no_clients listener=%s detail=%r", ctx.name,
                        "no authorized_keys, ca_keys or allow_ids: nobody can log in")
        return cls(state, ctx, settings, options)

    async def serve(self, stream: Stream, ctx: ListenerContext) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        source = source_of(stream.meta.remote, s.sources.prefix_v4, s.sources.prefix_v6)
        refused = self.sources.refusal(source, loop.time())
        if refused is None and self.unauthenticated >= s.max_unauthenticated:
            refused = ("max_unauthenticated", f"{self.unauthenticated} connections are "
                       f"authenticating (max_unauthenticated={s.max_unauthenticated})")
        if refused is not None:
            ctx.reject(*refused, stream.meta)
            stream.abort()
            return
        stream.meta.protocol = "ssh"
        conn = _ServerConnection(loop, self.options)
        st = _ConnState(self, ctx, stream.meta, loop.create_future())
        conn.ugate = st
        self.unauthenticated += 1
        self.sources.opened(source)
        counted = True
        outcome: str | None = None  # how an unauthenticated connection ended, for penalties
        self.connections.add(conn)
        try:
            StreamTransport(stream, conn).start()
            timeout = s.auth_timeout or ctx.gateway.config.gateway.handshake_timeout
            try:
                ok = await asyncio.wait_for(asyncio.shield(st.auth_done), timeout)
            except TimeoutError:
                detail = "no successful authentication within " f"{timeout:g}s"
                if st.refusal is not None:
                    detail += f" (last refusal: {st.refusal.reason}: {st.refusal.detail})"
                ctx.reject("auth_timeout", detail, stream.meta)
                outcome = AUTH_TIMEOUT
                conn.abort()
                return
            self.unauthenticated -= 1
            self.sources.closed(source)
            counted = False
            if not ok:
                if st.refusal is not None:
                    outcome = AUTH_FAIL
                    ctx.reject(st.refusal.reason, st.refusal.detail, stream.meta)
                else:
                    outcome = NO_AUTH
                    ctx.reject("auth_none", "client left before offering an acceptable key",
                               stream.meta)
                return
            await conn.wait_closed()
        except asyncio.CancelledError:
            conn.abort()
            raise
        finally:
            if counted:
                self.unauthenticated -= 1
                self.sources.closed(source)
            if outcome is not None:
                self._penalize(source, outcome, loop.time())
            self.connections.discard(conn)
            for t in list(st.tasks):
                t.cancel()
            if not conn.is_closed():
                conn.abort()

    def _penalize(self, source: str, outcome: str, now: float) -> None:
        secs = self.sources.penalize(source, outcome, now)
        if secs:
            log.info("ssh_source_penalty listener=%s source=%s seconds=%.0f last=%s",
                     self.name, source, secs, outcome)

    # ---------------------------------------------------------------- direct-tcpip
    async def open_direct(self, conn: _ServerConnection, host: str, port: int) -> ChannelStream:
        st = conn.ugate
        target = format_hostport(host, port)
        meta = StreamMeta(protocol="ssh", listener=st.ctx.name, local=st.meta.local,
                          remote=st.meta.remote, peer_id=st.meta.peer_id, user=st.meta.user,
                          target=target)
        gw = st.ctx.gateway
        try:
            up = await gw.dial(target, source=meta)
        except DialError as e:
            st.channels -= 1
            gw.log_refusal(st.ctx.name, e.reason, "dial_failed listener=%s client=%s "
                           "peer_id=%s target=%s reason=%s error=%r", st.ctx.name,
                           _peer(st.meta), meta.peer_id, target, e.reason, str(e))
            code = (asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED if e.reason == "denied"
                    else asyncssh.OPEN_CONNECT_FAILED)
            raise asyncssh.ChannelOpenError(code, f"ugate: {e}") from None
        except BaseException:
            st.channels -= 1
            raise
        if conn.is_closed():
            st.channels -= 1
            up.abort()
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "connection closed")

        def opened(cs: ChannelStream) -> None:
            # no task per channel: the relay runs on callbacks and frees the channel slot
            st.ctx.gateway.start_relay(cs, up, then=lambda _rec: _channel_closed(st))

        return ChannelStream(meta, on_open=opened)

    # ---------------------------------------------------------------- tcpip-forward
    def open_forward(self, conn: _ServerConnection, listen_host: str,
                     port: int) -> bool | VirtualListener:
        st = conn.ugate
        if not self.settings.remote_forward:
            st.ctx.reject("remote_forward_disabled", f"tcpip-forward {listen_host}:{port}",
                          st.meta)
            return False
        pid = st.meta.peer_id
        if pid is None:
            return False
        reg = self.state.reverse
        fqdn = fqdn_of_id(pid)
        if port == 0:
            port = reg.dynamic_port(fqdn)
        fwd = Forward(conn, pid, fqdn, listen_host, port, st.ctx.name)
        reg.add(fwd)
        register_name(st.ctx.gateway, fqdn)
        log.info("ssh_forward listener=%s client=%s peer_id=%s name=%s port=%d", st.ctx.name,
                 _peer(st.meta), pid, fqdn, port)
        return VirtualListener(reg, fwd)

    async def aclose(self) -> None:
        for c in list(self.connections):
            c.close()
        for c in list(self.connections):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.wait_closed(), 1)


def _channel_closed(st: _ConnState) -> None:
    st.channels -= 1
