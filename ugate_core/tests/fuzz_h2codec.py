"""Fuzz target for the HTTP/2 codec (``ugate_core.h2``), server and client side.

With atheris installed: ``python fuzz_h2codec.py [libFuzzer flags]``. Without it:
``python fuzz_h2codec.py SECONDS`` mutates a seed corpus of real client and server byte
streams (requests, DATA, padding, CONTINUATION, trailers, SETTINGS, PING, GOAWAY, RST) with
``random``. The properties: only :class:`~ugate_core.H2ConnectionError` escapes
``receive_data``, whole or byte by byte; the same bytes give the same calls in one piece and
in random pieces; nothing buffered exceeds a frame (or a header block) bound.
"""

from __future__ import annotations

import random
import sys
from typing import Any

from ugate_core import H2Codec, H2ConnectionError, H2Handler, H2Setting
from ugate_core.h2.frames import PREFACE, frame
from ugate_core.testing import mutate_bytes, run_fuzz_target

MAX_FRAME = 16384
CONNECT = [(b":method", b"CONNECT"), (b":authority", b"svc.test:80")]
GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"),
       (b":authority", b"a.test"), (b"x-long", b"y" * 20000)]


class Recorder(H2Handler):
    """Every handler call as a tuple (``test_h2codec`` uses it too). The pieces of one run of
    DATA (until END_STREAM) are merged, so any split of the same bytes records the same; the
    credit goes back at once unless ``hold``."""

    def __init__(self, hold: bool = False) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.codec: H2Codec | None = None
        self.hold = hold

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [e for e in self.events if e[0] == kind]

    def on_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        self.events.append(("headers", sid, [tuple(h) for h in headers], end_stream))

    def on_trailers(self, sid: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.events.append(("trailers", sid, [tuple(h) for h in headers]))

    def on_data(self, sid: int, data: bytes, flow_len: int, end_stream: bool) -> None:
        assert type(data) is bytes
        last = self.events[-1] if self.events else None
        if last is not None and last[0] == "data" and last[1] == sid and not last[4]:
            self.events[-1] = ("data", sid, last[2] + data, last[3] + flow_len, end_stream)
        else:
            self.events.append(("data", sid, data, flow_len, end_stream))
        if not self.hold and self.codec is not None and flow_len:
            self.codec.window_update(0, flow_len)
            self.codec.window_update(sid, flow_len)

    def on_reset(self, sid: int, code: int) -> None:
        self.events.append(("reset", sid, code))

    def on_stream_error(self, sid: int, code: int, message: str) -> None:
        self.events.append(("stream_error", sid, code))

    def on_window(self, sid: int) -> None:
        self.events.append(("window", sid))

    def on_settings(self, changed: dict[int, int]) -> None:
        self.events.append(("settings", dict(changed)))

    def on_ping(self, data: bytes, ack: bool) -> None:
        self.events.append(("ping", data, ack))

    def on_goaway(self, last_sid: int, code: int, debug: bytes) -> None:
        self.events.append(("goaway", last_sid, code, debug))


def _client_bytes() -> bytes:
    c = H2Codec(H2Handler(), client=True)
    c.initiate_connection()
    c.send_headers(1, CONNECT)
    c.send_data(1, b"tunnel bytes")
    c.send_headers(3, GET, end_stream=True)  # HEADERS + CONTINUATION
    c.out += frame(0, 0x8, 1, b"\x03pad" + bytes(3))
    c.send_headers(1, [(b"x-trailer", b"1")], end_stream=True)
    c.send_headers(5, CONNECT)
    c.reset_stream(5)
    c.ping(b"pingpong")
    c.window_update(0, 1000)
    c.out += frame(2, 0, 7, b"\x00\x00\x00\x01\x10")
    return bytes(c.out)


def _server_bytes() -> bytes:
    s = H2Codec(H2Handler(), client=False, settings={H2Setting.MAX_CONCURRENT_STREAMS: 10})
    s.initiate_connection()
    s.receive_data(PREFACE + frame(4, 0, 0) + frame(1, 0x5, 1, b"\x82\x86\x84\x41\x01a"))
    s.send_headers(1, [(b":status", b"100")])
    s.send_headers(1, [(b":status", b"200"), (b"server", b"x")])
    s.send_data(1, b"response")
    s.send_headers(1, [(b"grpc-status", b"0")], end_stream=True)
    s.goaway()
    return bytes(s.out)


SEEDS = [(False, _client_bytes()), (True, _server_bytes())]


def _run(data: bytes, client: bool, pieces: list[int]) -> tuple[list[tuple[Any, ...]], int]:
    log = Recorder()
    c = H2Codec(log, client=client, settings={H2Setting.MAX_FRAME_SIZE: MAX_FRAME,
                                               H2Setting.MAX_HEADER_LIST_SIZE: 65536})
    log.codec = c
    c.initiate_connection()
    if client:  # the request the server's bytes answer
        c.send_headers(1, GET[:4])
    code = -1
    i = k = 0
    try:
        while i < len(data):
            n = pieces[k % len(pieces)] if pieces else len(data)
            c.receive_data(data[i:i + n])
            assert len(c._buf) <= 9 + MAX_FRAME + n, len(c._buf)
            assert len(c._cont_buf) <= c._max_block, len(c._cont_buf)
            i += n
            k += 1
    except H2ConnectionError as e:
        code = e.code
    return log.events, code


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    client = bool(data[0] & 1)
    body = data[1:]
    whole = _run(body, client, [])
    assert _run(body, client, [1]) == whole, "byte by byte differs"
    assert _run(body, client, [7, 300, 2]) == whole, "in pieces differs"


def _random_case(rng: random.Random) -> None:
    client, seed = rng.choice(SEEDS)
    prefix = seed if rng.random() < 0.5 else seed[:rng.randrange(len(seed) + 1)]
    mutated = mutate_bytes(rng, prefix, 40000, length_fields=True)
    TestOneInput(bytes([client]) + mutated)


if __name__ == "__main__":
    sys.exit(run_fuzz_target("fuzz_h2codec", TestOneInput, _random_case))
