"""Coalesced SACKs (``ugate_webrtc.sctp``): aiortc's internals it relies on, the SACK rules
in memory with aiortc's own chunk classes, and the SACK count on a real transfer."""

from __future__ import annotations

import asyncio
import inspect
import json
from pathlib import Path
from typing import Any

import pytest
from aiortc.rtcsctptransport import (
    DataChunk,
    ForwardTsnChunk,
    RTCSctpTransport,
    SackChunk,
    parse_packet,
    serialize_packet,
)
from webrtc_testlib import CONFIG

import ugate_webrtc.session
from ugate_core.testing import StartGateway, node_run, require_peer
from ugate_webrtc.options import PATH
from ugate_webrtc.sctp import SACK_EVERY, CoalescingSctpTransport, coalesce_sacks

HERE = Path(__file__).parent
BASE = 1000  # the last TSN received before each in-memory test


# ---------------------------------------------------------------- aiortc's internals
async def test_aiortc_internals_the_override_relies_on() -> None:
    """Fails loudly when an aiortc release renames or reshapes what ``sctp.py`` overrides:
    update ``CoalescingSctpTransport`` and the aiortc pin in ``pyproject.toml`` together."""
    want = {"_handle_data": ["self", "data"], "_receive_chunk": ["self", "chunk"],
            "_send_sack": ["self"]}
    for name, params in want.items():
        fn = getattr(RTCSctpTransport, name, None)
        assert fn is not None, f"aiortc RTCSctpTransport has no {name} any more"
        assert inspect.iscoroutinefunction(fn), f"aiortc {name} is no longer a coroutine"
        assert list(inspect.signature(fn).parameters) == params, (name, inspect.signature(fn))
    # _handle_data parses one packet, hands each chunk to _receive_chunk, then SACKs once
    src = inspect.getsource(RTCSctpTransport._handle_data)
    assert "self._receive_chunk(" in src and "self._send_sack()" in src
    assert "self._sack_needed" in src
    t = _transport()
    for attr in ("_sack_needed", "_sack_misordered", "_sack_duplicates", "_last_received_tsn"):
        assert hasattr(t, attr), f"aiortc RTCSctpTransport has no {attr} any more"


async def test_coalesce_sacks_switches_only_aiortc_transports() -> None:
    t = _transport(RTCSctpTransport)
    coalesce_sacks(t)
    assert type(t) is CoalescingSctpTransport
    coalesce_sacks(t)  # idempotent
    assert type(t) is CoalescingSctpTransport

    class Other(RTCSctpTransport):
        pass

    with pytest.raises(TypeError, match="Other"):
        coalesce_sacks(_transport(Other))
    assert type(_transport(RTCSctpTransport)) is RTCSctpTransport  # the class is untouched


# ---------------------------------------------------------------- SACK rules in memory
class FakeDtls:
    """What RTCSctpTransport needs of its DTLS transport: a state and ``_send_data``."""

    state = "connected"

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def _send_data(self, data: bytes) -> None:
        self.sent.append(data)


def _transport(cls: type[RTCSctpTransport] = CoalescingSctpTransport) -> Any:
    t: Any = cls(FakeDtls())  # type: ignore[arg-type]
    t._association_state = t.State.ESTABLISHED
    t._remote_port = 5000
    t._last_received_tsn = BASE
    return t


def _data(tsn: int, flags: int = 0x03) -> DataChunk:
    c = DataChunk(flags=flags)  # 0x03: a whole message (first and last fragment)
    c.tsn, c.stream_id, c.stream_seq, c.protocol = tsn, 1, tsn - BASE - 1, 53
    c.user_data = b"x" * 100
    return c


async def _packet(t: Any, chunk: Any) -> None:
    await t._handle_data(serialize_packet(5000, 5000, t._local_verification_tag, chunk))


async def _settle() -> None:
    """A few loop iterations with no packet: the end-of-batch SACK goes out."""
    for _ in range(5):
        await asyncio.sleep(0)


def _sacks(t: Any) -> list[SackChunk]:
    out = []
    for p in t.transport.sent:
        out += [c for c in parse_packet(p)[3] if isinstance(c, SackChunk)]
    t.transport.sent.clear()
    return out


async def test_a_burst_gets_one_sack_after_the_batch() -> None:
    t = _transport()
    for k in range(1, 6):  # five packets handled back to back, as from one wake-up
        await _packet(t, _data(BASE + k))
    assert _sacks(t) == []
    await _settle()
    (sack,) = _sacks(t)
    assert (sack.cumulative_tsn, sack.gaps, sack.duplicates) == (BASE + 5, [], [])
    assert (t.data_packets, t.sacks_sent) == (5, 1)


