"""Listener protocols over WebSocket: a path of ``[ws] serve`` (by default ``/mqtt``) makes
each WebSocket opened on it one byte stream handed to an installed listener protocol's
``serve``, as if it had arrived on the listener the WebSocket came in on — with that
listener's options (``broker = ...`` for ``mqtt``) and name (rules naming the listener apply).
Only a listener that serves the protocol itself (``protocols = ["*"]``, or a list naming it:
``["http", "mqtt"]``) serves it over WebSocket; elsewhere the path answers 404
(``not_served``). So a listener's ``protocols`` still bound what it speaks, and the keys the
protocol reads are accepted on it by core's strict config check. (The dedicated ``ws``/``wss``
listeners serve no protocol this way: they cannot share their port with another.)

Which protocols may be served this way: those that serve a byte stream (``ListenerType.serve``)
and relay (``relays = True``). A relaying protocol dials every destination for its client
through core (``dial``/``admit``: discovery, rules, protected addresses), so it authenticates
and authorizes each client itself (MQTT: a mesh token or a client certificate, then the rules)
and core demands rules for it beyond loopback; the browser tokens ugate-ws reads on
destination paths (core's ``[tokens]``) are not read on these paths. A protocol that does not
relay (``tcp``: a fixed target; ``tls``) is refused at start-up, as are ``ws``/``wss``
themselves. The Origin check applies as on every WebSocket.

The subprotocol: a client that offers ``Sec-WebSocket-Protocol`` values must offer the
protocol's name (``mqtt``, what mqtt.js offers; MQTT 3.1 clients' ``mqttv3.1`` too); it is
selected. A client that offers none is served without one. Anything else is refused before the
upgrade (400 ``bad_subprotocol``).

Why the default ``/mqtt`` is declared here and not by ugate-mqtt: core refuses to load a plugin
that implements a hook no loaded plugin specifies, so a hook of ugate-ws implemented by
ugate-mqtt would break ugate-mqtt wherever ugate-ws is not installed or is disabled. The
default is a fact about MQTT's WebSocket clients (their default path), applied only when the
``mqtt`` protocol is installed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ugate_core import ConfigError, GatewayAPI, ListenerType, StashKey

from .settings import DEFAULT_SERVE, SECTION, settings_of

#: protocols that never go over a served path: WebSocket inside WebSocket
_NOT_SERVABLE = frozenset({"ws", "wss"})
#: subprotocol names a protocol's WebSocket clients offer besides its own name: MQTT 3.1
#: clients (mqtt.js and Paho with MQIsdp) offer ``mqttv3.1``
ALSO_OFFERED = {"mqtt": ("mqttv3.1",)}


@dataclass(frozen=True)
class Service:
    """One served path: a WebSocket there carries ``protocol``."""

    path: str
    protocol: str
    listener_type: ListenerType

    @property
    def subprotocols(self) -> tuple[str, ...]:
        """What the server selects when the client offers it."""
        return (self.protocol, *ALSO_OFFERED.get(self.protocol, ()))


def servable(t: ListenerType) -> str:
    """Why listener type ``t`` cannot be served over WebSocket ("" when it can)."""
    if t.name in _NOT_SERVABLE:
        return "it is WebSocket itself"
    if t.serve is None:
        return "it serves no byte stream (it owns its socket)"
    if not t.relays:
        return ("it does not relay through the policy (relays = False): only protocols "
                "that dial for their clients through the gateway's rules can be served")
    return ""


def parse_services(gw: GatewayAPI) -> dict[str, Service]:
    """The served paths: ``DEFAULT_SERVE`` (when its protocol is installed) with ``[ws]
    serve`` over it; a configured protocol that is missing or not servable is a ConfigError."""
    configured = settings_of(gw).serve
    types = gw.listener_types
    out: dict[str, Service] = {}
    for path, proto in {**DEFAULT_SERVE, **configured}.items():
        if not proto:
            continue
        t = types.get(proto)
        kp = f'{SECTION}.serve."{path}"'
        if t is None:
            if path not in configured:
                continue  # the default for a protocol that is not installed
            have = ", ".join(sorted(types)) or "none"
            raise ConfigError(kp, f"{proto!r} is not an installed protocol (installed: {have})")
        why = servable(t)
        if why:
            raise ConfigError(kp, f"{proto!r} cannot be served over WebSocket: {why}")
        out[path] = Service(path, proto, t)
    return out


_SERVICES: StashKey[dict[str, Service]] = StashKey("ugate_ws.services")


def services_of(gw: GatewayAPI) -> dict[str, Service]:
    """The gateway's served paths, checked once."""
    s = gw.stash.get(_SERVICES, None)
    if s is None:
        s = gw.stash[_SERVICES] = parse_services(gw)
    return s


def service_for(gw: GatewayAPI, target: str) -> Service | None:
    """The service request target ``target`` names: its path is a served path or under it."""
    services = services_of(gw)
    if not services:
        return None
    path = target.split("?", 1)[0].split("#", 1)[0]
    while path not in ("", "/"):
        s = services.get(path)
        if s is not None:
            return s
        path = path.rsplit("/", 1)[0]
    return None
