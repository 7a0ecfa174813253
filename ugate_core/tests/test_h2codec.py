"""The sans-IO HTTP/2 codec: two codecs pumping bytes in memory, frame-level rules fed by hand,
hypothesis on the parser (any split, any bytes, bounded buffers), and real peers (nghttp,
h2load, nghttpd) against a tiny asyncio server and client built on it."""

from __future__ import annotations

import asyncio
import base64
import struct
import subprocess
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ugate_core import (
    H2Codec,
    H2ConnectionError,
    H2ErrorCode,
    H2Handler,
    H2Setting,
    H2UsageError,
)
from ugate_core.h2.frames import PREFACE, frame, settings_payload
from ugate_core.testing import free_port, pattern, require_peer

from .fuzz_h2codec import Recorder

Event = tuple[Any, ...]
REQ = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/x"),
       (b":authority", b"a.test")]
CONNECT = [(b":method", b"CONNECT"), (b":authority", b"svc.test:80")]


def make(client: bool, hold: bool = False, **settings: int) -> tuple[H2Codec, Recorder]:
    r = Recorder(hold)
    c = H2Codec(r, client=client, settings={H2Setting[k.upper()]: v for k, v in settings.items()})
    r.codec = c
    c.initiate_connection()
    return c, r


def pump(a: H2Codec, b: H2Codec) -> None:
    """Move bytes both ways until both are quiet."""
    for _ in range(100):
        x, y = a.data_to_send(), b.data_to_send()
        if not x and not y:
            return
        if x:
            b.receive_data(bytes(x))
        if y:
            a.receive_data(bytes(y))
    raise AssertionError("the codecs never went quiet")


def pair(**server_settings: int) -> tuple[H2Codec, Recorder, H2Codec, Recorder]:
    c, cr = make(True)
    s, sr = make(False, **server_settings)
    pump(c, s)
    cr.events.clear()
    sr.events.clear()
    return c, cr, s, sr


def server_after_preface(**settings: int) -> tuple[H2Codec, Recorder]:
    """A server that got a client's preface and empty SETTINGS; its output is emptied."""
    s, sr = make(False, **settings)
    s.receive_data(PREFACE + frame(4, 0, 0))
    s.data_to_send()
    sr.events.clear()
    return s, sr


def block(headers: list[tuple[bytes, bytes]]) -> bytes:
    """A header block from a fresh HPACK encoder (static table and literals only)."""
    from hpack import Encoder

    return bytes(Encoder().encode(headers))


def conn_error(c: H2Codec, data: bytes) -> H2ErrorCode:
    c.data_to_send()
    with pytest.raises(H2ConnectionError) as e:
        c.receive_data(data)
    out = bytes(c.data_to_send())
    i = out.rfind(b"\x07\x00\x00\x00\x00\x00") - 3  # the GOAWAY frame's header
    assert i >= 0, "GOAWAY queued"
    assert struct.unpack(">L", out[i + 13:i + 17])[0] == e.value.code
    assert c.closed
    return H2ErrorCode(e.value.code)


# ------------------------------------------------------------------------------ in memory
def test_request_response_body_trailers() -> None:
    c, cr, s, sr = pair()
    sid = c.next_stream_id()
    c.send_headers(sid, REQ)
    assert c.send_data(sid, b"hello", end_stream=True) == 5
    pump(c, s)
    assert sr.events[0] == ("headers", 1, REQ, False)
    assert ("data", 1, b"hello", 5, True) in sr.events
    s.send_headers(1, [(b":status", b"103"), (b"link", b"</a>")])
    s.send_headers(1, [(b":status", b"200"), (b"content-type", b"text/plain")])
    s.send_data(1, b"body")
    s.send_headers(1, [(b"grpc-status", b"0")], end_stream=True)
    pump(c, s)
    assert cr.of("headers") == [("headers", 1, [(b":status", b"103"), (b"link", b"</a>")], False),
                                ("headers", 1, [(b":status", b"200"),
                                                (b"content-type", b"text/plain")], False)]
    assert cr.of("data") == [("data", 1, b"body", 4, False)]
    assert cr.of("trailers") == [("trailers", 1, [(b"grpc-status", b"0")])]
    assert not c.streams and not s.streams
    assert c.open_streams == 0


