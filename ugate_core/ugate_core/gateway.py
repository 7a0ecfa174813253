"""The gateway itself: lifecycle (start, serve, graceful shutdown), dial, policy and relay
bookkeeping.

Plugin loading lives in :mod:`ugate_core.registry`, accepting connections in
:mod:`ugate_core.listeners`; what plugins may use of a gateway is
:class:`ugate_core.GatewayAPI`, which :class:`Gateway` implements.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from . import plugins as _plugins
from . import registry as _registry
from .config import Config, ListenerConfig, is_loopback, load_default
from .deadline import Deadline
from .errors import ConfigError, DialError, PluginError, UgateError
from .listeners import Admission, Guard, Listener, peer_str
from .malloc import tune_malloc
from .metrics import Metrics, Tally
from .policy import Policy, Verdict, local_proxy, protected_ip, protected_name
from .ratelog import RateLog
from .records import StreamRecord
from .relay import RelayStats, start_relay
from .roundtrip import HttpRequest, HttpResponse, RoundTripper
from .router import Router, is_ip, split_address
from .stash import Stash
from .stream import Stream, StreamMeta
from .tls import tls_dial_error
from .tokens import TokenKey, load_trusted_keys, verify_token
from .types import (
    Destination,
    DialerType,
    DialRequest,
    Discovery,
    ListenerType,
    RunningListener,
)

if TYPE_CHECKING:
    from .identity import Identity

log = logging.getLogger("ugate")


def _is_local_ip(host: str) -> bool:
    """Whether ``host`` is an address of this machine: binding to it succeeds."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.bind((host.split("%", 1)[0], 0))
        return True
    except OSError:
        return False


