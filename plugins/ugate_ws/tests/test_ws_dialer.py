"""The ws/wss dialers: to websockify (a server nobody here wrote), to another gateway (ws, and
wss with mesh identities both ways), through an HTTP proxy (CONNECT), and a server that breaks
the protocol."""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
from pathlib import Path

import pytest

from ugate_core import DialError, Gateway
from ugate_core.testing import StartGateway, free_port, metric, pattern, require_peer, wait_port
from ugate_ws import accept_key

from .conftest import BASE, port_of, ws_listener


async def roundtrip(gw: Gateway, address: str, data: bytes, half_close: bool = True) -> bytes:
    """Send ``data`` and read the echo: to the end (after our half-close), or — websockify
    knows no half-close — as many bytes as were sent."""
    s = await gw.dial(address)
    try:
        s.write(data)
        if half_close:
            s.write_eof()
        got = bytearray()
        async with asyncio.timeout(15):
            while half_close or len(got) < len(data):
                chunk = await s.read(1 << 20)
                if not chunk:
                    break
                got += chunk
        return bytes(got)
    finally:
        s.close()


def hosts(name: str, endpoint: str, protocol: str, extra: str = "") -> str:
    return f"""
[hosts."{name}"]
endpoints = ["{endpoint}"]
protocol = "{protocol}"
{extra}
"""


