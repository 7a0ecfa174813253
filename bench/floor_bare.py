"""The floor under any asyncio relay: two uvloop ``Protocol`` objects wired to each other.

Accept, ``create_connection`` to the target, write what one side receives to the other, pass
EOF on as a half-close, close both when either goes. No Stream, metadata, router, policy,
metrics, flow control or splice: not a relay anyone should run, only the least Python work per
connection and per chunk — the ceiling ``bench/run.py`` shows next to ugate (whose
``floor.py`` row adds ugate's ``TcpStream`` and ``start_relay``).

    python bench/floor_bare.py LISTEN_PORT TARGET_HOST:TARGET_PORT
"""

from __future__ import annotations

import asyncio
import sys


class _Side(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.early = b""  # bytes from the client before the upstream is connected
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        p = self.peer
        if p is None or p.transport is None:
            self.early += data
        else:
            p.transport.write(data)

    def eof_received(self) -> bool:
        p = self.peer
        if p is not None and p.transport is not None and not p.transport.is_closing():
            p.transport.write_eof()
        self.eof = True
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        p = self.peer
        if p is not None and p.transport is not None:
            p.transport.close()


class _Client(_Side):
    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__()
        self.target = target

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        loop = asyncio.get_running_loop()
        up = _Side()
        up.peer = self
        fut = asyncio.ensure_future(loop.create_connection(lambda: up, *self.target))

        def connected(f: asyncio.Task[tuple[asyncio.Transport, _Side]]) -> None:
            if f.cancelled() or f.exception() is not None or self.transport is None:
                if self.transport is not None:
                    self.transport.close()
                return
            self.peer = up
            assert up.transport is not None
            if self.early:
                up.transport.write(self.early)
                self.early = b""
            if self.eof:
                up.transport.write_eof()

        fut.add_done_callback(connected)


async def main(port: int, target: tuple[str, int]) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(target), "127.0.0.1", port,
                                      backlog=4096, reuse_address=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    host, _, tport = sys.argv[2].rpartition(":")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(int(sys.argv[1]), (host, int(tport))))
