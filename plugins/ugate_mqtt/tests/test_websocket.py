"""MQTT over WebSocket through ugate-ws (``ws://host:port/mqtt``, subprotocol ``mqtt``): mqtt.js
in Node and in headless Chromium to a real mosquitto, mosquitto_sub over plain TCP at the same
broker, refusals as CONNACK codes, and the WebSocket-level refusals (Origin, subprotocol)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ugate_core import Gateway, GatewayAPI, hookimpl, id_of_public_key, loads
from ugate_core.testing import (
    StartGateway,
    browser_run,
    js_dir,
    metric,
    node_run,
    pattern,
)
from ugate_mqtt.token import mint

from .conftest import Broker, Sub, gateway_config

pytest.importorskip("ugate_ws")

#: every byte value, then a pattern: what each message carries (topic suffix varies)
PAYLOAD = bytes(range(256)) + pattern(3000, seed=7)


def config(broker: str, *, options: str = "", extra: str = "", ws: str = "") -> str:
    """A shared-port listener ``main`` (ugate-http answers the WebSocket, mqtt's keys
    apply) in front of ``broker``."""
    return gateway_config(broker, listener="main", protocols='["*"]', options=options,
                          extra=f"{extra}\n[ws]\n{ws}\n")


# mqtt.js in Node: subscribe to t/#, publish PAYLOAD at QoS 0 and 1, print what came back
NODE_PUBSUB = r"""
const mqtt = require("mqtt");
const [url, version, payloadHex] = process.argv.slice(2);
const payload = Buffer.from(payloadHex, "hex");
const c = mqtt.connect(url, { protocolVersion: Number(version), reconnectPeriod: 0,
                              connectTimeout: 5000, clientId: "js-" + version });
const got = [];
const say = (o, rc) => { console.log(JSON.stringify(o)); if (rc !== undefined) process.exit(rc); };
const timer = setTimeout(() => say({ error: "timeout", got }, 2), 15000);
c.on("error", (e) => say({ error: e.message, code: e.code }, 1));
c.on("message", (topic, msg, packet) => {
  got.push({ topic, qos: packet.qos, hex: msg.toString("hex") });
  if (got.length === 2) {
    clearTimeout(timer);
    c.end(false, () => { console.log(JSON.stringify({ got })); });
  }
});
c.on("connect", () => {
  c.subscribe("t/#", { qos: 1 }, (err) => {
    if (err) { console.log(JSON.stringify({ error: String(err) })); process.exit(1); }
    c.publish("t/q0", payload, { qos: 0 });
    c.publish("t/q1", payload, { qos: 1 }, (e) => { if (e) console.error(e); });
  });
});
"""

# mqtt.js in Node: connect and report the CONNACK refusal
NODE_REFUSED = r"""
const mqtt = require("mqtt");
const [url, version, username, password] = process.argv.slice(2);
const opts = { protocolVersion: Number(version), reconnectPeriod: 0, connectTimeout: 5000,
               clientId: "refused" };
if (username) { opts.username = username; opts.password = password; }
const c = mqtt.connect(url, opts);
setTimeout(() => { console.log(JSON.stringify({ error: "timeout" })); process.exit(2); }, 15000);
c.on("connect", () => { console.log(JSON.stringify({ connected: true })); process.exit(0); });
c.on("error", (e) => {
  console.log(JSON.stringify({ code: e.code, message: e.message }));
  process.exit(0);
});
"""


async def node_json(code: str, *args: str) -> dict[str, object]:
    res = await node_run(code, *args, timeout=30)
    lines = [ln for ln in res.stdout.decode().splitlines() if ln.startswith("{")]
    assert lines, (res.returncode, res.stderr.decode()[-2000:])
    out: dict[str, object] = json.loads(lines[-1])
    return out


@pytest.mark.parametrize("version", ["4", "5"])
async def test_mqttjs_over_websocket_meets_mosquitto_sub_over_tcp(
        start_gateway: StartGateway, mosquitto: Broker, subs: list[Sub], version: str) -> None:
    gw = await start_gateway(config(mosquitto.address))
    port = gw.port("main")
    # plain MQTT over TCP, through the same port: both paths meet at one broker
    s = await Sub.start(port, "t/#", "31", qos=1)  # MQTT 3.1: counted apart
    subs.append(s)
    out = await node_json(NODE_PUBSUB, f"ws://127.0.0.1:{port}/mqtt", version, PAYLOAD.hex())
    assert "error" not in out, out
    got = sorted(out["got"], key=lambda m: m["topic"])  # type: ignore[arg-type,index]
    assert got == [{"topic": "t/q0", "qos": 0, "hex": PAYLOAD.hex()},
                   {"topic": "t/q1", "qos": 1, "hex": PAYLOAD.hex()}]
    tcp = sorted(await s.messages(2), key=lambda m: m[1])
    assert tcp == [(False, 0, PAYLOAD), (False, 1, PAYLOAD)]
    level = {"4": "3.1.1", "5": "5.0"}[version]
    assert metric(gw, "ugate_mqtt_connects_total", listener="main", version=level,
                  result="ok") == 1
    assert metric(gw, "ugate_mqtt_connects_total", listener="main", version="3.1",
                  result="ok") == 1
    assert metric(gw, "ugate_ws_upgrades_total", listener="main", http_version="1.1") == 1


@pytest.mark.parametrize(("version", "code"), [("4", 3), ("5", 0x88)])
async def test_no_route_is_a_connack_mqttjs_reports(start_gateway: StartGateway,
                                                    version: str, code: int) -> None:
    # no broker, no route, and a WebSocket has no SNI: "server unavailable"
    text = config("127.0.0.1:1").replace('broker = "broker.test"\n', "")
    gw = await start_gateway(text)
    out = await node_json(NODE_REFUSED, f"ws://127.0.0.1:{gw.port('main')}/mqtt", version)
    assert out["code"] == code, out
    level = {"4": "3.1.1", "5": "5.0"}[version]
    assert metric(gw, "ugate_mqtt_connects_total", listener="main", version=level,
                  result="unavailable") == 1


KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.mark.parametrize(("version", "code"), [("4", 5), ("5", 0x87)])
async def test_fresh_mesh_token_without_a_rule_is_not_authorized(
        start_gateway: StartGateway, mosquitto: Broker, version: str, code: int) -> None:
    # an allow list makes the loopback listener judge its clients (not the local user's
    # proxy); the rule names one device, not the fresh key below
    rules = f"""