def default_state_dir() -> Path:
    env = os.environ.get("UGATE_STATE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return Path(xdg) / "ugate"


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard limit (many relayed connections)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
    return soft


class _RelayTallies:
    """A listener's relay counters, looked up once: streams active, bytes up and down, and
    streams by how they ended."""

    __slots__ = ("active", "down", "ends", "up")

    def __init__(self, m: Metrics, listener: str) -> None:
        self.active = m.tally(m.streams_active, listener)
        self.up = m.tally(m.bytes, listener, "up")
        self.down = m.tally(m.bytes, listener, "down")
        self.ends: dict[str, Tally] = {}


class Gateway:
    """One ugate instance. ``async with Gateway(config) as gw:`` starts and stops it."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        state_dir: str | os.PathLike[str] | None = None,
        pm: pluggy.PluginManager | None = None,
    ) -> None:
        self.config = config if config is not None else load_default()
        if state_dir is not None:
            self.state_dir = Path(state_dir)
        elif self.config.gateway.state_dir:
            self.state_dir = Path(self.config.gateway.state_dir).expanduser()
        else:
            self.state_dir = default_state_dir()
        self.metrics = Metrics()
        g = self.config.gateway
        #: refusal log lines at a bounded rate per (listener, reason): :meth:`reject`,
        #: :meth:`log_refusal`
        self.refusal_log = RateLog(log, g.reject_log_burst, g.reject_log_window)
        self.pm = pm if pm is not None else _plugins.create_manager()
        self._pm_given = pm is not None
        self.plugins: list[_plugins.PluginInfo] = []
        self.listener_types: dict[str, ListenerType] = {}
        self.dialer_types: dict[str, DialerType] = {}
        self.discoveries: list[Discovery] = []
        self.router: Router | None = None
        self._identity: Identity | None = None
        self._token_keys: dict[str, TokenKey] | None = None
        self.listeners: dict[str, Listener] = {}
        self.running: dict[str, RunningListener] = {}
        self.streams: dict[int, StreamRecord] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        #: set (and dropped) when the last relayed stream ended: :meth:`drained`
        self._drained: asyncio.Event | None = None
        #: per-gateway state of plugins (:class:`~ugate_core.Stash`)
        self.stash = Stash()
        #: one bound method shared by every StreamRecord (not one per relayed connection:
        #: ~60 bytes each on the idle-connection budget)
        self._on_relay_end = self._relay_ended
        #: every listener's ``max_connections`` counter (closed on shutdown)
        self._admissions: list[Admission] = []
        self._stopping = False
        self._started = False
        self._shutdown_task: asyncio.Task[None] | None = None
        self._stop_requested = False  # stop() while start() was still running
        self._round_tripper: RoundTripper | None = None
        self._stopped: asyncio.Event | None = None
        self.ready = False
        self._admin: Any = None
        #: the built-in authorization policy: the config's ``[[rules]]``
        self.policy = Policy(self.config.rules)
        self._listener_cfgs = {lc.name: lc for lc in self.config.listeners}
        self._own_ips: dict[str, bool] = {}
        self._own_ports: frozenset[int] | None = None
        #: per listener: the tallies every relayed stream touches (no label lookup each)
        self._relay_tallies: dict[str, _RelayTallies] = {}
        #: per dialer: its ``ugate_dials{result="ok"}`` tally
        self._dials_ok: dict[str, Tally] = {}

    # ------------------------------------------------------------------------- set-up
    def load(self) -> None:
        """Load plugins and collect their types (no sockets). Idempotent."""
        if self.plugins:
            return
        self.plugins = _registry.load(self.pm, self.config, self.metrics, given=self._pm_given)
        hook = self.pm.hook
        self.listener_types = _registry.collect(hook.ugate_listener_types, self, "listener type")
        self.dialer_types = _registry.collect(hook.ugate_dialer_types, self, "dialer type")
        discoveries: list[Discovery] = []
        for _plugin, lst in _registry.results(hook.ugate_discovery, self):
            for d in lst or []:
                discoveries.append(d)
        self.discoveries = discoveries
        self.router = Router(self.config, discoveries, self.metrics)

    @property
    def identity(self) -> Identity:
        """This workload's identity, loaded on first use through the ``ugate_identity`` hook
        (core's default: the key file in the state directory, created on first use)."""
        if self._identity is None:
            self.load()
            src = self.pm.hook.ugate_identity(gateway=self)
            if src is None:
                raise PluginError("no plugin provides an identity (ugate_identity hook)")
            self._identity = src.load(self)
        return self._identity

    @identity.setter
    def identity(self, value: Identity) -> None:
        self._identity = value

    # ---------------------------------------------------------------------- tokens
    @property
    def token_keys(self) -> dict[str, TokenKey]:
        """``[tokens] trusted_keys`` by key id, read once (``check`` reads them first)."""
        if self._token_keys is None:
            self._token_keys = load_trusted_keys(self.config.tokens)
        return self._token_keys

    @property
    def token_audience(self) -> str:
        """What tokens must name as ``aud`` here: ``[tokens] audience`` or our mesh ID."""
        return self.config.tokens.audience or self.identity.id

    def verify_token(self, token: str, now: float | None = None) -> str:
        """The subject of a token signed by a trusted key for this gateway, else
        ``AuthError`` (:mod:`ugate_core.tokens`)."""
        t = self.config.tokens
        return verify_token(token, self.token_keys, self.token_audience, t.max_lifetime, now)

    def _types_for(self, lc: ListenerConfig) -> list[ListenerType]:
        return _registry.types_for(lc, self.listener_types)

    def check(self) -> None:
        """Validate the config against the loaded plugins (``ugate config check``)."""
        self.load()
        _registry.check_listeners(self.config, self.listener_types, self.policy,
                                  bool(self.pm.hook.ugate_authorize.get_hookimpls()))
        _registry.check_sections(self.pm, self, self.config, self.plugins)
        self.pm.hook.ugate_identity(gateway=self)  # validates [identity]; creates no key
        _ = self.token_keys  # [tokens] trusted_keys can be read and are mesh keys
        from .admin import check as check_admin

        check_admin(self.config.admin)  # the token file can be read
        _registry.check_hosts(self.config, self.dialer_types)

    def call_hook(self, name: str, **kwargs: Any) -> list[Any]:
        caller = getattr(self.pm.hook, name)
        out = []
        for impl in reversed(caller.get_hookimpls()):
            args = {"gateway": self, **kwargs}
            res = impl.function(*[args[a] for a in impl.argnames])
            if res is not None:
                out.append(res)
        return out

    # ------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._stopped = asyncio.Event()
        raise_nofile_limit()
        self.check()
        if self.config.gateway.tune_malloc:
            tune_malloc()
        if self._identity is None and self.pm.hook.ugate_identity(gateway=self) is not None:
            _ = self.identity  # create or load the key before listening: a bad key fails here
        try:
            for lc in self.config.listeners:
                types = self._types_for(lc)
                # a protocol that owns its socket runs alone on a port named for it; a shared
                # port ("*") always sniffs, even when one installed protocol can
                dedicated = len(types) == 1 and lc.protocols != ("*",)
                if dedicated and types[0].start is not None:
                    self.running[lc.name] = await types[0].start(lc, self)
                    continue
                types = [t for t in types if t.serve is not None]
                ln = Listener(self, lc, types)
                if not types:
                    log.warning("listener=%s no loaded protocol can share a port: %s",
                                lc.name, self._why_no_protocols())
                try:
                    ln.server = await asyncio.get_running_loop().create_server(
                        ln.make_protocol, lc.host, lc.port, backlog=4096, reuse_address=True
                    )
                except OSError as e:
                    raise ConfigError(f"{lc.path}.listen", f"cannot listen on {lc.listen!r}: "
                                      f"{os.strerror(e.errno) if e.errno else e}") from None
                self.listeners[lc.name] = ln
                addrs = ln.addresses()
                if len(addrs) == 1 and addrs[0][0] not in ("0.0.0.0", "::"):
                    ln.local = (str(addrs[0][0]), int(addrs[0][1]))
                log.info("listening listener=%s address=%s protocols=%s", lc.name,
                         ",".join(f"{h}:{p}" for h, p in ln.addresses()),
                         ",".join(t.name for t in types) or "-")
            if self.config.admin.listen:
                from .admin import AdminServer

                self._admin = AdminServer(self)
                await self._admin.start(self.config.admin.listen)
            for res in self.pm.hook.ugate_startup(gateway=self):
                if isinstance(res, Awaitable):
                    await res
        except BaseException:
            await self.shutdown(0)
            raise
        names = [p.name for p in self.plugins if p.loaded and not p.builtin]
        if not names:
            log.warning("only the built-in tcp and tls protocols work: %s",
                        self._why_no_protocols())
        self.ready = True
        if self._stop_requested:
            self.stop()

    def _why_no_protocols(self) -> str:
        """Why no plugin gives protocols: none installed, filtered out, or failed to load."""
        return _registry.why_no_protocols(self.config, self.plugins)

    def addresses(self, listener: str) -> list[tuple[str, int]]:
        """Where ``listener`` is bound (read back a port 0)."""
        if listener in self.listeners:
            return self.listeners[listener].addresses()
        if listener in self.running:
            return self.running[listener].addresses()
        if listener == "admin" and self._admin is not None:
            return list(self._admin.addresses())
        raise KeyError(listener)

    def port(self, listener: str) -> int:
        return self.addresses(listener)[0][1]

    async def shutdown(self, drain_timeout: float | None = None) -> None:
        """Stop accepting, let streams finish within ``drain_timeout``, then close them."""
        if self._stopping:
            return
        self._stopping = True
        for adm in self._admissions:
            adm.closed = True
        self.ready = False
        timeout = self.config.gateway.drain_timeout if drain_timeout is None else drain_timeout
        for ln in self.listeners.values():
            if ln.server is not None:
                ln.server.close()
        # live streams first: plugins' shutdown hooks may close pools those streams use
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending = {t for t in self._tasks if not t.done()}
        if pending or self.streams:
            log.info("draining streams=%d handlers=%d deadline=%.1fs", len(self.streams),
                     len(pending), timeout)
        if pending:
            if timeout > 0:
                await asyncio.wait(pending, timeout=timeout)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        # relays started with start_relay run without a task: wait for them on their own
        if self.streams:
            left = deadline - loop.time()
            if left > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await self.drained()
            for rec in list(self.streams.values()):
                if rec.relay is not None:
                    rec.relay.cancel()
        for rl in self.running.values():
            with contextlib.suppress(Exception):
                await rl.aclose()
        for res in self.pm.hook.ugate_shutdown(gateway=self):
            if isinstance(res, Awaitable):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(res, max(timeout, 1.0))
        if self._admin is not None:
            await self._admin.aclose()
        for ln in self.listeners.values():
            if ln.server is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ln.server.wait_closed(), 1)
        self.refusal_log.flush()
        if self._stopped is not None:
            self._stopped.set()
        log.info("stopped")

    def stop(self) -> None:
        """Ask ``serve()`` to shut down (safe from a signal handler, also while starting)."""
        if self._started and not self.ready and not self._stopping:
            self._stop_requested = True  # start() stops once it finished
            return
        # not in self._tasks: shutdown drains those and must not wait for itself
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.get_running_loop().create_task(self.shutdown())

    async def serve(self, *, signals: bool = True,
                    on_ready: Callable[[], None] | None = None) -> None:
        """Start and run until SIGTERM/SIGINT (or :meth:`stop`), then shut down gracefully.
        ``on_ready()`` is called once the gateway started (``ugate run``: ``gc.freeze``)."""
        loop = asyncio.get_running_loop()
        if signals:  # before start: a SIGTERM while starting must not kill the process
            for s in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(s, self.stop)
        try:
            await self.start()
            if on_ready is not None:
                on_ready()
            assert self._stopped is not None
            await self._stopped.wait()
        finally:
            if signals:
                for s in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(s)

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    @property
    def stopping(self) -> bool:
        """Whether :meth:`shutdown` began: listeners admit no more connections."""
        return self._stopping

    def spawn(
        self, coro: Any, done: Callable[[asyncio.Task[Any]], None] | None = None
    ) -> asyncio.Task[Any]:
        t = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        if done is not None:
            t.add_done_callback(done)
        return t

    def admission(self, listener: str) -> Admission:
        """A ``max_connections`` counter for a listener that accepts its own connections
        (:class:`~ugate_core.tls.TlsListener`): the same rule as the gateway's own ports."""
        adm = Admission(self, listener)
        adm.closed = self._stopping
        self._admissions.append(adm)
        return adm

    def guard(self, listener: str, meta: StreamMeta) -> contextlib.AbstractContextManager[None]:
        """Handle what a connection's protocol raises, the same way for every listener:
        ``ProtocolError``/``AuthError`` → counted refusal with its reason; ``DialError`` → a
        ``dial_failed`` line (the protocol answered the client already); ``TimeoutError`` →
        ``handshake_timeout``; a closed client → ``client_closed``; anything else →
        ``internal`` with the traceback. Cancellation passes through."""
        return Guard(self, listener, meta)

    # ------------------------------------------------------------------------- policy
    def reject(self, listener: str, reason: str, detail: str = "",
               meta: StreamMeta | None = None) -> None:
        """Count one refusal, and log it at a bounded rate (``[gateway] reject_log_*``:
        the first of a listener and reason in a window, then one line summing up the rest)."""
        self.metrics.reject(listener, reason)
        self.refusal_log.log((listener, reason), f"rejected listener={listener} reason={reason}",
                             logging.INFO, "rejected listener=%s reason=%s client=%s detail=%r",
                             listener, reason, peer_str(meta) if meta else "-", detail)

    def log_refusal(self, listener: str, reason: str, msg: str, *args: object,
                    level: int = logging.INFO) -> None:
        """Log a refusal counted elsewhere (a failed or denied dial, a connection beyond
        ``max_connections``) at the same bounded rate as :meth:`reject`: ``msg % args``, keyed
        by ``listener``, ``reason`` and ``msg`` (its first word names the event)."""
        self.refusal_log.log((listener, reason, msg), msg.split(" ", 1)[0] + f" listener="
                             f"{listener} reason={reason}", level, msg, *args)

    def decide(self, source: StreamMeta, dest: Destination, port: int | None = None
               ) -> Verdict:
        """May ``source`` reach ``dest`` on ``port``? The ``ugate_authorize`` hook first, then
        the built-in policy (:mod:`ugate_core.policy`); either way a client that is not local
        never reaches a protected address (loopback, link-local, metadata, this gateway's own
        listeners and admin endpoint) unless a pattern names it without a wildcard."""
        cfg = self._listener_cfgs.get(source.listener)
        if cfg is None:
            # a client's stream that names no listener of the config (a plugin forgot to set
            # it, or made one up): not local. The embedding program's own dials pass no
            # ``source`` at all and are not judged here
            loopback: bool | None = False
        else:
            # a client arriving from elsewhere through a tunnel (an upstream's reverse
            # forward) into a loopback listener is not local
            r = source.remote
            loopback = cfg.loopback and (r is None or is_loopback(r[0]))
        allow = cfg.allow_targets if cfg is not None else ()
        local = local_proxy(loopback, allow)
        # a local proxy's clients reach everything: no address of the destination is looked at
        ips = () if local else [ep.host for ep in dest.endpoints if is_ip(ep.host)]
        hook = self.pm.hook.ugate_authorize
        # skip pluggy's call machinery on the per-connection path when nobody implements it
        res = hook(gateway=self, peer=source, destination=dest) if hook.get_hookimpls() else None
        if res is not None:
            v = Verdict(bool(res), local=local, explicit=local,
                        why="ugate_authorize hook " + ("allowed" if res else "denied"))
        else:
            v = self.policy.decide(source, listener=source.listener, loopback=loopback,
                                   allow=allow, name=dest.name, port=port, ips=ips)
        if not v.allowed or v.local or v.explicit:
            return v
        for h in (dest.name, *ips):
            why = protected_name(h) if h == dest.name else protected_ip(h)
            if why is None and port is not None and is_ip(h) and self.own_address(h, port):
                why = "this gateway's own listener"
            if why is not None:
                return Verdict(False, why=f"{dest.name}" + ("" if port is None else f":{port}")
                               + f" is a {why} address, which a client beyond loopback reaches "
                               f"only when a rule names it without a wildcard ({v.why} does not)")
        return v

    def authorize(self, source: StreamMeta, dest: Destination, port: int | None = None
                  ) -> bool:
        """:meth:`decide`'s answer alone."""
        return self.decide(source, dest, port).allowed

    def admit(self, source: StreamMeta, dest: Destination, port: int | None,
              address: str) -> Verdict:
        """:meth:`decide`, and a refusal counted (``ugate_dial_errors_total{reason="denied"}``)
        and raised as ``DialError("denied")`` whose text says who was refused what, and why;
        the listener answers the client, logs and counts it as its refusal."""
        v = self.decide(source, dest, port)
        if not v.allowed:
            self.metrics.child(self.metrics.dial_errors, "denied").inc()
            raise DialError("denied", f"{address}: not allowed: {v.why}")
        return v

    def own_address(self, host: str, port: int) -> bool:
        """Whether ``host:port`` (an IP literal) is one of this gateway's listeners or its
        admin endpoint: the port is one of ours and the address is this host's."""
        if port not in self._our_ports():
            return False
        known = self._own_ips.get(host)
        if known is None:
            known = self._own_ips[host] = _is_local_ip(host)
        return known

    def _our_ports(self) -> frozenset[int]:
        """The ports of every listener and of the admin endpoint; kept once the gateway is
        ready (all bound: the set no longer changes), so a screened dial pays no
        ``getsockname`` per address."""
        if self._own_ports is not None:
            return self._own_ports
        ports = {p for ln in self.listeners.values() for _h, p in ln.addresses()}
        for r in self.running.values():
            ports.update(p for _h, p in r.addresses())
        if self._admin is not None:
            ports.update(p for _h, p in self._admin.addresses())
        if self.ready:
            self._own_ports = frozenset(ports)
        return frozenset(ports)

    # ------------------------------------------------------------------------- dial
    def invalidate_route(self, name: str | None = None) -> None:
        """Forget the cached discovery answers for ``name`` (every name: ``None``), e.g. when a
        plugin learned that a name moved (an SSH peer registered a reverse forward)."""
        if self.router is not None:
            self.router.invalidate(name)

    async def resolve(self, address: str) -> tuple[Destination, int]:
        """Discovery only: ``name:port`` → (Destination, port)."""
        self.load()
        host, port = split_address(address)
        router = self.router
        assert router is not None
        # no coroutine for a fresh cache hit
        dest = router.cached(host, port)
        if dest is None:
            dest = await router.resolve(host, port)
        return dest, port

    async def dial(
        self, address: str, *, source: StreamMeta | None = None, timeout: float | None = None,
        screen: bool = False,
    ) -> Stream:
        """Reach ``address`` (``name:port``) through discovery, policy and a dialer.

        ``source`` is the client's metadata when dialing on a client's behalf: it is checked
        by the authorize policy. ``screen``: refuse protected addresses (loopback,
        link-local, metadata, this gateway's own) even without a ``source`` — for routes whose
        name a remote client chose through a configured wildcard. Raises :class:`DialError`
        with a ``reason``.
        """
        try:
            # resolve(), with no coroutine for a fresh cache hit (most dials)
            router = self.router
            if router is None:
                self.load()
                router = self.router
                assert router is not None
            host, port = split_address(address)
            dest = router.cached(host, port)
            if dest is None:
                dest = await router.resolve(host, port)
        except DialError as e:
            self.metrics.child(self.metrics.dial_errors, e.reason).inc()
            raise
        if source is not None:
            source.target = address
            v = self.admit(source, dest, port, address)  # counts and raises a refusal itself
            screen = screen or not (v.local or v.explicit)
        try:
            return await self.dial_destination(dest, port, source=source, timeout=timeout,
                                               screen=screen)
        except DialError as e:
            self.metrics.child(self.metrics.dial_errors, e.reason).inc()
            raise

    async def dial_destination(
        self, dest: Destination, port: int, *, source: StreamMeta | None = None,
        timeout: float | None = None, screen: bool = False,
    ) -> Stream:
        """Dial ``dest`` (discovery and policy done). ``screen``: the dialers refuse protected
        addresses that names resolve to (:meth:`screen_addresses`)."""
        dialer = self.dialer_types.get(dest.protocol)
        if dialer is None:
            raise DialError("no_dialer", f"{dest.name}: protocol {dest.protocol!r} has no "
                            "installed dialer")
        if dest.identities and not any(e.kind in dialer.verifies for e in dest.identities):
            # the dialer would connect without checking anyone: an expected identity is
            # never silently ignored
            kinds = ", ".join(sorted({e.kind for e in dest.identities}))
            raise DialError("identity", f"{dest.name}: protocol {dest.protocol!r} cannot "
                            f"prove the expected identity ({kinds}); use tls, hbone or ssh")
        t = self.config.gateway.connect_timeout if timeout is None else timeout
        last: DialError | None = None
        for ep in dest.endpoints:
            req = DialRequest(self, dest, ep, port, t, source, screen)
            try:
                # asyncio.timeout(t) without its coroutines (not wait_for: no task per dial)
                with Deadline(t):
                    s = await dialer.dial(req)
            except TimeoutError:
                last = DialError("timeout", f"{dest.name}: {ep} did not answer within {t:g}s")
            except DialError as e:
                last = e
            except ssl.SSLError as e:  # an OSError: a TLS alert is not "unreachable"
                last = tls_dial_error(f"{dest.name}: {ep}", e)
            except OSError as e:
                last = DialError("refused" if isinstance(e, ConnectionRefusedError)
                                 else "unreachable", f"{dest.name}: {ep}: {e.strerror or e}")
            else:
                ok = self._dials_ok.get(dialer.name)
                if ok is None:
                    ok = self._dials_ok[dialer.name] = self.metrics.tally(
                        self.metrics.dials, dialer.name, "ok")
                ok.n += 1
                if s.meta.target is None:
                    s.meta.target = f"{dest.name}:{req.target_port}"
                return s
            self.metrics.tally(self.metrics.dials, dialer.name, last.reason).n += 1
        assert last is not None
        raise last

    async def screen_addresses(self, req: DialRequest) -> list[str]:
        """The addresses a dialer may connect to for ``req``: its host resolved, less the
        protected ones when ``req.screen`` (a client beyond loopback whose rule used a
        wildcard: ``evil.example`` resolving to 127.0.0.1 must not reach this host).
        Raises ``DialError("denied")`` when nothing is left."""
        host, port = req.host, req.target_port
        if is_ip(host):
            addrs = [host]
        else:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as e:
                raise DialError("unreachable", f"{req.destination.name}: {host}: "
                                f"{e.strerror or e}") from None
            addrs = list(dict.fromkeys(str(i[4][0]) for i in infos))
        if not req.screen:
            return addrs
        ok = [a for a in addrs if protected_ip(a) is None and not self.own_address(a, port)]
        if not ok:
            why = (protected_ip(addrs[0]) or "this gateway's own") if addrs else "no"
            raise DialError("denied", f"{req.destination.name}:{port} resolves to "
                            f"{', '.join(addrs)}: a {why} address, which a client beyond "
                            "loopback reaches only when a rule names it without a wildcard")
        return ok

    def start_relay(self, client: Stream, upstream: Stream, *,
                    then: Callable[[StreamRecord], None] | None = None) -> StreamRecord:
        """Relay ``client`` ⇄ ``upstream`` on transport callbacks and return at once.

        The gateway owns both streams from here: it closes them, counts the bytes, calls the
        ``stream_closed`` hooks and logs when the relay ends, then calls ``then(record)``;
        ``/streams`` shows it meanwhile and shutdown drains it. A handler that calls this can
        return: no task has to wait for the life of the connection (an idle relayed connection
        then costs only its objects).
        """
        listener = client.meta.listener or "-"
        rec = StreamRecord(listener, client.meta, upstream.meta, on_end=self._on_relay_end,
                           then=then)
        self.streams[client.meta.id] = rec
        t = self._relay_tallies.get(listener)
        if t is None:
            t = self._relay_tallies[listener] = _RelayTallies(self.metrics, listener)
        t.active.n += 1
        hooks = self.pm.hook
        if hooks.ugate_stream_opened.get_hookimpls():
            hooks.ugate_stream_opened(gateway=self, record=rec)
        idle = self.config.gateway.idle_timeout or None
        rec.relay = start_relay(client, upstream, idle_timeout=idle, stats=rec.stats,
                                on_done=rec._ended)
        return rec

    def _relay_ended(self, rec: StreamRecord) -> None:
        self.streams.pop(rec.client.id, None)
        listener = rec.listener
        t = self._relay_tallies[listener]  # made by start_relay
        t.active.n -= 1
        st = rec.stats
        up, down, end = st.up, st.down, st.end or "cancelled"
        t.up.n += up
        t.down.n += down
        te = t.ends.get(end)
        if te is None:
            te = t.ends[end] = self.metrics.tally(self.metrics.streams, listener, end)
        te.n += 1
        hooks = self.pm.hook
        if hooks.ugate_stream_closed.get_hookimpls():
            hooks.ugate_stream_closed(gateway=self, record=rec)
        if log.isEnabledFor(logging.INFO):  # no formatting per connection when it is off
            log.info("stream_closed listener=%s client=%s target=%s up=%d down=%d end=%s "
                     "age=%.3f", listener, peer_str(rec.client), rec.client.target, up, down,
                     st.end, time.monotonic() - rec.started)
        rec.relay = None
        then, rec.then = rec.then, None
        if then is not None:
            then(rec)
        if self._drained is not None and not self.streams:
            self._drained.set()
            self._drained = None

    async def drained(self) -> None:
        """Return once no relayed stream is left: at once when there is none, else when the
        last one ended (a stream started meanwhile is waited for too). For plugins that must
        act after the streams riding on their connections ended (SSH closes its connections
        after the gateway's drain)."""
        while self.streams:
            if self._drained is None:
                self._drained = asyncio.Event()
            await self._drained.wait()

    async def relay(self, client: Stream, upstream: Stream) -> RelayStats:
        """Relay ``client`` ⇄ ``upstream`` with the configured timeouts and wait until it
        ended; visible on /streams. Cancelling the caller ends the relay (``cancelled``)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        def ended(_rec: StreamRecord) -> None:
            if not fut.done():  # cancelled when the caller was
                fut.set_result(None)

        # ``then`` may run inside start_relay already (a relay that ended while starting)
        rec = self.start_relay(client, upstream, then=ended)
        try:
            await fut
        except asyncio.CancelledError:
            if rec.relay is not None:
                rec.relay.cancel()
            raise
        return rec.stats

    async def round_trip(self, request: HttpRequest) -> HttpResponse:
        """Send an HTTP request through routing, policy and pooled upstream connections.

        Provided by the plugin implementing ``ugate_round_tripper`` (``ugate-http``).
        """
        if self._round_tripper is None:
            self.load()
            self._round_tripper = self.pm.hook.ugate_round_tripper(gateway=self)
            if self._round_tripper is None:
                raise PluginError("no installed plugin carries HTTP round trips "
                                  "(ugate_round_tripper hook): pip install ugate-http")
        return await self._round_tripper.round_trip(request)

    async def forward(self, client: Stream, address: str, *, wait: bool = True,
                      route: bool = False) -> RelayStats:
        """Dial ``address`` for ``client`` and relay: the whole job of a simple proxy.

        ``address`` is the client's choice, judged by the policy for ``client.meta``; with
        ``route=True`` it is the operator's (a listener's fixed ``target``): no client rule
        applies, as to any configured route. With ``wait=False`` it returns once the relay
        started (:meth:`start_relay`); the returned stats are live until ``end`` is set.
        """
        if route:
            client.meta.target = address
            up = await self.dial(address)
        else:
            up = await self.dial(address, source=client.meta)
        if wait:
            return await self.relay(client, up)
        return self.start_relay(client, up).stats


@contextlib.asynccontextmanager
async def running(config: Config, **kw: Any) -> AsyncIterator[Gateway]:
    gw = Gateway(config, **kw)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.shutdown(1.0)


__all__ = ["Gateway", "StreamRecord", "UgateError", "running"]


if TYPE_CHECKING:
    from .api import GatewayAPI

    def _implements_api(gw: Gateway) -> GatewayAPI:
        return gw  # mypy --strict (make lint) fails here when Gateway drifts from GatewayAPI