def test_headers_with_end_stream_and_continuation() -> None:
    c, cr, s, sr = pair(max_header_list_size=200_000)
    big = [(b"x-big", b"v" * 50_000), (b"x-other", pattern(30_000).hex().encode()[:30_000])]
    c.send_headers(1, REQ + big, end_stream=True)
    out = bytes(c.out)
    assert out[3] == 1 and not out[4] & 0x4 and b"\x09" in out  # HEADERS, then CONTINUATION
    pump(c, s)
    assert sr.events == [("headers", 1, REQ + big, True)]
    s.send_headers(1, [(b":status", b"204")], end_stream=True)
    pump(c, s)
    assert cr.events == [("headers", 1, [(b":status", b"204")], True)]
    assert not c.streams and not s.streams


def test_flow_control_windows_and_updates() -> None:
    c, _cr, s, sr = pair(initial_window_size=100)
    sr.hold = True
    c.send_headers(1, CONNECT)
    assert c.send_window_of(1) == 100
    assert c.send_data(1, bytes(250)) == 100
    assert c.send_data(1, bytes(10)) == 0
    pump(c, s)
    assert sum(e[3] for e in sr.of("data")) == 100
    s.window_update(1, 60)
    s.window_update(0, 100)
    pump(c, s)
    assert c.send_window_of(1) == 60
    assert c.send_data(1, bytes(150), end_stream=True) == 60  # no END_STREAM: not all went
    pump(c, s)
    assert not any(e[4] for e in sr.of("data"))
    # the connection window: 65535 - 160 + 100
    assert c.send_window == 65535 - 160 + 100


def test_initial_window_change_moves_open_streams() -> None:
    c, cr, s, _sr = pair()
    c.send_headers(1, CONNECT)
    pump(c, s)
    s.out += frame(4, 0, 0, settings_payload({H2Setting.INITIAL_WINDOW_SIZE: 70000}))
    pump(c, s)
    assert cr.of("settings") == [("settings", {H2Setting.INITIAL_WINDOW_SIZE: 70000})]
    assert c.streams[1].send_window == 70000


def test_max_concurrent_streams() -> None:
    c, cr, s, sr = pair(max_concurrent_streams=2)
    assert c.remote_max_streams == 2
    c.send_headers(1, CONNECT)
    c.send_headers(3, CONNECT)
    with pytest.raises(H2UsageError, match="allows 2 concurrent"):
        c.send_headers(5, CONNECT)
    # a peer that ignores our limit gets REFUSED_STREAM, a stream error
    c.remote_max_streams = 10
    c.send_headers(5, CONNECT)
    pump(c, s)
    assert [e[1] for e in sr.of("headers")] == [1, 3]
    assert cr.of("reset") == [("reset", 5, H2ErrorCode.REFUSED_STREAM)]
    assert not s.closed and set(s.streams) == {1, 3}


def test_stream_ids_must_be_ours_and_increase() -> None:
    c, _cr, s, _sr = pair()
    with pytest.raises(H2UsageError):
        c.send_headers(2, CONNECT)  # even: the server's
    c.send_headers(5, CONNECT)
    with pytest.raises(H2UsageError):
        c.send_headers(3, CONNECT)
    pump(c, s)
    s2, _ = server_after_preface()
    hb = block(CONNECT)
    s2.receive_data(frame(1, 5, 7, hb))
    # a lower id: closed or never used, we cannot tell without remembering every stream;
    # ignored (leniency is the safe side when a bounded memory forgets)
    s2.receive_data(frame(1, 5, 3, hb))
    assert not s2.closed and 3 not in s2.streams
    s3, _ = server_after_preface()
    assert conn_error(s3, frame(1, 5, 2, hb)) == H2ErrorCode.PROTOCOL_ERROR  # even id


