"""mosquitto_pub / mosquitto_sub through ugate to a real mosquitto broker, MQTT 3.1, 3.1.1 and 5:
payloads byte for byte at QoS 0, 1 and 2, retained messages, the will of a killed client, and
refusals as the client prints them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ugate_core.testing import StartGateway, metric, pattern

from .conftest import VERSIONS, Broker, Sub, gateway_config, kill9, pub


@pytest.mark.parametrize("version", VERSIONS)
async def test_pub_sub_every_qos_byte_for_byte(start_gateway: StartGateway, mosquitto: Broker,
                                               subs: list[Sub], tmp_path: Path,
                                               version: str) -> None:
    gw = await start_gateway(gateway_config(mosquitto.address))
    port = gw.port("mqtt")
    s = await Sub.start(port, "t/bytes", version, qos=2)
    subs.append(s)
    sent = []
    for qos in (0, 1, 2):
        payload = pattern(1000 + 4000 * qos, seed=qos) + bytes(range(256))
        f = tmp_path / f"p{qos}"
        f.write_bytes(payload)
        res = await pub(port, "t/bytes", version, f, qos=qos)
        assert res.returncode == 0, res.stderr
        sent.append((False, qos, payload))
    assert await s.messages(3) == sent
    level = {"31": "3.1", "311": "3.1.1", "5": "5.0"}[version]
    assert metric(gw, "ugate_mqtt_connects_total", listener="mqtt", version=level,
                  result="ok") == 4
    assert metric(gw, "ugate_connections_total", listener="mqtt", protocol="mqtt") == 4


@pytest.mark.parametrize("version", VERSIONS)
async def test_retained_and_will(start_gateway: StartGateway, mosquitto: Broker,
                                 subs: list[Sub], tmp_path: Path, version: str) -> None:
    gw = await start_gateway(gateway_config(mosquitto.address, protocols='["*"]'))
    port = gw.port("mqtt")  # the shared port: MQTT is sniffed among every protocol
    f = tmp_path / "retained"
    f.write_bytes(b"kept \x00\xff " + version.encode())
    res = await pub(port, f"t/ret{version}", version, f, "-r", qos=1)
    assert res.returncode == 0, res.stderr
    late = await Sub.start(port, f"t/ret{version}", version, qos=1)
    subs.append(late)
    assert await late.messages(1) == [(True, 1, b"kept \x00\xff " + version.encode())]

    watcher = await Sub.start(port, f"t/will{version}", version, qos=1)
    subs.append(watcher)
    dying = await Sub.start(port, "t/nothing", version, "--will-topic", f"t/will{version}",
                            "--will-payload", f"gone-{version}", "--will-qos", "1")
    subs.append(dying)
    kill9(dying.proc)  # no DISCONNECT: the broker must publish the will
    assert await watcher.messages(1) == [(False, 1, f"gone-{version}".encode())]
