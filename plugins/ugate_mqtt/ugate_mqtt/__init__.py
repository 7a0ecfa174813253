"""ugate-mqtt: MQTT devices reach their brokers through the mesh (MQTT 3.1, 3.1.1, 5.0)."""

from .codec import (
    Connect,
    ConnectParser,
    MqttError,
    Will,
    encode_connack,
    encode_connect,
    parse_connack,
    refusal,
    sniff,
)
from .options import MqttOptions, Route, parse_options
from .server import serve
from .token import TokenError, mint, verify

__all__ = [
    "Connect",
    "ConnectParser",
    "MqttError",
    "MqttOptions",
    "Route",
    "TokenError",
    "Will",
    "encode_connack",
    "encode_connect",
    "mint",
    "parse_connack",
    "parse_options",
    "refusal",
    "serve",
    "sniff",
    "verify",
]
