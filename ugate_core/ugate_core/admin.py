"""The admin endpoint: a small HTTP/1.1 server on loopback (no dependency).

``/metrics`` (Prometheus text), ``/healthz``, ``/readyz``, ``/plugins``, ``/streams``,
``/routes``, ``/config``, ``/listeners``. One request per connection, GET only, bounded
request size and deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from .config import parse_hostport
from .redact import redact

if TYPE_CHECKING:
    from .gateway import Gateway

log = logging.getLogger("ugate.admin")

MAX_REQUEST = 8192


class AdminServer:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.server: asyncio.Server | None = None

    async def start(self, listen: str) -> None:
        host, port = parse_hostport(listen, "admin.listen")
        self.server = await asyncio.start_server(self._handle, host, port, reuse_address=True)
        log.info("admin listening address=%s", ",".join(f"{h}:{p}" for h, p in self.addresses()))

    def addresses(self) -> list[tuple[str, int]]:
        if self.server is None:
            return []
        return [s.getsockname()[:2] for s in self.server.sockets]

    async def aclose(self) -> None:
        if self.server is not None:
            self.server.close()
            try:
                await asyncio.wait_for(self.server.wait_closed(), 1)
            except TimeoutError:
                pass

    def route(self, path: str) -> tuple[int, str, bytes]:
        gw = self.gw
        path = path.split("?", 1)[0]
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", gw.metrics.render()
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            return (200, "text/plain", b"ready\n") if gw.ready else (
                503, "text/plain", b"not ready\n")
        body: Any
        if path == "/plugins":
            body = {
                "plugins": [p.as_dict() for p in gw.plugins],
                "listener_types": sorted(gw.listener_types),
                "dialer_types": sorted(gw.dialer_types),
                "discoveries": [d.name for d in gw.discoveries],
            }
        elif path == "/streams":
            body = [r.as_dict() for r in list(gw.streams.values())]
        elif path == "/routes":
            body = gw.router.routes() if gw.router else []
        elif path == "/listeners":
            body = {n: [f"{h}:{p}" for h, p in ln.addresses()] for n, ln in gw.listeners.items()}
        elif path == "/config":
            body = {"source": gw.config.source, "config": redact(gw.config.raw)}
        else:
            return 404, "text/plain", b"not found\n"
        return 200, "application/json", json.dumps(body, indent=1, default=str).encode() + b"\n"

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split()
            if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", b"GET only\n"
            else:
                status, ctype, body = self.route(parts[1])
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed",
                      503: "Service Unavailable"}.get(status, "OK")
            w.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            if parts and parts[0] != "HEAD":
                w.write(body)
            await w.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            pass
        except Exception:
            log.exception("admin_error")
        finally:
            w.close()
