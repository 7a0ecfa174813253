"""The HTTP/3 side against a stack that is not qh3/aioquic: ngtcp2's ``gtlsclient``; and the
session gate (path, token) with qh3's own H3 client."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path

import pytest
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent, StreamDataReceived, StreamReset
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ugate_core import ConfigError, DialError, Gateway, PreambleOpener, loads, make_token
from ugate_core.testing import StartGateway, metric, require_peer, run
from ugate_quic.certs import browser_certs

#: the key that signs the tests' tokens, and the ``[tokens]`` table trusting it
SIGNER = ed25519.Ed25519PrivateKey.generate()
TOKENS = ('[tokens]\ntrusted_keys = ["' + SIGNER.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    .split("-----")[2].replace("\n", "") + '"]\naudience = "wt-test"\n')


def config(extra: str = "", listen: str = "127.0.0.1:0") -> str:
    return f"""
[admin]
listen = ""
[listeners.quic]
listen = "{listen}"
protocols = ["quic"]
{extra}
"""


async def test_gtlsclient_gets_a_plain_get_answered_and_a_clear_404(
        start_gateway: StartGateway, tmp_path: Path) -> None:
    exe = require_peer("/usr/bin/gtlsclient", apt="ngtcp2-client")
    gw = await start_gateway(config())
    port = gw.port("quic")
    for path, name in (("/", "index.html"), ("/nothing-here", "nothing-here"),
                       ("/.well-known/ugate/wt-hashes", "wt-hashes")):
        out = tmp_path / name.replace(".", "_")
        out.mkdir()
        res = await run(exe, "-q", "--exit-on-all-streams-close", f"--download={out}",
                        "127.0.0.1", str(port), f"https://127.0.0.1:{port}{path}", timeout=30)
        assert res.returncode == 0, res.stderr
        body = (out / name).read_bytes()
        if path == "/":
            assert body == b"ugate webtransport: open a session at /.well-known/ugate/wt\n"
        elif name == "wt-hashes":
            doc = json.loads(body)
            certs = browser_certs(gw)
            assert certs is not None
            assert doc["algorithm"] == "sha-256" and doc["hashes"] == certs.hashes()
        else:
            assert body == (b"not found: WebTransport sessions are at "
                            b"/.well-known/ugate/wt\n")
    assert metric(gw, "ugate_rejections_total", listener="quic", reason="not_found") == 1


class _Client(QuicConnectionProtocol):
    def __init__(self, *a: object, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.h3 = H3Connection(self._quic, enable_webtransport=True)
        self.heads: dict[int, asyncio.Future[dict[bytes, bytes]]] = {}
        self.data: dict[int, bytearray] = {}
        self.ended: dict[int, asyncio.Event] = {}
        self.session = 0

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamReset) and event.stream_id in self.ended:
            self.ended[event.stream_id].set()
        if isinstance(event, StreamDataReceived) and event.stream_id in self.ended:
            # the server's half of a stream we opened is raw bytes (aioquic's H3 client would
            # parse it as HTTP frames)
            self.data.setdefault(event.stream_id, bytearray()).extend(event.data)
            if event.end_stream:
                self.ended[event.stream_id].set()
            return
        for ev in self.h3.handle_event(event):
            if isinstance(ev, HeadersReceived) and ev.stream_id in self.heads:
                self.heads[ev.stream_id].set_result(dict(ev.headers))

    async def stream(self, session: int, payload: bytes) -> bytes:
        """One WebTransport bidi stream: ``payload`` then FIN; what came back until its end."""
        sid = self.h3.create_webtransport_stream(session)
        self.ended[sid] = asyncio.Event()
        self._quic.send_stream_data(sid, payload, end_stream=True)
        self.transmit()
        await asyncio.wait_for(self.ended[sid].wait(), 10)
        return bytes(self.data.get(sid, b""))

    async def connect_wt(self, path: str) -> dict[bytes, bytes]:
        sid = self.session = self._quic.get_next_available_stream_id()
        fut = self.heads[sid] = asyncio.get_running_loop().create_future()
        self.h3.send_headers(sid, [(b":method", b"CONNECT"), (b":protocol", b"webtransport"),
                                   (b":scheme", b"https"), (b":authority", b"127.0.0.1"),
                                   (b":path", path.encode())])
        self.transmit()
        return await asyncio.wait_for(fut, 10)


async def _session_status(port: int, path: str) -> bytes:
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"], verify_mode=ssl.CERT_NONE,
                            max_datagram_frame_size=65536)
    async with connect("127.0.0.1", port, configuration=cfg,
                       create_protocol=_Client) as c:
        assert isinstance(c, _Client)
        return (await c.connect_wt(path))[b":status"]


async def test_session_needs_a_valid_token_once_tokens_are_configured(
        start_gateway: StartGateway) -> None:
    gw = await start_gateway(config(TOKENS))
    port = gw.port("quic")
    wt = "/.well-known/ugate/wt?token="
    good = make_token(SIGNER, "alice", "wt-test", 60)
    assert await _session_status(port, "/.well-known/ugate/wt") == b"401"
    for bad in ("guess-guess-guess",
                make_token(SIGNER, "alice", "wt-test", -10),               # expired
                make_token(SIGNER, "alice", "other-gw", 60),               # wrong audience
                make_token(ed25519.Ed25519PrivateKey.generate(), "alice", "wt-test", 60)):
        assert await _session_status(port, wt + bad) == b"401"      # a fresh key nobody trusts
    assert await _session_status(port, wt + good) == b"200"
    assert await _session_status(port, "/elsewhere?token=" + good) == b"404"
    for reason in ("no_token", "token_malformed", "token_expired", "token_audience",
                   "token_unknown_key"):
        assert metric(gw, "ugate_rejections_total", listener="quic", reason=reason) == 1, reason


def test_old_tokens_table_says_where_it_moved(tmp_path: Path) -> None:
    cfg = loads(config('[webtransport.tokens]\nalice = "0123456789abcdef-alice"'))
    with pytest.raises(ConfigError) as ei:
        Gateway(cfg, state_dir=tmp_path).check()
    assert str(ei.value) == ("webtransport.tokens: moved to [tokens] trusted_keys (signed "
                             "tokens: 'ugate token')")


async def test_loopback_listener_without_tokens_is_the_local_proxy(
        start_gateway: StartGateway) -> None:
    gw = await start_gateway(config())
    assert await _session_status(gw.port("quic"), "/.well-known/ugate/wt") == b"200"


async def test_every_stream_goes_through_policy_as_the_token_user(
        start_gateway: StartGateway, echo_server: tuple[str, int]) -> None:
    """With an allow list the loopback listener is not the local proxy: a rule naming
    user:alice lets her reach echo.test:7, and nothing else (403 on the stream)."""
    gw = await start_gateway(config(f"""
