"""Bad input and load: garbage after 0x10, a remaining length over the bound, a CONNECT that
never finishes, and 1,000 clients that connect and vanish while a subscriber keeps receiving
every message; refusals for an unreachable broker as mosquitto_pub prints them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from ugate_core.testing import StartGateway, free_port, metric
from ugate_mqtt.codec import (
    MQTT5,
    P_SERVER_REFERENCE,
    Connect,
    encode_connect,
    encode_varint,
    parse_connack,
)

from .conftest import Broker, Sub, gateway_config, pub


async def answer(port: int, data: bytes, timeout: float = 5) -> tuple[bytes, float]:
    """Send ``data``; everything the gateway answered until it closed, and how long that took."""
    t0 = time.monotonic()
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(data)
    out = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while d := await r.read(4096):
                out += d
    except ConnectionResetError:
        pass
    finally:
        w.close()
    return bytes(out), time.monotonic() - t0


@pytest.mark.parametrize("protocols", ['["mqtt"]', '["*"]'])
async def test_garbage_oversize_and_stalled_connects(start_gateway: StartGateway,
                                                     mosquitto: Broker, protocols: str) -> None:
    gw = await start_gateway(gateway_config(mosquitto.address, protocols=protocols)
                             .replace("handshake_timeout = 3.0", "handshake_timeout = 0.5"))
    port = gw.port("mqtt")
    # garbage after a plausible header: closed with no answer
    got, _ = await answer(port, b"\x10\x0c\x00\x04MQTT\x04\x01" + b"\xff" * 8)
    assert got == b""
    # over the bound (64 KiB): MQTT 5 gets 0x95 before the body is read, 3.1.1 is closed
    got, took = await answer(port, b"\x10" + encode_varint(10_000_000) + b"\x00\x04MQTT\x05")
    assert parse_connack(got, MQTT5)[0] == 0x95 and took < 2
    got, _ = await answer(port, b"\x10" + encode_varint(70_000) + b"\x00\x04MQTT\x04")
    assert got == b""
    # a CONNECT that never finishes: closed at the handshake deadline
    whole = encode_connect(Connect(level=MQTT5, client_id="slow"))
    got, took = await answer(port, whole[:-3])
    assert got == b"" and 0.4 < took < 3
    assert metric(gw, "ugate_rejections_total", listener="mqtt", reason="malformed") == 1
    assert metric(gw, "ugate_rejections_total", listener="mqtt", reason="too_large") == 2
    assert metric(gw, "ugate_rejections_total", listener="mqtt",
                  reason="handshake_timeout") == 1
    assert metric(gw, "ugate_mqtt_connects_total", listener="mqtt", version="5.0",
                  result="timeout") == 1


async def test_unreachable_broker_and_server_reference(start_gateway: StartGateway,
                                                        tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    f = tmp_path / "m"
    f.write_bytes(b"x")
    gw = await start_gateway(gateway_config(dead))
    for v, rc, text in (("311", 3, "Connection Refused: broker unavailable."),
                        ("5", 136, "Connection error: Server unavailable")):
        res = await pub(gw.port("mqtt"), "t", v, f)
        assert res.returncode == rc and text in res.stderr.decode(), (v, res)
    assert metric(gw, "ugate_dial_errors_total", reason="refused") == 2
    gw2 = await start_gateway(gateway_config(dead, options='server_reference = "b2:1883"'))
    res = await pub(gw2.port("mqtt"), "t", "5", f)
    assert res.returncode == 156 and "Use another server" in res.stderr.decode(), res
    got, _ = await answer(gw2.port("mqtt"), encode_connect(Connect(level=MQTT5, client_id="r")))
    code, _sp, props = parse_connack(got, MQTT5)
    assert code == 0x9C and (P_SERVER_REFERENCE, "b2:1883") in props


async def test_connect_and_vanish_flood_while_a_subscriber_receives_all(
        start_gateway: StartGateway, mosquitto: Broker, tmp_path: Path) -> None:
    gw = await start_gateway(gateway_config(mosquitto.address))
    port = gw.port("mqtt")
    sub = await Sub.start(port, "t/flood", "311", qos=1)
    try:
        n_msgs, n_flood = 100, 1000
        sem = asyncio.Semaphore(100)

        async def vanish(i: int) -> None:
            async with sem:
                r, w = await asyncio.open_connection("127.0.0.1", port)
                c = Connect(level=(3, 4, 5)[i % 3], client_id=f"v{i}")
                w.write(encode_connect(c))
                if i % 2:
                    await r.read(4)  # half wait for the CONNACK, half leave at once
                w.transport.abort()

        async def publisher() -> None:
            f = tmp_path / "p"
            for i in range(n_msgs):
                f.write_bytes(b"msg-%04d" % i)
                res = await pub(port, "t/flood", "311", f, qos=1)
                assert res.returncode == 0, res.stderr

        t0 = time.monotonic()
        await asyncio.gather(publisher(), *(vanish(i) for i in range(n_flood)))
        got = await sub.messages(n_msgs, timeout=20)
        took = time.monotonic() - t0
        assert [m[2] for m in got] == [b"msg-%04d" % i for i in range(n_msgs)]
        assert took < 40
        # at least every client that waited for its CONNACK reached the broker (those that
        # left at once may be gone before their CONNECT was read), and no relay is left but
        # the subscriber's
        total = sum(metric(gw, "ugate_mqtt_connects_total", listener="mqtt", version=v,
                           result="ok") for v in ("3.1", "3.1.1", "5.0"))
        assert n_flood // 2 + n_msgs + 1 <= total <= n_flood + n_msgs + 1
        for _ in range(100):
            if metric(gw, "ugate_streams_active", listener="mqtt") == 1:
                break
            await asyncio.sleep(0.05)
        assert metric(gw, "ugate_streams_active", listener="mqtt") == 1
    finally:
        await sub.close()
