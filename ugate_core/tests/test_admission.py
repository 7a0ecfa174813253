"""One max_connections rule for every listener: the tls listener (own socket, own accept
loop) counts a connection until its socket closes, like the gateway's own ports."""

from __future__ import annotations

import asyncio
import ssl

from ugate_core.testing import StartGateway, metric


def _client_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=_client_ctx()), 5)


async def test_tls_listener_counts_until_the_socket_closes(
    start_gateway: StartGateway, echo_server: tuple[str, int]
) -> None:
    host, port = echo_server
    gw = await start_gateway(f"""
[admin]
listen = ""
[gateway]
max_connections = 2
[listeners.t]
listen = "127.0.0.1:0"
protocols = ["tls"]
target = "{host}:{port}"
""")
    tp = gw.port("t")
    held = [await _open(tp) for _ in range(2)]
    for r, w in held:
        w.write(b"x")
        await w.drain()
        assert await asyncio.wait_for(r.readexactly(1), 5) == b"x"
    try:  # refused before the handshake: the client sees a reset or an EOF
        r3, w3 = await _open(tp)
        assert await asyncio.wait_for(r3.read(), 5) == b""
        w3.close()
    except (ssl.SSLError, ConnectionError):
        pass
    assert metric(gw, "ugate_rejections_total", listener="t", reason="max_connections") == 1
    running = gw.running["t"]
    assert getattr(running, "active", None) == 2
    held.pop()[1].close()
    for _ in range(100):
        if getattr(running, "active", None) == 1:
            break
        await asyncio.sleep(0.02)
    r4, w4 = await _open(tp)
    w4.write(b"again")
    await w4.drain()
    assert await asyncio.wait_for(r4.readexactly(5), 5) == b"again"
    for _, w in [*held, (r4, w4)]:
        w.close()
    for _ in range(100):
        if getattr(running, "active", None) == 0:
            break
        await asyncio.sleep(0.02)
    assert getattr(running, "active", None) == 0