allow = ["status.test:9"]
{TOKENS}
[hosts."echo.test"]
endpoints = ["{echo_server[0]}:{echo_server[1]}"]
[[rules]]
clients = ["user:alice"]
to = ["echo.test:7"]
"""))
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"], verify_mode=ssl.CERT_NONE,
                            max_datagram_frame_size=65536)
    async with connect("127.0.0.1", gw.port("quic"), configuration=cfg,
                       create_protocol=_Client) as c:
        assert isinstance(c, _Client)
        head = await c.connect_wt("/.well-known/ugate/wt?token="
                                  + make_token(SIGNER, "alice", "wt-test", 60))
        assert head[b":status"] == b"200"
        ok = await c.stream(c.session, PreambleOpener().request("echo.test:7") + b"hi alice")
        assert ok == b"\x01\x03200hi alice"
        no = await c.stream(c.session, PreambleOpener().request(f"{echo_server[0]}:"
                                                                 f"{echo_server[1]}"))
        assert no == b"\x01\x0a403 denied"
    assert metric(gw, "ugate_dial_errors_total", reason="denied") == 1


WT_LISTENER = """
[admin]
listen = ""
[listeners.browsers]
listen = "127.0.0.1:0"
protocols = ["webtransport"]
[hosts."svc.test"]
endpoints = ["127.0.0.1:{port}"]
protocol = "quic"
identity = ["id:{id}"]
"""


async def test_webtransport_listener_serves_h3_and_no_mesh_streams(
        start_gateway: StartGateway) -> None:
    """``protocols = ["webtransport"]``: a UDP listener for browsers, HTTP/3 only; a mesh
    client (ALPN ugate/1) fails its handshake there."""
    b = await start_gateway(WT_LISTENER.format(port=1, id="x" * 52))
    port = b.port("browsers")
    assert await _session_status(port, "/.well-known/ugate/wt") == b"200"
    a = await start_gateway(WT_LISTENER.format(port=port, id=b.identity.id)
                            .replace("[listeners.browsers]", "[listeners.unused]"))
    try:
        await a.dial("svc.test:7")
    except DialError as e:
        assert e.reason == "unreachable", e
    else:
        raise AssertionError("a mesh stream was served on a webtransport listener")
    # "No common ALPN protocols" (the dialer may try twice)
    assert metric(b, "ugate_rejections_total", listener="browsers", reason="handshake") >= 1


def test_webtransport_listener_refuses_datagrams_browsers_cannot_read(tmp_path: Path) -> None:
    for size, ok in ((1452, True), (1453, False)):
        cfg = WT_LISTENER.format(port=1, id="x").replace(
            'protocols = ["webtransport"]', f'protocols = ["webtransport"]\n'
                                           f'max_datagram_size = {size}')
        gw = Gateway(loads(cfg, "t"), state_dir=tmp_path)
        if ok:
            gw.check()
            continue
        with pytest.raises(ConfigError) as e:
            gw.check()
        assert "max_datagram_size" in str(e.value), e.value
