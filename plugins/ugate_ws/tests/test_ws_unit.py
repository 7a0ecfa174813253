"""Pure parts: the path scheme, the accept key, the settings; a token names one request."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from ugate_core import ProtocolError, make_token
from ugate_ws import accept_key, path_for, target_of
from ugate_ws.path import query_param


@pytest.mark.parametrize(("path", "want"), [
    ("/.well-known/ugate/ws/example.com:443", "example.com:443"),
    ("/.well-known/ugate/ws/127.0.0.1:80?token=x", "127.0.0.1:80"),
    ("/.well-known/ugate/ws/[::1]:8080", "[::1]:8080"),
    ("/.well-known/ugate/ws/%5B::1%5D:8080", "[::1]:8080"),
])
def test_target_of(path: str, want: str) -> None:
    assert target_of(path) == want
    assert target_of(path_for(want)) == want


@pytest.mark.parametrize("path", [
    "/.well-known/ugate/ws", "/.well-known/ugate/ws/", "/.well-known/ugate/ws/host",
    "/.well-known/ugate/ws/host:0", "/.well-known/ugate/ws/host:99999",
    "/.well-known/ugate/ws/a%20b:80", "/other/host:80",
    # a port of digits beyond ASCII: a superscript two once raised ValueError (a 500)
    "/.well-known/ugate/ws/host:%C2%B2", "/.well-known/ugate/ws/host:%D9%A1%D9%A2",
])
def test_target_of_refuses(path: str) -> None:
    with pytest.raises(ProtocolError) as ei:
        target_of(path)
    assert ei.value.reason == "bad_target"


def test_query_and_accept_key() -> None:
    assert query_param("/p?a=1&token=abc.def", "token") == "abc.def"
    assert query_param("/p", "token") is None
    # RFC 6455 section 1.3's example
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_settings_token_keys_moved_to_core() -> None:
    from ugate_core import ConfigError
    from ugate_ws.settings import parse_settings

    for old, new in [("token_keys", "trusted_keys"), ("token_audience", "audience"),
                     ("token_max_lifetime", "max_lifetime")]:
        with pytest.raises(ConfigError) as ei:
            parse_settings({old: []})
        assert str(ei.value) == f"ws.{old}: moved to [tokens] {new}"
    with pytest.raises(ConfigError, match=r"ws\.max_mesage: unknown key"):
        parse_settings({"max_mesage": 1})


async def test_a_paused_stream_without_a_buffer_size_pauses_the_message_stream() -> None:
    """An HTTP/2 tunnel says "paused" but reports no buffer size: the message stream over it
    must stop taking bytes all the same (a stalled browser on h2 holds nothing more)."""
    from websockets.protocol import Protocol, Side, State

    from ugate_core import Stream, StreamMeta
    from ugate_ws.transport import WsTransport, message_stream

    class Tunnel(Stream):
        def __init__(self) -> None:
            super().__init__(StreamMeta())
            self.queued = 0

        def _do_write(self, data: bytes | bytearray | memoryview) -> None:
            self.queued += len(data)
            if self.queued > 64 * 1024:
                self._pause_writing()

        def _do_write_eof(self) -> None:
            pass

        def _do_close(self) -> None:
            pass

    t = Tunnel()
    ws = message_stream(WsTransport(t, Protocol(Side.SERVER, state=State.OPEN),
                                    max_message=65536, idle_timeout=60), t.meta, 65536)
    taken = 0
    while not ws.write_paused and taken < 16 << 20:
        ws.write(b"x" * 16384)
        taken += 16384
    assert ws.write_paused and taken <= 96 * 1024
    t.queued = 0
    t._resume_writing()  # the connection's window opened: writing goes on
    assert not ws.write_paused
    ws.abort()


class FakeExchange:
    """An :class:`~ugate_http.routes.Exchange` in memory: one request of a connection whose
    metadata several requests share (as over HTTP/2)."""

    http_version = "2"
    method = "CONNECT"
    protocol = "websocket"

    def __init__(self, meta: object, path: str) -> None:
        self.meta = meta
        self.path = path
        self.headers = [("sec-websocket-version", "13")]
        self.status = 0
        self.body_sent = b""

    def header(self, name: str) -> str | None:
        return dict(self.headers).get(name)

    async def respond(self, status: int, headers: object = (), body: bytes = b"") -> None:
        self.status, self.body_sent = status, body

    async def accept(self, headers: object = ()) -> object:
        from ugate_core import stream_pair

        self.status = 200
        a, self.client = stream_pair(self.meta)  # type: ignore[arg-type]
        return a


async def test_a_token_names_one_websocket_not_the_connection(
        start_gateway: object, echo_server: tuple[str, int], tmp_path: object) -> None:
    from pathlib import Path

    from ugate_core import StreamMeta
    from ugate_ws import serve_exchange

    from .conftest import BASE, write_public_key, ws_listener

    key = ed25519.Ed25519PrivateKey.generate()
    pub = write_public_key(key, Path(str(tmp_path)) / "k.pub")
    echo = f"127.0.0.1:{echo_server[1]}"
    gw = await start_gateway(BASE + f"""  # type: ignore[operator]
