"""The HTTP/2 front's express lane (h2express.py) answers what a stream's task would.

Each scenario runs its requests one after the other on one HTTP/2 connection (the ``h2``
library as the client: an implementation not ours) against a listener with the lane on and
one with it off; what the client sees of each stream (head, 1xx, body, trailers, reset) must
be the same, and the lane must have been taken.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    DataReceived,
    InformationalResponseReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from h2.settings import SettingCodes

from ugate_core import Gateway
from ugate_core.testing import StartGateway
from ugate_http.state import state_for

from .test_express import config as lanes_config

if TYPE_CHECKING:
    from conftest import Origin  # type: ignore[import-not-found]


def config(origin_port: int) -> str:
    return lanes_config(origin_port, "reverse")


@dataclass
class Answer:
    """What the client saw of one stream."""

    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    interim: list[list[tuple[bytes, bytes]]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    reset: int | None = None

    @property
    def status(self) -> bytes:
        return dict(self.headers).get(b":status", b"")


class Client:
    """An HTTP/2 client on one connection; requests go one after the other."""

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, window: int) -> None:
        self.r, self.w = r, w
        self.c = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.c.initiate_connection()
        self.c.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: window})
        w.write(self.c.data_to_send())

    async def request(self, path: str, *extra: tuple[str, str], method: str = "GET",
                      cut_after: int = 0) -> Answer:
        """``cut_after``: reset the stream once that many body bytes arrived."""
        c = self.c
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, [(":method", method), (":scheme", "http"),
                             (":authority", "svc.test"), (":path", path), *extra],
                       end_stream=True)
        self.w.write(c.data_to_send())
        ans = Answer()
        done = False
        while not done:
            data = await asyncio.wait_for(self.r.read(1 << 16), 20)
            if not data:
                raise ConnectionError("the gateway closed the connection")
            for ev in c.receive_data(data):
                if getattr(ev, "stream_id", None) != sid:
                    continue
                if isinstance(ev, ResponseReceived):
                    ans.headers = list(ev.headers)
                elif isinstance(ev, InformationalResponseReceived):
                    ans.interim.append(list(ev.headers))
                elif isinstance(ev, DataReceived):
                    ans.body += ev.data
                    c.acknowledge_received_data(ev.flow_controlled_length, sid)
                    if cut_after and len(ans.body) >= cut_after and not done:
                        c.reset_stream(sid)
                        done = True
                elif isinstance(ev, TrailersReceived):
                    ans.trailers = list(ev.headers)
                elif isinstance(ev, StreamReset):
                    ans.reset = ev.error_code
                    done = True
                elif isinstance(ev, StreamEnded):
                    done = True
            self.w.write(c.data_to_send())
        return ans


@dataclass
class Req:
    path: str
    extra: tuple[tuple[str, str], ...] = ()
    method: str = "GET"


async def exchange(gw: Gateway, listener: str, requests: list[Req], window: int = 65535
                   ) -> list[Answer]:
    r, w = await asyncio.open_connection("127.0.0.1", gw.port(listener))
    try:
        client = Client(r, w, window)
        return [await client.request(q.path, *q.extra, method=q.method) for q in requests]
    finally:
        w.close()


async def both(gw: Gateway, requests: list[Req], window: int = 65535, *,
               expressed: int | range) -> list[Answer]:
    """The answers (the same on both listeners); ``expressed`` streams took the lane."""
    st = state_for(gw)
    before = st.expressed
    raw = st.raw_answers
    off = await exchange(gw, "off", requests, window)
    assert st.expressed == before, "express = false must keep every stream in a task"
    assert st.raw_answers == raw, "express = false: no raw lane either"
    on = await exchange(gw, "on", requests, window)
    assert on == off
    n = st.expressed - before
    assert n in expressed if isinstance(expressed, range) else n == expressed
    return on


async def test_common_answers_are_the_same(start_gateway: StartGateway, origin: Origin) -> None:
    gw = await start_gateway(config(origin.port))
    raw = state_for(gw).raw_answers
    got = await both(gw, [
        Req("/first"),  # a task: the policy check for svc.test:80 happens here
        Req("/b", (("x-forwarded-for", "10.0.0.1"), ("content-length", "0"))),
        Req("/bytes/10", method="HEAD"),
        Req("/bytes/100000?chunked"),
        Req("/bytes/70000?close"),  # close-delimited upstream: not pooled
        Req("/bye"),  # answered, then the upstream closes: not pooled either
        Req("/last"),
    ], expressed=4)  # /b to ?close; /bye and /last find no idle connection: tasks dial
    assert [a.status for a in got] == [b"200"] * 7
    assert got[0].body == b"hello /first\n" and got[1].body == b"hello /b\n"
    assert (b"content-length", b"10") in got[2].headers and got[2].body == b""
    assert len(got[3].body) == 100000 and len(got[4].body) == 70000
    assert got[5].body == b"bye\n" and got[6].body == b"hello /last\n"
    assert state_for(gw).raw_answers == raw + 1  # /b's whole answer went as bytes (raw.py)
    fwd = [h for m, t, h in origin.requests if t == "/b"]
    assert len(fwd) == 2 and fwd[0] == fwd[1]  # forwarded fields as the task sends them
    assert fwd[0]["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert fwd[0]["content-length"] == "0" and fwd[0]["via"].startswith("2 ugate-")


async def test_large_body_within_small_windows(start_gateway: StartGateway,
                                               origin: Origin) -> None:
    """A 16 KiB stream window: the answer waits for WINDOW_UPDATEs, the upstream connection
    is paused meanwhile, and every byte arrives."""
    gw = await start_gateway(config(origin.port))
    n = 8 << 20
    got = await both(gw, [Req("/one"), Req(f"/bytes/{n}"), Req(f"/bytes/{n}?chunked"),
                          Req("/after")], window=16384, expressed=range(1, 4))
    # (a request more than a second after the last answer from the address asks discovery
    # again, in a task: how many took the lane depends on the machine's speed)
    for a in got[1:3]:
        assert len(a.body) == n and hashlib.sha256(a.body).hexdigest() == origin.sha256(n)
    assert got[3].body == b"hello /after\n"


async def test_stale_pooled_connection_is_retried(start_gateway: StartGateway,
                                                  origin: Origin) -> None:
    """/flaky: the origin drops a kept-alive connection at its second request; the lane
    gives the stream to a task, which dials again."""
    gw = await start_gateway(config(origin.port))
    got = await both(gw, [Req("/flaky"), Req("/flaky"), Req("/x")], expressed=2)
    assert [a.body for a in got] == [b"hello /flaky\n", b"hello /flaky\n", b"hello /x\n"]


@pytest.mark.parametrize(("path", "status", "why"), [
    ("/slow", b"504", b"did not answer within 0.5s"),
    ("/garbage", b"502", b"malformed status line"),
])
async def test_errors_before_the_answer_go_to_a_task(
        start_gateway: StartGateway, origin: Origin, path: str, status: bytes,
        why: bytes) -> None:
    gw = await start_gateway(config(origin.port))
    got = await both(gw, [Req("/one"), Req(path), Req("/two")], expressed=1)
    assert got[1].status == status and why in got[1].body, got[1]
    assert got[2].body == b"hello /two\n"  # the connection goes on


async def test_client_reset_mid_answer(start_gateway: StartGateway, origin: Origin) -> None:
    """A stream the client resets in the middle of an express answer: the upstream
    connection is dropped (never pooled half-read); the connection serves the next one."""
    gw = await start_gateway(config(origin.port))
    st = state_for(gw)
    r, w = await asyncio.open_connection("127.0.0.1", gw.port("on"))
    try:
        client = Client(r, w, 65535)
        assert (await client.request("/one")).body == b"hello /one\n"
        before = st.expressed
        big = f"/bytes/{64 << 20}"
        got = await client.request(big, cut_after=1 << 20)
        assert got.reset is None and st.expressed == before + 1
        pool = st.pools["on"]
        for _ in range(100):
            await asyncio.sleep(0.02)
            if origin.connections == 1 and pool.idle_count() == 0:
                break
        assert pool.idle_count() == 0
        again = await client.request("/again")
        assert again.body == b"hello /again\n"
        assert [t for _, t, _ in origin.requests].count(big) == 1
    finally:
        w.close()


# ------------------------------------------------------------------------------ 1xx, trailers
async def _odd_origin(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """/early: 103 then 200; /trailers: chunked with a trailer; /switch: an unasked 101;
    anything else: 200 "ok"."""
    try:
        while head := await r.readuntil(b"\r\n\r\n"):
            path = head.split(b" ")[1]
            if path == b"/early":
                w.write(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
                await w.drain()
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
            elif path == b"/trailers":
                w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n"
                        b"\r\n5\r\nabcde\r\n0\r\nx-sum: 42\r\n\r\n")
            elif path == b"/switch":
                w.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n"
                        b"Connection: upgrade\r\n\r\n")
                await w.drain()
                return
            else:
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await w.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        w.close()


@pytest.fixture
async def odd_origin() -> AsyncIterator[int]:
    server = await asyncio.start_server(_odd_origin, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def test_interim_trailers_and_unasked_switch(start_gateway: StartGateway,
                                                   odd_origin: int) -> None:
    gw = await start_gateway(config(odd_origin))
    got = await both(gw, [Req("/one"), Req("/early"), Req("/trailers"), Req("/switch"),
                          Req("/one")], expressed=3)
    assert got[1].interim == [[(b":status", b"103"), (b"link", b"</s.css>; rel=preload")]]
    assert got[1].body == b"early"
    assert got[2].body == b"abcde" and got[2].trailers == [(b"x-sum", b"42")]
    assert got[3].status == b"502" and b"switch protocols unasked" in got[3].body
    assert got[4].body == b"ok"
