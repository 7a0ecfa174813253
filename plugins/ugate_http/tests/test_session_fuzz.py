"""Any bytes into a whole http listener session: an answer or a clean close, never a crash."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ugate_core import Gateway, ListenerContext, ProtocolError, StreamMeta, loads, stream_pair
from ugate_http.h1front import serve

PIECES = [
    b"GET ", b"POST ", b"CONNECT ", b"PUT ", b"http://a.test/", b"http://[::1]:1/", b"/",
    b"a.test:443", b" HTTP/1.1", b" HTTP/1.0", b"\r\n", b"\n", b"Host: a.test\r\n",
    b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n", b"Connection: close\r\n",
    b"Upgrade: websocket\r\nConnection: upgrade\r\n", b"Expect: 100-continue\r\n",
    b"Proxy-Authorization: Basic YTpi\r\n", b"3\r\nabc\r\n", b"0\r\n\r\n", b"abc", b"\x00",
    b"\r\n\r\n", b"https://a.test/", b"*", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
]
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

CONFIG = """
[admin]
listen = ""
[gateway]
handshake_timeout = 0.3
connect_timeout = 0.3
[routing]
direct = false
[listeners.p]
listen = "127.0.0.1:0"
protocols = ["http"]
mode = "{mode}"
"""


async def _session(data: bytes, mode: str, state: Path) -> bytes:
    cfg = loads(CONFIG.format(mode=mode))
    gw = Gateway(cfg, state_dir=state)
    gw.load()
    ctx = ListenerContext(gw, cfg.listeners[0])
    client, server = stream_pair(None, StreamMeta(listener="p", remote=("127.0.0.1", 1)))
    client.write(data)
    client.write_eof()
    try:
        await asyncio.wait_for(serve(server, ctx), 5)
    except (ProtocolError, ConnectionError):
        pass  # the core's listener turns these into a counted rejection
    finally:
        server.close()
    out = bytearray()
    while chunk := await asyncio.wait_for(client.read(), 5):
        out += chunk
    return bytes(out)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.sampled_from(PIECES), max_size=30), raw=st.binary(max_size=200),
       mode=st.sampled_from(["forward", "reverse", "auto"]))
def test_any_bytes_answered_or_closed(pieces: list[bytes], raw: bytes, mode: str,
                                      tmp_path: Path) -> None:
    for data in (b"".join(pieces), raw):
        out = asyncio.run(_session(data, mode, tmp_path))
        if data.startswith(PREFACE) and mode != "forward":
            # h2c prior knowledge: the server's SETTINGS frame (type 4 on stream 0) comes first
            assert out[3:4] == b"\x04" and out[5:9] == bytes(4), out[:200]
            continue
        assert out == b"" or out.startswith(b"HTTP/1.1 "), out[:200]
