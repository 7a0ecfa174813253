"""A stream cut short reaches the client as a reset, never as a clean end (issue #16, 2):
an upstream that sends 64 KiB and then resets (SO_LINGER 0) makes the client see ECONNRESET
(SOCKS5 and HTTP CONNECT on the shared port) or RST_STREAM (hbonec CONNECT); a normal
close is still a clean FIN after a half-close, both ways."""

from __future__ import annotations

import asyncio

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, ResponseReceived, StreamEnded, StreamReset

from ugate_core.testing import RESET_BYTES, StartGateway, metric, pattern, read_to_end

CONFIG = """
[admin]
listen = ""
[listeners.shared]
listen = "127.0.0.1:0"
protocols = ["*"]
[hosts."cut.test"]
endpoints = ["127.0.0.1:{cut}"]
[hosts."echo.test"]
endpoints = ["127.0.0.1:{echo}"]
"""


async def socks5(port: int, host: str, dport: int
                 ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"\x05\x01\x00")
    assert await r.readexactly(2) == b"\x05\x00"
    w.write(b"\x05\x01\x00\x03" + bytes([len(host)]) + host.encode() + dport.to_bytes(2, "big"))
    reply = await r.readexactly(4)
    assert reply[1] == 0, reply
    await r.readexactly({1: 6, 4: 18}[reply[3]])
    return r, w


async def http_connect(port: int, host: str, dport: int
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"CONNECT {host}:{dport} HTTP/1.1\r\nHost: {host}:{dport}\r\n\r\n".encode())
    head = await r.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return r, w


OPENERS = {"socks5": socks5, "http": http_connect}


async def test_upstream_reset_reaches_tcp_clients_as_reset(
        start_gateway: StartGateway, reset_server: tuple[str, int],
        echo_server: tuple[str, int]) -> None:
    gw = await start_gateway(CONFIG.format(cut=reset_server[1], echo=echo_server[1]))
    port = gw.port("shared")
    for name, opener in OPENERS.items():
        r, w = await opener(port, "cut.test", reset_server[1])
        got, end = await read_to_end(r)
        w.close()
        assert end == "reset", f"{name}: the client saw a clean end after {len(got)} bytes"
        assert got == pattern(RESET_BYTES)[:len(got)], name
        # a normal end is still a clean FIN, after the client's half-close
        r, w = await opener(port, "echo.test", echo_server[1])
        w.write(b"hello " + name.encode())
        w.write_eof()
        got, end = await read_to_end(r)
        w.close()
        assert (got, end) == (b"hello " + name.encode(), "eof"), name
    for _ in range(100):
        if metric(gw, "ugate_streams_total", listener="shared", end="reset") >= 2:
            break
        await asyncio.sleep(0.02)
    assert metric(gw, "ugate_streams_total", listener="shared", end="reset") == 2
    assert metric(gw, "ugate_streams_total", listener="shared", end="done") == 2


async def h2c_connect(port: int, authority: str, send: bytes = b""
                      ) -> tuple[bytes, str]:
    """One hbonec CONNECT: send ``send`` then END_STREAM (if any); read to the end:
    (bytes, ``"end"`` for END_STREAM or ``"reset"`` for RST_STREAM)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    c = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    c.initiate_connection()
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, [(b":method", b"CONNECT"), (b":authority", authority.encode())])
    w.write(c.data_to_send())
    got = bytearray()
    try:
        async with asyncio.timeout(10):
            while True:
                data = await r.read(65536)
                assert data, "the connection closed under the stream"
                for ev in c.receive_data(data):
                    if isinstance(ev, ResponseReceived):
                        assert dict(ev.headers)[b":status"] == b"200"
                        if send:
                            c.send_data(sid, send, end_stream=True)
                    elif isinstance(ev, DataReceived):
                        got += ev.data
                        c.acknowledge_received_data(ev.flow_controlled_length, sid)
                    elif isinstance(ev, StreamEnded):
                        return bytes(got), "end"
                    elif isinstance(ev, StreamReset):
                        return bytes(got), "reset"
                w.write(c.data_to_send())
    finally:
        w.close()


async def test_upstream_reset_reaches_hbonec_client_as_rst_stream(
        start_gateway: StartGateway, reset_server: tuple[str, int],
        echo_server: tuple[str, int]) -> None:
    gw = await start_gateway(CONFIG.format(cut=reset_server[1], echo=echo_server[1]))
    port = gw.port("shared")
    got, end = await h2c_connect(port, f"cut.test:{reset_server[1]}")
    assert end == "reset", f"a clean END_STREAM after {len(got)} bytes"
    assert got == pattern(RESET_BYTES)[:len(got)]
    got, end = await h2c_connect(port, f"echo.test:{echo_server[1]}", b"hello h2")
    assert (got, end) == (b"hello h2", "end")


async def test_drain_deadline_cut_reaches_the_client_as_reset(
        start_gateway: StartGateway, echo_server: tuple[str, int]) -> None:
    """A relay the shutdown's drain deadline cancels (``end=cancelled``) resets the client."""
    gw = await start_gateway(CONFIG.format(cut=1, echo=echo_server[1]))
    r, w = await socks5(gw.port("shared"), "echo.test", echo_server[1])
    w.write(b"ping")
    assert await r.readexactly(4) == b"ping"
    await gw.shutdown(0.2)
    got, end = await read_to_end(r)
    w.close()
    assert (got, end) == (b"", "reset")
    assert metric(gw, "ugate_streams_total", listener="shared", end="cancelled") == 1