def test_reset_both_ways_and_late_frames_are_ignored() -> None:
    c, cr, s, sr = pair()
    c.send_headers(1, CONNECT)
    pump(c, s)
    s.send_headers(1, [(b":status", b"200")])
    c.send_data(1, b"in flight")
    s.reset_stream(1, H2ErrorCode.CONNECT_ERROR)
    pump(c, s)  # the DATA crossed the RST: ignored, its connection credit handed back
    assert cr.of("reset") == [("reset", 1, H2ErrorCode.CONNECT_ERROR)]
    assert not sr.of("data") and s.recv_window == 65535
    c.send_headers(3, CONNECT)
    pump(c, s)
    c.reset_stream(3)
    pump(c, s)
    assert sr.of("reset") == [("reset", 3, H2ErrorCode.CANCEL)]
    assert not c.streams and not s.streams


def test_late_frames_after_many_resets_are_still_ignored() -> None:
    c, _cr, s, _sr = pair(max_concurrent_streams=5000)
    c.remote_max_streams = 5000
    for sid in range(1, 2 * 1500, 2):
        c.send_headers(sid, CONNECT)
    pump(c, s)
    for sid in range(1, 2 * 1500, 2):
        s.reset_stream(sid, H2ErrorCode.CANCEL)
    s.data_to_send()
    s.receive_data(frame(0, 0, 1, b"late") + frame(1, 5, 1, block([(b"x-t", b"1")])))
    assert not s.closed and s.recv_window == 65535


def test_data_on_a_normally_closed_stream_is_an_error() -> None:
    c, _cr, s, _sr = pair()
    c.send_headers(1, CONNECT, end_stream=True)
    pump(c, s)
    s.send_headers(1, [(b":status", b"200")], end_stream=True)
    pump(c, s)
    assert not s.streams
    assert conn_error(s, frame(0, 0, 1, b"late")) == H2ErrorCode.STREAM_CLOSED


def test_ping_settings_ack_goaway() -> None:
    c, cr, s, sr = pair()
    c.ping(b"12345678")
    pump(c, s)
    assert sr.of("ping") == [("ping", b"12345678", False)]
    assert cr.of("ping") == [("ping", b"12345678", True)]
    for sid in (1, 3, 5):
        c.send_headers(sid, CONNECT)
    pump(c, s)
    s.goaway(last_sid=3)
    pump(c, s)
    assert cr.of("goaway") == [("goaway", 3, 0, b"")]
    assert set(c.streams) == {1, 3}  # 5 was never processed: forgotten, to be retried
    with pytest.raises(H2UsageError, match="GOAWAY"):
        c.send_headers(7, CONNECT)
    c.send_data(3, b"finish", end_stream=True)  # running streams go on
    pump(c, s)
    assert ("data", 3, b"finish", 6, True) in sr.events
    # the server refuses streams opened after its GOAWAY
    s2, _ = server_after_preface()
    s2.goaway()
    s2.data_to_send()
    s2.receive_data(frame(1, 5, 1, block(CONNECT)))
    assert bytes(s2.data_to_send())[3] == 3  # RST_STREAM REFUSED


def test_upgrade_h2c() -> None:
    cr, sr = Recorder(), Recorder()
    c = H2Codec(cr, client=True)
    s = H2Codec(sr, client=False, settings={H2Setting.MAX_CONCURRENT_STREAMS: 7})
    cr.codec, sr.codec = c, s
    header = c.initiate_upgrade_connection()
    assert header is not None and b"=" not in header
    assert 1 in c.streams and c.next_stream_id() == 3
    assert s.initiate_upgrade_connection(header) is None
    assert s.remote_settings[H2Setting.ENABLE_PUSH] == 0
    s.send_headers(1, [(b":status", b"200")])
    s.send_data(1, b"upgraded", end_stream=True)
    pump(c, s)
    assert cr.of("headers") == [("headers", 1, [(b":status", b"200")], False)]
    assert ("data", 1, b"upgraded", 8, True) in cr.events
    assert c.remote_max_streams == 7
    bad = H2Codec(Recorder(), client=False)
    with pytest.raises(H2UsageError):
        bad.initiate_upgrade_connection(base64.urlsafe_b64encode(b"12345"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3)), min_size=1, max_size=40),
       st.integers(0, 39))
