"""Fuzz target for the SOCKS5 server parser.

With atheris installed: ``python fuzz_socks5.py [libFuzzer flags]``. Without it:
``python fuzz_socks5.py SECONDS`` mutates a seed corpus with ``random`` for that long. Either
way the property is the one the hypothesis tests check: any bytes give events or a
``ProtocolError``, and splitting the input never changes the outcome.
"""

from __future__ import annotations

import sys

from ugate_core import ProtocolError
from ugate_core.testing import mutate_bytes, run_fuzz_target
from ugate_socks.protocol import (
    METHOD_NO_AUTH,
    METHOD_NONE_ACCEPTABLE,
    METHOD_USERPASS,
    AuthReceived,
    Event,
    GreetingReceived,
    Socks5Error,
    Socks5Server,
    State,
)

SEEDS = [
    b"\x05\x01\x00\x05\x01\x00\x03\x0bexample.com\x00\x50GET /",
    b"\x05\x02\x00\x02\x01\x01u\x02pw\x05\x01\x00\x01\x7f\x00\x00\x01\x1f\x90",
    b"\x05\x01\x00\x05\x01\x00\x04" + bytes(15) + b"\x01\x00\x16",
    b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00",
]


def _drive(chunks: list[bytes]) -> tuple[list[Event], bytes, str | None, bytes]:
    p = Socks5Server()
    events: list[Event] = []
    out = bytearray()
    try:
        for c in chunks:
            evs = p.receive_data(c)
            while evs:
                for ev in evs:
                    events.append(ev)
                    if isinstance(ev, GreetingReceived):
                        m = next((m for m in (METHOD_USERPASS, METHOD_NO_AUTH)
                                  if m in ev.methods), METHOD_NONE_ACCEPTABLE)
                        out += p.select_method(m)
                    elif isinstance(ev, AuthReceived):
                        out += p.auth_reply(ev.user == "u")
                    else:
                        out += p.reply(0)
                evs = p.receive_data(b"")
    except ProtocolError as e:
        assert isinstance(e, Socks5Error), type(e)
        return events, bytes(out + e.reply), e.reason, b""
    return events, bytes(out), None, p.leftover() if p.state is State.RELAY else b""


def TestOneInput(data: bytes) -> None:
    whole = _drive([data])
    cut = data[0] % (len(data) + 1) if data else 0
    assert _drive([data[:cut], data[cut:]]) == whole
    assert _drive([data[i : i + 1] for i in range(len(data))]) == whole


if __name__ == "__main__":
    sys.exit(run_fuzz_target(
        "fuzz_socks5", TestOneInput,
        lambda rng: TestOneInput(mutate_bytes(rng, rng.choice(SEEDS)))))
