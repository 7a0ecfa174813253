"""Units: authority and request parsing (hypothesis), the preface sniffer, settings, and two
H2Sessions talking through an in-memory pipe (flow control with small windows)."""

from __future__ import annotations

import asyncio
import ipaddress
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ugate_core import ConfigError, Sniff, Stream, StreamMeta, stream_pair
from ugate_core.testing import pattern
from ugate_hbone.authority import (
    MAX_AUTHORITY,
    AuthorityError,
    ConnectRequest,
    Refusal,
    format_authority,
    parse_authority,
    parse_request,
)
from ugate_hbone.dialer import reason_for_status
from ugate_hbone.server import PREFACE, sniff_preface, status_for
from ugate_hbone.session import H2Session, H2Stream
from ugate_hbone.settings import HboneSettings, parse_settings

# ------------------------------------------------------------------------------ authority
label = st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=20).filter(
    lambda s: s[0] != "-" and s[-1] != "-")
names = st.lists(label, min_size=1, max_size=5).map(".".join).filter(
    lambda n: not n.split(".")[-1].isdigit())
ports = st.integers(1, 65535)
v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).map(str)


@given(host=st.one_of(names, v4, v6), port=ports)
def test_authority_round_trip(host: str, port: int) -> None:
    h, p = parse_authority(format_authority(host, port))
    assert p == port
    if ":" in host:
        assert ipaddress.ip_address(h) == ipaddress.ip_address(host)
    else:
        assert h == host.lower()
    assert parse_authority(format_authority(h, p)) == (h, p)


@given(st.text(max_size=300))
def test_authority_never_raises_anything_else(value: str) -> None:
    try:
        h, p = parse_authority(value)
    except AuthorityError as e:
        assert str(e)
        return
    assert 1 <= p <= 65535 and h
    assert len(format_authority(h, p)) <= MAX_AUTHORITY
    assert parse_authority(format_authority(h, p)) == (h, p)  # canonical form is stable
    assert not any(c in h for c in " /@?#\\\r\n\t")


@given(st.binary(max_size=300))
def test_authority_bytes(value: bytes) -> None:
    try:
        parse_authority(value)
    except AuthorityError:
        pass


@pytest.mark.parametrize(("value", "want"), [
    ("example.com:443", ("example.com", 443)),
    ("Example.COM.:80", ("example.com", 80)),
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("[::1]:15008", ("::1", 15008)),
    ("[2001:DB8::0:1]:1", ("2001:db8::1", 1)),
    ("svc.ns.svc.cluster.local:9080", ("svc.ns.svc.cluster.local", 9080)),
    ("_srv.x:1", ("_srv.x", 1)),
])
def test_authority_accepts(value: str, want: tuple[str, int]) -> None:
    assert parse_authority(value) == want


@pytest.mark.parametrize(("value", "why"), [
    ("", "empty"),
    ("example.com", "has no port"),
    ("example.com:", "has no port"),
    (":80", "has no host"),
    ("example.com:0", "port 0 is not a port"),
    ("example.com:65536", "65536 is not a port"),
    ("example.com:+80", "is not a number"),
    ("example.com:080000", "is not a number"),
    ("::1:80", "need brackets"),
    ("[::1]", "has no port"),
    ("[::1]x:80", "has no port"),
    ("[fe80::1%eth0]:80", "zone ids are not accepted"),
    ("[1.2.3.4]:80", "is not an IPv6 address"),
    ("user@host:80", "not a DNS name"),
    ("a b:80", "not a DNS name"),
    ("a/b:80", "not a DNS name"),
    ("-a.com:80", "starts or ends with '-'"),
    ("a..b:80", "is not 1-63 bytes"),
    ("127.1:80", "neither an IPv4 address nor a DNS name"),
    ("1.2.3.999:80", "neither an IPv4 address nor a DNS name"),
    ("x" * 64 + ".com:80", "is not 1-63 bytes"),
    ("a." * 127 + "ab:80", "longer than 253"),
    ("é.com:80", "not a DNS name"),
])
def test_authority_refuses(value: str, why: str) -> None:
    with pytest.raises(AuthorityError, match=why.replace("(", r"\(").replace(")", r"\)")):
        parse_authority(value)


