"""Signaling through the route handler (a fake Exchange) with an aiortc client peer."""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from webrtc_testlib import CONFIG, SDP, Collector, FakeExchange, client_offer, finish

from ugate_core import Gateway, id_of_public_key, make_token
from ugate_core.testing import StartGateway, metric, pattern
from ugate_webrtc.options import PATH
from ugate_webrtc.session import state_of
from ugate_webrtc.signaling import Signaling


async def _gw(start_gateway: StartGateway, extra: str = "") -> Gateway:
    return await start_gateway(CONFIG + "connect_timeout = 5\n" + extra + "\n")


async def test_two_channels_echo_and_half_close(start_gateway: StartGateway,
        echo_server: tuple[str, int]) -> None:
    gw = await _gw(start_gateway)
    host, port = echo_server
    pc, chans, offer = await client_offer([f"{host}:{port}", f"localhost:{port}"])
    ex = FakeExchange("POST", PATH, offer.encode(), SDP)
    await Signaling(gw)(ex)
    assert ex.status == 201, ex.resp_body
    assert ex.resp_header("content-type") == "application/sdp"
    loc = ex.resp_header("location")
    assert loc is not None and loc.startswith(PATH + "/")
    await finish(pc, ex.resp_body)
    cols = [Collector(c) for c in chans]
    await asyncio.wait_for(asyncio.gather(*(c.opened.wait() for c in cols)), 10)
    data = [pattern(300_000, seed=i) for i in range(2)]
    for c, d in zip(chans, data, strict=True):
        for i in range(0, len(d), 16384):
            c.send(d[i:i + 16384])
        c.send(b"")  # half-close: the echo origin answers, then ends
    await asyncio.wait_for(asyncio.gather(*(c.fin.wait() for c in cols)), 30)
    assert [bytes(c.data) for c in cols] == data
    assert metric(gw, "ugate_webrtc_sessions") == 1
    # DELETE frees the session and its channels
    de = FakeExchange("DELETE", loc)
    await Signaling(gw)(de)
    assert de.status == 200
    assert metric(gw, "ugate_webrtc_sessions") == 0
    assert state_of(gw).sessions == {}
    await pc.close()
    for _ in range(50):
        if metric(gw, "ugate_webrtc_channels") == 0:
            break
        await asyncio.sleep(0.05)
    assert metric(gw, "ugate_webrtc_channels") == 0


async def test_bad_offers_are_clear_4xx_and_counted(start_gateway: StartGateway) -> None:
    gw = await _gw(start_gateway, "max_sdp = 2048")
    sig = Signaling(gw)
    _, _, good = await client_offer(["a.test:1"])
    cases = [
        (b"hello", SDP, 400, b"bad_sdp: offer is not SDP"),
        (b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n",
         SDP, 400, b"no_datachannel"),
        (b"v=0\r\n" + b"a=x:" + b"y" * 4000 + b"\r\n", SDP, 413, b"too large"),
        (good.encode(), [("content-type", "text/plain")], 415, b"not_sdp"),
    ]
    for body, headers, status, words in cases:
        ex = FakeExchange("POST", PATH, body, headers)
        await sig(ex)
        assert ex.status == status, (status, ex.resp_body)
        assert words in ex.resp_body
    assert metric(gw, "ugate_rejections_total", listener="main", reason="bad_sdp") == 1
    assert metric(gw, "ugate_rejections_total", listener="main", reason="no_datachannel") == 1
    assert metric(gw, "ugate_rejections_total", listener="main", reason="sdp_too_large") == 1
    assert metric(gw, "ugate_rejections_total", listener="main", reason="not_sdp") == 1
    assert state_of(gw).sessions == {}


