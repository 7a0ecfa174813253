"""Shared helpers of ugate-ws's tests: configs, a Python WebSocket client, raw requests."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

BASE = """
[admin]
listen = ""
[gateway]
handshake_timeout = 3.0
"""

MIB = 1 << 20


def ws_listener(name: str = "ws", extra: str = "", proto: str = "ws") -> str:
    return f"""
[listeners.{name}]
listen = "127.0.0.1:0"
protocols = ["{proto}"]
{extra}
"""


def port_of(gw: object, name: str = "ws") -> int:
    return gw.addresses(name)[0][1]  # type: ignore[attr-defined, no-any-return]


def write_public_key(key: ed25519.Ed25519PrivateKey, path: Path) -> Path:
    path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


async def raw_request(port: int, head: bytes, timeout: float = 5.0) -> bytes:
    """Send ``head`` and return the answer: its head and ``content-length`` body (or all
    until the server closes, for a head without one)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(head)
        await w.drain()
        async with asyncio.timeout(timeout):
            out = await r.readuntil(b"\r\n\r\n")
            for ln in out.split(b"\r\n"):
                if ln.lower().startswith(b"content-length:"):
                    return out + await r.readexactly(int(ln.split(b":")[1]))
            return out + await r.read()
    finally:
        w.close()


def upgrade_head(path: str, *, key: str = "dGhlIHNhbXBsZSBub25jZQ==", version: str = "13",
                 upgrade: str = "websocket", extra: str = "") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: {upgrade}\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: {version}\r\n{extra}\r\n").encode()