header = st.tuples(st.sampled_from([b":method", b":authority", b"baggage", b"traceparent",
                                    b"forwarded", b"x-other", b":path"]) | st.binary(max_size=12),
                   st.binary(max_size=64))


@given(st.lists(header, max_size=12))
def test_parse_request_never_raises(headers: list[tuple[bytes, bytes]]) -> None:
    r = parse_request(headers, methods=("CONNECT", "POST"))
    if isinstance(r, Refusal):
        assert r.status == 400 and r.reason and r.detail
    else:
        assert r.method in ("CONNECT", "POST")
        assert parse_authority(r.authority) == (r.host, r.port)
        for _, v in r.passed:
            assert "\r" not in v and "\n" not in v


def test_parse_request_passes_trace_headers() -> None:
    r = parse_request([(b":method", b"CONNECT"), (b":authority", b"A.example:80"),
                       (b"baggage", b"a=1"), (b"baggage", b"b=2"),
                       (b"traceparent", b"00-x-y-01"), (b"x-secret", b"no")])
    assert isinstance(r, ConnectRequest)
    assert r.authority == "a.example:80"
    assert dict(r.passed) == {"baggage": "a=1, b=2", "traceparent": "00-x-y-01"}
    r2 = parse_request([(b":method", b"POST"), (b":authority", b"a:1")])
    assert isinstance(r2, Refusal) and r2.reason == "bad_method"
    r3 = parse_request([(b":method", b"CONNECT"), (b":authority", b"a:1"),
                        (b"baggage", b"x" * 9000)])
    assert isinstance(r3, Refusal) and r3.reason == "header_too_long"
    r4 = parse_request([(b":method", b"CONNECT"), (b":authority", b"a:1"),
                        (b":authority", b"b:1")])
    assert isinstance(r4, Refusal) and "more than one" in r4.detail


# ------------------------------------------------------------------------------ small things
@given(st.binary(max_size=40))
def test_sniff_preface(prefix: bytes) -> None:
    r = sniff_preface(prefix)
    if prefix.startswith(PREFACE):
        assert r is Sniff.MATCH
    elif PREFACE.startswith(prefix):
        assert r is Sniff.NEED_MORE
    else:
        assert r is Sniff.NO


def test_sniff_every_proper_prefix() -> None:
    for i in range(len(PREFACE)):
        assert sniff_preface(PREFACE[:i]) is Sniff.NEED_MORE
    assert sniff_preface(PREFACE + b"\x00") is Sniff.MATCH
    assert sniff_preface(b"GET / HTTP/1.1\r\n") is Sniff.NO
    assert sniff_preface(b"\x16\x03\x01") is Sniff.NO


def test_status_mapping() -> None:
    assert status_for("denied", False) == 401
    assert status_for("denied", True) == 403
    assert status_for("bad_address", True) == 400
    for reason in ("refused", "unreachable", "timeout", "no_route", "identity"):
        assert status_for(reason, True) == 503
    assert [reason_for_status(s) for s in (401, 403, 400, 404, 503, 500, None)] == [
        "denied", "denied", "bad_address", "no_route", "unreachable", "refused", "refused"]


def test_settings(tmp_path: Path) -> None:
    assert parse_settings({}) == HboneSettings()
    s = parse_settings({"stream_window": 65535, "idle_timeout": 5})
    assert s.stream_window == 65535 and s.idle_timeout == 5.0
    for table, why in [
        ({"stream_windows": 1}, "hbone.stream_windows: unknown key"),
        ({"stream_window": 10}, "hbone.stream_window: 10 is not an integer in 65535-"),
        ({"max_frame_size": 1 << 24}, "hbone.max_frame_size"),
        ({"max_streams": True}, "hbone.max_streams: True"),
        ({"idle_timeout": 0}, "hbone.idle_timeout: 0 is not a number of seconds"),
        ({"trust_domain": "a/b"}, "hbone.trust_domain: 'a/b' is not a trust domain"),
        ({"trust_domain": "cluster.local"}, "hbone.trust_domain: 'cluster.local' needs "
                                            "ca_bundle"),
        ({"ca_bundle": str(tmp_path / "nope.pem")}, "cannot read"),
    ]:
        with pytest.raises(ConfigError, match=why.replace("(", r"\(")):
            parse_settings(table)
    (tmp_path / "bad.pem").write_text("not pem")
    with pytest.raises(ConfigError, match=r"hbone\.ca_bundle"):
        parse_settings({"ca_bundle": str(tmp_path / "bad.pem")})
    from ugate_core.certs import anchor_pem

    (tmp_path / "anchor.pem").write_bytes(anchor_pem())
    with pytest.raises(ConfigError, match="public mesh anchor"):
        parse_settings({"ca_bundle": str(tmp_path / "anchor.pem")})


