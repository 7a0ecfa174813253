"""The ws listener end to end: Python (websockets), Node (ws) and Chromium clients through
ugate to a TCP echo origin; refusals before the upgrade; bad frames."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ugate_core import make_token
from ugate_core.testing import StartGateway, browser_run, metric, node_run, pattern

from .conftest import BASE, MIB, port_of, raw_request, upgrade_head, write_public_key, ws_listener


def url(port: int, target: str, query: str = "") -> str:
    return f"ws://127.0.0.1:{port}/.well-known/ugate/ws/{target}{query}"


async def echo_through(uri: str, data: bytes, chunk: int = 64 * 1024, **kw: object) -> bytes:
    async with connect(uri, max_size=None, compression=None, open_timeout=5, **kw) as ws:
        async def send() -> None:
            for i in range(0, len(data), chunk):
                await ws.send(data[i : i + chunk])
            await ws.send(b"")  # half-close

        task = asyncio.create_task(send())
        got = bytearray()
        async with asyncio.timeout(20):
            while True:
                m = await ws.recv()
                assert isinstance(m, bytes), f"text message {m!r}"
                if not m:
                    break  # the origin's half-close
                got += m
        await task
        return bytes(got)


async def test_python_client_1mib_echo_and_half_close(start_gateway: StartGateway,
                                                      echo_server: tuple[str, int]) -> None:
    gw = await start_gateway(BASE + ws_listener())
    data = pattern(MIB)
    got = await echo_through(url(port_of(gw), f"127.0.0.1:{echo_server[1]}"), data)
    assert got == data
    assert metric(gw, "ugate_ws_upgrades_total", listener="ws", http_version="1.1") == 1


async def test_two_at_once(start_gateway: StartGateway, echo_server: tuple[str, int]) -> None:
    gw = await start_gateway(BASE + ws_listener())
    u = url(port_of(gw), f"127.0.0.1:{echo_server[1]}")
    a, b = pattern(300_000, 1), pattern(500_000, 2)
    assert await asyncio.gather(echo_through(u, a), echo_through(u, b)) == [a, b]


async def test_text_message_closes_1003(start_gateway: StartGateway,
                                        echo_server: tuple[str, int]) -> None:
    gw = await start_gateway(BASE + ws_listener())
    async with connect(url(port_of(gw), f"127.0.0.1:{echo_server[1]}"), open_timeout=5) as ws:
        await ws.send("hello")
        with pytest.raises(ConnectionClosed) as ei:
            async with asyncio.timeout(5):
                await ws.recv()
    assert ei.value.rcvd is not None and ei.value.rcvd.code == 1003
    assert "binary messages only" in ei.value.rcvd.reason
    assert metric(gw, "ugate_rejections_total", listener="ws", reason="text_message") == 1


async def test_oversized_message_closes_1009(start_gateway: StartGateway,
                                             echo_server: tuple[str, int]) -> None:
    gw = await start_gateway(BASE + "[ws]\nmax_message = 1024\n" + ws_listener())
    u = url(port_of(gw), f"127.0.0.1:{echo_server[1]}")
    async with connect(u, open_timeout=5, max_size=None) as ws:
        await ws.send(b"x" * 1000)
        assert await ws.recv() == b"x" * 1000  # within the limit: echoed
        await ws.send(b"y" * 2048)
        with pytest.raises(ConnectionClosed) as ei:
            async with asyncio.timeout(5):
                await ws.recv()
    assert ei.value.rcvd is not None and ei.value.rcvd.code == 1009
    assert metric(gw, "ugate_rejections_total", listener="ws", reason="message_too_large") == 1
    # another WebSocket on the same listener is unaffected
    assert await echo_through(u, b"z" * 5000, chunk=1000) == b"z" * 5000


@pytest.mark.parametrize(("head", "status", "reason"), [
    (dict(upgrade="h2c"), b"400", "not_websocket"),
    (dict(key="short"), b"400", "bad_websocket_key"),
    (dict(key="!!!!not-base64!!!!!!!!=="), b"400", "bad_websocket_key"),
    (dict(version="8"), b"426", "bad_websocket_version"),
])
async def test_bad_upgrades(start_gateway: StartGateway, echo_server: tuple[str, int],
                            head: dict[str, str], status: bytes, reason: str) -> None:
    gw = await start_gateway(BASE + ws_listener())
    out = await raw_request(port_of(gw), upgrade_head(
        f"/.well-known/ugate/ws/127.0.0.1:{echo_server[1]}", **head))
    assert out.startswith(b"HTTP/1.1 " + status), out
    assert metric(gw, "ugate_rejections_total", listener="ws", reason=reason) == 1


async def test_bad_path_and_refused_origin(start_gateway: StartGateway,
                                           echo_server: tuple[str, int]) -> None:
    gw = await start_gateway(BASE + ws_listener())
    out = await raw_request(port_of(gw), upgrade_head("/.well-known/ugate/ws/nohost"))
    assert out.startswith(b"HTTP/1.1 400"), out
    assert b"names no destination" not in out and b"bad_target" not in out
    out = await raw_request(port_of(gw), upgrade_head(
        f"/.well-known/ugate/ws/127.0.0.1:{echo_server[1]}",
        extra="Origin: https://evil.example\r\n"))
    assert out.startswith(b"HTTP/1.1 403"), out
    assert b"Origin 'https://evil.example' is not allowed" in out
    assert metric(gw, "ugate_rejections_total", listener="ws", reason="origin") == 1
    # a destination nobody listens on: 502 before any upgrade
    out = await raw_request(port_of(gw), upgrade_head("/.well-known/ugate/ws/127.0.0.1:1"))
    assert out.startswith(b"HTTP/1.1 502"), out


async def test_half_open_flood_is_bounded(start_gateway: StartGateway,
                                          echo_server: tuple[str, int]) -> None:
    gw = await start_gateway(BASE.replace("3.0", "1.0") + ws_listener())
    port = port_of(gw)
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(40)]
    for _, w in conns:
        w.write(b"GET /.well-known/ugate/ws/127.0.0.1:1 HTTP/1.1\r\nUpgrade: websocket\r\n")
    # a real client meanwhile is served
    data = pattern(100_000)
    assert await echo_through(url(port, f"127.0.0.1:{echo_server[1]}"), data) == data
    async with asyncio.timeout(5):
        for r, _ in conns:
            assert await r.read() == b""  # dropped at the handshake deadline
    for _, w in conns:
        w.close()
    assert metric(gw, "ugate_rejections_total", listener="ws", reason="handshake_timeout") == 40


# ------------------------------------------------------------------ auth beyond loopback


async def test_tokens_and_rules(start_gateway: StartGateway, echo_server: tuple[str, int],
                                tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    stranger = ed25519.Ed25519PrivateKey.generate()
    pub = write_public_key(key, tmp_path / "token.pub")
    echo = f"127.0.0.1:{echo_server[1]}"
    # allow names something else: this listener's clients are not the local user
    gw = await start_gateway(BASE + f"""
