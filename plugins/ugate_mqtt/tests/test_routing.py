"""Routing: by client id and user name rules, by SNI inside TLS (ALPN mqtt), sticky by client id
across a destination's endpoints; a broker behind a second gateway over HBONE and over SSH;
paho-mqtt's MQTT 5 session (expiry, properties) through the gateway."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from ugate_core.testing import StartGateway, metric
from ugate_mqtt.codec import MQTT5, MQTT311, Connect, encode_connack

from .conftest import Broker, FakeBroker, Sub, connack_for, gateway_config, pub_and_receive

MakeFake = Callable[[], Awaitable[FakeBroker]]


def tls_client() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the broker's name is routed, the gateway is not checked
    ctx.set_alpn_protocols(["mqtt"])
    return ctx


async def test_routes_by_client_id_user_name_and_sni(start_gateway: StartGateway,
                                                     fake_brokers: MakeFake) -> None:
    a, b, default = await fake_brokers(), await fake_brokers(), await fake_brokers()
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.mqtt]
listen = "127.0.0.1:0"
protocols = ["*"]
terminate = ["*.brokers.test"]
routes = [
  {{ client_id = "acme-*", broker = "a.brokers.test" }},
  {{ username = "globex/*", broker = "b.brokers.test:1883" }},
]
[hosts."a.brokers.test"]
endpoints = ["{a.address}"]
[hosts."b.brokers.test"]
endpoints = ["{b.address}"]
[hosts."default.brokers.test"]
endpoints = ["{default.address}"]
""")
    port = gw.port("mqtt")
    ok = encode_connack(MQTT311, 0)
    for c in (Connect(level=MQTT311, client_id="acme-17"),
              Connect(level=MQTT311, client_id="g1", username="globex/dev", password=b"p")):
        assert (await connack_for(port, c, linger=0.01))[0] == ok
    # no route matches and no broker is configured: the SNI names it
    c5 = Connect(level=MQTT5, client_id="sni-client")
    ack, _ = await connack_for(port, c5, tls_client(), sni="default.brokers.test", linger=0.01)
    assert ack == encode_connack(MQTT5, 0)
    # a rule on the client id wins over the SNI
    ack, _ = await connack_for(port, Connect(level=MQTT5, client_id="acme-tls"), tls_client(),
                               sni="default.brokers.test", linger=0.01)
    assert ack == encode_connack(MQTT5, 0)
    # no route, no broker, no SNI: server unavailable
    ack, rest = await connack_for(port, Connect(level=MQTT311, client_id="lost"))
    assert (ack, rest) == (b"\x20\x02\x00\x03", b"")
    assert (a.client_ids, b.client_ids, default.client_ids) == (
        ["acme-17", "acme-tls"], ["g1"], ["sni-client"])
    assert metric(gw, "ugate_rejections_total", listener="mqtt", reason="no_route") == 1


async def test_sticky_by_client_id_with_failover(start_gateway: StartGateway,
                                                 fake_brokers: MakeFake) -> None:
    fakes = [await fake_brokers() for _ in range(3)]
    eps = ", ".join(f'"{f.address}"' for f in fakes)
    gw = await start_gateway(gateway_config("x").replace(
        'endpoints = ["x"]', f"endpoints = [{eps}]"))
    port = gw.port("mqtt")
    ids = [f"dev-{i}" for i in range(12)]
    for _round in range(2):
        for i in ids:
            await connack_for(port, Connect(level=MQTT311, client_id=i), linger=0.01)
    homes = {i: [n for n, f in enumerate(fakes) if i in f.client_ids] for i in ids}
    # each client went to one broker both times, and the clients spread over all three
    assert all(len(h) == 1 and fakes[h[0]].client_ids.count(i) == 2 for i, h in homes.items())
    assert {h[0] for h in homes.values()} == {0, 1, 2}
    # its broker gone, a client lands on the next endpoint
    victim = ids[0]
    home = homes[victim][0]
    assert fakes[home].server is not None
    fakes[home].server.close()
    await fakes[home].server.wait_closed()
    ack, _ = await connack_for(port, Connect(level=MQTT311, client_id=victim), linger=0.01)
    assert ack == encode_connack(MQTT311, 0)
    assert fakes[(home + 1) % 3].client_ids.count(victim) == 1