# ------------------------------------------------------------------------------ sessions
class Echo:
    """Server side: answer 200 and echo every stream's bytes (with its half-close)."""

    def __init__(self) -> None:
        self.streams: list[H2Stream] = []

    def __call__(self, s: H2Stream) -> None:
        self.streams.append(s)
        s.respond(200)
        me = self

        class R:
            def data_received(self, data: bytes) -> None:
                s.write(data)

            def eof_received(self) -> None:
                s.write_eof()

            def connection_lost(self, exc: BaseException | None) -> None:
                me.lost = exc

        s.set_receiver(R())

    lost: BaseException | None = None


async def pair(window: int = 65535, frame: int = 16384,
               max_streams: int = 1000) -> tuple[H2Session, H2Session, Echo]:
    a, b = stream_pair(StreamMeta(protocol="test"), StreamMeta(protocol="test"))
    st = HboneSettings(stream_window=window, connection_window=max(window, 65535) * 2,
                       max_frame_size=frame, max_streams=max_streams)
    echo = Echo()
    server = H2Session(b, st, client=False, on_request=echo)
    client = H2Session(a, st, client=True)
    server.start()
    client.start()
    await asyncio.wait_for(client.remote_settings, 5)
    return client, server, echo


async def read_all(s: Stream, timeout: float = 10) -> bytes:
    out = bytearray()
    async with asyncio.timeout(timeout):
        while d := await s.read():
            out += d
    return bytes(out)


def connect(client: H2Session, authority: str = "x:1") -> H2Stream:
    return client.open_stream([(b":method", b"CONNECT"), (b":authority", authority.encode())],
                              StreamMeta(protocol="test"))


@settings(max_examples=25, deadline=None)
@given(chunks=st.lists(st.integers(1, 200_000), min_size=1, max_size=12),
       window=st.sampled_from([65535, 100_000, 1 << 20]),
       frame=st.sampled_from([16384, 65536, 1 << 20]))
def test_session_echo_with_flow_control(chunks: list[int], window: int, frame: int) -> None:
    async def main() -> None:
        client, _server, _echo = await pair(window, frame)
        s = connect(client)
        assert s.response is not None
        await s.response
        assert s.status == 200
        payload = pattern(sum(chunks), len(chunks))
        reader = asyncio.get_running_loop().create_task(read_all(s))
        off = 0
        for n in chunks:
            s.write(payload[off:off + n])
            off += n
            await s.drain()
        s.write_eof()
        assert await reader == payload
        await asyncio.wait_for(s.wait_closed(), 5)
        assert not client.streams

    asyncio.run(main())


async def test_many_streams_and_capacity() -> None:
    client, server, echo = await pair(max_streams=10)
    assert client.capacity() == 10
    streams = [connect(client, f"h{i}:1") for i in range(10)]
    assert client.capacity() == 0
    for s in streams:
        assert s.response is not None
        await s.response
    for i, s in enumerate(streams):
        s.write(pattern(1000, i))
        s.write_eof()
    for i, s in enumerate(streams):
        assert await read_all(s) == pattern(1000, i)
    await asyncio.sleep(0)
    assert client.capacity() == 10
    assert len(echo.streams) == 10 and server.streams_opened == 10


