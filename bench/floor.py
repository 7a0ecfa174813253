"""The floor under ugate's tcp forward: accept, dial, ``relay.start_relay`` — nothing else.

No plugins, router, policy, metrics, hooks or logging: the difference between this row and the
``ugate tcp forward`` row of ``bench/run.py`` is what the gateway path costs per connection.

    python bench/floor.py LISTEN_PORT TARGET_HOST:TARGET_PORT
"""

from __future__ import annotations

import asyncio
import sys

from ugate_core.cli import use_fast_loop
from ugate_core.relay import start_relay
from ugate_core.stream import TcpStream


class _Accepted(TcpStream):
    def __init__(self, target: tuple[str, int], tasks: set[asyncio.Task[None]]) -> None:
        super().__init__()
        self._target = target
        self._tasks = tasks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        t = asyncio.get_running_loop().create_task(self._run())
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, up = await loop.create_connection(TcpStream, *self._target)
        except OSError:
            self.abort()
            return
        start_relay(self, up, idle_timeout=3600.0)  # runs on without this task


async def main(port: int, target: tuple[str, int]) -> None:
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Accepted(target, tasks), "127.0.0.1", port,
                                      backlog=4096, reuse_address=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    host, _, tport = sys.argv[2].rpartition(":")
    use_fast_loop()
    asyncio.run(main(int(sys.argv[1]), (host, int(tport))))
