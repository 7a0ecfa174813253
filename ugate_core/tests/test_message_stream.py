"""MessageStream: writes become bounded messages, an empty message is FIN, a close before FIN
is a reset, oversized messages are refused; through relay() a stalled consumer bounds the
gateway's memory."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ugate_core import MessageStream, TcpStream, relay, stream_pair
from ugate_core.message_stream import (
    HIGH_WATER,
    MemoryMessageTransport,
    message_stream_pair,
)


async def read_all(s: MessageStream | TcpStream, timeout: float = 5) -> bytes:
    out = bytearray()
    async with asyncio.timeout(timeout):
        while data := await s.read():
            out += data
    return bytes(out)


def transport(s: MessageStream) -> MemoryMessageTransport:
    assert isinstance(s.transport, MemoryMessageTransport)
    return s.transport


# ------------------------------------------------------------------ message mapping


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=12), st.integers(1, 64))
def test_writes_become_bounded_messages_then_one_fin(writes: list[bytes], limit: int) -> None:
    async def run() -> None:
        a, b = message_stream_pair(max_message=limit)
        for w in writes:
            a.write(w)
        a.write_eof()
        a.write(b"after eof: dropped")
        assert await read_all(b) == b"".join(writes)
        sent = transport(a).sent
        assert sent[-1] == b"" and b"" not in sent[:-1]  # one FIN, last
        assert all(0 < len(m) <= limit for m in sent[:-1])
        assert not b.is_lost and b.at_eof  # half-closed: b may still send
        b.write(b"back")
        b.write_eof()
        assert await read_all(a) == b"back"
        await asyncio.wait_for(a.wait_closed(), 5)  # FIN both ways: closed like TCP
        await asyncio.wait_for(b.wait_closed(), 5)

    asyncio.run(run())


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=32), max_size=10), st.booleans())
def test_received_messages_read_in_order_and_fin_ordering(messages: list[bytes],
                                                          extra: bool) -> None:
    async def run() -> None:
        a, b = message_stream_pair(max_message=32)
        ta = transport(a)
        for m in messages:
            ta.send(m)  # raw messages, however the peer chose to cut them
        ta.send(b"")
        if extra:
            ta.send(b"x")  # after FIN: a protocol error, but what came before is kept
        assert await read_all(b) == b"".join(messages)
        await asyncio.sleep(0)
        if extra:
            assert b.error is not None and b.error.reason == "message_after_fin"
            assert transport(b).close_error is not None
        else:
            assert b.error is None and not b.is_lost

    asyncio.run(run())


async def test_oversized_message_is_a_protocol_error_that_resets_the_peer() -> None:
    a, b = message_stream_pair(max_message=16)
    transport(a).send(b"x" * 17)
    assert await read_all(b) == b""
    assert b.error is not None and b.error.reason == "message_too_large"
    assert "message of 17 bytes over the limit of 16" in str(b.error)
    await asyncio.wait_for(a.wait_closed(), 5)
    with pytest.raises(ConnectionResetError, match="over the limit"):
        await a.drain()  # the peer learns it was cut short, and why


async def test_close_before_fin_is_a_reset_not_an_end() -> None:
    a, b = message_stream_pair()
    c, d = stream_pair()
    task = asyncio.create_task(relay(b, c))
    a.write(b"partial")
    assert await d.readexactly(7) == b"partial"
    a.reset()  # the browser tab went away
    st_ = await asyncio.wait_for(task, 5)
    assert st_.end == "reset"


async def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="low_water"):
        MessageStream(MemoryMessageTransport(), low_water=10, high_water=5)


# ------------------------------------------------------------------ through relay()


async def tcp_pair() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, TcpStream]:
    """A TCP client, and the gateway's accepted TcpStream for it."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[TcpStream] = loop.create_future()

    def factory() -> TcpStream:
        s = TcpStream()
        accepted.set_result(s)
        return s

    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    r, w = await asyncio.open_connection("127.0.0.1", port)
    s = await asyncio.wait_for(accepted, 5)
    server.close()
    return r, w, s


async def test_relay_with_a_tcp_echo(echo_server: tuple[str, int]) -> None:
    loop = asyncio.get_running_loop()
    _t, up = await loop.create_connection(TcpStream, *echo_server)
    browser, gw_side = message_stream_pair(max_message=1000)
    task = asyncio.create_task(relay(gw_side, up))
    data = bytes(range(256)) * 400  # 102400 bytes: many messages each way
    browser.write(data)
    browser.write_eof()
    assert await read_all(browser) == data
    st_ = await asyncio.wait_for(task, 5)
    assert (st_.end, st_.up, st_.down) == ("done", len(data), len(data))
    assert max(len(m) for m in transport(gw_side).sent) <= 1000


#: what the gateway may hold for a stalled consumer: high water plus one source chunk
#: (asyncio's TCP transport reads at most 256 KiB at a time)
BOUND = HIGH_WATER + 256 * 1024


async def test_stalled_consumer_bounds_the_gateways_buffer() -> None:
    r, w, tcp = await tcp_pair()
    browser, gw_side = message_stream_pair()
    transport(browser).pause_reading()  # a browser tab that stopped reading
    task = asyncio.create_task(relay(tcp, gw_side))
    total = 16 * 1024 * 1024
    chunk = bytes(range(256)) * 256

    async def client() -> None:
        for _ in range(total // len(chunk)):
            w.write(chunk)
            await w.drain()
        w.write_eof()

    sender = asyncio.create_task(client())
    await asyncio.sleep(0.5)  # the sender runs into the backpressure and stays there
    assert not sender.done(), "16 MiB went nowhere: nothing held the sender back"
    held = transport(gw_side).buffered_amount
    assert transport(gw_side).max_buffered <= BOUND, transport(gw_side).max_buffered
    assert gw_side.write_paused and tcp.buffered() == 0
    print(f"stalled consumer: gateway holds {held} bytes (bound {BOUND}); max "
          f"{transport(gw_side).max_buffered}")

    transport(browser).resume_reading()
    got = await read_all(browser, timeout=30)
    assert len(got) == total and got == chunk * (total // len(chunk))
    assert transport(gw_side).max_buffered <= BOUND
    await sender
    browser.write_eof()
    assert await asyncio.wait_for(r.read(), 5) == b""
    st_ = await asyncio.wait_for(task, 5)
    assert (st_.end, st_.up) == ("done", total)
    w.close()