async def test_broker_behind_a_second_gateway_over_hbone(start_gateway: StartGateway,
                                                         mosquitto: Broker, subs: list[Sub],
                                                         tmp_path: Path) -> None:
    far = await start_gateway(f"""
[admin]
listen = ""
[listeners.hbone]
listen = "127.0.0.1:0"
protocols = ["hbone"]
[hosts."broker.test"]
endpoints = ["{mosquitto.address}"]
""")
    near = await start_gateway(gateway_config(
        f"127.0.0.1:{far.port('hbone')}",
        extra=f'protocol = "hbone"\nidentity = ["id:{far.identity.id}"]'))
    await pub_and_receive(near.port("mqtt"), "t/mesh", b"over the mesh \x00\x01", tmp_path,
                          subs)
    assert metric(near, "ugate_dials_total", dialer="hbone", result="ok") == 2
    assert metric(far, "ugate_connections_total", listener="hbone", protocol="hbone") >= 1


async def test_broker_behind_a_second_gateway_over_ssh(start_gateway: StartGateway,
                                                       mosquitto: Broker, subs: list[Sub],
                                                       tmp_path: Path) -> None:
    pytest.importorskip("ugate_ssh")
    from ugate_core import id_of_public_key
    from ugate_core.identity import load_or_create_key

    # keys first: each gateway names the other's ID (start_gateway's state0, state1)
    far_id, near_id = (id_of_public_key(load_or_create_key(tmp_path / f"state{i}" / "key.pem")[0])
                       for i in range(2))
    far = await start_gateway(f"""
[admin]
listen = ""
[listeners.ssh]
listen = "127.0.0.1:0"
protocols = ["ssh"]
allow_ids = ["{near_id}"]
[hosts."broker.test"]
endpoints = ["{mosquitto.address}"]
""")
    near = await start_gateway(gateway_config(
        f"127.0.0.1:{far.port('ssh')}", extra=f'protocol = "ssh"\nidentity = ["id:{far_id}"]'))
    await pub_and_receive(near.port("mqtt"), "t/ssh", b"over ssh \x00\x01", tmp_path, subs,
                          sub_version="311", pub_version="5", qos=2)
    assert metric(near, "ugate_dials_total", dialer="ssh", result="ok") == 2


async def test_paho_v5_session_expiry_and_properties(start_gateway: StartGateway,
                                                     mosquitto: Broker) -> None:
    mqtt = pytest.importorskip("paho.mqtt.client")
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    gw = await start_gateway(gateway_config(mosquitto.address))
    port = gw.port("mqtt")
    got: list[Any] = []
    connected: list[tuple[bool, int]] = []
    ev_conn, ev_msg, ev_sub = threading.Event(), threading.Event(), threading.Event()

    def client(cid: str) -> Any:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)

        def on_connect(_c: Any, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
            connected.append((bool(flags.session_present), rc.value))
            ev_conn.set()

        c.on_connect = on_connect
        c.on_message = lambda _c, _u, m: (got.append(m), ev_msg.set())
        c.on_subscribe = lambda *_a: ev_sub.set()
        return c

    def connect(c: Any) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 300
        ev_conn.clear()
        c.connect("127.0.0.1", port, clean_start=False, properties=props)
        c.loop_start()

    async def wait(ev: threading.Event) -> None:
        assert await asyncio.to_thread(ev.wait, 10)

    sub = client("paho-sub")
    connect(sub)
    await wait(ev_conn)
    sub.subscribe("t/paho", qos=1)
    await wait(ev_sub)
    sub.disconnect()
    sub.loop_stop()
    # published while the subscriber is away: its session (expiry 300 s) keeps it
    p = client("paho-pub")
    p.connect("127.0.0.1", port)
    p.loop_start()
    pp = Properties(PacketTypes.PUBLISH)
    pp.UserProperty = [("trace", "42")]
    pp.ContentType = "application/octet-stream"
    info = p.publish("t/paho", b"\x00queued\xff", qos=1, properties=pp)
    await asyncio.to_thread(info.wait_for_publish, 10)
    p.disconnect()
    p.loop_stop()
    sub2 = client("paho-sub")
    connect(sub2)
    await wait(ev_msg)
    sub2.disconnect()
    sub2.loop_stop()
    # the subscriber's second CONNACK says "session present"; the publisher's came between
    assert connected == [(False, 0), (False, 0), (True, 0)]
    m = got[0]
    assert (m.topic, m.payload, m.qos) == ("t/paho", b"\x00queued\xff", 1)
    assert m.properties.UserProperty == [("trace", "42")]
    assert m.properties.ContentType == "application/octet-stream"
    assert metric(gw, "ugate_mqtt_connects_total", listener="mqtt", version="5.0",
                  result="ok") == 3
