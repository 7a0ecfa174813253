"""The floor under ugate's HTTP/1.1 reverse proxy: the leanest proxy uvloop allows.

Two ``asyncio.Protocol`` classes and a list of idle upstream connections: a request head is
found with ``bytes.find``, hop-by-hop fields dropped, ``X-Forwarded-For`` and ``Via`` added, and
the request written to a pooled upstream connection; the response head is rewritten the same
way and its Content-Length body passed through, then the upstream goes back to the pool. No
task, future, timer, parser object, router, policy or metric per request — and no chunked
bodies, errors, timeouts or limits either: it is a measurement, not a proxy. The difference
between this row and ugate's in ``bench_http.py`` is what ugate's request path costs.

    python floor_h1.py LISTEN_PORT UPSTREAM_PORT
"""

from __future__ import annotations

import asyncio
import sys

HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                 b"transfer-encoding", b"upgrade"})


def _rewrite(head: bytes, extra: list[bytes]) -> tuple[bytes, int]:
    lines = head.split(b"\r\n")
    out = [lines[0]]
    length = 0
    for ln in lines[1:-2]:
        k, _, v = ln.partition(b":")
        low = k.strip().lower()
        if low in HOP:
            continue
        if low == b"content-length":
            length = int(v)
        out.append(ln)
    return b"\r\n".join([*out, *extra, b"", b""]), length


class Upstream(asyncio.Protocol):
    def __init__(self, pool: list[Upstream]) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.client: Client | None = None
        self.buf = b""
        self.left = -1  # body bytes still to pass on; -1: reading a head

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        c = self.client
        if c is None or c.transport is None or c.transport.is_closing():
            if self.transport is not None:
                self.transport.close()
            return
        if self.left < 0:
            self.buf += data
            i = self.buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head, rest = self.buf[:i + 4], self.buf[i + 4:]
            self.buf = b""
            out, self.left = _rewrite(head, [b"Via: 1.1 floor"])
            self.left -= len(rest)
            c.transport.write(out + rest)
        else:
            self.left -= len(data)
            c.transport.write(data)
        if self.left <= 0:
            self.left = -1
            self.client = None
            self.pool.append(self)
            c.next()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.pool:
            self.pool.remove(self)
        elif self.client is not None and self.client.transport is not None:
            self.client.transport.close()


class Client(asyncio.Protocol):
    def __init__(self, upstream: tuple[str, int], pool: list[Upstream]) -> None:
        self.upstream = upstream
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.busy = False
        self.xff = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.xff = b"X-Forwarded-For: " + str(transport.get_extra_info("peername")[0]).encode()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.next()

    def next(self) -> None:
        self.busy = False
        i = self.buf.find(b"\r\n\r\n")
        if i < 0 or self.transport is None or self.transport.is_closing():
            return
        head, self.buf = self.buf[:i + 4], self.buf[i + 4:]
        req, _ = _rewrite(head, [self.xff, b"Via: 1.1 floor"])
        self.busy = True
        if self.pool:
            up = self.pool.pop()
            up.client = self
            assert up.transport is not None
            up.transport.write(req)
            return
        loop = asyncio.get_running_loop()
        fut = asyncio.ensure_future(loop.create_connection(lambda: Upstream(self.pool),
                                                           *self.upstream))

        def connected(f: asyncio.Task[tuple[asyncio.Transport, Upstream]]) -> None:
            if f.cancelled() or f.exception() is not None:
                if self.transport is not None:
                    self.transport.close()
                return
            _, up = f.result()
            up.client = self
            assert up.transport is not None
            up.transport.write(req)

        fut.add_done_callback(connected)


async def main(port: int, upstream: tuple[str, int]) -> None:
    pool: list[Upstream] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(upstream, pool), "127.0.0.1", port,
                                      backlog=1024, reuse_address=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(int(sys.argv[1]), ("127.0.0.1", int(sys.argv[2]))))