async def test_beyond_loopback_needs_a_valid_token(start_gateway: StartGateway,
        tmp_path: Path) -> None:
    key, stranger = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    pub = tmp_path / "signer.pub"
    pub.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    gw = await _gw(start_gateway, f'[tokens]\ntrusted_keys = ["{pub}"]\naudience = "gw"')
    sig = Signaling(gw)
    far = ("192.0.2.7", 50000)
    _, _, offer = await client_offer(["a.test:1"])
    good = make_token(key, "alice", "gw", 60)
    expired = make_token(key, "alice", "gw", -1)
    forged = make_token(stranger, "alice", "gw", 60)  # a fresh key nobody trusts
    elsewhere = make_token(key, "alice", "other-gw", 60)
    for headers, path, reason in [
        ([], PATH, b"no_token"),
        ([("authorization", f"Bearer {expired}")], PATH, b"token_expired"),
        ([("authorization", f"Bearer {forged}")], PATH, b"token_unknown_key"),
        ([("authorization", f"Bearer {elsewhere}")], PATH, b"token_audience"),
        ([("authorization", "Basic YTpi")], PATH, b"token_malformed"),
        ([], f"{PATH}?token={forged}", b"token_unknown_key"),
    ]:
        ex = FakeExchange("POST", path, offer.encode(), SDP + headers, remote=far)
        await sig(ex)
        assert (ex.status, ex.resp_body.split(b":")[0]) == (401, reason)
        assert ex.resp_header("www-authenticate", ) is not None
    assert ex.resp_body == (f"token_unknown_key: token signed by "
                            f"{id_of_public_key(stranger)[:16]!r}, not a key in [tokens] "
                            "trusted_keys\n").encode()
    assert state_of(gw).sessions == {}  # refused before any ICE work
    for reason, n in [("no_token", 1), ("token_expired", 1), ("token_unknown_key", 2),
                      ("token_audience", 1), ("token_malformed", 1)]:
        assert metric(gw, "ugate_rejections_total", listener="main", reason=reason) == n
    ok = FakeExchange("POST", f"{PATH}?token={good}", offer.encode(), SDP, remote=far)
    await sig(ok)
    assert ok.status == 201
    (session,) = state_of(gw).sessions.values()
    assert session.meta.user == "alice" and session.meta.extra["user_verified"] is True
    assert session.meta.remote == far


async def test_signaling_flood_is_bounded(start_gateway: StartGateway) -> None:
    gw = await _gw(start_gateway, "rate = 1\nburst = 3")
    sig = Signaling(gw)
    codes = []
    t0 = time.monotonic()
    for _ in range(50):
        ex = FakeExchange("POST", PATH, b"x", SDP, remote=("192.0.2.9", 1))
        await sig(ex)
        codes.append(ex.status)
    assert time.monotonic() - t0 < 2
    assert codes[:3] == [401, 401, 401] and set(codes[3:]) == {429}
    assert metric(gw, "ugate_rejections_total", listener="main", reason="rate_limited") == 47
    # another address is not affected
    other = FakeExchange("POST", PATH, b"x", SDP, remote=("192.0.2.10", 1))
    await sig(other)
    assert other.status == 401


async def _connected(sig: Signaling, label: str) -> tuple[Any, Any, Collector, str]:
    """An aiortc client signaled through ``sig``, its one channel to ``label`` open: the peer
    connection, the channel, its collector and the offer."""
    pc, (ch,), offer = await client_offer([label])
    ex = FakeExchange("POST", PATH, offer.encode(), SDP)
    await sig(ex)
    assert ex.status == 201
    await finish(pc, ex.resp_body)
    col = Collector(ch)
    await asyncio.wait_for(col.opened.wait(), 10)
    return pc, ch, col, offer