async def test_reset_and_connection_loss_reach_the_streams() -> None:
    client, server, echo = await pair()
    s1, s2 = connect(client), connect(client)
    for s in (s1, s2):
        assert s.response is not None
        await s.response
    echo.streams[0].abort()  # RST_STREAM from the server
    await asyncio.wait_for(s1.wait_closed(), 5)
    with pytest.raises(ConnectionResetError, match=r"stream 1 reset by the peer \(CONNECT_ERROR"):
        await s1.drain()
    assert s2.is_lost is False
    server.close(ConnectionResetError("gone"))
    await asyncio.wait_for(s2.wait_closed(), 5)
    with pytest.raises(ConnectionResetError):
        await s2.drain()
    assert client.closed


async def test_goaway_refuses_new_streams_but_finishes_running_ones() -> None:
    client, server, _echo = await pair()
    s = connect(client)
    assert s.response is not None
    await s.response
    server.goaway()
    await asyncio.sleep(0)
    assert client.goaway_received and not client.usable
    s.write(b"still here")
    s.write_eof()
    assert await read_all(s) == b"still here"
    await asyncio.sleep(0.01)
    assert server.closed and client.closed


def _client_bytes(sizes: list[int]) -> bytes:
    """What an h2 client sends: preface, SETTINGS, a CONNECT and DATA frames of ``sizes``."""
    from h2.config import H2Configuration
    from h2.connection import H2Connection

    c = H2Connection(H2Configuration(client_side=True))
    c.initiate_connection()
    c.send_headers(1, [(":method", "CONNECT"), (":authority", "x:1")])
    for n in sizes:
        c.send_data(1, bytes(n))
    return c.data_to_send()


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 16384), max_size=4),
       cuts=st.lists(st.integers(1, 200), min_size=1, max_size=30))
def test_frame_scanner_any_split(sizes: list[int], cuts: list[int]) -> None:
    async def main() -> None:
        _a, b = stream_pair(StreamMeta(), StreamMeta())
        got: list[H2Stream] = []
        sess = H2Session(b, HboneSettings(), client=False, on_request=got.append)
        sess.start()
        data = _client_bytes(sizes)
        i = k = 0
        while i < len(data):
            n = cuts[k % len(cuts)]
            sess.data_received(data[i:i + n])
            i += n
            k += 1
        assert not sess.closed, sess.error
        assert len(got) == 1 and got[0].buffered() == sum(sizes)
        sess.close()

    asyncio.run(main())


async def test_frame_scanner_refuses_oversized_and_non_settings_starts() -> None:
    _a, b = stream_pair(StreamMeta(), StreamMeta())
    sess = H2Session(b, HboneSettings(max_frame_size=16384), client=False,
                     on_request=lambda s: None)
    sess.start()
    ok = _client_bytes([])
    sess.data_received(ok)
    assert not sess.closed
    # a DATA frame header claiming 16 MiB - 1: refused at its header, nothing buffered
    sess.data_received(b"\xff\xff\xff\x00\x00\x00\x00\x00\x01")
    assert sess.closed and "exceeds our SETTINGS_MAX_FRAME_SIZE 16384" in sess.error
    a2, _b2 = stream_pair(StreamMeta(), StreamMeta())
    client = H2Session(a2, HboneSettings(), client=True)
    client.start()
    client.data_received(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    assert client.closed and "did not start with a SETTINGS frame" in client.error
    assert "HTTP/1.1 " in client.error


@pytest.mark.parametrize(("raw", "status"), [
    (b"200", 200), (b"503", 503), (b"abc", None), (b"20", None), (b"2000", None),
    (b"\xb2\xb2\xb2", None), (b"", None)])
def test_a_peer_status_is_three_digits_or_none(raw: bytes, status: int | None) -> None:
    """The far side's ``:status`` bytes: anything but three digits is no status (the dial
    fails as refused), not a ValueError out of the dialer."""
    from types import SimpleNamespace

    from ugate_hbone.h2stream import H2Stream

    fake = SimpleNamespace(headers=[(b":status", raw)])
    assert H2Stream.status.fget(fake) == status  # type: ignore[attr-defined]