[tokens]
trusted_keys = ["{pub}"]
audience = "gw-test"
{ws_listener(extra='allow = ["status.invalid:80"]')}
[[rules]]
clients = ["user:alice"]
to = ["{echo}"]
""")
    port = port_of(gw)

    async def status(query: str = "", **kw: object) -> int:
        try:
            async with connect(url(port, echo, query), open_timeout=5, **kw):
                return 101
        except InvalidStatus as e:
            return e.response.status_code

    now = time.time()
    assert await status() == 401                                          # no token
    assert await status("?token=" + make_token(key, "alice", "gw-test", -10)) == 401  # expired
    assert await status("?token=" + make_token(key, "alice", "other-gw", 60)) == 401  # audience
    assert await status("?token=" + make_token(stranger, "alice", "gw-test", 60)) == 401
    assert await status("?token=" + make_token(key, "bob", "gw-test", 60)) == 403  # no rule
    for reason in ("token_expired", "token_audience", "token_unknown_key"):
        assert metric(gw, "ugate_rejections_total", listener="ws", reason=reason) == 1
    assert metric(gw, "ugate_dial_errors_total", reason="denied") == 2
    good = make_token(key, "alice", "gw-test", 60, now=now)
    data = pattern(200_000)
    assert await echo_through(url(port, echo, "?token=" + good), data) == data
    # the same token in Sec-WebSocket-Protocol (a browser cannot set headers)
    got = await echo_through(url(port, echo), data,
                             subprotocols=["ugate", "ugate.token." + good])
    assert got == data


# ------------------------------------------------------------------ Node and Chromium


async def test_node_ws_client(start_gateway: StartGateway, echo_server: tuple[str, int]) -> None:
    gw = await start_gateway(BASE + ws_listener())
    u = url(port_of(gw), f"127.0.0.1:{echo_server[1]}")
    res = await node_run("""
const WebSocket = require('ws');
const ws = new WebSocket(process.argv[2]);
const size = 1 << 20; const data = Buffer.alloc(size);
for (let i = 0; i < size; i++) data[i] = (i * 7 + 3) & 255;
const got = [];
ws.on('open', () => { for (let i = 0; i < size; i += 65536) ws.send(data.subarray(i, i + 65536));
                      ws.send(Buffer.alloc(0)); });
ws.on('message', (m) => { if (m.length === 0) { const all = Buffer.concat(got);
  console.log(JSON.stringify({n: all.length, same: all.equals(data)})); ws.close(1000); }
  else got.push(m); });