def test_hpack_caches_follow_the_tables(picks: list[tuple[int, int]], shrink_at: int) -> None:
    """Repeated blocks come from the caches; new fields, evictions (long values in a 4 KiB
    table) and the peer shrinking its table to 0 mid-way must never serve a stale block."""
    c, _cr, s, sr = pair(max_header_list_size=1 << 20)
    for i, (name, extra) in enumerate(picks):
        if i == shrink_at:
            s.out += frame(4, 0, 0, settings_payload({H2Setting.HEADER_TABLE_SIZE: 0}))
            pump(c, s)
        h = [(b":method", b"CONNECT"), (b":authority", b"svc%d.test:80" % name)]
        h += [(b"x-fill", b"v" * 1500 * extra)] if extra else []
        sid = c.next_stream_id()
        c.send_headers(sid, h, end_stream=True)
        pump(c, s)
        assert sr.events[-1] == ("headers", sid, h, True)
        s.send_headers(sid, [(b":status", b"200")], end_stream=True)
        pump(c, s)
    assert sr.of("stream_error") == []


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3), st.booleans()),
                         min_size=1, max_size=5), min_size=1, max_size=12),
       st.booleans())
def test_hpack_decode_cache_takes_unindexed_literals(blocks: list[list[tuple[int, int, bool]]],
                                                     huffman: bool) -> None:
    """Blocks with literals sent without indexing or never indexed (nghttp2 sends ``:path``
    so) leave the table as it was, so they are cached too: every decode still equals an
    independent decoder's, and ``keeps_table`` is true only when that decoder's table did
    not move."""
    from hpack import Decoder, Encoder, NeverIndexedHeaderTuple

    from ugate_core.h2.hpack import Hpack, keeps_table

    enc, ref, ours = Encoder(), Decoder(), Hpack(1 << 20)
    names = [":path", "a", "user-agent", "x-long", ":authority", "zz"]
    for fields in blocks * 2:  # the second round repeats every block: cache hits
        hs = [NeverIndexedHeaderTuple(names[n], "v" * (40 * size)) if never
              else (names[n], "v" * (40 * size)) for n, size, never in fields]
        block = enc.encode(hs, huffman=huffman)
        before = list(ref.header_table.dynamic_entries)
        want = ref.decode(block, raw=True)
        if keeps_table(block):
            assert list(ref.header_table.dynamic_entries) == before
        assert ours.decode(block, 1) == want
    for junk in (b"", b"\x00", b"\x0f\xff", b"\x00\x7f", b"\x04\x85ab", b"\x04\x7f\x80"):
        assert not keeps_table(junk)  # cut short