@pytest.fixture
def websockify(echo_server: tuple[str, int]) -> object:
    exe = require_peer(os.path.join(os.path.dirname(os.sys.executable), "websockify"),
                       hint="pip install websockify")
    port = free_port()
    p = subprocess.Popen([exe, f"127.0.0.1:{port}", f"127.0.0.1:{echo_server[1]}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield port
    finally:
        p.terminate()
        p.wait(5)


async def test_ws_dialer_to_websockify(start_gateway: StartGateway, websockify: int,
                                       echo_server: tuple[str, int]) -> None:
    gw = await start_gateway(BASE + hosts("echo.test", f"127.0.0.1:{websockify}", "ws"))
    data = pattern(1 << 20)
    assert await roundtrip(gw, f"echo.test:{echo_server[1]}", data, False) == data
    assert metric(gw, "ugate_dials_total", dialer="ws", result="ok") == 1


async def test_ws_gateway_to_gateway(start_gateway: StartGateway,
                                     echo_server: tuple[str, int]) -> None:
    far = await start_gateway(BASE + ws_listener() + hosts("echo.test", "127.0.0.1", "tcp"))
    near = await start_gateway(BASE + hosts("echo.test", f"127.0.0.1:{port_of(far)}", "ws"))
    data = pattern(700_000)
    assert await roundtrip(near, f"echo.test:{echo_server[1]}", data) == data
    # the far gateway refuses what it cannot reach: the dial fails with its status
    with pytest.raises(DialError, match="answered 502"):
        await near.dial("echo.test:1")


async def test_wss_mesh_identities(start_gateway: StartGateway, echo_server: tuple[str, int],
                                   tmp_path: Path) -> None:
    echo = f"echo.test:{echo_server[1]}"
    near0 = await start_gateway(BASE)  # only to make the near gateway's key
    near_id = near0.identity.id
    far_listener = ws_listener(proto="wss", extra='allow = ["x.invalid:1"]\n'
                                                 'client_cert = "optional"')
    far = await start_gateway(BASE + far_listener
                              + hosts("echo.test", f"127.0.0.1:{echo_server[1]}", "tcp")
                              + f'[[rules]]\nclients = ["id:{near_id}"]\nto = ["{echo}"]\n')
    ep = f"127.0.0.1:{port_of(far)}"
    near = await start_gateway(BASE + hosts("echo.test", ep, "wss",
                                            f'identity = ["id:{far.identity.id}"]'),
                               state_dir=tmp_path / "state0")
    assert near.identity.id == near_id
    data = pattern(500_000)
    assert await roundtrip(near, echo, data) == data
    # a fresh mesh key that no rule names: refused by the far gateway's policy (403)
    stranger = await start_gateway(BASE + hosts("echo.test", ep, "wss",
                                                f'identity = ["id:{far.identity.id}"]'))
    with pytest.raises(DialError, match="answered 403") as ei:
        await stranger.dial(echo)
    assert ei.value.reason == "denied"
    # the far end is not who discovery says: refused before a byte of WebSocket
    liar = await start_gateway(BASE + hosts("echo.test", ep, "wss",
                                            f'identity = ["id:{near_id}"]'))
    with pytest.raises(DialError) as ei:
        await liar.dial(echo)
    assert ei.value.reason == "identity"


async def test_ws_dialer_through_http_proxy(start_gateway: StartGateway, websockify: int,
                                            echo_server: tuple[str, int]) -> None:
    proxy = await start_gateway(BASE + ws_listener("proxy", proto="http"))
    gw = await start_gateway(BASE + f'[ws]\nproxy = "127.0.0.1:{port_of(proxy, "proxy")}"\n'
                             + hosts("echo.test", f"127.0.0.1:{websockify}", "ws"))
    data = pattern(300_000)
    assert await roundtrip(gw, f"echo.test:{echo_server[1]}", data, False) == data
    assert metric(proxy, "ugate_connections_total", listener="proxy", protocol="http") == 1


async def test_masked_server_frame_closes_1002(start_gateway: StartGateway) -> None:
    closes: list[bytes] = []

    async def bad_server(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = (await r.readuntil(b"\r\n\r\n")).decode()
        key = next(ln.split(":", 1)[1].strip() for ln in head.split("\r\n")
                   if ln.lower().startswith("sec-websocket-key:"))
        w.write(f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade"
                f"\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n\r\n".encode())
        mask = b"\x01\x02\x03\x04"
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"hello"))
        w.write(b"\x82\x85" + mask + payload)  # a server must not mask
        hdr = await r.readexactly(2)
        n = hdr[1] & 0x7F
        m = await r.readexactly(4)
        body = bytes(b ^ m[i % 4] for i, b in enumerate(await r.readexactly(n)))
        closes.append(bytes([hdr[0]]) + body)
        w.close()

    server = await asyncio.start_server(bad_server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gw = await start_gateway(BASE + hosts("bad.test", f"127.0.0.1:{port}", "ws"))
    s = await gw.dial("bad.test:80")
    with pytest.raises(ConnectionError):
        async with asyncio.timeout(5):
            while await s.read():
                pass
            await s.drain()
            raise ConnectionResetError("ended")
    server.close()
    assert closes and closes[0][0] == 0x88
    assert struct.unpack("!H", closes[0][1:3])[0] == 1002
    assert b"mask" in closes[0][3:]


async def test_wss_dialer_through_http_proxy(start_gateway: StartGateway,
                                             echo_server: tuple[str, int]) -> None:
    far = await start_gateway(BASE + ws_listener(proto="wss")
                              + hosts("echo.test", f"127.0.0.1:{echo_server[1]}", "tcp"))
    proxy = await start_gateway(BASE + ws_listener("proxy", proto="http"))
    near = await start_gateway(
        BASE + f'[ws]\nproxy = "127.0.0.1:{port_of(proxy, "proxy")}"\n'
        + hosts("echo.test", f"127.0.0.1:{port_of(far)}", "wss",
                f'identity = ["id:{far.identity.id}"]'))
    data = pattern(400_000)
    assert await roundtrip(near, f"echo.test:{echo_server[1]}", data) == data
    assert metric(proxy, "ugate_connections_total", listener="proxy", protocol="http") == 1
    assert metric(near, "ugate_dials_total", dialer="wss", result="ok") == 1


async def test_ws_dialer_handshake_deadline(start_gateway: StartGateway) -> None:
    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read()  # reads the upgrade request and never answers
        w.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gw = await start_gateway(BASE + "connect_timeout = 0.5\n"
                             + hosts("slow.test", f"127.0.0.1:{port}", "ws"))
    with pytest.raises(DialError) as ei:
        await gw.dial("slow.test:80")
    server.close()
    assert ei.value.reason == "timeout"
