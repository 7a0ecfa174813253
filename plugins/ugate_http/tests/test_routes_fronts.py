"""Other plugins' routes (routes.py) on both fronts: a test plugin registered on the gateway's
plugin manager answers, echoes bodies, refuses methods and large bodies, and takes over an
HTTP/1.1 Upgrade and an HTTP/2 extended CONNECT (RFC 8441) as an echo stream; other paths are
proxied as before, and a route needs no proxy credentials."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from ugate_core import Gateway, GatewayAPI, Stream, hookimpl, loads
from ugate_core.certs import anchor_pem
from ugate_core.testing import metric, require_peer, run
from ugate_http.routes import Exchange, HttpRoute
from ugate_http.state import state_for

if TYPE_CHECKING:
    from conftest import Origin  # type: ignore[import-not-found]

LIMIT = 1000


async def hello(ex: Exchange) -> None:
    await ex.respond(200, [("content-type", "text/plain"), ("x-route", "hello")],
                     f"hello {ex.http_version} {ex.method} {ex.path} "
                     f"host={ex.header('host')}\n".encode())


async def echo_body(ex: Exchange) -> None:
    body = await ex.body(LIMIT)
    await ex.respond(200, [("content-type", "application/octet-stream")], body)


async def echo_stream(ex: Exchange) -> None:
    st = await ex.accept([("x-accepted", ex.protocol or "-")])
    await echo(st)


async def echo(st: Stream) -> None:
    while data := await st.read(65536):
        st.write(data)
        await st.drain()
    st.write_eof()


async def unanswered(ex: Exchange) -> None:
    return None


async def raises(ex: Exchange) -> None:
    raise RuntimeError("handler bug")


class RoutesPlugin:
    def __init__(self) -> None:
        #: where /t/relay relays an accepted stream to (an echo server the test starts)
        self.echo_address = ""

    @hookimpl
    def ugate_http_routes(self, gateway: GatewayAPI) -> list[HttpRoute]:
        async def relay(ex: Exchange) -> None:
            up = await gateway.dial(self.echo_address, source=ex.meta)
            await gateway.relay(await ex.accept(), up)

        return [
            HttpRoute("/t/relay", relay, protocols=frozenset({"x-test"})),
            HttpRoute("/t/hello", hello, methods=frozenset({"GET", "HEAD"})),
            HttpRoute("/t/echo", echo_body, methods=frozenset({"POST"})),
            HttpRoute("/t/up", echo_stream, protocols=frozenset({"x-test"})),
            HttpRoute("/t/none", unanswered),
            HttpRoute("/t/raise", raises),
        ]


def config(origin_port: int) -> str:
    return f"""
