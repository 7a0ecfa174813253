"""``gateway.round_trip`` end to end: the README's example program as a subprocess, and the
API's behaviour in process (HTTP/1.1 and HTTP/2 upstreams, pool reuse, errors, policy)."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ugate_core import BytesBody, DialError, HttpRequest, StreamMeta, UgateError
from ugate_core.testing import StartGateway, free_port, metric, run

if TYPE_CHECKING:
    from conftest import Origin  # type: ignore[import-not-found]

EXAMPLE = Path(__file__).parent.parent / "examples" / "round_trip.py"


def config(origin_port: int, tail: str = "") -> str:
    return f"""
[admin]
listen = ""
[routing]
direct = false
[http]
pool_max_idle = 4
response_timeout = 1.0
[hosts."svc.test"]
endpoints = ["127.0.0.1:{origin_port}"]
[hosts."dead.test"]
endpoints = ["127.0.0.1:{free_port()}"]
{tail}
"""


async def test_example_program_runs() -> None:
    res = await run(sys.executable, str(EXAMPLE), timeout=60)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    assert res.stdout.decode().splitlines() == [
        "GET /hello -> 200 text/plain: hello from the origin (you asked /hello)",
        "POST /echo -> 200: 4000000 bytes back, sha256 ok",
        "GET nowhere.example -> DialError reason=no_route",
    ]


async def test_round_trip_h1_pool_reuse_and_headers(start_gateway: StartGateway,
                                                    origin: Origin) -> None:
    gw = await start_gateway(config(origin.port))
    for i in range(3):
        resp = await gw.round_trip(HttpRequest(
            method="GET", authority="svc.test:80", target=f"/bytes/{100_000 + i}",
            headers=[("Connection", "close"), ("X-Trace", "t1"), ("Host", "evil.test")]))
        body = await resp.read_all()
        assert resp.status == 200 and resp.header("content-length") is None  # framing: ours
        assert hashlib.sha256(body).hexdigest() == origin.sha256(100_000 + i)
        await resp.close()
    method, target, sent = origin.requests[-1]
    assert (method, target) == ("GET", "/bytes/100002")
    assert sent["host"] == "svc.test:80" and sent["x-trace"] == "t1"
    assert sent.get("connection") != "close"  # hop-by-hop fields are the gateway's
    assert origin.connections == 1  # one pooled connection for the three calls
    assert metric(gw, "ugate_http_requests_total", listener="round_trip", code="200") == 3


async def test_round_trip_streams_bodies_and_head(start_gateway: StartGateway,
                                                  origin: Origin) -> None:
    gw = await start_gateway(config(origin.port))
    data = bytes(range(256)) * 4000
    resp = await gw.round_trip(HttpRequest(method="POST", authority="svc.test:80",
                                           target="/sha256", body=BytesBody(data),
                                           length=len(data)))
    want = f"{hashlib.sha256(data).hexdigest()} {len(data)}".encode()
    assert (resp.status, await resp.read_all()) == (200, want)
    resp = await gw.round_trip(HttpRequest(method="HEAD", authority="svc.test:80",
                                           target="/bytes/5000"))
    assert resp.status == 200 and await resp.read() == b""
    # an unread body: close() drains it (bounded) so the connection can be reused
    resp = await gw.round_trip(HttpRequest(method="GET", authority="svc.test:80",
                                           target="/bytes/300000"))
    assert len(await resp.read()) > 0
    await resp.close()
    resp = await gw.round_trip(HttpRequest(method="GET", authority="svc.test:80",
                                           target="/x"))
    assert await resp.read_all() == b"hello /x\n"
    assert origin.connections == 1


async def test_round_trip_errors(start_gateway: StartGateway, origin: Origin) -> None:
    gw = await start_gateway(config(origin.port))
    with pytest.raises(DialError) as e1:
        await gw.round_trip(HttpRequest(method="GET", authority="unknown.test:80"))
    assert e1.value.reason == "no_route"
    with pytest.raises(DialError) as e2:
        await gw.round_trip(HttpRequest(method="GET", authority="dead.test:80"))
    assert e2.value.reason == "refused"
    with pytest.raises(UgateError) as e3:
        await gw.round_trip(HttpRequest(method="GET", authority="svc.test:80",
                                        target="/slow"))
    assert getattr(e3.value, "status", None) == 504 and "did not answer within 1s" in \
        str(e3.value)
    with pytest.raises(UgateError) as e4:
        await gw.round_trip(HttpRequest(method="GET", authority="svc.test:80",
                                        target="/garbage"))
    assert getattr(e4.value, "status", None) == 502
    for bad in (HttpRequest(method="GET", authority="svc.test:80", target="no-slash"),
                HttpRequest(method="GE T", authority="svc.test:80"),
                HttpRequest(method="GET", authority="svc test"),
                HttpRequest(method="GET", authority="svc.test:80",
                            headers=[("X-A", "1\r\nX-Injected: 1")])):
        with pytest.raises(UgateError) as e5:
            await gw.round_trip(bad)
        assert getattr(e5.value, "status", None) == 400, bad
    # a body longer or shorter than the length given: never sent as such (smuggling)
    n = len(origin.requests)
    for data in (b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", b"ab"):
        with pytest.raises(UgateError) as e6:
            resp = await gw.round_trip(HttpRequest(
                method="POST", authority="svc.test:80", target="/sha256",
                body=BytesBody(b"0123456789" + data), length=10 if len(data) > 2 else 20))
            await resp.read_all()
        assert getattr(e6.value, "status", None) == 400
        assert "length" in str(e6.value)
    await asyncio.sleep(0.1)
    assert all(t != "/smuggled" for _, t, _ in origin.requests[n:])
    assert metric(gw, "ugate_http_requests_total", listener="round_trip", code="502") == 3
    assert metric(gw, "ugate_http_requests_total", listener="round_trip", code="504") == 1
    assert all("X-Injected" not in str(r) for r in origin.requests)


async def test_round_trip_policy_for_a_client(start_gateway: StartGateway,
                                              origin: Origin) -> None:
    """With ``source`` set, the call is checked as if that client dialed (here: a listener
    whose allow list does not name svc.test)."""
    gw = await start_gateway(config(origin.port, """
