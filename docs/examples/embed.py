"""Embed ugate in your own program: routing by name, identity checks and dialers, no listener.

Run: python docs/examples/embed.py
It starts a tiny local web server, maps the name ``web.internal`` to it in the gateway's
config, and fetches a page through ``gateway.dial`` — the same path every listener uses.
"""

from __future__ import annotations

import asyncio

from ugate_core import Gateway, loads


async def web(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nhello\n")
    await writer.drain()
    writer.close()


async def main() -> str:
    server = await asyncio.start_server(web, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = loads(f"""
[admin]
listen = ""                      # no admin endpoint for an embedded gateway

[hosts."web.internal"]
endpoints = ["127.0.0.1:{port}"] # the local discovery: name -> endpoints
""")
    async with Gateway(config) as gw:
        stream = await gw.dial("web.internal:80")  # discovery -> dialer -> Stream
        stream.write(b"GET / HTTP/1.0\r\nHost: web.internal\r\n\r\n")
        stream.write_eof()  # half-close: we are done sending
        reply = b""
        while chunk := await stream.read():
            reply += chunk
        stream.close()
    server.close()
    return reply.decode()


if __name__ == "__main__":
    print(asyncio.run(main()), end="")