def test_hpack_decode_cache_is_bounded_in_bytes() -> None:
    """A client sending ever new big blocks of unindexed literals cannot make the decode
    cache hold more than its byte budget (nor blocks above an eighth of it)."""
    from hpack import Encoder, NeverIndexedHeaderTuple

    from ugate_core.h2.hpack import _CACHED_BYTES, Hpack

    enc, ours = Encoder(), Hpack(1 << 20)
    for i in range(300):
        size = 60_000 if i % 3 == 0 else 1500
        block = enc.encode([NeverIndexedHeaderTuple(f"x-{i}", "v" * size)], huffman=False)
        assert ours.decode(block, 1)[0][1] == b"v" * size
        held = sum(len(b) for b in ours._dec)
        assert held == ours._dec_bytes <= _CACHED_BYTES
        assert all(len(b) <= _CACHED_BYTES // 8 for b in ours._dec)
    small = enc.encode([NeverIndexedHeaderTuple(":path", "/w")])
    ours.decode(small, 1)
    assert ours.cached(small)  # what a repeated request sends is still cached


# ------------------------------------------------------------------------------ bad peers
@pytest.mark.parametrize(("data", "code"), [
    (b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00", H2ErrorCode.PROTOCOL_ERROR),
    (b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x7f\xff\xff\xff", H2ErrorCode.FLOW_CONTROL_ERROR),
    (b"\x00\x00\x03\x08\x00\x00\x00\x00\x00\x00\x00\x01", H2ErrorCode.FRAME_SIZE_ERROR),
    (b"\x00\x00\x00\x05\x04\x00\x00\x00\x01", H2ErrorCode.PROTOCOL_ERROR),  # PUSH_PROMISE
    (b"\x00\x00\x04\x00\x00\x00\x00\x00\x01abcd", H2ErrorCode.PROTOCOL_ERROR),  # DATA, idle
    (b"\x00\x00\x04\x00\x00\x00\x00\x00\x00abcd", H2ErrorCode.PROTOCOL_ERROR),  # DATA, 0
    (b"\x00\x00\x04\x03\x00\x00\x00\x00\x09\x00\x00\x00\x08", H2ErrorCode.PROTOCOL_ERROR),
    (b"\x00\x00\x07\x06\x00\x00\x00\x00\x00abcdefg", H2ErrorCode.FRAME_SIZE_ERROR),  # PING
    (b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x05\x00\x00\x10\x00",
     H2ErrorCode.PROTOCOL_ERROR),  # MAX_FRAME_SIZE 4096
    (b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x04\x80\x00\x00\x00",
     H2ErrorCode.FLOW_CONTROL_ERROR),  # INITIAL_WINDOW_SIZE 2^31
    (b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x02",
     H2ErrorCode.PROTOCOL_ERROR),  # ENABLE_PUSH 2
    (b"\x00\x00\x01\x04\x01\x00\x00\x00\x00\x00", H2ErrorCode.FRAME_SIZE_ERROR),  # ACK + body
    (b"\x00\x00\x00\x09\x04\x00\x00\x00\x01", H2ErrorCode.PROTOCOL_ERROR),  # lone CONTINUATION
    (b"\x00\x00\x02\x07\x00\x00\x00\x00\x00\x00\x00", H2ErrorCode.FRAME_SIZE_ERROR),  # GOAWAY
    (b"\x00\x00\x01\x01\x05\x00\x00\x00\x01\xff", H2ErrorCode.COMPRESSION_ERROR),  # HPACK
])
def test_connection_errors(data: bytes, code: H2ErrorCode) -> None:
    s, _ = server_after_preface()
    assert conn_error(s, data) == code


def test_frame_size_is_checked_at_the_header() -> None:
    s, _ = server_after_preface(max_frame_size=16384)
    with pytest.raises(H2ConnectionError, match="exceeds our SETTINGS_MAX_FRAME_SIZE 16384") as e:
        s.receive_data(b"\x00\x40\x01\x00\x00\x00\x00\x00\x01")  # 16385 bytes claimed
    assert e.value.code == H2ErrorCode.FRAME_SIZE_ERROR
    assert not s._buf


def test_preface_and_first_settings() -> None:
    s, _ = make(False)
    assert conn_error(s, b"GET / HTTP/1.1\r\n") == H2ErrorCode.PROTOCOL_ERROR
    c, _ = make(True)
    with pytest.raises(H2ConnectionError, match="did not start with a SETTINGS frame") as e:
        c.receive_data(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    assert "HTTP/1.1 " in str(e.value)
    s2, _ = make(False)
    s2.receive_data(PREFACE[:5])
    s2.receive_data(PREFACE[5:] + b"\x00\x00")
    assert conn_error(s2, b"\x00\x06\x00\x00\x00\x00\x00\x00") == H2ErrorCode.PROTOCOL_ERROR


def test_interleaved_header_block_is_an_error() -> None:
    s, _ = server_after_preface()
    s.receive_data(frame(1, 0, 1, b"\x82"))  # HEADERS without END_HEADERS
    assert conn_error(s, frame(6, 0, 0, bytes(8))) == H2ErrorCode.PROTOCOL_ERROR


def test_header_block_bound() -> None:
    s, _ = server_after_preface(max_header_list_size=4096)
    s.receive_data(frame(1, 0, 1, b"\x82"))
    for _ in range(5):
        s.receive_data(frame(9, 0, 1, b"\x00" * 1000))
    assert conn_error(s, frame(9, 0, 1, b"\x00" * 1000)) == H2ErrorCode.ENHANCE_YOUR_CALM


@pytest.mark.parametrize("headers", [
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"Upper", b"x")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"connection", b"close")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"te", b"gzip")],
    [(b":method", b"GET"), (b"x", b"1"), (b":scheme", b"http"), (b":path", b"/")],
    [(b":method", b"GET"), (b":scheme", b"http")],
    [(b":method", b"CONNECT"), (b":authority", b"a:1"), (b":path", b"/")],
    [(b":method", b"CONNECT")],
    [(b":method", b"GET"), (b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":status", b"200")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"x", b" lead")],
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b"x", b"a\r\nb")],
    [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"http"),
     (b":path", b"/"), (b":authority", b"a")],  # extended CONNECT not enabled
])
def test_malformed_requests_are_stream_errors(headers: list[tuple[bytes, bytes]]) -> None:
    c, cr, s, sr = pair()
    c.send_headers(1, headers)
    c.send_headers(3, CONNECT)
    pump(c, s)
    assert sr.of("stream_error") == [("stream_error", 1, H2ErrorCode.PROTOCOL_ERROR)]
    assert cr.of("reset") == [("reset", 1, H2ErrorCode.PROTOCOL_ERROR)]
    assert [e[1] for e in sr.of("headers")] == [3] and not s.closed


