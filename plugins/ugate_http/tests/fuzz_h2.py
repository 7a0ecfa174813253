"""Fuzz target for what the HTTP/2 front parses itself, and for its connection driver.

With atheris installed: ``python fuzz_h2.py [libFuzzer flags]``. Without it:
``python fuzz_h2.py SECONDS`` mutates seeds with ``random`` for that long. Properties:

* any header list → an ``H2Request`` whose fields are safe in an HTTP/1.1 head, or an
  ``HttpError`` with a 4xx status (``parse_request``);
* any bytes after the client preface, in any split, into a server ``H2Conn`` over an
  in-memory stream → requests, or a clean close with a recorded protocol error; never an
  exception out of ``data_received``.
"""

from __future__ import annotations

import asyncio
import random
import sys

from h2.config import H2Configuration
from h2.connection import H2Connection

from ugate_core import stream_pair
from ugate_core.testing import run_fuzz_target
from ugate_http.h1 import HttpError
from ugate_http.h2conn import PREFACE, H2Conn, H2Exchange, H2Limits
from ugate_http.h2msg import parse_request


def _client_bytes(headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    c = H2Connection(H2Configuration(client_side=True, validate_outbound_headers=False,
                                     normalize_outbound_headers=False))
    c.initiate_connection()
    c.send_headers(1, headers, end_stream=not body)
    if body:
        c.send_data(1, body, end_stream=True)
    return c.data_to_send()


SEED_HEADERS = [
    [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a.test"), (b":path", b"/")],
    [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/x?y"), (b"host", b"[::1]:8"),
     (b"content-length", b"3"), (b"cookie", b"a=b"), (b"te", b"trailers")],
]
SEEDS = [_client_bytes(h, b"abc" if i else b"") for i, h in enumerate(SEED_HEADERS)]


def check_headers(raw: list[tuple[bytes, bytes]]) -> None:
    try:
        r = parse_request(raw, default_port=80, max_bytes=4096, max_fields=64)
    except HttpError as e:
        assert 400 <= e.status < 500 and e.reason
        return
    for k, v in r.headers:
        assert k and not any(c in k for c in ":\r\n\0 ")
        assert not any(c in v for c in "\r\n\0")
    assert 1 <= r.port <= 65535


async def _session(chunks: list[bytes]) -> None:
    _client, b = stream_pair()
    got: list[H2Exchange] = []
    conn = H2Conn(b, H2Limits(max_header_list=8192, max_frame_size=16384), client=False,
                  on_request=got.append)
    conn.start()
    for c in chunks:
        conn.data_received(c)  # must never raise
    for ex in got:
        ex.finish()
    conn.close()


def check_session(data: bytes, cut: int) -> None:
    raw = PREFACE + data
    asyncio.run(_session([raw[:cut], raw[cut:]]))


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        i = rng.randrange(len(b) + 1)
        op = rng.randrange(3)
        if op == 0 and b:
            b[min(i, len(b) - 1)] = rng.randrange(256)
        elif op == 1 and b:
            del b[min(i, len(b) - 1)]
        else:
            b[i:i] = rng.choice(SEEDS)[rng.randrange(24, 60):][: rng.randint(1, 20)]
    return bytes(b)


def _headers(rng: random.Random) -> list[tuple[bytes, bytes]]:
    base = list(rng.choice(SEED_HEADERS))
    for _ in range(rng.randint(0, 4)):
        name = bytes(rng.choice(b":abcHT-\r\n \x00") for _ in range(rng.randint(0, 6)))
        value = bytes(rng.choice(b"ab/:@[] \r\n\x00\xff0") for _ in range(rng.randint(0, 8)))
        base.insert(rng.randint(0, len(base)), (name, value))
    return base


def _random_case(rng: random.Random) -> None:
    check_headers(_headers(rng))
    data = _mutate(rng, rng.choice(SEEDS))[len(PREFACE):]
    check_session(data, rng.randint(0, len(data) + len(PREFACE)))


def _one_input(data: bytes) -> None:
    check_session(data[1:], data[0] if data else 0)
    fields = [tuple(p.split(b"=", 1)) for p in data.split(b"&") if b"=" in p]
    check_headers([(k, v) for k, v in fields])


if __name__ == "__main__":
    sys.exit(run_fuzz_target("fuzz_h2", _one_input, _random_case))
