"""Test helpers: a fake Exchange for the signaling handler, an aiortc client peer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from ugate_core import ProtocolError, Stream, StreamMeta
from ugate_webrtc.peer import prepare_gathering

#: a gateway with an http listener ``main`` on loopback, gathering on 127.0.0.1; ``[webrtc]``
#: is the last table, so a test appends its own keys
CONFIG = """
[admin]
listen = "127.0.0.1:0"
[listeners.main]
listen = "127.0.0.1:0"
protocols = ["http"]
[webrtc]
host_addresses = ["127.0.0.1"]
"""
SDP = [("content-type", "application/sdp")]


class FakeExchange:
    """What ugate-http hands a route's handler, in memory."""

    def __init__(self, method: str, path: str, body: bytes = b"",
                 headers: Sequence[tuple[str, str]] = (), meta: StreamMeta | None = None,
                 listener: str = "main", remote: tuple[str, int] = ("127.0.0.1", 40000)
                 ) -> None:
        self.method = method
        self.path = path
        self.headers = list(headers)
        self.protocol = None
        self.http_version = "1.1"
        self.meta = meta or StreamMeta(protocol="http", listener=listener, remote=remote,
                                       local=("127.0.0.1", 15008))
        self._body = body
        self.status: int | None = None
        self.resp_headers: list[tuple[str, str]] = []
        self.resp_body = b""

    def header(self, name: str) -> str | None:
        got = [v for k, v in self.headers if k == name]
        return ", ".join(got) if got else None

    async def body(self, limit: int) -> bytes:
        if len(self._body) > limit:
            await self.respond(413, [], b"too large\n")
            raise ProtocolError(f"request body over {limit} bytes", "body_too_large")
        return self._body

    async def respond(self, status: int, headers: Iterable[tuple[str, str]] = (),
                      body: bytes = b"") -> None:
        assert self.status is None, "answered twice"
        self.status = status
        self.resp_headers = list(headers)
        self.resp_body = body

    async def accept(self, headers: Iterable[tuple[str, str]] = ()) -> Stream:
        raise AssertionError("signaling never switches protocols")

    def resp_header(self, name: str) -> str | None:
        return next((v for k, v in self.resp_headers if k == name), None)


async def client_offer(labels: Sequence[str]) -> tuple[RTCPeerConnection, list[Any], str]:
    """An aiortc offerer on 127.0.0.1 with one channel per label; its offer SDP."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    chans = [pc.createDataChannel(label) for label in labels]
    await prepare_gathering(pc, ("127.0.0.1",))
    await pc.setLocalDescription(await pc.createOffer())
    return pc, chans, pc.localDescription.sdp


async def finish(pc: RTCPeerConnection, answer: bytes) -> None:
    await pc.setRemoteDescription(RTCSessionDescription(answer.decode(), "answer"))


class Collector:
    """Messages of one client channel: bytes until the empty message (the FIN)."""

    def __init__(self, ch: Any) -> None:
        self.data = bytearray()
        self.fin = asyncio.Event()
        self.closed = asyncio.Event()
        self.opened = asyncio.Event()
        ch.on("message", self._msg)
        ch.on("close", self.closed.set)
        ch.on("open", self.opened.set)

    def _msg(self, m: bytes | str) -> None:
        b = m.encode() if isinstance(m, str) else m
        if b:
            self.data += b
        else:
            self.fin.set()
