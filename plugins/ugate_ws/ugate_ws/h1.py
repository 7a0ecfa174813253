"""The dedicated ``ws`` listener: a port that speaks only WebSocket over HTTP/1.1 (no
ugate-http proxy behind it). It reads one request head within ``[gateway]
handshake_timeout`` (at most ``MAX_HEAD`` bytes) and hands it to the same handler as the
``/.well-known/ugate/ws`` route, through a small :class:`~ugate_http.routes.Exchange`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Sequence

from ugate_core import (
    GatewayAPI,
    ListenerConfig,
    ListenerContext,
    ProtocolError,
    RunningListener,
    Stream,
    StreamMeta,
    TlsListener,
    TlsStream,
)

from .server import serve_exchange

MAX_HEAD = 16 * 1024
_REASONS = {101: "Switching Protocols", 400: "Bad Request", 401: "Unauthorized",
            403: "Forbidden", 404: "Not Found", 426: "Upgrade Required",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}


class H1Exchange:
    """One HTTP/1.1 request on a raw stream (see :mod:`ugate_http.routes` for the contract)."""

    http_version = "1.1"

    def __init__(self, stream: Stream, method: str, path: str,
                 headers: list[tuple[str, str]]) -> None:
        self.stream = stream
        self.method = method
        self.path = path
        self.headers: Sequence[tuple[str, str]] = headers
        self.answered = False
        conn = {t.strip().lower() for t in (self.header("connection") or "").split(",")}
        up = self.header("upgrade")
        self.protocol = up.strip().lower() if up and "upgrade" in conn else None

    @property
    def meta(self) -> StreamMeta:
        return self.stream.meta

    def header(self, name: str) -> str | None:
        vals = [v for k, v in self.headers if k == name]
        return ", ".join(vals) if vals else None

    async def body(self, limit: int) -> bytes:
        return b""

    async def respond(self, status: int, headers: Iterable[tuple[str, str]] = (),
                      body: bytes = b"") -> None:
        self.answered = True
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
                 *(f"{k}: {v}" for k, v in headers), f"content-length: {len(body)}",
                 "connection: close", "", ""]
        self.stream.write("\r\n".join(lines).encode("latin-1") + body)
        self.stream.close()

    async def accept(self, headers: Iterable[tuple[str, str]] = ()) -> Stream:
        self.answered = True
        lines = ["HTTP/1.1 101 Switching Protocols", "connection: upgrade",
                 f"upgrade: {self.protocol}", *(f"{k}: {v}" for k, v in headers), "", ""]
        self.stream.write("\r\n".join(lines).encode("latin-1"))
        return self.stream


def parse_head(head: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    """Method, target and headers (names lower-case) of a request head."""
    try:
        text = head.decode("latin-1")
        request_line, *lines = text.split("\r\n")
        method, target, version = request_line.split(" ")
    except ValueError:
        raise ProtocolError("not an HTTP/1.1 request line", "bad_request") from None
    if version != "HTTP/1.1" or not target.startswith("/"):
        raise ProtocolError(f"request line {request_line[:100]!r}: need "
                            "'GET /path HTTP/1.1'", "bad_request")
    headers: list[tuple[str, str]] = []
    for ln in lines:
        if not ln:
            continue
        name, sep, value = ln.partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"header line {ln[:100]!r} is malformed", "bad_request")
        headers.append((name.lower(), value.strip()))
    return method, target, headers


async def serve(stream: Stream, ctx: ListenerContext) -> None:
    """Serve one client of a ``ws`` listener."""
    await serve_h1(stream, ctx.gateway, "ws")


class WssListener(TlsListener):
    """The dedicated ``wss`` listener: core's TLS accept loop and handshake (the workload
    certificate, a client certificate asked for and, when sent, its mesh ID and SPIFFE ID on
    the stream's meta), then WebSocket over HTTP/1.1."""

    protocol = "wss"
    needs_target = False

    def __init__(self, cfg: ListenerConfig, gw: GatewayAPI) -> None:
        opts = {"alpn": ["http/1.1"],
                "require_client_cert": bool(cfg.options.get("require_client_cert", False))}
        super().__init__(dataclasses.replace(cfg, options=opts), gw)

    async def serve_tls(self, tls: TlsStream, meta: StreamMeta) -> None:
        await serve_h1(tls, self.gw, "wss")


async def start_wss_listener(cfg: ListenerConfig, gw: GatewayAPI) -> RunningListener:
    ln = WssListener(cfg, gw)
    await ln.start()
    return ln


async def serve_h1(stream: Stream, gw: GatewayAPI, protocol: str) -> None:
    async with asyncio.timeout(gw.config.gateway.handshake_timeout):
        head = await stream.readuntil(b"\r\n\r\n", MAX_HEAD)
    try:
        method, target, headers = parse_head(head)
    except ProtocolError as e:
        stream.write(f"HTTP/1.1 400 Bad Request\r\ncontent-length: {len(str(e)) + 1}\r\n"
                     f"connection: close\r\n\r\n{e}\n".encode())
        stream.close()
        raise
    stream.meta.protocol = protocol
    ex = H1Exchange(stream, method, target, headers)
    await serve_exchange(ex, gw)
