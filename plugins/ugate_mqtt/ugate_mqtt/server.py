"""The asyncio side of the mqtt listener: read the CONNECT, authenticate, route, dial, relay.

A refusal is a CONNACK in the client's version (:func:`~ugate_mqtt.codec.refusal`), then a
close; it is counted in ``ugate_mqtt_connects_total{result=<reason>}`` besides core's
rejection and dial-error counters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import zlib

from prometheus_client import Counter

from ugate_core import (
    AuthError,
    Deadline,
    DialError,
    GatewayAPI,
    ListenerContext,
    ProtocolError,
    StashKey,
    Stream,
    StreamClosedError,
    StreamMeta,
    Tally,
)

from .codec import VERSION_NAMES, Connect, ConnectParser, MqttError, encode_connect, refusal
from .options import OPTIONS, MqttOptions, parse_options
from .token import TokenError, looks_like_token, verify

log = logging.getLogger("ugate.mqtt")

_READ = 65536


class MqttState:
    """Per gateway: the connect counter (labels: listener, version, result)."""

    def __init__(self, gateway: GatewayAPI) -> None:
        self.gateway = gateway
        self.connects = Counter(
            "ugate_mqtt_connects", "MQTT CONNECTs by listener, protocol version and result "
            "(ok, or the refusal's reason)", ["listener", "version", "result"],
            registry=gateway.metrics.registry)
        self._tallies: dict[tuple[str, int | None, str], Tally] = {}

    def count(self, listener: str, level: int | None, result: str) -> None:
        key = (listener, level, result)
        t = self._tallies.get(key)
        if t is None:
            t = self._tallies[key] = self.gateway.metrics.tally(
                self.connects, listener, VERSION_NAMES.get(level or 0, "unknown"), result)
        t.n += 1


STATE = StashKey[MqttState]("mqtt.state")


def state(gw: GatewayAPI) -> MqttState:
    return gw.stash.get_or_create(STATE, lambda: MqttState(gw))


def options_of(ctx: ListenerContext) -> MqttOptions:
    per = ctx.gateway.stash.get_or_create(OPTIONS, dict)
    o = per.get(ctx.name)
    if o is None:
        o = per[ctx.name] = parse_options(ctx.options, ctx.config.path)
    return o


class _Listener:
    """What every connection of one mqtt listener needs, looked up once: its name, options,
    the gateway's counters and handshake timeout."""

    __slots__ = ("gateway", "name", "options", "state", "timeout")

    def __init__(self, ctx: ListenerContext) -> None:
        gw = ctx.gateway
        self.gateway = gw
        self.name = ctx.name
        self.options = options_of(ctx)
        self.state = state(gw)
        self.timeout = gw.config.gateway.handshake_timeout


_LISTENERS = StashKey[dict[str, _Listener]]("mqtt.listeners")


def _listener(ctx: ListenerContext) -> _Listener:
    per = ctx.gateway.stash.get_or_create(_LISTENERS, dict)
    name = ctx.config.name
    ls = per.get(name)
    if ls is None:
        ls = per[name] = _Listener(ctx)
    return ls


def route(c: Connect, meta: StreamMeta, o: MqttOptions) -> str | None:
    """The broker address: the first matching route, else ``broker``, else the SNI."""
    for r in o.routes:
        if r.matches(c.client_id, c.username):
            return r.broker
    if o.broker:
        return o.broker
    if meta.sni:
        return f"{meta.sni}:{o.broker_port}"
    return None


def authenticate(c: Connect, meta: StreamMeta, o: MqttOptions) -> bool:
    """Verify a mesh token (user name = mesh ID, password = ES256 JWT) and set
    ``meta.peer_id``; True if one was verified. TokenError when it does not verify, or names
    another ID than the client's TLS certificate."""
    if c.username is None or not looks_like_token(c.password):
        return False
    assert c.password is not None
    ident = verify(c.username, c.password, audience=o.jwt_audience,
                   max_lifetime=o.jwt_max_lifetime)
    if meta.peer_id is not None and meta.peer_id != ident:
        raise TokenError(f"token for {ident} on a TLS connection of {meta.peer_id}")
    meta.peer_id = ident
    return True


def outgoing(c: Connect, o: MqttOptions, token: bool) -> bytes:
    """The CONNECT for the broker: unchanged, or with the credentials stripped or rewritten
    (``auto``: the mesh token is ugate's, the broker never sees it)."""
    mode = o.credentials
    if mode == "forward" or (mode == "auto" and not token):
        return c.raw
    if mode == "rewrite":
        pw = None if o.broker_password is None else o.broker_password.encode()
        return encode_connect(dataclasses.replace(c, username=o.broker_username, password=pw))
    if c.username is None and c.password is None:
        return c.raw
    return encode_connect(dataclasses.replace(c, username=None, password=None))