[listeners.pub]
listen = "0.0.0.0:0"
protocols = ["http"]
allow = ["other.test"]
"""))
    src = StreamMeta(listener="pub", remote=("192.0.2.7", 1234))
    with pytest.raises(DialError) as e:
        await gw.round_trip(HttpRequest(method="GET", authority="svc.test:80", source=src))
    assert e.value.reason == "denied"
    resp = await gw.round_trip(HttpRequest(method="GET", authority="svc.test:80"))
    assert resp.status == 200


async def test_round_trip_to_an_h2_upstream(start_gateway: StartGateway,
                                            origin: Origin) -> None:
    """A destination labelled ``http = "h2"`` (here another gateway's h2c listener, which
    routes the name on to the origin) is reached over HTTP/2; calls share one connection."""
    b = await start_gateway(config(origin.port, f"""
[listeners.web]
listen = "127.0.0.1:0"
protocols = ["http"]
mode = "reverse"
[hosts."via-b.test"]
endpoints = ["127.0.0.1:{origin.port}"]
"""))
    a = await start_gateway(config(origin.port, f"""
[hosts."via-b.test"]
endpoints = ["127.0.0.1:{b.port('web')}"]
labels = {{ http = "h2" }}
"""))
    data = bytes(range(256)) * 8000
    for length in (None, len(data), None):
        resp = await a.round_trip(HttpRequest(method="POST", authority="via-b.test:80",
                                              target="/echo", body=BytesBody(data),
                                              length=length))
        assert resp.status == 200
        assert await resp.read_all() == data
    resp = await a.round_trip(HttpRequest(method="GET", authority="via-b.test:80",
                                          target="/bytes/0"))
    assert (resp.status, await resp.read_all()) == (200, b"")
    from ugate_http.h1front import state_for

    pool = state_for(a).h2pools["round_trip"]
    assert (pool.dialed, pool.reused) == (1, 3)
    assert metric(b, "ugate_http_requests_total", listener="web", code="200") == 4
    assert origin.requests[-1][2]["host"] == "via-b.test:80"
    # B gone: a clean 502-style error, then a new connection once it is back is not needed
    await b.shutdown(0.5)
    with pytest.raises(UgateError):
        resp = await a.round_trip(HttpRequest(method="GET", authority="via-b.test:80"))
        await resp.read_all()


async def test_h2_label_on_an_http11_origin(start_gateway: StartGateway, origin: Origin) -> None:
    """A destination labelled HTTP/2 that answers HTTP/1.1: a clear 502, counted."""
    gw = await start_gateway(config(origin.port, f"""
[hosts."wrong.test"]
endpoints = ["127.0.0.1:{origin.port}"]
labels = {{ http = "h2" }}
"""))
    with pytest.raises(UgateError) as e:
        await gw.round_trip(HttpRequest(method="GET", authority="wrong.test:80"))
    assert getattr(e.value, "status", None) == 502
    assert "does not speak HTTP/2" in str(e.value)
    assert metric(gw, "ugate_http_requests_total", listener="round_trip", code="502") == 1
