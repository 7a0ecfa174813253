"""Reverse tunnels (``ssh -R``): a client's forwarded ports, reachable by its mesh name.

A client that asks for ``tcpip-forward`` on port P gets no socket on this machine: the port is
registered under the client's identity FQDN, ``<client-id>.m``. The ``ssh-reverse`` discovery
answers for those names, and the ``ssh-reverse`` dialer opens a ``forwarded-tcpip`` channel back
over the client's live SSH connection. So a second client dialing ``<client-id>.m:P`` through
this gateway (``ssh -W``, SOCKS, HBONE, ...) reaches whatever the first client exposed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import asyncssh

from ugate_core import (
    Destination,
    DialError,
    DialRequest,
    Endpoint,
    ExpectedIdentity,
    GatewayAPI,
    Stream,
    StreamMeta,
)

from .adapters import ChannelStream

log = logging.getLogger("ugate.ssh")

#: first virtual port handed out for ``-R 0:...`` (the client learns the number)
DYNAMIC_PORT_BASE = 20000


@dataclass(eq=False)
class Forward:
    """One live ``tcpip-forward`` of one SSH connection."""

    conn: asyncssh.SSHServerConnection
    peer_id: str
    fqdn: str
    listen_host: str
    port: int
    listener: str = ""
    closed: bool = False


@dataclass
class ReverseRegistry:
    """``<id>.m`` → live forwards, newest last."""

    by_name: dict[str, list[Forward]] = field(default_factory=dict)
    next_port: int = DYNAMIC_PORT_BASE

    def add(self, fwd: Forward) -> None:
        self.by_name.setdefault(fwd.fqdn, []).append(fwd)

    def remove(self, fwd: Forward) -> None:
        fwd.closed = True
        lst = self.by_name.get(fwd.fqdn)
        if lst and fwd in lst:
            lst.remove(fwd)
            if not lst:
                del self.by_name[fwd.fqdn]

    def lookup(self, fqdn: str, port: int) -> Forward | None:
        for fwd in reversed(self.by_name.get(fqdn, [])):
            if fwd.port == port and not fwd.closed:
                return fwd
        return None

    def knows(self, fqdn: str) -> Forward | None:
        lst = self.by_name.get(fqdn)
        return lst[-1] if lst else None

    def dynamic_port(self, fqdn: str) -> int:
        """A virtual port for ``-R 0:...`` that ``fqdn`` does not use yet."""
        used = {f.port for f in self.by_name.get(fqdn, [])}
        while True:
            p = self.next_port
            self.next_port = p + 1 if p < 65535 else DYNAMIC_PORT_BASE
            if p not in used:
                return p


class VirtualListener(asyncssh.SSHListener):
    """What asyncssh keeps for a forward: closing it (cancel, disconnect) unregisters."""

    def __init__(self, registry: ReverseRegistry, fwd: Forward) -> None:
        super().__init__()
        self._registry = registry
        self.fwd = fwd

    def get_port(self) -> int:
        return self.fwd.port

    def close(self) -> None:
        if not self.fwd.closed:
            self._registry.remove(self.fwd)
            log.info("ssh_forward_closed peer_id=%s name=%s port=%d", self.fwd.peer_id,
                     self.fwd.fqdn, self.fwd.port)

    async def wait_closed(self) -> None:
        return None


class ReverseDiscovery:
    """Discovery ``ssh-reverse``: names of clients with live reverse forwards."""

    name = "ssh-reverse"

    def __init__(self, registry: ReverseRegistry) -> None:
        self.registry = registry

    async def resolve(self, fqdn: str, port: int) -> Destination | None:
        fwd = self.registry.knows(fqdn)
        if fwd is None:
            return None
        return Destination(
            name=fqdn,
            endpoints=(Endpoint(fqdn, None),),
            protocol="ssh-reverse",
            identities=(ExpectedIdentity("id", fwd.peer_id),),
            ttl=0.0,
            source="ssh-reverse",
        )


async def dial_reverse(registry: ReverseRegistry, req: DialRequest) -> Stream:
    """Open a ``forwarded-tcpip`` channel to the client that forwarded ``name:port``."""
    name = req.destination.name
    fwd = registry.lookup(name, req.port)
    if fwd is None:
        have = sorted(f.port for f in registry.by_name.get(name, []))
        raise DialError("refused", f"{name}:{req.port}: no reverse forward for this port "
                        f"(forwarded: {', '.join(map(str, have)) or 'none'})")
    ids = [e.value.upper().rstrip("=") for e in req.destination.identities if e.kind == "id"]
    if req.destination.identities and fwd.peer_id.upper() not in ids:
        raise DialError("identity", f"{name}:{req.port}: the forwarding client is "
                        f"id:{fwd.peer_id}, not one of the expected identities")
    src = req.source
    orig = src.remote if src is not None and src.remote else ("127.0.0.1", 0)
    meta = StreamMeta(protocol="ssh-reverse", peer_id=fwd.peer_id,
                      target=f"{name}:{req.port}")
    try:
        _, session = await fwd.conn.create_connection(
            lambda: ChannelStream(meta), fwd.listen_host, fwd.port, orig[0], orig[1]
        )
    except asyncssh.ChannelOpenError as e:
        raise DialError("refused", f"{name}:{req.port}: client refused the forwarded "
                        f"channel: {e.reason}") from None
    except (asyncssh.Error, OSError) as e:
        raise DialError("unreachable", f"{name}:{req.port}: reverse tunnel is gone: "
                        f"{e}") from None
    assert isinstance(session, ChannelStream)
    return session


def register_name(gateway: GatewayAPI, fqdn: str) -> None:
    """Forget any cached (negative) route for ``fqdn`` once it becomes reachable."""
    gateway.invalidate_route(fqdn)