def test_extended_connect_when_enabled() -> None:
    c, _cr, s, sr = pair(enable_connect_protocol=1)
    h = [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"https"),
         (b":path", b"/chat"), (b":authority", b"a")]
    c.send_headers(1, h)
    pump(c, s)
    assert sr.events == [("headers", 1, h, False)]


def test_stream_level_errors() -> None:
    c, cr, s, sr = pair(initial_window_size=10)
    sr.hold = True
    c.send_headers(1, CONNECT)
    c.send_headers(3, CONNECT)
    pump(c, s)
    c.streams[1].send_window = 1000  # a client that ignores our window
    c.send_data(1, bytes(11))
    c.out += frame(8, 0, 3, bytes(4))  # WINDOW_UPDATE of 0 on a stream
    pump(c, s)
    assert sr.of("stream_error") == [("stream_error", 1, H2ErrorCode.FLOW_CONTROL_ERROR),
                                     ("stream_error", 3, H2ErrorCode.PROTOCOL_ERROR)]
    assert {e[1] for e in cr.of("reset")} == {1, 3}
    assert s.recv_window == 65535 and not s.closed  # the discarded bytes' credit came back


def test_padded_data_and_headers() -> None:
    s, sr = server_after_preface()
    hb = block(CONNECT)
    s.receive_data(frame(1, 0x4 | 0x8 | 0x20, 1, bytes([3]) + bytes(5) + hb + b"pad"))
    s.receive_data(frame(0, 0x8 | 0x1, 1, bytes([2]) + b"abc" + b"pp"))
    assert sr.events == [("headers", 1, CONNECT, False), ("data", 1, b"abc", 6, True)]
    assert conn_error(s, frame(0, 0x8, 1, bytes([9]) + b"abc")) == H2ErrorCode.PROTOCOL_ERROR


def test_local_errors() -> None:
    c, _cr, _s, _sr = pair()
    with pytest.raises(H2UsageError):
        c.send_data(1, b"x")  # never opened
    c.send_headers(1, CONNECT, end_stream=True)
    with pytest.raises(H2UsageError):
        c.send_data(1, b"x")
    with pytest.raises(H2UsageError):
        c.ping(b"short")
    with pytest.raises(H2UsageError):
        c.window_update(0, 1 << 31)
    c.reset_stream(99)  # unknown: nothing
    assert not c.out.endswith(b"\x00\x00\x00\x63")
    assert isinstance(H2UsageError("x"), H2UsageError)


