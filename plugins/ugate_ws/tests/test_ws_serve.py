"""``[ws] serve``: a WebSocket path that carries an installed listener protocol. Which
protocols may be served, the default ``/mqtt``, and a second protocol (SOCKS5) through the
same mechanism, with a real WebSocket client."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from ugate_core import ConfigError, Gateway, loads
from ugate_core.testing import StartGateway, metric, pattern
from ugate_ws.services import services_of

from .conftest import BASE, port_of, raw_request, upgrade_head, ws_listener


def listener(extra: str = "", protocols: str = '["*"]') -> str:
    return f'[listeners.main]\nlisten = "127.0.0.1:0"\nprotocols = {protocols}\n{extra}\n'


def services(text: str, tmp_path: Path) -> dict[str, str]:
    gw = Gateway(loads(BASE + listener() + text), state_dir=tmp_path)
    gw.check()
    return {p: s.protocol for p, s in services_of(gw).items()}


def test_default_and_configured_paths(tmp_path: Path) -> None:
    pytest.importorskip("ugate_mqtt")
    assert services("", tmp_path) == {"/mqtt": "mqtt"}
    assert services('[ws]\nserve = { "/mqtt" = "" }\n', tmp_path) == {}
    assert services('[ws]\nserve = { "/dev/mqtt/" = "mqtt" }\n', tmp_path) == {
        "/mqtt": "mqtt", "/dev/mqtt": "mqtt"}


@pytest.mark.parametrize(("serve", "error"), [
    ('{ "/t" = "tcp" }', r"ws\.serve\.\"/t\": 'tcp' cannot be served over WebSocket: it does "
                         r"not relay through the policy"),
    ('{ "/t" = "tls" }', "'tls' cannot be served over WebSocket"),
    ('{ "/w" = "ws" }', "'ws' cannot be served over WebSocket: it is WebSocket itself"),
    ('{ "/n" = "nope" }', r"'nope' is not an installed protocol \(installed: "),
    ('{ "/.well-known/ugate/ws/x" = "mqtt" }', "overlaps the destination paths"),
    ('{ "/" = "mqtt" }', "not a path"),
    ('{ "/a?b" = "mqtt" }', "not a path"),
    ('{ "/a" = 1 }', "1 is not a protocol name"),
    ('"mqtt"', "is not a table of paths to protocols"),
])
def test_refused_serve_entries(tmp_path: Path, serve: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        services(f"[ws]\nserve = {serve}\n", tmp_path)


async def test_socks5_over_websocket(start_gateway: StartGateway,
                                     echo_server: tuple[str, int]) -> None:
    """Not an MQTT special case: SOCKS5 served on /socks, through the policy as on TCP."""
    pytest.importorskip("ugate_socks")
    gw = await start_gateway(BASE + listener() + '[ws]\nserve = { "/socks" = "socks5" }\n')
    url = f"ws://127.0.0.1:{gw.port('main')}/socks"
    data = pattern(200_000)
    async with connect(url, subprotocols=["socks5"],  # type: ignore[list-item]
                       open_timeout=5, max_size=None) as ws:
        assert ws.subprotocol == "socks5"
        await ws.send(b"\x05\x01\x00")
        assert await ws.recv() == b"\x05\x00"
        await ws.send(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + echo_server[1].to_bytes(2, "big"))
        got = await ws.recv()
        assert isinstance(got, bytes) and got[:2] == b"\x05\x00"
        for i in range(0, len(data), 50_000):  # messages within [ws] max_message
            await ws.send(data[i : i + 50_000])
        echoed = b""
        async with asyncio.timeout(10):
            while len(echoed) < len(data):
                m = await ws.recv()
                assert isinstance(m, bytes)
                echoed += m
        assert echoed == data
    # a client offering something else is refused before the upgrade
    with pytest.raises(InvalidStatus) as ei:
        async with connect(url, subprotocols=["mqtt"],  # type: ignore[list-item]
                           open_timeout=5):
            pass
    assert ei.value.response.status_code == 400
    assert b"path /socks carries 'socks5', offer 'socks5'" in ei.value.response.body
    assert metric(gw, "ugate_rejections_total", listener="main", reason="bad_subprotocol") == 1


async def test_a_listener_serves_only_the_protocols_it_lists(start_gateway: StartGateway,
                                                            echo_server: tuple[str, int]) -> None:
    pytest.importorskip("ugate_socks")
    serve = '[ws]\nserve = { "/socks" = "socks5" }\n'
    gw = await start_gateway(BASE + listener(protocols='["http"]') + serve)
    with pytest.raises(InvalidStatus) as ei:
        async with connect(f"ws://127.0.0.1:{gw.port('main')}/socks", open_timeout=5):
            pass
    assert ei.value.response.status_code == 404
    assert (b"path /socks carries 'socks5', which listener 'main' does not serve (add it to "
            b"its protocols)") in ei.value.response.body
    assert metric(gw, "ugate_rejections_total", listener="main", reason="not_served") == 1
    gw = await start_gateway(BASE + listener(protocols='["http", "socks5"]') + serve)
    async with connect(f"ws://127.0.0.1:{gw.port('main')}/socks", open_timeout=5) as ws:
        assert ws.subprotocol is None  # none offered, none selected
        await ws.send(b"\x05\x01\x00")
        assert await ws.recv() == b"\x05\x00"


async def test_the_dedicated_ws_listener_serves_no_protocol(start_gateway: StartGateway) -> None:
    pytest.importorskip("ugate_mqtt")
    gw = await start_gateway(BASE + ws_listener())
    head = await raw_request(port_of(gw), upgrade_head("/mqtt",
                                                       extra="Sec-WebSocket-Protocol: mqtt\r\n"))
    assert head.startswith(b"HTTP/1.1 404 ")
    assert b"path /mqtt carries 'mqtt', which listener 'ws' does not serve" in head