[[rules]]
listeners = ["main"]
clients = ["id:{id_of_public_key(KEY)}"]
to = ["broker.test:1883"]
"""
    gw = await start_gateway(config(mosquitto.address, options='allow = ["nothing.test:1"]',
                                    extra=rules))
    url = f"ws://127.0.0.1:{gw.port('main')}/mqtt"
    fresh = ec.generate_private_key(ec.SECP256R1())  # verifies, but no rule names it
    user, pw = mint(fresh)
    out = await node_json(NODE_REFUSED, url, version, user, pw)
    assert out["code"] == code, out
    # the device the rule names gets through, over the same path
    user, pw = mint(KEY)
    assert await node_json(NODE_REFUSED, url, version, user, pw) == {"connected": True}
    level = {"4": "3.1.1", "5": "5.0"}[version]
    assert metric(gw, "ugate_mqtt_connects_total", listener="main", version=level,
                  result="not_authorized") == 1
    assert metric(gw, "ugate_dial_errors_total", reason="denied") == 1


async def raw_upgrade(port: int, path: str, extra: str = "") -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                f"Sec-WebSocket-Version: 13\r\n{extra}\r\n".encode())
        async with asyncio.timeout(5):
            return await r.readuntil(b"\r\n\r\n")
    finally:
        w.close()


async def test_websocket_refusals_before_mqtt(start_gateway: StartGateway,
                                              mosquitto: Broker) -> None:
    gw = await start_gateway(config(mosquitto.address,
                                    ws='origins = ["https://app.example"]'))
    port = gw.port("main")
    # another site's page: refused before the upgrade
    head = await raw_upgrade(port, "/mqtt", "Origin: https://evil.example\r\n"
                             "Sec-WebSocket-Protocol: mqtt\r\n")
    assert head.startswith(b"HTTP/1.1 403 ")
    # a client that offers only another subprotocol
    head = await raw_upgrade(port, "/mqtt", "Sec-WebSocket-Protocol: ugate, chat\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert metric(gw, "ugate_rejections_total", listener="main", reason="origin") == 1
    assert metric(gw, "ugate_rejections_total", listener="main",
                  reason="bad_subprotocol") == 1
    # the allowed origin, offering mqtt beside another: mqtt is selected
    head = await raw_upgrade(port, "/mqtt", "Origin: https://app.example\r\n"
                             "Sec-WebSocket-Protocol: chat, mqtt\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"\r\nsec-websocket-protocol: mqtt\r\n" in head.lower()
    # MQTT 3.1 clients offer mqttv3.1
    head = await raw_upgrade(port, "/mqtt", "Sec-WebSocket-Protocol: mqttv3.1\r\n")
    assert b"\r\nsec-websocket-protocol: mqttv3.1\r\n" in head.lower()


async def test_stalled_and_garbage_connects_over_websocket(start_gateway: StartGateway,
                                                          mosquitto: Broker) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    gw = await start_gateway(config(mosquitto.address).replace(
        "handshake_timeout = 3.0", "handshake_timeout = 0.5"))
    url = f"ws://127.0.0.1:{gw.port('main')}/mqtt"
    # upgraded, then no CONNECT: closed at the handshake deadline, as over TCP
    async with connect(url, subprotocols=["mqtt"], open_timeout=5) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "mqtt"
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(5):
                await ws.recv()
        assert asyncio.get_running_loop().time() - t0 < 3
    # garbage after 0x10 (protocol name "MQTX"): MQTT 3.x gets no CONNACK, just the close
    async with connect(url, subprotocols=["mqtt"], open_timeout=5) as ws:  # type: ignore[list-item]
        await ws.send(b"\x10\x0c\x00\x04MQTX\x04\x02\x00\x3c\x00\x00")
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(5):
                assert await ws.recv() == b"", "no CONNACK expected"
    assert metric(gw, "ugate_rejections_total", listener="main",
                  reason="handshake_timeout") == 1
    assert metric(gw, "ugate_mqtt_connects_total", listener="main", version="unknown",
                  result="timeout") == 1
    for _ in range(100):  # counted once the server side saw the close handshake end
        if metric(gw, "ugate_rejections_total", listener="main", reason="malformed"):
            break
        await asyncio.sleep(0.02)
    assert metric(gw, "ugate_rejections_total", listener="main", reason="malformed") == 1
    # both closed with a close handshake: no WebSocket-level error
    assert metric(gw, "ugate_rejections_total", listener="main",
                  reason="ws_protocol_error") == 0


BROWSER = r"""
const payload = new Uint8Array(%(n)d);
for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + 3) %% 256;
const c = mqtt.connect(%(url)s, { protocolVersion: 4, reconnectPeriod: 0,
                                  connectTimeout: 5000, clientId: "chromium" });
