"""The ws route on ugate-http's listeners: HTTP/1.1 Upgrade on a shared port, WebSocket over
HTTP/2 (RFC 8441) from Chromium on an HTTPS page served by the same gateway, wss with the
workload certificate."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from websockets.asyncio.client import connect

from ugate_core import Gateway, GatewayAPI, hookimpl, loads
from ugate_core.testing import StartGateway, browser_run, metric, pattern
from ugate_http.routes import Exchange, HttpRoute

from .conftest import BASE, MIB, port_of, raw_request, upgrade_head, ws_listener
from .test_ws_e2e import BROWSER_ECHO, echo_through, url

PAGE = b"<!doctype html><meta charset=utf-8><title>ugate ws test</title><body>ws test</body>"


async def page(ex: Exchange) -> None:
    await ex.respond(200, [("content-type", "text/html; charset=utf-8")], PAGE)


class PagePlugin:
    @hookimpl
    def ugate_http_routes(self, gateway: GatewayAPI) -> list[HttpRoute]:
        return [HttpRoute("/page", page, methods=frozenset({"GET"}))]


async def test_shared_port_upgrade(start_gateway: StartGateway,
                                   echo_server: tuple[str, int]) -> None:
    gw = await start_gateway(BASE + ws_listener("main", proto="*"))
    port = port_of(gw, "main")
    data = pattern(MIB)
    assert await echo_through(url(port, f"127.0.0.1:{echo_server[1]}"), data) == data
    assert metric(gw, "ugate_ws_upgrades_total", listener="main", http_version="1.1") == 1
    # refusals keep their words through the HTTP front
    out = await raw_request(port, upgrade_head(f"/.well-known/ugate/ws/127.0.0.1:"
                                               f"{echo_server[1]}", key="short"))
    assert out.startswith(b"HTTP/1.1 400"), out
    assert b"Sec-WebSocket-Key 'short' is not 16 bytes in base64" in out


def spki_pin(gw: Gateway) -> str:
    spki = gw.identity.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


async def test_chromium_wss_over_h2(tmp_path: Path, echo_server: tuple[str, int]) -> None:
    gw = Gateway(loads(BASE + ws_listener("main", proto="*")), state_dir=tmp_path / "state")
    gw.pm.register(PagePlugin(), name="page-test")  # the page, served by the gateway itself
    await gw.start()
    try:
        await chromium_h2(gw, echo_server[1])
    finally:
        await gw.shutdown(0.5)


async def chromium_h2(gw: Gateway, echo_port: int) -> None:
    port = port_of(gw, "main")
    u = f"wss://127.0.0.1:{port}/.well-known/ugate/ws/127.0.0.1:{echo_port}"
    res = await browser_run(
        "await fetch('/page');\n" + BROWSER_ECHO % json.dumps(u),
        url=f"https://127.0.0.1:{port}/page",
        flags=(f"--ignore-certificate-errors-spki-list={spki_pin(gw)}",), timeout=40)
    assert [(r["n"], r["same"]) for r in res] == [(MIB, True), (300000, True)]
    assert metric(gw, "ugate_ws_upgrades_total", listener="main", http_version="2") == 2
    assert metric(gw, "ugate_ws_upgrades_total", listener="main", http_version="1.1") == 0
    if res != [{"n": MIB, "same": True, "fin": True, "code": 1000},
               {"n": 300000, "same": True, "fin": True, "code": 1000}]:
        # Known, in Chromium: in one run in three to ten, the page's half-close (a 6-byte
        # frame sent right after 1 MiB of messages, in the same task) never leaves the
        # browser. Chromium's own net log (--log-net-log) of such a run: 1048800 bytes sent on
        # the stream (16 x (65536 + 14)), the last at once after the previous, then nothing
        # until its RST_STREAM at teardown, with 802751 bytes of stream send window open;
        # bufferedAmount says 0. The gateway decoded every byte Chromium sent. Sending the
        # empty message from a later task does not avoid it (4 of 10). The bytes both ways
        # are asserted above.
        pytest.xfail(f"Chromium held back the half-close over h2: {res}")


async def test_other_websocket_paths_still_reach_the_reverse_proxys_origin(
        start_gateway: StartGateway, echo_server: tuple[str, int]) -> None:
    """Both plugins on one port: ugate-ws answers its path, every other WebSocket upgrade is
    ugate-http's reverse proxy's (here to a websockets server as the origin)."""
    from websockets.asyncio.server import ServerConnection, serve

    async def origin_echo(conn: ServerConnection) -> None:
        async for m in conn:
            await conn.send(b"origin:" + (m if isinstance(m, bytes) else m.encode()))

    async with serve(origin_echo, "127.0.0.1", 0) as origin:
        oport = origin.sockets[0].getsockname()[1]
        gw = await start_gateway(BASE + ws_listener("web", proto="http",
                                                    extra='mode = "auto"') + f"""
[hosts."app.test"]
endpoints = ["127.0.0.1:{oport}"]
""")
        port = port_of(gw, "web")
        async with connect("ws://app.test/chat", host="127.0.0.1", port=port,
                           open_timeout=5) as ws:
            await ws.send(b"hi")
            assert await ws.recv() == b"origin:hi"
        data = pattern(200_000)
        assert await echo_through(url(port, f"127.0.0.1:{echo_server[1]}"), data) == data
    assert metric(gw, "ugate_ws_upgrades_total", listener="web", http_version="1.1") == 1
