"""Per-gateway state of the SSH plugin: host key, listeners, reverse forwards, client pool."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import asyncssh

from ugate_core import GatewayAPI, ListenerContext, StashKey

from .keys import host_key
from .reverse import ReverseRegistry

if TYPE_CHECKING:
    from .client import SshClientPool
    from .server import SshServer


class SshState:
    """Everything the plugin keeps for one gateway (several gateways may share a process)."""

    def __init__(self, gateway: GatewayAPI) -> None:
        self.gateway = gateway
        self.reverse = ReverseRegistry()
        self.servers: dict[str, SshServer] = {}
        self._server_lock = asyncio.Lock()
        self._keys: dict[str, asyncssh.SSHKey] = {}
        self._pool: SshClientPool | None = None
        self._closer: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, gateway: GatewayAPI) -> SshState:
        st = gateway.stash.get(STATE, None)
        if st is None:
            st = gateway.stash[STATE] = cls(gateway)
        return st

    def host_key(self, path: str = "") -> asyncssh.SSHKey:
        key = self._keys.get(path)
        if key is None:
            key = self._keys[path] = host_key(self.gateway, path)
        return key

    @property
    def pool(self) -> SshClientPool:
        if self._pool is None:
            from .client import SshClientPool

            self._pool = SshClientPool(self)
        return self._pool

    async def server(self, ctx: ListenerContext) -> SshServer:
        srv = self.servers.get(ctx.name)
        if srv is None:
            from .server import SshServer

            async with self._server_lock:
                srv = self.servers.get(ctx.name)
                if srv is None:
                    srv = self.servers[ctx.name] = await SshServer.create(self, ctx)
        return srv

    async def aclose(self) -> None:
        """Gateway shutdown: stop the upstream loops now. Relayed streams may ride on SSH
        connections, so those are closed only once the gateway's drain is over (no streams
        left, or the drain deadline): a background task outlives this hook for that."""
        if self._pool is not None:
            await self._pool.stop_upstreams()
        self.gateway.stash.pop(STATE, None)
        if self._pool is not None or self.servers:
            self._closer = asyncio.get_running_loop().create_task(self._close_after_drain())

    async def _close_after_drain(self) -> None:
        gw = self.gateway
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(gw.config.gateway.drain_timeout + 1.0):
                    await gw.drained()
        finally:
            if self._pool is not None:
                await self._pool.aclose()
            for srv in self.servers.values():
                with contextlib.suppress(Exception):
                    await srv.aclose()


#: the plugin's state in ``gateway.stash``
STATE = StashKey[SshState]("ssh")
