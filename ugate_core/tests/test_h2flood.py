"""The codec's flood bounds (h2/flood.py), fed raw frames in memory with a fake clock: the
peer's resets, cheap control frames, empty frames and WINDOW_UPDATEs end in GOAWAY
ENHANCE_YOUR_CALM beyond the stated numbers, and not before."""

from __future__ import annotations

import struct

import pytest

from ugate_core import H2Codec, H2ConnectionError, H2ErrorCode, H2Setting
from ugate_core.h2 import FloodLimits
from ugate_core.h2.frames import PREFACE, frame

from .fuzz_h2codec import Recorder
from .test_h2codec import REQ, block

LIMITS = FloodLimits(resets=50, control=40, window=10.0, window_updates_per_data=3)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def server(limits: FloodLimits = LIMITS) -> tuple[H2Codec, Recorder, Clock]:
    clock = Clock()
    r = Recorder(False)
    c = H2Codec(r, client=False, settings={H2Setting.MAX_CONCURRENT_STREAMS: 10},
                limits=limits, clock=clock)
    r.codec = c
    c.initiate_connection()
    c.receive_data(PREFACE + frame(4, 0, 0))
    c.data_to_send()
    return c, r, clock


def rst(sid: int) -> bytes:
    return frame(3, 0, sid, struct.pack(">L", 8))


def goaway_code(c: H2Codec) -> int:
    out = bytes(c.data_to_send())
    i = out.rfind(b"\x07\x00\x00\x00\x00\x00") - 3
    assert i >= 0, "GOAWAY queued"
    return int(struct.unpack(">L", out[i + 13:i + 17])[0])


def rapid_reset(c: H2Codec, first: int, n: int) -> int:
    """HEADERS + RST_STREAM pairs on ``n`` new streams; how many went in before the error."""
    hb = block(REQ)
    for i in range(n):
        sid = first + 2 * i
        try:
            c.receive_data(frame(1, 4, sid, hb) + rst(sid))
        except H2ConnectionError as e:
            assert e.code == H2ErrorCode.ENHANCE_YOUR_CALM
            return i
    return n


def test_rapid_reset_gets_goaway_after_the_burst() -> None:
    c, _, _ = server()
    assert rapid_reset(c, 1, 1000) == 50  # the 51st reset is one too many
    assert c.flood == "resets" and c.closed and c.resets_received == 51
    assert goaway_code(c) == H2ErrorCode.ENHANCE_YOUR_CALM
    assert not c.streams  # every reset stream was forgotten at once


def test_resets_at_the_sustained_rate_are_fine() -> None:
    c, _, clock = server()
    sid = 1
    for _ in range(20):  # 20 x 40 = 800 resets, 40 per 10 s against 50 per 10 s
        assert rapid_reset(c, sid, 40) == 40
        sid += 80
        clock.t += 10.0
    assert not c.closed and c.resets_received == 800


def test_refused_streams_count_as_resets() -> None:
    """HEADERS beyond SETTINGS_MAX_CONCURRENT_STREAMS are refused: each is a reset we send."""
    c, _, _ = server()
    hb = block(REQ)
    with pytest.raises(H2ConnectionError) as e:
        for i in range(200):
            c.receive_data(frame(1, 4, 1 + 2 * i, hb))
    assert e.value.code == H2ErrorCode.ENHANCE_YOUR_CALM and c.flood == "resets"
    assert c.resets_sent == 51


@pytest.mark.parametrize("name,one", [
    ("ping", frame(6, 0, 0, bytes(8))),
    ("settings", frame(4, 0, 0)),
    ("priority", frame(2, 0, 3, struct.pack(">LB", 0, 16))),
    ("unknown", frame(0x20, 0, 0, b"x")),
    ("empty data", b"DATA"),  # filled in below: empty DATA without END_STREAM
    ("empty continuation", b"CONT"),
    ("rst on closed", rst(1)),
])
def test_cheap_frames_are_bounded(name: str, one: bytes) -> None:
    c, _, _ = server()
    hb = block(REQ)
    c.receive_data(frame(1, 4, 1, hb))  # stream 1 open (no END_STREAM)
    if one == b"DATA":
        one = frame(0, 0, 1)
    elif one == b"CONT":
        c.receive_data(frame(1, 0, 3, hb))  # a header block waiting for CONTINUATION
        one = frame(9, 0, 3)
    elif name == "rst on closed":
        c.receive_data(rst(1))
        one = rst(1)
    sent = 0
    with pytest.raises(H2ConnectionError) as e:
        for _ in range(1000):
            c.receive_data(one)
            sent += 1
    assert e.value.code == H2ErrorCode.ENHANCE_YOUR_CALM and c.flood == "control"
    assert 38 <= sent <= 40, sent
    assert goaway_code(c) == H2ErrorCode.ENHANCE_YOUR_CALM


def test_pings_within_the_rate_are_answered() -> None:
    c, _, clock = server()
    for _ in range(100):
        c.receive_data(frame(6, 0, 0, bytes(8)))
        clock.t += 0.3  # 3.3 a second against 4 a second
    assert not c.closed


def test_window_updates_bounded_by_data_sent() -> None:
    c, _, _ = server()
    c.receive_data(frame(1, 4, 1, block(REQ)))
    c.send_headers(1, [(b":status", b"200")])
    for _ in range(100):  # 100 DATA frames: room for 300 more updates
        c.send_data(1, b"x")
    wu = frame(8, 0, 1, struct.pack(">L", 1))
    n = 0
    with pytest.raises(H2ConnectionError):
        for _ in range(10_000):
            c.receive_data(wu)
            n += 1
    assert n == 40 + 300 and c.flood == "window_update"


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FloodLimits(resets=0)