const got = await new Promise((resolve, reject) => {
  const out = [];
  const timer = setTimeout(() => reject(new Error("timeout, got " + out.length)), 20000);
  c.on("error", (e) => { clearTimeout(timer); reject(e); });
  c.on("message", (topic, msg, packet) => {
    const same = msg.length === payload.length && msg.every((b, i) => b === payload[i]);
    out.push({ topic, qos: packet.qos, n: msg.length, same });
    if (out.length === 2) { clearTimeout(timer); resolve(out); }
  });
  c.on("connect", () => {
    c.subscribe("b/#", { qos: 1 }, (err) => {
      if (err) { reject(err); return; }
      c.publish("b/q0", payload, { qos: 0 });
      c.publish("b/q1", payload, { qos: 1 });
    });
  });
});
await new Promise((resolve) => c.end(false, resolve));
got.sort((a, b) => a.topic < b.topic ? -1 : 1);
return got;
"""


def mqttjs_page() -> bytes:
    """A page with mqtt.js's browser bundle inline (it defines the global ``mqtt``)."""
    bundle = (js_dir() / "node_modules" / "mqtt" / "dist" / "mqtt.min.js").read_bytes()
    assert b"</script" not in bundle
    return (b"<!doctype html><meta charset=utf-8><title>mqtt.js</title><script>"
            + bundle + b"</script><body>mqtt.js</body>")


class PagePlugin:
    """The mqtt.js page served by the gateway itself (``/page``): the WebSocket is then
    same-origin, and over HTTPS Chromium opens it on the page's HTTP/2 connection (RFC 8441
    extended CONNECT)."""

    @hookimpl
    def ugate_http_routes(self, gateway: GatewayAPI) -> list[object]:
        from ugate_http.routes import Exchange, HttpRoute

        body = mqttjs_page()

        async def page(ex: Exchange) -> None:
            await ex.respond(200, [("content-type", "text/html; charset=utf-8")], body)

        return [HttpRoute("/page", page, methods=frozenset({"GET"}))]


@pytest.mark.parametrize(("scheme", "http_version"), [("http", "1.1"), ("https", "2")])
async def test_mqttjs_in_chromium(tmp_path: Path, mosquitto: Broker, subs: list[Sub],
                                  scheme: str, http_version: str) -> None:
    gw = Gateway(loads(config(mosquitto.address)), state_dir=tmp_path / "state")
    gw.pm.register(PagePlugin(), name="page-test")
    await gw.start()
    try:
        port = gw.port("main")
        # plain MQTT over TCP through the same port, at the same broker
        s = await Sub.start(port, "b/#", "5", qos=1)
        subs.append(s)
        spki = gw.identity.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
        n = 30000
        ws = "wss" if scheme == "https" else "ws"
        got = await browser_run(
            BROWSER % {"n": n, "url": json.dumps(f"{ws}://127.0.0.1:{port}/mqtt")},
            url=f"{scheme}://127.0.0.1:{port}/page", timeout=40,
            flags=(f"--ignore-certificate-errors-spki-list={pin}",))
        assert got == [{"topic": "b/q0", "qos": 0, "n": n, "same": True},
                       {"topic": "b/q1", "qos": 1, "n": n, "same": True}]
        expect = bytes((i * 7 + 3) % 256 for i in range(n))
        assert sorted(await s.messages(2), key=lambda m: m[1]) == [(False, 0, expect),
                                                                   (False, 1, expect)]
        assert metric(gw, "ugate_ws_upgrades_total", listener="main",
                      http_version=http_version) == 1
        assert metric(gw, "ugate_mqtt_connects_total", listener="main", version="3.1.1",
                      result="ok") == 1
    finally:
        await gw.shutdown(0.5)
