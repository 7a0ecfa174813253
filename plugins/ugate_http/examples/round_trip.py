"""Embedding ugate: HTTP calls through the gateway with ``gateway.round_trip``.

    python plugins/ugate_http/examples/round_trip.py

Starts a tiny HTTP/1.1 origin on 127.0.0.1 (standing in for a service), and a gateway with
no listeners whose ``[hosts]`` table knows that origin as ``svc.example``. Then:

1. ``GET svc.example:80/hello``: routed by name (discovery, policy, dialer, pooled
   connection), the body read to its end;
2. ``POST svc.example:80/echo`` with a body streamed from an async source of unknown length
   (sent chunked), the echoed answer read piecewise and checked;
3. a name nobody knows: ``DialError`` with reason ``no_route``.

Needs ``ugate-core`` and ``ugate-http`` installed (the ``ugate_round_tripper`` hook).
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile

from ugate_core import DialError, Gateway, HttpRequest, loads


async def origin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """GET /hello → a greeting; POST /echo → the (chunked) request body back."""
    try:
        while head := await reader.readuntil(b"\r\n\r\n"):
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            fields = {k.strip().lower(): v.strip()
                      for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            body = b""
            if fields.get("transfer-encoding") == "chunked":
                while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                    body += (await reader.readexactly(size + 2))[:-2]
                await reader.readuntil(b"\r\n")
            elif "content-length" in fields:
                body = await reader.readexactly(int(fields["content-length"]))
            if method == "POST" and target == "/echo":
                answer, ctype = body, b"application/octet-stream"
            else:
                answer = f"hello from the origin (you asked {target})"
                answer, ctype = answer.encode(), b"text/plain"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
                         % (ctype, len(answer), answer))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


class Chunks:
    """A request body: any object with ``async read() -> bytes`` (``b""`` at the end)."""

    def __init__(self, count: int, size: int) -> None:
        self.left = count
        self.size = size
        self.sha = hashlib.sha256()

    async def read(self) -> bytes:
        if not self.left:
            return b""
        self.left -= 1
        await asyncio.sleep(0)  # e.g. read from a file or another socket
        data = bytes([self.left % 251]) * self.size
        self.sha.update(data)
        return data


async def main() -> None:
    server = await asyncio.start_server(origin, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = loads(f"""
[admin]
listen = ""                      # no admin endpoint for this example
[routing]
direct = false                   # only names discovery knows
[hosts."svc.example"]
endpoints = ["127.0.0.1:{port}"]
""")
    with tempfile.TemporaryDirectory() as state:
        gw = Gateway(config, state_dir=state)  # the workload key is created in `state`
        await gw.start()
        try:
            # 1. a GET, routed by name
            resp = await gw.round_trip(HttpRequest(method="GET", authority="svc.example:80",
                                                   target="/hello"))
            text = (await resp.read_all()).decode()
            print(f"GET /hello -> {resp.status} {resp.header('content-type')}: {text}")

            # 2. a streamed upload of unknown length, the answer read piecewise
            body = Chunks(count=40, size=100_000)
            resp = await gw.round_trip(HttpRequest(
                method="POST", authority="svc.example:80", target="/echo",
                headers=[("Content-Type", "application/octet-stream")], body=body))
            got, sha = 0, hashlib.sha256()
            while piece := await resp.read():
                got += len(piece)
                sha.update(piece)
            await resp.close()
            same = "sha256 ok" if sha.digest() == body.sha.digest() else "sha256 MISMATCH"
            print(f"POST /echo -> {resp.status}: {got} bytes back, {same}")

            # 3. errors are exceptions that say why
            try:
                await gw.round_trip(HttpRequest(method="GET", authority="nowhere.example:80"))
            except DialError as e:
                print(f"GET nowhere.example -> DialError reason={e.reason}")
        finally:
            await gw.shutdown(1.0)
            server.close()


if __name__ == "__main__":
    asyncio.run(main())
