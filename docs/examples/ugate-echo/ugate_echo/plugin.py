"""A complete third-party ugate plugin: the ``echo`` protocol.

A client opens with the line ``ECHO\n``; the gateway answers ``OK <peer>\n`` and then echoes
every byte until the client half-closes. It can share a port with every other protocol, because
it can be told apart by its first bytes.
"""

from __future__ import annotations

from ugate_core import Gateway, ListenerContext, ListenerType, Sniff, Stream, hookimpl

MAGIC = b"ECHO\n"


def sniff(prefix: bytes) -> Sniff:
    """MATCH on the magic line, NEED_MORE on a proper prefix of it, else NO."""
    n = min(len(prefix), len(MAGIC))
    if prefix[:n] != MAGIC[:n]:
        return Sniff.NO
    return Sniff.MATCH if n == len(MAGIC) else Sniff.NEED_MORE


async def serve(stream: Stream, ctx: ListenerContext) -> None:
    await stream.readexactly(len(MAGIC))
    remote = stream.meta.remote
    stream.write(b"OK %s\n" % (f"{remote[0]}" if remote else "-").encode())
    while data := await stream.read():
        stream.write(data)
        await stream.drain()
    stream.write_eof()


@hookimpl
def ugate_listener_types(gateway: Gateway) -> list[ListenerType]:
    return [
        ListenerType(
            name="echo",
            serve=serve,
            sniff=sniff,
            relays=False,  # it forwards nowhere, so it is no relay
            description="echo every byte back (example plugin)",
        )
    ]
