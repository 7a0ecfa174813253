"""The express lane (express.py) answers what the session's task would, byte for byte.

Each scenario runs on one keep-alive client connection against a listener with the lane on
and one with it off; the raw response bytes must be equal and the lane must have been taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import pytest

from ugate_core import Gateway
from ugate_core.testing import StartGateway
from ugate_http.state import state_for

if TYPE_CHECKING:
    from conftest import Origin  # type: ignore[import-not-found]


def config(origin_port: int, mode: str = "auto") -> str:
    """Two http listeners to one origin: ``on`` (the express lane) and ``off``
    (``express = false``), response_timeout 0.5 s (test_h2_express uses it too)."""
    return f"""
[admin]
listen = ""
[gateway]
handshake_timeout = 5.0
[listeners.on]
listen = "127.0.0.1:0"
protocols = ["http"]
mode = "{mode}"
response_timeout = 0.5
[listeners.off]
listen = "127.0.0.1:0"
protocols = ["http"]
mode = "{mode}"
response_timeout = 0.5
express = false
[hosts."svc.test"]
endpoints = ["127.0.0.1:{origin_port}"]
"""


async def read_response(r: asyncio.StreamReader, head_only: bool = False) -> bytes:
    """One response, raw: head, then a Content-Length or chunked body (none for HEAD)."""
    head = await r.readuntil(b"\r\n\r\n")
    if head_only or re.match(rb"HTTP/1\.1 (1\d\d|204|304)", head):
        return head
    m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    if m:
        return head + await r.readexactly(int(m.group(1)))
    if re.search(rb"(?i)\r\ntransfer-encoding: *chunked", head):
        body = b""
        while True:
            line = await r.readuntil(b"\r\n")
            n = int(line.split(b";")[0], 16)
            body += line + await r.readexactly(n + 2)
            if n == 0:
                return head + body
    return head + await r.read(-1)


async def exchange(gw: Gateway, listener: str, requests: list[tuple[bytes, bool]],
                   slow_reader: bool = False) -> list[bytes]:
    """Send each request (``(bytes, is_head)``) on one connection, in turn; the raw answers."""
    r, w = await asyncio.open_connection("127.0.0.1", gw.port(listener), limit=1 << 22)
    out: list[bytes] = []
    try:
        for raw, head_only in requests:
            w.write(raw)
            await w.drain()
            if slow_reader:
                await asyncio.sleep(0.3)  # the proxy's socket buffers fill: backpressure
            out.append(await asyncio.wait_for(read_response(r, head_only), 20))
        w.write_eof()
        out.append(await asyncio.wait_for(r.read(-1), 10))  # what follows: nothing, or EOF
    except (ConnectionError, asyncio.IncompleteReadError) as e:
        out.append(f"<{type(e).__name__}>".encode())
    finally:
        w.close()
    return out


def get(path: str, *fields: str, method: str = "GET") -> tuple[bytes, bool]:
    extra = "".join(f"{f}\r\n" for f in fields)
    return (f"{method} {path} HTTP/1.1\r\nHost: svc.test\r\n{extra}\r\n".encode(),
            method == "HEAD")


def post(path: str, body: bytes, *fields: str) -> tuple[bytes, bool]:
    extra = "".join(f"{f}\r\n" for f in fields)
    return (f"POST {path} HTTP/1.1\r\nHost: svc.test\r\n{extra}Content-Length: {len(body)}"
            "\r\n\r\n".encode() + body, False)


@contextlib.asynccontextmanager
async def head_server(answer: Callable[[bytes], bytes]) -> AsyncIterator[int]:
    """An origin on loopback that answers each request head (bodies are not read) with
    ``answer(head)`` in one write; yields its port."""
    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while head := await r.readuntil(b"\r\n\r\n"):
                w.write(answer(head))
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def both(gw: Gateway, requests: list[tuple[bytes, bool]], *,
               slow_reader: bool = False) -> list[bytes]:
    st = state_for(gw)
    before = st.expressed
    raw = (st.raw_requests, st.raw_answers)
    off = await exchange(gw, "off", requests, slow_reader)
    assert st.expressed == before, "express = false must keep every request in the task"
    assert (st.raw_requests, st.raw_answers) == raw, "express = false: no raw lane either"
    on = await exchange(gw, "on", requests, slow_reader)
    assert on == off
    assert st.expressed > before, "the express lane was not taken"
    return on


async def test_common_answers_are_the_same(start_gateway: StartGateway, origin: Origin) -> None:
    gw = await start_gateway(config(origin.port))
    st = state_for(gw)
    got = await both(gw, [
        get("/first"),  # the task: the policy check for svc.test:80 happens here
        get("/b", "X-Forwarded-For: 10.0.0.1", "Content-Length: 0"),
        get("/bytes/10", method="HEAD"),
        get("/bytes/100000?chunked"),
        get("/bytes/70000?close"),  # HTTP/1.0 close-delimited: re-chunked, not pooled
        get("http://svc.test/absolute"),
        get("/last"),
    ])
    assert got[0].endswith(b"hello /first\n") and got[1].endswith(b"hello /b\n")
    assert b"Content-Length: 10\r\n" in got[2] and got[2].endswith(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in got[3] and got[3].endswith(b"\r\n0\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in got[4]
    assert got[5].endswith(b"hello /absolute\n") and got[6].endswith(b"hello /last\n")
    assert got[7] == b""  # our EOF: the gateway closes quietly
    # the raw lane (raw.py) took the canonical requests (HEAD, ?chunked, ?close, /last) and
    # the whole Content-Length answers to GETs (/absolute, /last); the rest took the parsing
    # path, with the same bytes
    assert (st.raw_requests, st.raw_answers) == (4, 2)
    # what the origin saw of the express requests: forwarded fields as the task sends them
    fwd = [h for m, t, h in origin.requests if t == "/b"]
    assert len(fwd) == 2 and fwd[0] == fwd[1]
    assert fwd[0]["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert fwd[0]["content-length"] == "0" and "via" in fwd[0]


async def test_large_body_with_backpressure(start_gateway: StartGateway,
                                            origin: Origin) -> None:
    gw = await start_gateway(config(origin.port))
    n = 8 << 20
    got = await both(gw, [get("/one"), get(f"/bytes/{n}"), get("/after")], slow_reader=True)
    body = got[1].split(b"\r\n\r\n", 1)[1]
    assert len(body) == n and hashlib.sha256(body).hexdigest() == origin.sha256(n)
    assert got[2].endswith(b"hello /after\n")


async def test_stale_pooled_connection_is_retried(start_gateway: StartGateway,
                                                  origin: Origin) -> None:
    """/flaky: the origin drops its kept-alive connection at the second request; the
    express lane gives the request back to the task, which dials again."""
    gw = await start_gateway(config(origin.port))
    got = await both(gw, [get("/flaky"), get("/flaky"), get("/x")])
    assert [g.rsplit(b"\n", 2)[-2] for g in got[:3]] == [b"hello /flaky", b"hello /flaky",
                                                        b"hello /x"]


@pytest.mark.parametrize(("path", "status", "why"), [
    ("/slow", b"504", b"did not answer within 0.5s"),
    ("/garbage", b"502", b"malformed status line"),
])
async def test_errors_before_the_answer_go_to_the_task(
        start_gateway: StartGateway, origin: Origin, path: str, status: bytes,
        why: bytes) -> None:
    gw = await start_gateway(config(origin.port))
    got = await both(gw, [get("/one"), get(path)])
    assert got[1].startswith(b"HTTP/1.1 " + status) and why in got[1], got[1]
    assert got[2] == b""  # and the connection ends


async def test_pipelined_and_connection_close(start_gateway: StartGateway,
                                              origin: Origin) -> None:
    gw = await start_gateway(config(origin.port))
    batch = b"".join(get(f"/p{i}")[0] for i in range(5))
    got = await both(gw, [get("/one"), (batch, False)])
    assert got[1].endswith(b"hello /p0\n")  # the rest follow on the connection, in order
    assert re.findall(rb"hello /p\d", got[2]) == [b"hello /p1", b"hello /p2", b"hello /p3",
                                                  b"hello /p4"]
    got = await both(gw, [get("/one"), get("/two", "Connection: close")])
    assert b"Connection: close\r\n" in got[1] and got[1].endswith(b"hello /two\n")
    assert got[2] == b""


async def test_client_gone_mid_answer(start_gateway: StartGateway, origin: Origin) -> None:
    """A client that leaves in the middle of an express answer: the upstream connection is
    dropped (never pooled half-read) and the gateway serves the next client."""
    gw = await start_gateway(config(origin.port))
    r, w = await asyncio.open_connection("127.0.0.1", gw.port("on"))
    w.write(get("/one")[0])
    await read_response(r)
    before = state_for(gw).expressed
    w.write(get(f"/bytes/{64 << 20}")[0])
    await r.readexactly(1 << 20)
    assert state_for(gw).expressed == before + 1
    w.transport.abort()
    pool = state_for(gw).pools["on"]
    for _ in range(100):
        await asyncio.sleep(0.02)
        if origin.connections == 1 and pool.idle_count() == 0:
            break
    assert pool.idle_count() == 0
    got = await exchange(gw, "on", [get("/again")])
    assert [t for _, t, _ in origin.requests].count(f"/bytes/{64 << 20}") == 1
    assert got[0].endswith(b"hello /again\n") and origin.connections == 2


async def test_client_that_does_not_read(start_gateway: StartGateway) -> None:
    """Pipelined answers pile up for a client that reads nothing for a while: the upstream is
    paused while the client's buffers are full, but never pooled paused (the next request on
    that connection would wait for an answer it never reads), and every answer arrives once
    the client reads. The origin answers in one write, so answers arrive whole."""
    def answer(size: int) -> bytes:
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size

    small, big = answer(30000), answer(3 << 20)  # big: read in many pieces, not whole

    async with head_server(lambda h: big if h.startswith(b"GET /big ") else small) as port:
        gw = await start_gateway(config(port))
        r, w = await asyncio.open_connection("127.0.0.1", gw.port("on"), limit=1 << 22)
        w.write(get("/one")[0])
        await read_response(r)
        n = 1000  # 30 MB: more than loopback's socket buffers hold
        w.write(b"".join(get("/x")[0] for _ in range(n)) + get("/big")[0] + get("/x")[0]
                + get("/big")[0] * 3 + get("/x")[0])
        await asyncio.sleep(1.0)  # > response_timeout: a stalled exchange would 504
        pool = state_for(gw).pools["on"]
        paused = [c for lst in pool._idle.values() for c in lst if c.stream._reading_paused]
        for i in range(n + 6):
            got = await asyncio.wait_for(read_response(r), 10)
            assert got == (big if i in (n, n + 2, n + 3, n + 4) else small), (i, got[:80])
        w.close()
        assert state_for(gw).expressed >= n  # (the 1 s protocol cache may send one to the task)
        assert not paused, "a pooled upstream connection was left paused"


async def test_whole_request_bodies_go_along(start_gateway: StartGateway,
                                             origin: Origin) -> None:
    """A Content-Length body that arrives with its head (up to 64 KiB) is sent with it in
    the express lane; bigger ones stream from the task. Same bytes both ways, and the
    origin sees the same requests."""
    gw = await start_gateway(config(origin.port))
    st = state_for(gw)
    body = bytes(range(256)) * 240  # 60 KiB
    big = b"b" * (100 << 10)
    n, raw = st.expressed, st.raw_requests
    got = await both(gw, [get("/first"), post("/echo", b"hello world"), post("/sha256", body),
                          post("/sha256", big, "Content-Type: application/octet-stream"),
                          post("/echo", b"")])
    assert st.expressed - n == 3  # (/first: the task, the policy check; 100 KiB: the task)
    assert st.raw_requests - raw == 3  # the same three, as bytes (raw.py)
    assert got[1].endswith(b"\r\n\r\nhello world")
    assert got[2].endswith(f"{hashlib.sha256(body).hexdigest()} {len(body)}".encode())
    assert got[3].endswith(f"{hashlib.sha256(big).hexdigest()} {len(big)}".encode())
    assert got[4].endswith(b"Content-Length: 0\r\n\r\n")
    seen = [h for m, t, h in origin.requests if m == "POST" and t == "/echo"]
    assert len(seen) == 4 and seen[0] == seen[2] and seen[1] == seen[3]
    assert seen[0]["content-length"] == "11" and seen[1]["content-length"] == "0"


async def test_stale_connection_with_a_body_is_not_sent_again(
        start_gateway: StartGateway, origin: Origin) -> None:
    """A body goes upstream once: when the kept-alive connection turns out closed, both
    lanes answer 502 as the pool does, instead of sending the request again."""
    gw = await start_gateway(config(origin.port))
    got = await both(gw, [get("/one"), post("/flaky", b"do it once")])
    assert got[1].startswith(b"HTTP/1.1 502 ") and b"closed the connection without" in got[1]
    assert [t for _, t, _ in origin.requests].count("/flaky") == 2  # once per lane


REQUESTS = [
    get("/a"), get("/b", "X-Forwarded-For: 10.1.2.3"), get("/c", "Content-Length: 0"),
    get("/bytes/10", method="HEAD"), get("/bytes/3000"), get("/bytes/200000"),
    get("/bytes/5000?chunked"), get("/bytes/70000?chunked"), get("http://svc.test/abs"),
    get("/d", "Connection: keep-alive"), get("/e", "Accept: */*", "User-Agent: x/1"),
    (b"GET /f HTTP/1.1\nHost: svc.test\n\n", False),  # bare LF line ends
    post("/echo", b"{}"), post("/sha256", b"x" * 5000, "Content-Type: text/plain"),
]


@pytest.mark.parametrize("seed", range(6))
async def test_random_sequences_answer_alike(start_gateway: StartGateway, origin: Origin,
                                             seed: int) -> None:
    """Random runs of the common requests, sent one by one or pipelined in bursts: both
    lanes give the same bytes."""
    import random

    rng = random.Random(seed)
    gw = await start_gateway(config(origin.port))
    seq: list[tuple[bytes, bool]] = []
    for _ in range(rng.randint(4, 12)):
        burst = [rng.choice(REQUESTS) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
        if len(burst) == 1 or any(head for _, head in burst):
            seq.extend(burst)  # (a HEAD answer has no body to delimit: not pipelined here)
        else:
            seq.append((b"".join(raw for raw, _ in burst), False))
            seq.extend([(b"", False)] * (len(burst) - 1))  # read the rest, send nothing
    got = await both(gw, [get("/first"), *seq])
    assert all(g.startswith(b"HTTP/1.1 200 OK\r\n") for g in got[1:-1]), got


async def test_browser_and_nginx_heads_take_the_raw_lane(start_gateway: StartGateway) -> None:
    """What browsers and nginx send on HTTP/1.1 (``Connection: keep-alive`` on every request
    and answer) is taken by the raw lane (raw.py) and answered as the task answers it."""
    def answer(head: bytes) -> bytes:
        body = b"seen: " + head.split(b" ")[1] + b"\n"
        return (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\n"
                b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n%b" % (len(body), body))

    async with head_server(answer) as port:
        gw = await start_gateway(config(port))
        st = state_for(gw)
        browser = ("User-Agent: Mozilla/5.0", "Accept: text/html,*/*;q=0.8",
                   "Accept-Encoding: gzip, deflate", "Connection: keep-alive")
        raw = (st.raw_requests, st.raw_answers)
        got = await both(gw, [get(f"/p{i}", *browser) for i in range(5)])
        assert (st.raw_requests - raw[0], st.raw_answers - raw[1]) == (4, 4)  # (1st: the task)
        for i, g in enumerate(got[:5]):
            assert g == (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: %d\r\n\r\nseen: /p%d\n" % (len(f"seen: /p{i}\n"), i))