[tokens]
trusted_keys = ["{pub}"]
audience = "gw"
{ws_listener(extra='allow = ["x.invalid:1"]')}
[[rules]]
clients = ["user:alice"]
to = ["{echo}"]
""")
    conn = StreamMeta(protocol="http", listener="ws", remote=("127.0.0.1", 5555))
    first = FakeExchange(conn, f"/.well-known/ugate/ws/{echo}?token="
                         + make_token(key, "alice", "gw", 60))
    await serve_exchange(first, gw)  # type: ignore[arg-type]
    assert first.status == 200
    second = FakeExchange(conn, f"/.well-known/ugate/ws/{echo}")  # same connection, no token
    await serve_exchange(second, gw)  # type: ignore[arg-type]
    assert second.status == 401, second.body_sent
    assert b"no rule allows an unauthenticated client" in second.body_sent
    assert conn.user is None and conn.target is None
    first.client.abort()


@pytest.mark.parametrize("proto", ["ws", "wss"])
def test_refuses_open_relay_beyond_loopback(tmp_path: object, proto: str) -> None:
    from pathlib import Path

    from ugate_core import ConfigError, Gateway, loads

    base = (f'[admin]\nlisten = ""\n[listeners.open]\nlisten = "0.0.0.0:0"\n'
            f'protocols = ["{proto}"]\n')
    with pytest.raises(ConfigError, match=rf"relays \({proto}\) but no rule says who may reach"):
        Gateway(loads(base), state_dir=Path(str(tmp_path))).check()
    # a token key says who, not what: alone it is no rule
    with pytest.raises(ConfigError, match="no rule says who may reach what"):
        Gateway(loads(base + '[tokens]\ntrusted_keys = ["MCowBQYDK2VwAyEAiDUlT709nZFv3yYC6WRuwUs'
                      'iWIT4DJrE1Ikam7FD6vE="]\n'), state_dir=Path(str(tmp_path))).check()
    Gateway(loads(base + '[[rules]]\nclients = ["user:alice"]\nto = ["svc.test:80"]\n'),
            state_dir=Path(str(tmp_path))).check()


def test_bad_ws_options_name_the_key(tmp_path: object) -> None:
    from pathlib import Path

    from ugate_core import ConfigError, Gateway, loads

    cfg = loads('[admin]\nlisten = ""\n[listeners.w]\nlisten = "127.0.0.1:0"\n'
                'protocols = ["wss"]\nclient_cert = "sometimes"\n')
    with pytest.raises(ConfigError, match=r"listeners\.w\.client_cert"):
        Gateway(cfg, state_dir=Path(str(tmp_path))).check()