# ------------------------------------------------------------------------------ hypothesis
@st.composite
def client_streams(draw: st.DrawFn) -> bytes:
    """What a client sends: preface, SETTINGS, requests, DATA (some padded), trailers, RST,
    PING, WINDOW_UPDATE, PRIORITY."""
    c = H2Codec(H2Handler(), client=True)
    c.remote_max_streams = 1000
    c.initiate_connection()
    sids: list[int] = []
    for _ in range(draw(st.integers(1, 12))):
        op = draw(st.integers(0, 6))
        if op == 0 or not sids:
            sid = c.next_stream_id()
            c.send_headers(sid, CONNECT if draw(st.booleans()) else [*REQ, (b"x-n", b"1" * sid)],
                           end_stream=draw(st.booleans()))
            sids.append(sid)
        elif op == 1:
            sid = draw(st.sampled_from(sids))
            if sid in c.streams and not c.streams[sid].local_closed:
                c.send_data(sid, pattern(draw(st.integers(0, 3000)), sid),
                            end_stream=draw(st.booleans()))
        elif op == 2:
            sid = draw(st.sampled_from(sids))
            pad = draw(st.integers(0, 20))
            if sid in c.streams and not c.streams[sid].local_closed:
                c.out += frame(0, 0x8, sid, bytes([pad]) + b"padded" + bytes(pad))
        elif op == 3:
            sid = draw(st.sampled_from(sids))
            if sid in c.streams and not c.streams[sid].local_closed:
                c.send_headers(sid, [(b"x-trailer", b"t")], end_stream=True)
        elif op == 4:
            c.reset_stream(draw(st.sampled_from(sids)))
        elif op == 5:
            c.ping(pattern(8, len(c.out)))
            c.out += frame(2, 0, draw(st.sampled_from(sids)), b"\x00\x00\x00\x00\x10")
        else:
            c.window_update(0, draw(st.integers(1, 1000)))
    return bytes(c.out)


def _feed(data: bytes, cuts: list[int], max_frame: int = 16384) -> tuple[list[Event], str]:
    s, sr = make(False, initial_window_size=1 << 20, max_frame_size=max_frame)
    i = k = 0
    err = ""
    try:
        while i < len(data):
            n = cuts[k % len(cuts)] if cuts else len(data)
            s.receive_data(data[i:i + n])
            assert len(s._buf) <= 9 + max_frame + n
            assert len(s._cont_buf) <= s._max_block
            i += n
            k += 1
    except H2ConnectionError as e:
        err = H2ErrorCode(e.code).name
    return sr.events, err


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=client_streams(), cuts=st.lists(st.integers(1, 700), min_size=1, max_size=20))
def test_any_split_gives_the_same_events(data: bytes, cuts: list[int]) -> None:
    whole, err = _feed(data, [])
    assert not err, err
    assert _feed(data, cuts) == (whole, "")
    assert _feed(data, [1]) == (whole, "")


@settings(max_examples=300, deadline=None)
@given(noise=st.binary(max_size=400), prefix=st.booleans())
def test_random_bytes_raise_only_our_error(noise: bytes, prefix: bool) -> None:
    data = (PREFACE + frame(4, 0, 0) if prefix else b"") + noise
    _feed(data, [7])  # anything but H2ConnectionError fails the test


@settings(max_examples=150, deadline=None)
@given(data=client_streams(), edits=st.lists(st.tuples(st.integers(0, 10_000),
                                                       st.integers(0, 255)), max_size=4))
def test_mutated_streams_raise_only_our_error(data: bytes, edits: list[tuple[int, int]]) -> None:
    b = bytearray(data)
    for pos, val in edits:
        b[pos % len(b)] = val
    _feed(bytes(b), [13, 1000])