[admin]
listen = ""
[gateway]
handshake_timeout = 5.0
[listeners.web]
listen = "127.0.0.1:0"
protocols = ["http"]
mode = "reverse"
[listeners.shared]
listen = "127.0.0.1:0"
protocols = ["*"]
mode = "auto"
[listeners.short]
listen = "127.0.0.1:0"
protocols = ["http"]
mode = "reverse"
keepalive_timeout = 0.3
[listeners.auth]
listen = "127.0.0.1:0"
protocols = ["http"]
mode = "auto"
users = {{ alice = "s3cret" }}
[hosts."svc.test"]
endpoints = ["127.0.0.1:{origin_port}"]
"""


async def _echo_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while data := await r.read(65536):
        w.write(data)
        await w.drain()
    w.close()


@pytest.fixture
async def gateway(tmp_path: Path, origin: Origin) -> AsyncIterator[Gateway]:
    echo = await asyncio.start_server(_echo_conn, "127.0.0.1", 0)
    plugin = RoutesPlugin()
    plugin.echo_address = f"127.0.0.1:{echo.sockets[0].getsockname()[1]}"
    gw = Gateway(loads(config(origin.port), "<routes test>"), state_dir=tmp_path / "state")
    gw.pm.register(plugin, name="routes-test")
    await gw.start()
    try:
        yield gw
    finally:
        await gw.shutdown(0.5)
        echo.close()


async def curl(*args: str, timeout: float = 30) -> tuple[str, int, bytes]:
    """curl; returns (http_version, status, body)."""
    res = await run(require_peer("curl"), "-sS", "--noproxy", "*", "--max-time", str(timeout),
                    "-w", "\n%{http_version} %{http_code}", *args, timeout=timeout + 10)
    assert res.returncode == 0, f"curl {args}: exit {res.returncode}: {res.stderr[-500:]!r}"
    body, _, tail = res.stdout.rpartition(b"\n")
    version, code = tail.decode().split()
    return version, int(code), body


H1 = "--http1.1"
H2C = "--http2-prior-knowledge"


@pytest.mark.parametrize("mode", [H1, H2C])
async def test_route_answers_instead_of_the_proxy(gateway: Gateway, origin: Origin,
                                                  mode: str) -> None:
    port = gateway.port("web")
    version = "1.1" if mode == H1 else "2"
    got = await curl(mode, "-H", "Host: svc.test", f"http://127.0.0.1:{port}/t/hello?x=1")
    assert got == (version, 200, f"hello {version} GET /t/hello?x=1 host=svc.test\n".encode())
    # a path below the prefix is the route's too; one beside it is proxied as before
    got = await curl(mode, "-H", "Host: svc.test", f"http://127.0.0.1:{port}/t/hello/more")
    assert got == (version, 200, f"hello {version} GET /t/hello/more host=svc.test\n".encode())
    got = await curl(mode, "-H", "Host: svc.test", f"http://127.0.0.1:{port}/t/hellox")
    assert got == (version, 200, b"hello /t/hellox\n")
    assert [r[1] for r in origin.requests] == ["/t/hellox"]
    assert metric(gateway, "ugate_http_requests_total", listener="web", code="200") == 3


async def test_route_over_https_h2_through_the_tls_front(gateway: Gateway,
                                                         tmp_path: Path) -> None:
    name = gateway.identity.fqdns[0]
    port = gateway.port("shared")
    anchor = tmp_path / "anchor.pem"
    anchor.write_bytes(anchor_pem())
    got = await curl("--http2", "--resolve", f"{name}:{port}:127.0.0.1", "--cacert",
                     str(anchor), f"https://{name}:{port}/t/hello")
    assert got == ("2", 200, f"hello 2 GET /t/hello host={name}:{port}\n".encode())


@pytest.mark.parametrize("mode", [H1, H2C])
async def test_post_body_echo_405_and_413(gateway: Gateway, mode: str, tmp_path: Path
                                          ) -> None:
    port = gateway.port("web")
    version = "1.1" if mode == H1 else "2"
    url = f"http://127.0.0.1:{port}/t/echo"
    body = bytes(range(256)) * 3
    (tmp_path / "body").write_bytes(body)
    assert await curl(mode, "--data-binary", f"@{tmp_path / 'body'}", url) == \
        (version, 200, body)
    # chunked over HTTP/1.1 (no length known up front)
    assert await curl(mode, "-H", "Transfer-Encoding: chunked", "--data-binary",
                      f"@{tmp_path / 'body'}", url) == (version, 200, body)
    got = await curl(mode, "-X", "PUT", "-D", "-", "-o", "/dev/null", url)
    assert got[:2] == (version, 405)
    assert b"\r\nallow: POST\r\n" in got[2]
    (tmp_path / "big").write_bytes(b"x" * (LIMIT + 1))
    got = await curl(mode, "--data-binary", f"@{tmp_path / 'big'}", url)
    assert got == (version, 413, f"/t/echo: request body over {LIMIT} bytes\n".encode())
    assert metric(gateway, "ugate_http_requests_total", listener="web", code="405") == 1
    assert metric(gateway, "ugate_http_requests_total", listener="web", code="413") == 1


@pytest.mark.parametrize("mode", [H1, H2C])
async def test_handler_without_answer_or_raising_gets_500(gateway: Gateway, mode: str
                                                          ) -> None:
    port = gateway.port("web")
    version = "1.1" if mode == H1 else "2"
    assert await curl(mode, f"http://127.0.0.1:{port}/t/none") == \
        (version, 500, b"/t/none: the handler gave no answer\n")
    assert await curl(mode, f"http://127.0.0.1:{port}/t/raise") == \
        (version, 500, b"/t/raise: the handler failed\n")
    assert metric(gateway, "ugate_http_requests_total", listener="web", code="500") == 2


async def test_keep_alive_and_the_express_lanes(gateway: Gateway, origin: Origin) -> None:
    """Routes answer on a kept-alive connection whose express and raw lanes are warm (they
    must not send a route's request upstream), and proxying goes on after them."""
    r, w = await asyncio.open_connection("127.0.0.1", gateway.port("web"))

    async def proxied(path: bytes) -> None:
        w.write(b"GET %b HTTP/1.1\r\nHost: svc.test\r\n\r\n" % path)
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert await r.readexactly(len(path) + 7) == b"hello %b\n" % path

    await proxied(b"/x")
    await proxied(b"/y")  # the pool and the upstream's HTTP version are known now
    hello = b"hello 1.1 GET /t/hello host=svc.test\n"
    cases = [
        (b"GET /t/hello HTTP/1.1\r\nHost: svc.test\r\n\r\n",
         b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-route: hello\r\n"
         b"content-length: %d\r\n\r\n%b" % (len(hello), hello)),
        (b"POST /t/echo HTTP/1.1\r\nHost: svc.test\r\nContent-Length: 3\r\n\r\nabc",
         b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
         b"content-length: 3\r\n\r\nabc"),
    ]
    for request, answer in cases:
        w.write(request)
        assert await asyncio.wait_for(r.readexactly(len(answer)), 5) == answer
    # pipelined: a route between two proxied requests
    w.write(cases[1][0] + b"GET /z HTTP/1.1\r\nHost: svc.test\r\n\r\n" + cases[0][0])
    assert await asyncio.wait_for(r.readexactly(len(cases[1][1])), 5) == cases[1][1]
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert await r.readexactly(9) == b"hello /z\n"
    assert await asyncio.wait_for(r.readexactly(len(cases[0][1])), 5) == cases[0][1]
    await proxied(b"/w")
    assert [t for _, t, _ in origin.requests] == ["/x", "/y", "/z", "/w"]
    st = state_for(gateway)
    assert st.raw_requests + st.expressed >= 2  # the lanes did carry the proxied ones
    w.close()


@pytest.mark.parametrize("path", [b"/t/up", b"/t/relay"])
async def test_h1_upgrade_becomes_an_echo_stream(gateway: Gateway, path: bytes) -> None:
    """The handler echoes itself (/t/up), or relays to an echo server (/t/relay)."""
    r, w = await asyncio.open_connection("127.0.0.1", gateway.port("web"))
    # the first stream bytes come in the same write as the head: they must come first
    w.write(b"GET %b HTTP/1.1\r\nHost: svc.test\r\nConnection: Upgrade\r\n"
            b"Upgrade: X-Test\r\n\r\nearly-bytes|" % path)
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    assert head == (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                    b"Upgrade: x-test\r\n" + (b"x-accepted: x-test\r\n" if path == b"/t/up"
                                                else b"") + b"\r\n")
    assert await asyncio.wait_for(r.readexactly(12), 5) == b"early-bytes|"
    payload = bytes(range(256)) * 512
    w.write(payload)
    assert await asyncio.wait_for(r.readexactly(len(payload)), 10) == payload
    w.write_eof()
    assert await asyncio.wait_for(r.read(), 5) == b""
    w.close()
    assert metric(gateway, "ugate_http_requests_total", listener="web", code="101") == 1


async def test_h1_upgrade_refused_without_the_protocol(gateway: Gateway) -> None:
    port = gateway.port("web")
    got = await curl(H1, "-H", "Connection: Upgrade", "-H", "Upgrade: other",
                     f"http://127.0.0.1:{port}/t/up")
    assert got == ("1.1", 400, b"/t/up: not an upgrade to x-test\n")


async def _h2_client(port: int) -> tuple[h2.connection.H2Connection, asyncio.StreamReader,
                                         asyncio.StreamWriter, dict[int, int]]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    w.write(conn.data_to_send())
    settings: dict[int, int] = {}
    while not settings:
        data = await asyncio.wait_for(r.read(65536), 5)
        assert data, "server closed before its SETTINGS"
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                settings = {int(k): v.new_value for k, v in ev.changed_settings.items()}
        w.write(conn.data_to_send())
    return conn, r, w, settings


async def _h2_events(conn: h2.connection.H2Connection, r: asyncio.StreamReader,
                     w: asyncio.StreamWriter, until: Callable[[Any], bool]) -> list[Any]:
    got: list[Any] = []
    while True:
        data = await asyncio.wait_for(r.read(65536), 5)
        assert data, f"connection closed; events so far {got}"
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.DataReceived):
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            got.append(ev)
        w.write(conn.data_to_send())
        if any(until(ev) for ev in got):
            return got


