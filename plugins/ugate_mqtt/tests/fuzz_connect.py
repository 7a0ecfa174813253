"""Fuzz target for the MQTT CONNECT parser.

With atheris installed: ``python fuzz_connect.py [libFuzzer flags]``. Without it:
``python fuzz_connect.py SECONDS`` mutates a seed corpus with ``random`` for that long. The
property is the one the hypothesis tests check: any bytes give a CONNECT, "need more" or an
``MqttError`` (never another exception), splitting the input never changes the outcome, a
refusal's CONNACK parses in the client's version, and a parsed CONNECT encodes back to the
bytes it came from.
"""

from __future__ import annotations

import random
import sys

from ugate_core.testing import mutate_bytes, run_fuzz_target
from ugate_mqtt.codec import (
    MQTT5,
    Connect,
    ConnectParser,
    MqttError,
    Will,
    encode_connect,
    parse_connack,
)

SEEDS = [
    encode_connect(Connect(level=4, client_id="pub1", username="alice", password=b"pw")),
    encode_connect(Connect(level=3, client_id="c", keep_alive=10)),
    encode_connect(Connect(level=5, client_id="i5", properties=((0x11, 300), (0x26, ("k", "v"))),
                           will=Will(topic="t/w", payload=b"bye", qos=1, retain=True,
                                     properties=((0x18, 10), (0x03, "text/plain"))),
                           username="u", password=b"p")),
    encode_connect(Connect(level=5, client_id="", properties=((0x15, "SCRAM"), (0x16, b"x")))),
]

Outcome = tuple[object, ...]


def _drive(chunks: list[bytes]) -> Outcome:
    p = ConnectParser(max_size=512, max_client_id=64)
    c = None
    try:
        for ch in chunks:  # after the CONNECT, bytes are kept for leftover()
            c = p.receive_data(ch)
        if c is not None:
            return ("ok", c, c.raw, p.leftover())
    except MqttError as e:
        if e.connack:
            code = parse_connack(e.connack, p.level or 0)[0]
            assert code >= 0x80 if p.level == MQTT5 else 1 <= code <= 5, e.connack
        return ("err", e.reason, e.connack)
    return ("more",)


def TestOneInput(data: bytes) -> None:
    whole = _drive([data])
    cut = data[0] % (len(data) + 1) if data else 0
    assert _drive([data[:cut], data[cut:]]) == whole
    assert _drive([data[i : i + 1] for i in range(len(data))]) == whole
    if whole[0] == "ok":
        c = whole[1]
        assert isinstance(c, Connect)
        assert encode_connect(c) == c.raw


def random_case(rng: random.Random) -> None:
    TestOneInput(mutate_bytes(rng, rng.choice(SEEDS), length_fields=True))


if __name__ == "__main__":
    sys.exit(run_fuzz_target("fuzz_connect", TestOneInput, random_case))
