"""The ``ws`` and ``wss`` dialers: a stream to a destination through a peer that speaks
WebSocket — another gateway's ``/.well-known/ugate/ws/<name>:<port>``, or a bridge such as
websockify (which ignores the path and forwards to its fixed target).

The endpoint discovery gives is the peer (``host:port``); the path names the destination and
its port. ``wss`` presents this workload's certificate and verifies the peer's against the
destination's expected identities (as core's ``tls`` dialer). With ``[ws] proxy`` the TCP
connection goes through an HTTP proxy with ``CONNECT`` first. The WebSocket client frames are
masked; a masked frame from the server is a protocol error (close 1002).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from websockets.client import ClientProtocol
from websockets.frames import Frame
from websockets.http11 import Response
from websockets.uri import parse_uri

from ugate_core import (
    DialError,
    DialRequest,
    ExpectedIdentity,
    StashKey,
    Stream,
    StreamMeta,
    TcpStream,
    TlsStream,
    count_identity_failure,
    expected_identities_for,
    format_hostport,
    is_ip,
    peer_certificates,
    tls_dial_error,
)

from .path import path_for
from .settings import settings_of
from .transport import FRAMES_LOG, WsTransport, message_stream

log = logging.getLogger("ugate.ws")

MAX_PROXY_HEAD = 16 * 1024
_CTX: StashKey[ssl.SSLContext] = StashKey("ugate_ws.client_ctx")


async def dial_ws(req: DialRequest) -> Stream:
    return await _dial(req, tls=False)


async def dial_wss(req: DialRequest) -> Stream:
    return await _dial(req, tls=True)


async def _connect_proxy(proxy: tuple[str, int], host: str, port: int, timeout: float
                         ) -> Any:
    """A socket to ``host:port`` through the HTTP proxy (``CONNECT``)."""
    import socket

    loop = asyncio.get_running_loop()
    where = f"proxy {format_hostport(*proxy)}"
    try:
        infos = await loop.getaddrinfo(proxy[0], proxy[1], type=socket.SOCK_STREAM)
        fam, st, pr, _, addr = infos[0]
        sock = socket.socket(fam, st, pr)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, addr)
            auth = format_hostport(host, port)
            await loop.sock_sendall(sock, f"CONNECT {auth} HTTP/1.1\r\nHost: {auth}\r\n\r\n"
                                    .encode())
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await loop.sock_recv(sock, 1)  # byte by byte: keep the tunnel's bytes
                if not chunk:
                    raise DialError("unreachable", f"{where} closed during CONNECT {auth}")
                head += chunk
                if len(head) > MAX_PROXY_HEAD:
                    raise DialError("unreachable", f"{where}: CONNECT answer over "
                                    f"{MAX_PROXY_HEAD} bytes")
            status = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = status.split(" ", 2)
            if len(parts) < 2 or not parts[1].startswith("2"):
                reason = "denied" if parts[1:2] in (["403"], ["407"]) else "unreachable"
                raise DialError(reason, f"{where} answered CONNECT {auth} with {status!r}")
        except BaseException:
            sock.close()
            raise
    except OSError as e:
        raise DialError("unreachable", f"{where}: {e.strerror or e}") from None
    return sock


async def _dial(req: DialRequest, *, tls: bool) -> Stream:
    gw = req.gateway
    dest = req.destination
    s = settings_of(gw)
    loop = asyncio.get_running_loop()
    host = (await gw.screen_addresses(req))[0] if req.screen else req.host
    port = req.target_port
    where = f"{dest.name}: ws peer {format_hostport(host, port)}"
    expected: tuple[ExpectedIdentity, ...] = ()
    ctx: ssl.SSLContext | None = None
    sni = None
    if tls:
        expected = dest.identities or expected_identities_for(dest.name) or \
            expected_identities_for(req.endpoint.host)
        if not expected:
            raise DialError("identity", f"{dest.name}: no identity to expect: the name is not "
                            "a mesh name (<id>.m, <id>.h.<domain>) and discovery gave none")
        gw.identity.renew_if_needed()
        ctx = gw.stash.get(_CTX, None)
        if ctx is None:
            ctx = gw.stash[_CTX] = gw.identity.client_ssl_context(["http/1.1"])
        sni = None if is_ip(req.endpoint.host) else req.endpoint.host
    meta = StreamMeta(protocol="wss" if tls else "ws")
    stream: TcpStream = TlsStream(meta) if tls else TcpStream(meta)
    async with asyncio.timeout(req.timeout):
        try:
            if s.proxy is not None:
                sock = await _connect_proxy(s.proxy, host, port, req.timeout)
                transport, _ = await loop.create_connection(
                    lambda: stream, sock=sock, ssl=ctx, server_hostname=(sni or "") if tls
                    else None)
            else:
                transport, _ = await loop.create_connection(
                    lambda: stream, host, port, ssl=ctx,
                    server_hostname=(sni or "") if tls else None)
        except ssl.SSLError as e:
            err = tls_dial_error(where, e)
            if err.reason == "identity":
                count_identity_failure(gw, "wss", "dial")
            raise err from None
        except ConnectionRefusedError as e:
            raise DialError("refused", f"{where}: {e.strerror or e}") from None
        except OSError as e:
            raise DialError("unreachable", f"{where}: {e.strerror or e}") from None
        if tls:
            leaf, chain = peer_certificates(transport.get_extra_info("ssl_object"))
            try:
                meta.peer_id = gw.identity.verify_peer(leaf, expected, where, chain)
            except DialError as e:
                count_identity_failure(gw, "wss", "dial")
                log.warning("identity_mismatch protocol=wss direction=dial target=%s error=%r",
                            dest.name, str(e))
                stream.abort()
                raise
        meta.target = format_hostport(dest.name, req.port)
        try:
            proto, early = await _handshake(stream, req, tls, s.max_message)
        except BaseException:
            stream.abort()
            raise
    t = WsTransport(stream, proto, max_message=s.max_message, idle_timeout=s.idle_timeout,
                    early=early)
    return message_stream(t, meta, s.max_message)


async def _handshake(stream: TcpStream, req: DialRequest, tls: bool, max_message: int
                     ) -> tuple[ClientProtocol, list[Frame]]:
    authority = format_hostport(req.endpoint.host, req.target_port)
    uri = parse_uri(f"{'wss' if tls else 'ws'}://{authority}"
                    f"{path_for(format_hostport(req.destination.name, req.port))}")
    proto = ClientProtocol(uri, max_size=max_message, logger=FRAMES_LOG)
    request = proto.connect()
    proto.send_request(request)
    for d in proto.data_to_send():
        stream.write(d)
    while True:
        data = await stream.read(65536)
        if data:
            proto.receive_data(data)
        else:
            proto.receive_eof()
        events = proto.events_received()
        for i, ev in enumerate(events):
            if isinstance(ev, Response):
                if ev.status_code != 101 or proto.handshake_exc is not None:
                    exc = proto.handshake_exc
                    status = ev.status_code
                    reason = {401: "denied", 403: "denied", 502: "unreachable",
                              503: "no_route", 504: "timeout"}.get(status, "refused")
                    body = ev.body[:200].decode("utf-8", "replace").strip() if ev.body else ""
                    raise DialError(reason, f"{req.destination.name}: WebSocket peer "
                                    f"{authority} answered {status}: {body or exc}")
                return proto, [e for e in events[i + 1 :] if isinstance(e, Frame)]
        if not data:
            raise DialError("unreachable", f"{req.destination.name}: WebSocket peer "
                            f"{authority} closed during the handshake")