# ------------------------------------------------------------------------------ real peers
class _Server(H2Handler):
    """A tiny HTTP/2 server on the codec: echoes request bodies, answers GETs with 1 KiB."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.t = transport
        self.c = H2Codec(self, client=False, settings={H2Setting.MAX_CONCURRENT_STREAMS: 200})
        self.c.initiate_connection()
        self.bodies: dict[int, bytearray] = {}
        self.unsent: dict[int, memoryview] = {}  # answers waiting for window
        self.flush()

    def flush(self) -> None:
        if self.c.out:
            self.t.write(self.c.data_to_send())

    def on_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        self.bodies[sid] = bytearray()
        if end_stream:
            self.answer(sid)

    def on_data(self, sid: int, data: bytes, flow_len: int, end_stream: bool) -> None:
        self.bodies[sid] += data
        self.c.window_update(0, flow_len)
        self.c.window_update(sid, flow_len)
        if end_stream:
            self.answer(sid)

    def answer(self, sid: int) -> None:
        body = bytes(self.bodies.pop(sid)) or pattern(1024)
        self.c.send_headers(sid, [(b":status", b"200"),
                                  (b"content-length", str(len(body)).encode())])
        self.unsent[sid] = memoryview(body)
        self.on_window(sid)

    def on_window(self, sid: int) -> None:
        for k in [sid] if sid else list(self.unsent):
            rest = self.unsent.get(k)
            if rest is not None:
                n = self.c.send_data(k, rest, end_stream=True)
                if n == len(rest):
                    del self.unsent[k]
                else:
                    self.unsent[k] = rest[n:]


class _Proto(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.s = _Server(transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.s.c.receive_data(data)
        finally:
            self.s.flush()


async def _serve() -> tuple[asyncio.Server, int]:
    srv = await asyncio.get_running_loop().create_server(_Proto, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1]


@pytest.mark.peer("nghttp")
async def test_nghttp_client_against_the_codec(tmp_path: Any) -> None:
    nghttp = require_peer("nghttp", "nghttp2-client")
    srv, port = await _serve()
    body = tmp_path / "body"
    body.write_bytes(pattern(200_000))
    async with srv:
        p = await asyncio.create_subprocess_exec(
            nghttp, "-d", str(body), "-H", "X-Up: 1", f"http://127.0.0.1:{port}/echo",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(p.communicate(), 30)
        assert p.returncode == 0, err.decode()[-2000:]
        assert out == pattern(200_000)
        p = await asyncio.create_subprocess_exec(
            nghttp, "-v", f"http://127.0.0.1:{port}/", stdout=subprocess.PIPE)
        out, _ = await asyncio.wait_for(p.communicate(), 30)
        assert p.returncode == 0 and b"recv (stream_id=13) :status: 200" in out


@pytest.mark.peer("h2load")
async def test_h2load_many_streams(tmp_path: Any) -> None:
    h2load = require_peer("h2load", "nghttp2-client")
    srv, port = await _serve()
    async with srv:
        p = await asyncio.create_subprocess_exec(
            h2load, "-n", "2000", "-c", "4", "-m", "100", f"http://127.0.0.1:{port}/",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, _ = await asyncio.wait_for(p.communicate(), 60)
    text = out.decode()
    assert p.returncode == 0, text
    assert "2000 succeeded, 0 failed, 0 errored" in text, text
    assert "status codes: 2000 2xx" in text, text


class _Client(H2Handler, asyncio.Protocol):
    def __init__(self) -> None:
        self.c = H2Codec(self, client=True)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.got: dict[int, bytearray] = {}
        self.status: dict[int, bytes] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.t = transport
        self.c.initiate_connection()
        for _ in range(20):
            sid = self.c.next_stream_id()
            self.c.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"http"),
                                      (b":path", b"/big"), (b":authority", b"localhost")],
                                end_stream=True)
            self.got[sid] = bytearray()
        self.t.write(self.c.data_to_send())

    def data_received(self, data: bytes) -> None:
        self.c.receive_data(data)
        if self.c.out:
            self.t.write(self.c.data_to_send())

    def on_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        self.status[sid] = dict(headers)[b":status"]

    def on_data(self, sid: int, data: bytes, flow_len: int, end_stream: bool) -> None:
        self.got[sid] += data
        self.c.window_update(0, flow_len)
        self.c.window_update(sid, flow_len)
        if end_stream and not self.c.open_streams and not self.done.done():
            self.done.set_result(None)


@pytest.mark.peer("nghttpd")
async def test_codec_client_against_nghttpd(tmp_path: Any) -> None:
    nghttpd = require_peer("nghttpd", "nghttp2-server")
    (tmp_path / "big").write_bytes(pattern(300_000))
    port = free_port()
    p = await asyncio.create_subprocess_exec(
        nghttpd, "--no-tls", "-d", str(tmp_path), str(port),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        loop = asyncio.get_running_loop()
        for _ in range(100):
            try:
                t, cl = await loop.create_connection(_Client, "127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("nghttpd did not start")
        await asyncio.wait_for(cl.done, 30)
        t.close()
        assert set(cl.status.values()) == {b"200"}
        assert all(bytes(v) == pattern(300_000) for v in cl.got.values())
    finally:
        p.terminate()
        await p.wait()