ws.on('error', (e) => { console.log(JSON.stringify({error: String(e)})); process.exit(1); });
""", u, timeout=30)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.decode().strip().splitlines()[-1]) == {"n": MIB, "same": True}


BROWSER_ECHO = """
const url = %s;
// one WebSocket: send size bytes then a half-close (an empty message); the result says how
// many bytes came back, whether they are the same, whether the gateway's half-close came
// (then the page closes with 1000) and the close code (-1: no close within 10 s)
function one(size, seed) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url); ws.binaryType = 'arraybuffer';
    const data = new Uint8Array(size);
    for (let i = 0; i < size; i++) data[i] = (i * 31 + seed) & 255;
    const got = new Uint8Array(size); let n = 0; let fin = false;
    const result = (code) => { let same = n === size;
      for (let i = 0; same && i < size; i++) if (got[i] !== data[i]) same = false;
      resolve({n, same, fin, code}); };
    ws.onopen = () => { for (let i = 0; i < size; i += 65536) ws.send(data.subarray(i, i + 65536));
                        ws.send(new Uint8Array(0)); };
    ws.onmessage = (ev) => { const b = new Uint8Array(ev.data);
      if (b.length === 0) { fin = true; ws.close(1000); return; }
      if (n + b.length > size) { reject(new Error('more bytes than sent')); return; }
      got.set(b, n); n += b.length;
      if (n === size) setTimeout(() => result(-1), 10000); };
    ws.onerror = () => reject(new Error('websocket error'));
    ws.onclose = (ev) => result(ev.code);
  });
}
return await Promise.all([one(1 << 20, 1), one(300000, 2)]);
"""


async def test_chromium_1mib_two_sockets_half_close(start_gateway: StartGateway,
                                                    echo_server: tuple[str, int]) -> None:
    gw = await start_gateway(BASE + '[ws]\norigins = ["*"]\n' + ws_listener())
    u = url(port_of(gw), f"127.0.0.1:{echo_server[1]}")
    res = await browser_run(BROWSER_ECHO % json.dumps(u), timeout=40)
    assert res == [{"n": MIB, "same": True, "fin": True, "code": 1000},
                   {"n": 300000, "same": True, "fin": True, "code": 1000}]


async def test_idle_websocket_closes_1001(start_gateway: StartGateway,
                                          echo_server: tuple[str, int]) -> None:
    gw = await start_gateway(BASE + "[ws]\nidle_timeout = 0.3\n" + ws_listener())
    async with connect(url(port_of(gw), f"127.0.0.1:{echo_server[1]}"), open_timeout=5,
                       ping_interval=None) as ws:
        await ws.send(b"ping")
        assert await ws.recv() == b"ping"
        t0 = time.monotonic()
        with pytest.raises(ConnectionClosed) as ei:
            async with asyncio.timeout(5):
                await ws.recv()
    assert 0.25 < time.monotonic() - t0 < 3
    assert ei.value.rcvd is not None and ei.value.rcvd.code == 1001
    assert ei.value.rcvd.reason == "idle for 0.3 s"
    assert metric(gw, "ugate_rejections_total", listener="ws", reason="idle_timeout") == 1


async def test_chromium_wss_listener_http11(start_gateway: StartGateway,
                                            echo_server: tuple[str, int]) -> None:
    import base64
    import hashlib

    from cryptography.hazmat.primitives import serialization

    gw = await start_gateway(BASE + '[ws]\norigins = ["*"]\n' + ws_listener(proto="wss"))
    spki = gw.identity.key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    u = f"wss://127.0.0.1:{port_of(gw)}/.well-known/ugate/ws/127.0.0.1:{echo_server[1]}"
    res = await browser_run(BROWSER_ECHO % json.dumps(u), timeout=40,
                            flags=(f"--ignore-certificate-errors-spki-list={pin}",))
    assert res == [{"n": MIB, "same": True, "fin": True, "code": 1000},
                   {"n": 300000, "same": True, "fin": True, "code": 1000}]
    assert metric(gw, "ugate_ws_upgrades_total", listener="ws", http_version="1.1") == 2


async def test_destination_reset_reaches_the_client_as_1011(
        start_gateway: StartGateway, reset_server: tuple[str, int]) -> None:
    from ugate_core.testing import RESET_BYTES

    gw = await start_gateway(BASE + ws_listener())
    got = b""
    async with connect(url(port_of(gw), f"127.0.0.1:{reset_server[1]}"), open_timeout=5,
                       max_size=None) as ws:
        with pytest.raises(ConnectionClosed) as ei:
            async with asyncio.timeout(5):
                while True:
                    m = await ws.recv()
                    assert isinstance(m, bytes) and m, "a clean end, not a reset"
                    got += m
    assert got == pattern(RESET_BYTES)
    assert ei.value.rcvd is not None and ei.value.rcvd.code == 1011
