"""A streaming HTTP/1.1 origin for the reverse-proxy tests (big bodies in constant memory).

Written with plain asyncio streams, independent of the plugin's parser. Routes:

* ``GET /bytes/N`` (``?chunked``): N bytes of :func:`block_stream`, Content-Length or chunked;
  ``?close``: HTTP/1.0-style, delimited by closing the connection
* ``POST /sha256``: answers ``<hex sha256> <length>`` of the request body
* ``POST /echo``: streams the body back while reading it (same framing as the request)
* ``GET /slow``: never answers; ``GET /garbage``: answers bytes that are not HTTP
* ``POST /early``: answers 413 without reading the body, then closes
* ``/bye``: answered, then the connection closes (no ``Connection: close``)
* ``/flaky``: answered only as the first request of a connection, else the connection closes
* ``GET /ws``: WebSocket echo (RFC 6455 handshake, unmasks and echoes each frame)
* anything else: ``hello <target>``
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ugate_core.testing import pattern, read_request_head

BLOCK = pattern(1 << 20, seed=5)
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def block_stream(n: int) -> Iterator[bytes]:
    """N deterministic bytes in 1 MiB pieces (each piece rotated, so offsets matter)."""
    i = 0
    while n > 0:
        k = i % len(BLOCK)
        piece = (BLOCK[k:] + BLOCK[:k])[: min(n, len(BLOCK))]
        yield piece
        n -= len(piece)
        i += 4099


def block_sha256(n: int) -> str:
    h = hashlib.sha256()
    for piece in block_stream(n):
        h.update(piece)
    return h.hexdigest()


@dataclass
class Origin:
    host: str = "127.0.0.1"
    port: int = 0
    connections: int = 0
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # the helpers tests need, here so that no test imports this conftest by name
    @staticmethod
    def sha256(n: int) -> str:
        """sha256 of ``GET /bytes/n``'s body."""
        return block_sha256(n)

    @staticmethod
    def write_body(path: Path, n: int) -> str:
        """Write the same N bytes to ``path``; returns their sha256."""
        h = hashlib.sha256()
        with path.open("wb") as f:
            for piece in block_stream(n):
                f.write(piece)
                h.update(piece)
        return h.hexdigest()


async def _body(r: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    if "content-length" in headers:
        left = int(headers["content-length"])
        while left:
            data = await r.read(min(left, 1 << 18))
            if not data:
                raise ConnectionError("body cut short")
            left -= len(data)
            yield data
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await r.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await r.readuntil(b"\r\n") != b"\r\n":
                    pass
                return
            yield await r.readexactly(size)
            await r.readexactly(2)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


async def _websocket(r: asyncio.StreamReader, w: asyncio.StreamWriter,
                     headers: dict[str, str]) -> None:
    accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + WS_GUID)
                              .digest())
    w.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    while True:
        b0, b1 = await r.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await r.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await r.readexactly(8))
        mask = await r.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(await r.readexactly(n)))
        if n < 126:
            head = bytes([b0, n])
        elif n < 65536:
            head = bytes([b0, 126]) + struct.pack("!H", n)
        else:
            head = bytes([b0, 127]) + struct.pack("!Q", n)
        w.write(head + payload)
        await w.drain()
        if b0 & 0x0F == 8:  # close: echoed, done
            return


async def _handle(origin: Origin, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    origin.connections += 1
    served = 0
    try:
        while True:
            got = await read_request_head(r)
            if got is None:
                return
            method, target, headers = got
            origin.requests.append((method, target, headers))
            served += 1
            path, _, query = target.partition("?")
            if path == "/flaky" and served > 1:
                return  # a keep-alive connection the origin drops instead of answering
            if path == "/bye":  # answers as if keeping the connection, then closes it
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbye\n")
                await w.drain()
                return
            chunked_req = headers.get("transfer-encoding", "").lower() == "chunked"
            if path == "/slow":
                await asyncio.sleep(3600)
            if path == "/garbage":
                w.write(b"SSH-2.0-not-http\r\n\r\n")
                return
            if path == "/early":
                w.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n"
                        b"Connection: close\r\n\r\ntoo large")
                await w.drain()
                return
            if path == "/ws":
                await _websocket(r, w, headers)
                return
            if path == "/echo":
                if chunked_req:
                    w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                else:
                    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"
                            % int(headers.get("content-length", "0")))
                async for data in _body(r, headers):
                    w.write(_chunk(data) if chunked_req else data)
                    await w.drain()
                if chunked_req:
                    w.write(b"0\r\n\r\n")
                await w.drain()
                continue
            h = hashlib.sha256()
            total = 0
            async for data in _body(r, headers):
                h.update(data)
                total += len(data)
            if path == "/sha256":
                payload = f"{h.hexdigest()} {total}".encode()
            elif path.startswith("/bytes/"):
                n = int(path.split("/")[2])
                if "close" in query:
                    w.write(b"HTTP/1.0 200 OK\r\n\r\n")
                    for piece in block_stream(n):
                        w.write(piece)
                        await w.drain()
                    return
                if "chunked" in query:
                    w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    for piece in block_stream(n):
                        w.write(_chunk(piece))
                        await w.drain()
                    w.write(b"0\r\n\r\n")
                else:
                    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n)
                    if method != "HEAD":
                        for piece in block_stream(n):
                            w.write(piece)
                            await w.drain()
                await w.drain()
                continue
            else:
                payload = f"hello {target}\n".encode()
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload))
            if method != "HEAD":
                w.write(payload)
            await w.drain()
            if headers.get("connection", "").lower() == "close":
                return
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        w.close()


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    o = Origin()
    tasks: set[asyncio.Task[None]] = set()

    def start(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        t = asyncio.get_running_loop().create_task(_handle(o, r, w))
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    server = await asyncio.start_server(start, "127.0.0.1", 0, limit=1 << 20)
    o.port = server.sockets[0].getsockname()[1]
    try:
        yield o
    finally:
        server.close()
        for t in list(tasks):
            t.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)