async def test_a_lone_packet_is_acked_on_the_next_loop_iteration() -> None:
    # the first packet after idle: no 200 ms timer, one loop hop
    t = _transport()
    await _packet(t, _data(BASE + 1))
    assert _sacks(t) == []
    await _settle()
    assert [s.cumulative_tsn for s in _sacks(t)] == [BASE + 1]
    await asyncio.sleep(0.01)
    assert _sacks(t) == []  # and only once


async def test_a_long_burst_is_acked_every_sack_every_packets() -> None:
    t = _transport()
    n = 2 * SACK_EVERY + 3
    for k in range(1, n + 1):
        await _packet(t, _data(BASE + k))
    assert [s.cumulative_tsn for s in _sacks(t)] == [BASE + SACK_EVERY, BASE + 2 * SACK_EVERY]
    await _settle()
    assert [s.cumulative_tsn for s in _sacks(t)] == [BASE + n]


async def test_a_gap_is_acked_at_once_until_filled() -> None:
    t = _transport()
    await _packet(t, _data(BASE + 1))
    await _packet(t, _data(BASE + 3))  # BASE + 2 is missing: SACK now, with the gap
    (sack,) = _sacks(t)
    assert sack.cumulative_tsn == BASE + 1 and sack.gaps == [(2, 2)]
    await _packet(t, _data(BASE + 4))  # while the gap is open: every packet
    (sack,) = _sacks(t)
    assert sack.cumulative_tsn == BASE + 1 and sack.gaps == [(2, 3)]
    await _packet(t, _data(BASE + 2))  # fills it: at once too
    (sack,) = _sacks(t)
    assert sack.cumulative_tsn == BASE + 4 and sack.gaps == []
    await _settle()
    assert _sacks(t) == []  # the end-of-batch flush had nothing left


async def test_a_duplicate_is_acked_at_once() -> None:
    t = _transport()
    await _packet(t, _data(BASE + 1))
    await _packet(t, _data(BASE + 1))
    (sack,) = _sacks(t)
    assert sack.cumulative_tsn == BASE + 1 and sack.duplicates == [BASE + 1]


async def test_sack_immediately_bit_and_forward_tsn_are_acked_at_once() -> None:
    t = _transport()
    await _packet(t, _data(BASE + 1, flags=0x03 | 0x08))  # RFC 7053 I bit
    assert [s.cumulative_tsn for s in _sacks(t)] == [BASE + 1]
    fwd = ForwardTsnChunk()
    fwd.cumulative_tsn = BASE + 5
    await _packet(t, fwd)
    assert [s.cumulative_tsn for s in _sacks(t)] == [BASE + 5]


async def test_a_packet_without_data_leaves_the_pending_sack_pending() -> None:
    t = _transport()
    await _packet(t, _data(BASE + 1))
    sack = SackChunk()  # the peer's own acknowledgement, nothing new for us to ack
    sack.cumulative_tsn = t._last_sacked_tsn
    await _packet(t, sack)
    assert _sacks(t) == []
    await _settle()
    assert [s.cumulative_tsn for s in _sacks(t)] == [BASE + 1]


# ---------------------------------------------------------------- a real transfer
async def test_node_datachannel_transfer_sends_fewer_sacks(start_gateway: StartGateway,
        echo_server: tuple[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    require_peer("node", apt="nodejs")
    seen: list[Any] = []

    def record(sctp: RTCSctpTransport) -> None:
        coalesce_sacks(sctp)
        seen.append(sctp)

    monkeypatch.setattr(ugate_webrtc.session, "coalesce_sacks", record)
    gw = await start_gateway(CONFIG)
    host, port = echo_server
    url = f"http://127.0.0.1:{gw.port('main')}{PATH}"
    size = 4 << 20
    res = await node_run((HERE / "ndc_offer.cjs").read_text(), url, f"{host}:{port}",
                         env={"SIZE": str(size)}, timeout=60)
    out = json.loads(res.stdout.decode().strip().splitlines()[-1])
    assert "error" not in out, (out, res.stderr.decode()[-2000:])
    assert out["labels"][f"{host}:{port}"]["len"] == size
    (sctp,) = seen
    # 4 MiB in ~1,200-byte DATA chunks: thousands of packets, and aiortc alone would have
    # answered each with a SACK
    assert sctp.data_packets > size // 1500, sctp.data_packets
    ratio = sctp.sacks_sent / sctp.data_packets
    print(f"sacks={sctp.sacks_sent} data_packets={sctp.data_packets} ratio={ratio:.2f}")
    assert ratio < 0.6, (sctp.sacks_sent, sctp.data_packets)