async def test_live_channels_are_unaffected_by_a_flood_of_bad_offers(
        start_gateway: StartGateway, echo_server: tuple[str, int]) -> None:
    gw = await _gw(start_gateway, "rate = 1000\nburst = 1000\nmax_sdp = 4096")
    sig = Signaling(gw)
    host, port = echo_server
    pc, ch, col, offer = await _connected(sig, f"{host}:{port}")
    ch.send(b"before ")
    bad = [b"not sdp", b"v=0\r\n" + b"a=x\r\n" * 2000, offer.replace("webrtc-datachannel",
                                                                       "x").encode()]
    codes: dict[int, int] = {}
    for i in range(300):
        fx = FakeExchange("POST", PATH, bad[i % 3], SDP, remote=("127.0.0.1", 50000 + i))
        await sig(fx)
        assert fx.status is not None
        codes[fx.status] = codes.get(fx.status, 0) + 1
    assert codes == {400: 200, 413: 100}
    assert len(state_of(gw).sessions) == 1  # the flood made no session
    ch.send(b"after")
    ch.send(b"")
    await asyncio.wait_for(col.fin.wait(), 10)
    assert bytes(col.data) == b"before after"
    await pc.close()


def _dcep_open(label: bytes) -> bytes:
    return struct.pack("!BBHLHH", 3, 0, 0, 0, len(label), 0) + label  # OPEN, reliable, ordered


async def test_a_bad_dcep_open_ends_that_session_alone(start_gateway: StartGateway,
        echo_server: tuple[str, int], caplog: pytest.LogCaptureFixture) -> None:
    """A peer's well-formed SCTP packet that aiortc cannot take (an OPEN for a stream already
    open, a label that is not UTF-8) ends that peer's session: counted as bad_packet, one log
    line, no traceback; another session's channel goes on."""
    caplog.set_level(logging.INFO)
    gw = await _gw(start_gateway)
    sig = Signaling(gw)
    target = f"{echo_server[0]}:{echo_server[1]}"
    good, good_ch, good_col, _ = await _connected(sig, target)
    good_ch.send(b"before ")
    for k, (stream, label) in enumerate([(None, target.encode()), (101, b"\xff\xfe:1")]):
        bad, ch, _, _ = await _connected(sig, target)
        # the client's SCTP association sends what a hostile peer would
        await bad.sctp._send(ch.id if stream is None else stream, 50, _dcep_open(label))
        for _ in range(100):
            if metric(gw, "ugate_webrtc_sessions_ended_total", reason="bad_packet") == k + 1:
                break
            await asyncio.sleep(0.05)
        assert metric(gw, "ugate_webrtc_sessions_ended_total", reason="bad_packet") == k + 1
        assert metric(gw, "ugate_rejections_total", listener="main", reason="bad_packet") == k + 1
        await bad.close()
    logged = [r.getMessage() for r in caplog.records if "bad_packet" in r.getMessage()]
    assert any("AssertionError" in m for m in logged), logged
    assert any("UnicodeDecodeError" in m for m in logged), logged
    assert not [r for r in caplog.records if "Traceback" in r.getMessage() or r.exc_info]
    assert len(state_of(gw).sessions) == 1
    good_ch.send(b"after")
    good_ch.send(b"")
    await asyncio.wait_for(good_col.fin.wait(), 10)
    assert bytes(good_col.data) == b"before after"
    await good.close()


async def test_ice_deadline_and_session_cap(start_gateway: StartGateway) -> None:
    gw = await start_gateway(CONFIG + "connect_timeout = 0.5\nmax_sessions = 1\n")
    sig = Signaling(gw)
    pcs = []
    statuses = []
    for _ in range(2):
        pc, _, offer = await client_offer(["a.test:1"])
        pcs.append(pc)  # never given the answer: ICE never completes
        ex = FakeExchange("POST", PATH, offer.encode(), SDP)
        await sig(ex)
        statuses.append(ex.status)
    assert statuses == [201, 503]
    assert metric(gw, "ugate_rejections_total", listener="main", reason="too_many_sessions") == 1
    for _ in range(40):
        if not state_of(gw).sessions:
            break
        await asyncio.sleep(0.05)
    assert state_of(gw).sessions == {}
    assert metric(gw, "ugate_rejections_total", listener="main", reason="ice_timeout") == 1
    assert metric(gw, "ugate_webrtc_sessions_ended_total", reason="ice_timeout") == 1
    for pc in pcs:
        await pc.close()