@pytest.mark.parametrize("path", ["/t/up", "/t/relay"])
async def test_h2_extended_connect_becomes_an_echo_stream(gateway: Gateway, path: str) -> None:
    """The handler echoes itself (/t/up: pull mode), or relays to an echo server (/t/relay:
    the relay takes the stream in push mode)."""
    conn, r, w, settings = await _h2_client(gateway.port("web"))
    assert settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1
    conn.send_headers(1, [(":method", "CONNECT"), (":protocol", "x-test"),
                          (":scheme", "http"), (":path", path),
                          (":authority", "svc.test")])
    w.write(conn.data_to_send())
    evs = await _h2_events(conn, r, w, lambda e: isinstance(e, h2.events.ResponseReceived))
    resp = next(e for e in evs if isinstance(e, h2.events.ResponseReceived))
    assert resp.headers == [(b":status", b"200")] + (
        [(b"x-accepted", b"x-test")] if path == "/t/up" else [])
    payload = bytes(range(256)) * 4096  # beyond the default 64 KiB windows: flow control
    conn.send_data(1, payload[:16000])
    w.write(conn.data_to_send())
    echoed = b""
    sent = 16000
    while len(echoed) < len(payload):
        evs = await _h2_events(conn, r, w, lambda e: isinstance(e, h2.events.DataReceived))
        echoed += b"".join(e.data for e in evs if isinstance(e, h2.events.DataReceived))
        while sent < len(payload) and conn.local_flow_control_window(1) > 0:
            n = min(conn.local_flow_control_window(1), conn.max_outbound_frame_size,
                    len(payload) - sent)
            conn.send_data(1, payload[sent:sent + n])
            sent += n
        w.write(conn.data_to_send())
    assert echoed == payload
    conn.end_stream(1)
    w.write(conn.data_to_send())
    evs = await _h2_events(conn, r, w, lambda e: isinstance(e, h2.events.StreamEnded))
    assert not any(isinstance(e, h2.events.StreamReset) for e in evs)
    # the connection goes on: a plain request on the next stream
    conn.send_headers(3, [(":method", "GET"), (":scheme", "http"), (":path", "/t/hello"),
                          (":authority", "svc.test")], end_stream=True)
    w.write(conn.data_to_send())
    evs = await _h2_events(conn, r, w, lambda e: isinstance(e, h2.events.StreamEnded)
                           and e.stream_id == 3)
    body = b"".join(e.data for e in evs if isinstance(e, h2.events.DataReceived))
    assert body == b"hello 2 GET /t/hello host=svc.test\n"
    w.close()


