"""A complete third-party ugate plugin: the ``echo`` protocol.

A client opens with the line ``ECHO\n``; the gateway answers ``OK <peer>\n`` (the listener's
``greeting`` instead of ``OK`` when set) and then echoes every byte until the client
half-closes or ``max_bytes`` went by. It can share a port with every other protocol, because
it can be told apart by its first bytes.

It uses the three things core offers a plugin besides the hooks: it is typed against
``GatewayAPI`` (what a plugin may use of the gateway), keeps per-gateway state in
``gateway.stash`` under a ``StashKey``, and validates its listener keys with
``ugate_core.options``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ugate_core import GatewayAPI, ListenerContext, ListenerType, Sniff, StashKey, Stream, hookimpl
from ugate_core import options as opt

MAGIC = b"ECHO\n"
OPTION_KEYS = frozenset({"greeting", "max_bytes"})


@dataclass(frozen=True)
class EchoOptions:
    greeting: str = "OK"
    #: bytes echoed per connection before it is closed (0: no limit)
    max_bytes: int = 0


def parse_options(options: Mapping[str, Any], path: str) -> EchoOptions:
    """Validate this protocol's listener keys; errors name ``path.key`` and the value."""
    d = EchoOptions()
    return EchoOptions(
        greeting=opt.string(options, "greeting", path, d.greeting),
        max_bytes=opt.integer(options, "max_bytes", path, d.max_bytes, lo=0),
    )


def check_options(options: Mapping[str, Any], path: str) -> None:
    """``ugate config check`` and start-up: a bad key stops the gateway, naming it."""
    parse_options(options, path)


class EchoState:
    """What the plugin keeps per gateway: its parsed options per listener, a count."""

    def __init__(self) -> None:
        self.options: dict[str, EchoOptions] = {}
        self.served = 0


#: the plugin's state in ``gateway.stash``: typed, and gone with the gateway
STATE = StashKey[EchoState]("echo")


def state_of(gateway: GatewayAPI) -> EchoState:
    return gateway.stash.get_or_create(STATE, EchoState)


def sniff(prefix: bytes) -> Sniff:
    """MATCH on the magic line, NEED_MORE on a proper prefix of it, else NO."""
    n = min(len(prefix), len(MAGIC))
    if prefix[:n] != MAGIC[:n]:
        return Sniff.NO
    return Sniff.MATCH if n == len(MAGIC) else Sniff.NEED_MORE


async def serve(stream: Stream, ctx: ListenerContext) -> None:
    st = state_of(ctx.gateway)  # once per connection, not per read
    o = st.options.get(ctx.name)
    if o is None:
        o = st.options[ctx.name] = parse_options(ctx.options, ctx.config.path)
    st.served += 1
    await stream.readexactly(len(MAGIC))
    remote = stream.meta.remote
    stream.write(b"%s %s\n" % (o.greeting.encode(), (f"{remote[0]}" if remote else "-").encode()))
    left = o.max_bytes or -1
    while left and (data := await stream.read()):
        if left > 0:
            data = data[:left]
            left -= len(data)
        stream.write(data)
        await stream.drain()
    stream.write_eof()


@hookimpl
def ugate_listener_types(gateway: GatewayAPI) -> list[ListenerType]:
    return [
        ListenerType(
            name="echo",
            serve=serve,
            sniff=sniff,
            relays=False,  # it forwards nowhere, so it is no relay
            option_keys=OPTION_KEYS,
            check_options=check_options,
            description="echo every byte back (example plugin)",
        )
    ]
