"""Identity bound to the session meets policy; a stalled channel does not grow memory."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from webrtc_testlib import SDP, Collector, FakeExchange, client_offer, finish

from ugate_core import StreamMeta
from ugate_core.testing import StartGateway, metric
from ugate_webrtc.channel import channel_stream
from ugate_webrtc.options import PATH
from ugate_webrtc.signaling import Signaling

ALLOWED = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
FRESH = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"


async def _signal(gw: Any, labels: list[str], peer_id: str
                  ) -> tuple[Any, list[Any], list[Collector]]:
    pc, chans, offer = await client_offer(labels)
    meta = StreamMeta(protocol="http", listener="main", remote=("192.0.2.50", 443),
                      local=("127.0.0.1", 15008), peer_id=peer_id)
    ex = FakeExchange("POST", PATH, offer.encode(), SDP, meta=meta)
    await Signaling(gw)(ex)
    assert ex.status == 201, ex.resp_body
    await finish(pc, ex.resp_body)
    return pc, chans, [Collector(c) for c in chans]


async def test_a_verified_key_reaches_only_what_rules_allow(start_gateway: StartGateway,
        echo_server: tuple[str, int]) -> None:
    host, port = echo_server
    gw = await start_gateway(f"""
[listeners.main]
listen = "127.0.0.1:0"
protocols = ["http"]
[[rules]]
clients = ["id:{ALLOWED}"]
to = ["{host}:{port}"]
[admin]
listen = "127.0.0.1:0"
[webrtc]
host_addresses = ["127.0.0.1"]
""")
    # a fresh mesh key (it verified, but no rule names it): signaling works, every channel
    # is refused by policy and closed without a byte
    pc, _, (fresh,) = await _signal(gw, [f"{host}:{port}"], FRESH)
    await asyncio.wait_for(fresh.closed.wait(), 10)
    assert bytes(fresh.data) == b"" and not fresh.fin.is_set()
    assert metric(gw, "ugate_dial_errors_total", reason="denied") == 1
    await pc.close()
    # the key a rule names reaches that destination, and only that one
    pc2, (ch, _), (ok, other) = await _signal(gw, [f"{host}:{port}", f"{host}:{port + 1}"],
                                              ALLOWED)
    await asyncio.wait_for(ok.opened.wait(), 10)
    ch.send(b"hello through policy")
    ch.send(b"")
    await asyncio.wait_for(ok.fin.wait(), 10)
    assert bytes(ok.data) == b"hello through policy"
    await asyncio.wait_for(other.closed.wait(), 10)
    assert metric(gw, "ugate_dial_errors_total", reason="denied") == 2
    await pc2.close()


class StalledChannel:
    """A data channel whose peer never reads: ``bufferedAmount`` only grows."""

    readyState = "open"
    label = "x:1"

    def __init__(self) -> None:
        self.bufferedAmount = 0
        self.bufferedAmountLowThreshold = 0
        self.sent = 0
        self.handlers: dict[str, Callable[..., None]] = {}

    def on(self, event: str, f: Callable[..., None]) -> None:
        self.handlers[event] = f

    def send(self, m: bytes) -> None:
        self.bufferedAmount += len(m)
        self.sent += len(m)

    def close(self) -> None:
        self.readyState = "closed"

    def drain(self) -> None:
        self.bufferedAmount = 0
        self.handlers["bufferedamountlow"]()


async def test_a_stalled_channel_holds_a_bounded_amount(start_gateway: StartGateway) -> None:
    async def firehose(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        chunk = b"x" * 65536
        try:
            for _ in range(1024):  # 64 MiB at most
                w.write(chunk)
                await w.drain()
        except ConnectionError:
            pass
        finally:
            w.close()

    srv = await asyncio.start_server(firehose, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    gw = await start_gateway('[admin]\nlisten = "127.0.0.1:0"\n[listeners.main]\n'
                             'listen = "127.0.0.1:0"\nprotocols = ["http"]\n')
    ch = StalledChannel()
    stream = channel_stream(ch, StreamMeta(protocol="webrtc", listener="main"), 65536)
    up = await gw.dial(f"127.0.0.1:{port}")
    gw.start_relay(stream, up)
    await asyncio.sleep(1.0)
    # high water (256 KiB) plus one source chunk (at most 256 KiB), whatever the origin sends
    assert 256 * 1024 <= ch.bufferedAmount <= 512 * 1024, ch.bufferedAmount
    held = ch.sent
    await asyncio.sleep(0.5)
    assert ch.sent == held  # paused: nothing more is taken from the origin
    ch.drain()  # the peer read it all: the relay resumes
    await asyncio.sleep(0.3)
    assert ch.sent > held
    stream.close()
    up.close()
    srv.close()


async def test_a_peer_sending_to_a_stalled_destination_is_cut_off() -> None:
    ch = StalledChannel()
    stream = channel_stream(ch, StreamMeta(protocol="webrtc", listener="main"), 65536)
    ended: list[BaseException | None] = []

    class Sink:
        def data_received(self, data: bytes) -> None:
            pass

        def eof_received(self) -> None:
            pass

        def connection_lost(self, exc: BaseException | None) -> None:
            ended.append(exc)

    stream.set_receiver(Sink())
    stream.pause_reading()  # what the relay does while the destination does not keep up
    msg = b"m" * 65536
    for _ in range(64):  # exactly the limit: still open
        ch.handlers["message"](msg)
    assert ch.readyState == "open"
    ch.handlers["message"](msg)
    assert ch.readyState == "closed"
    ch.handlers["close"]()  # aiortc's close event
    assert len(ended) == 1 and isinstance(ended[0], ConnectionResetError)
    assert "overrun" in str(ended[0])
    # reading again resets the count
    ch2 = StalledChannel()
    s2 = channel_stream(ch2, StreamMeta(protocol="webrtc"), 65536)
    s2.set_receiver(Sink())
    for _ in range(100):
        s2.pause_reading()
        ch2.handlers["message"](msg)
        s2.resume_reading()
    assert ch2.readyState == "open"