async def dial(gw: GatewayAPI, address: str, client_id: str, meta: StreamMeta) -> Stream:
    """Discovery and policy for ``address``, then the dialer; several endpoints are tried
    starting at one chosen by the client identifier (sticky sessions), the others after it."""
    errors = gw.metrics.dial_errors
    try:
        dest, port = await gw.resolve(address)
    except DialError as e:
        gw.metrics.child(errors, e.reason).inc()
        raise
    meta.target = address
    v = gw.admit(meta, dest, port, address)  # counts and raises a refusal itself
    eps = dest.endpoints
    if len(eps) > 1 and client_id:
        i = zlib.crc32(client_id.encode()) % len(eps)
        dest = dataclasses.replace(dest, endpoints=eps[i:] + eps[:i])
    try:
        return await gw.dial_destination(dest, port, source=meta,
                                         screen=not (v.local or v.explicit))
    except DialError as e:
        gw.metrics.child(errors, e.reason).inc()
        raise


class Predial:
    """The broker connection opened while the CONNECT arrives (option ``predial``): admitted
    for the client as it is before its CONNECT (its TLS identity, its address), carrying
    nothing until the CONNECT was checked. Used only if the CONNECT changes nothing the
    decision rests on (no token, no route to another broker); else closed unused."""

    def __init__(self, gw: GatewayAPI, address: str, meta: StreamMeta) -> None:
        self.address = address
        self.peer_id = meta.peer_id
        # no client id yet: the first endpoint; stickiness needs the CONNECT (predial off)
        self.task = asyncio.ensure_future(dial(gw, address, "", meta))

    def usable(self, address: str, meta: StreamMeta) -> bool:
        return address == self.address and meta.peer_id == self.peer_id

    def discard(self) -> None:
        t = self.task
        if not t.done():
            t.cancel()
        elif not t.cancelled() and t.exception() is None:
            t.result().close()


def _refuse(stream: Stream, ls: _Listener, level: int, reason: str, text: str) -> None:
    o = ls.options
    ref = o.server_reference if reason == "use_another_server" else ""
    stream.write(refusal(level, reason, reason_string=text, server_reference=ref))
    ls.state.count(ls.name, level, reason)


async def serve(stream: Stream, ctx: ListenerContext) -> None:
    """Serve one MQTT client: CONNECT within the deadline, identity, route, dial, relay."""
    # one coroutine per connection (this runs for each): no helper coroutines or closures
    ls = _listener(ctx)
    gw = ls.gateway
    o = ls.options
    meta = stream.meta
    p = ConnectParser(o.max_connect_size, o.max_client_id)
    pre = Predial(gw, o.broker, meta) if o.predial else None
    try:
        try:
            with Deadline(ls.timeout):  # asyncio.timeout, cheaper
                while True:
                    data = await stream.read(_READ)
                    if not data:
                        raise StreamClosedError("client closed before its CONNECT was whole")
                    c = p.receive_data(data)
                    if c is not None:
                        break
        except MqttError as e:
            stream.write(e.connack)
            ls.state.count(ls.name, p.level, e.reason)
            raise
        except TimeoutError:
            ls.state.count(ls.name, p.level, "timeout")
            raise
        meta.extra["mqtt_client_id"] = c.client_id
        try:
            token = authenticate(c, meta, o)
        except TokenError as e:
            _refuse(stream, ls, c.level, "bad_credentials", "bad user name or password")
            raise AuthError(f"mqtt client {c.client_id[:64]!r}: {e}", "bad_token") from None
        if o.require_identity and meta.peer_id is None:
            _refuse(stream, ls, c.level, "not_authorized", "a mesh identity is required")
            raise AuthError(f"mqtt client {c.client_id[:64]!r} proved no identity (neither a "
                            f"client certificate nor a mesh token); listener {ls.name!r} "
                            "requires one", "identity_required")
        address = route(c, meta, o)
        if address is None:
            reason = "use_another_server" if o.server_reference else "unavailable"
            _refuse(stream, ls, c.level, reason, "no broker for this client")
            raise ProtocolError(f"mqtt client {c.client_id[:64]!r}: no route matches, "
                                f"listener {ls.name!r} has no broker and the client sent no "
                                "SNI", "no_route")
        early = "off"
        try:
            if pre is not None and pre.usable(address, meta):
                early = "used"
                up = await pre.task
            else:
                if pre is not None:
                    early = "discarded"
                    pre.discard()
                up = await dial(gw, address, c.client_id, meta)
        except DialError as e:
            if e.reason == "denied":
                _refuse(stream, ls, c.level, "not_authorized", "not authorized")
            else:
                _refuse(stream, ls, c.level,
                        "use_another_server" if o.server_reference else "unavailable",
                        "broker unavailable")
            raise
        rest = p.leftover()
        up.write(outgoing(c, o, token) + rest if rest else outgoing(c, o, token))
        ls.state.count(ls.name, c.level, "ok")
        if log.isEnabledFor(logging.DEBUG):  # no arguments made per connection when it is off
            log.debug("mqtt_connect listener=%s version=%s client_id=%r peer=%s broker=%s "
                      "predial=%s", ls.name, c.version, c.client_id[:64], meta.peer_id,
                      address, early)
        gw.start_relay(stream, up)
    except BaseException:
        if pre is not None:
            pre.discard()
        raise
