"""The dedicated ``ws`` listener: a port that speaks only WebSocket over HTTP/1.1 (no
ugate-http proxy behind it). It reads one request head within ``[gateway]
handshake_timeout`` (at most ``MAX_HEAD`` bytes) and hands it to the same handler as the
``/.well-known/ugate/ws`` route, through a small :class:`~ugate_http.routes.Exchange`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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
from ugate_core import options as opt

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


CLIENT_CERT = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
               "required": ssl.CERT_REQUIRED}


def check_wss_options(options: Mapping[str, Any], path: str) -> None:
    opt.one_of(options, "client_cert", path, "none", list(CLIENT_CERT))


class WssListener(TlsListener):
    """The dedicated ``wss`` listener: core's TLS accept loop and handshake with the workload
    certificate, then WebSocket over HTTP/1.1. ``client_cert``: ``none`` (the default: a
    browser asked for a certificate makes its user choose one, and a headless one gives up),
    ``optional`` or ``required`` (gateways' ``wss`` dialers present theirs: its mesh ID and
    SPIFFE ID go on the stream's meta)."""

    protocol = "wss"
    needs_target = False

    def __init__(self, cfg: ListenerConfig, gw: GatewayAPI) -> None:
        mode = opt.one_of(cfg.options, "client_cert", cfg.path, "none", list(CLIENT_CERT))
        opts = {"alpn": ["http/1.1"], "require_client_cert": mode == "required"}
        super().__init__(dataclasses.replace(cfg, options=opts), gw)
        self.ssl_ctx.verify_mode = CLIENT_CERT[mode]

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
