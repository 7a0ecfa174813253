"""The listener's options: values, defaults and errors that name the key."""

from __future__ import annotations

from typing import Any

import pytest

from ugate_core import ConfigError
from ugate_core.testing import StartGateway
from ugate_mqtt.options import MqttOptions, Route, parse_options


def error(options: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as ei:
        parse_options(options, "listeners.m")
    return str(ei.value)


def test_values_and_defaults() -> None:
    assert parse_options({}, "l") == MqttOptions()
    o = parse_options({"broker": "b.test", "broker_port": 8883, "routes": [
        {"client_id": "acme-*", "broker": "[fd00::1]"},
        {"username": "g/*", "client_id": "x?", "broker": "g.test:1884"}]}, "l")
    assert o.broker == "b.test:8883"
    assert o.routes == (Route("[fd00::1]:8883", "acme-*", None), Route("g.test:1884", "x?", "g/*"))
    assert o.routes[1].matches("x1", "g/dev") and not o.routes[1].matches("x1", None)
    assert not o.routes[0].matches("ACME-1", None)  # case matters, like MQTT client ids


@pytest.mark.parametrize(("options", "text"), [
    ({"routes": [{"client_id": "a*"}]}, "listeners.m.routes[0]: a route needs a broker"),
    ({"routes": [{"broker": "b"}]},
     "listeners.m.routes[0]: a route needs a client_id or username pattern"),
    ({"routes": {"broker": "b"}}, "listeners.m.routes: {'broker': 'b'} is not a list of tables"),
    ({"credentials": "rewrite"}, "listeners.m.credentials: 'rewrite' needs broker_username"),
    ({"broker_username": "u"},
     "listeners.m.broker_username: broker credentials are sent only with credentials = "
     "'rewrite'"),
    ({"credentials": "strp"}, "listeners.m.credentials: 'strp' is not one of auto, forward, "
     "strip, rewrite; did you mean 'strip'?"),
    ({"broker": "b:99999"}, "listeners.m.broker: 'b:99999': port 99999 is not a port"),
    ({"max_connect_size": 10}, "listeners.m.max_connect_size: 10 is not an integer"),
])
def test_errors_name_the_key(options: dict[str, Any], text: str) -> None:
    assert error(options).startswith(text)


async def test_beyond_loopback_needs_a_rule(start_gateway: StartGateway) -> None:
    with pytest.raises(ConfigError) as ei:
        await start_gateway('[admin]\nlisten = ""\n[listeners.m]\nlisten = "0.0.0.0:0"\n'
                            'protocols = ["mqtt"]\nbroker = "b.test"\n')
    assert "relays (mqtt) but no rule says who may reach what" in str(ei.value)