async def test_h2_connection_idles_out_after_a_tunnel_ended(gateway: Gateway) -> None:
    """A tunnel that ended both ways is forgotten by its connection, which then closes
    when idle (GOAWAY after keepalive_timeout) as after any other stream."""
    conn, r, w, _ = await _h2_client(gateway.port("short"))
    conn.send_headers(1, [(":method", "CONNECT"), (":protocol", "x-test"),
                          (":scheme", "http"), (":path", "/t/up"),
                          (":authority", "svc.test")])
    conn.send_data(1, b"ping", end_stream=True)
    w.write(conn.data_to_send())
    evs = await _h2_events(conn, r, w, lambda e: isinstance(e, h2.events.StreamEnded))
    assert b"".join(e.data for e in evs if isinstance(e, h2.events.DataReceived)) == b"ping"
    evs = await _h2_events(conn, r, w, lambda e: isinstance(e, h2.events.ConnectionTerminated))
    end = next(e for e in evs if isinstance(e, h2.events.ConnectionTerminated))
    assert end.error_code == 0 and end.last_stream_id == 1
    w.close()


async def test_h2_extended_connect_for_another_protocol_is_refused(gateway: Gateway) -> None:
    conn, r, w, _ = await _h2_client(gateway.port("web"))
    conn.send_headers(1, [(":method", "CONNECT"), (":protocol", "websocket"),
                          (":scheme", "http"), (":path", "/t/up"),
                          (":authority", "svc.test")], end_stream=True)
    w.write(conn.data_to_send())
    evs = await _h2_events(conn, r, w, lambda e: isinstance(e, h2.events.StreamEnded))
    resp = next(e for e in evs if isinstance(e, h2.events.ResponseReceived))
    assert resp.headers[0] == (b":status", b"400")
    body = b"".join(e.data for e in evs if isinstance(e, h2.events.DataReceived))
    assert body == b"/t/up: extended CONNECT for protocol 'websocket', which this path " \
        b"does not accept\n"
    w.close()


async def test_route_needs_no_proxy_credentials(gateway: Gateway, origin: Origin) -> None:
    port = gateway.port("auth")
    got = await curl(H1, "-H", "Host: svc.test", f"http://127.0.0.1:{port}/t/hello")
    assert got == ("1.1", 200, b"hello 1.1 GET /t/hello host=svc.test\n")
    # proxied paths still need them
    got = await curl(H1, "-H", "Host: svc.test", f"http://127.0.0.1:{port}/other")
    assert got[1] == 401
    got = await curl(H1, "-u", "alice:s3cret", "-H", "Host: svc.test",
                     f"http://127.0.0.1:{port}/other")
    assert got == ("1.1", 200, b"hello /other\n")

