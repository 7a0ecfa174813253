"""Fuzz target for the HTTP/1.1 request and response parsers.

With atheris installed: ``python fuzz_h1.py [libFuzzer flags]``. Without it:
``python fuzz_h1.py SECONDS`` mutates a seed corpus with ``random`` for that long. The property
is the one the hypothesis tests check: any bytes give events or an ``HttpError`` (a
``ProtocolError`` with a 4xx/5xx status), and splitting the input never changes the outcome.
"""

from __future__ import annotations

import random
import sys

from ugate_core.testing import run_fuzz_target
from ugate_http.h1 import Event, HttpError, MessageEnded, RequestParser, ResponseParser

SEEDS = [
    b"GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\n\r\n",
    b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;x\r\nabc\r\n0\r\nT: 1\r\n\r\n",
    b"CONNECT a.example:443 HTTP/1.1\r\n\r\n\x16\x03\x01",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.0 200 OK\r\n\r\nclose-delimited",
]


def _drive(parser: RequestParser | ResponseParser, chunks: list[bytes]
           ) -> tuple[list[Event], tuple[int, str] | None]:
    events: list[Event] = []
    try:
        if isinstance(parser, ResponseParser):
            events += parser.expect("GET")
        for c in chunks:
            evs = parser.receive_data(c)
            while evs:
                events.extend(evs)
                if not isinstance(evs[-1], MessageEnded):
                    break
                evs = (parser.expect("GET") if isinstance(parser, ResponseParser)
                       else parser.next_message())
        events.extend(parser.receive_eof())
    except HttpError as e:
        assert 400 <= e.status <= 599 and e.reason
        return [], (e.status, e.reason)
    return events, None


def _bodies(events: list[Event]) -> list[object]:
    out: list[object] = []
    for ev in events:
        data = getattr(ev, "data", None)
        if data is not None and out and isinstance(out[-1], bytes):
            out[-1] += data
        else:
            out.append(data if data is not None else ev)
    return out


def check(data: bytes, cut: int) -> None:
    for make in (lambda: RequestParser(max_header_bytes=2048),
                 lambda: ResponseParser(max_header_bytes=2048)):
        whole = _drive(make(), [data])
        parts = _drive(make(), [data[:cut], data[cut:]])
        assert whole[1] == parts[1], (data, whole[1], parts[1])
        if whole[1] is None:
            assert _bodies(whole[0]) == _bodies(parts[0]), data


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(4)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:
            del b[min(i, len(b) - 1)]
        elif op == 1:
            b[i:i] = bytes([rng.randrange(256)])
        elif op == 2:
            b[i:i] = rng.choice(SEEDS)[: rng.randint(0, 40)]
        else:
            b[i:i] = rng.choice([b"\r\n", b"\n", b":", b" ", b"0\r\n", b"\r\n\r\n"])
    return bytes(b)


def _random_case(rng: random.Random) -> None:
    data = _mutate(rng, rng.choice(SEEDS))
    check(data, rng.randint(0, len(data)))


if __name__ == "__main__":
    sys.exit(run_fuzz_target("fuzz_h1", lambda data: check(data[1:], data[0] if data else 0),
                             _random_case))
