"""A close-delimited response the upstream cuts (data, then RST) reaches an HTTP/1.0 client
as a reset, not as a complete body ended by FIN (issue #16, 2)."""

from __future__ import annotations

import asyncio
import socket
import struct

from ugate_core.testing import StartGateway, pattern, read_to_end

BODY = 64 * 1024


async def test_cut_close_delimited_response_resets_the_client(
        start_gateway: StartGateway) -> None:
    async def origin(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + pattern(BODY))
        await w.drain()
        await asyncio.sleep(0.1)
        w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                              struct.pack("ii", 1, 0))
        w.close()

    srv = await asyncio.start_server(origin, "127.0.0.1", 0)
    try:
        gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.web]
listen = "127.0.0.1:0"
protocols = ["http"]
mode = "reverse"
[hosts."svc.test"]
endpoints = ["127.0.0.1:{srv.sockets[0].getsockname()[1]}"]
""")
        r, w = await asyncio.open_connection("127.0.0.1", gw.port("web"))
        w.write(b"GET /x HTTP/1.0\r\nHost: svc.test\r\n\r\n")
        got, end = await read_to_end(r)
        w.close()
        head, _, body = got.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0], head
        assert end == "reset", f"a clean end after {len(body)} body bytes"
        assert body == pattern(BODY)[:len(body)]
    finally:
        srv.close()
