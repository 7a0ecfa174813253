"""ugate ↔ ugate over QUIC (ugate/1): preamble per stream, identities both ways, policy per
stream, half-close and reset, pooling."""

from __future__ import annotations

import asyncio

import pytest

from ugate_core import DialError, Gateway, Stream
from ugate_core.testing import StartGateway, metric, pattern
from ugate_quic.mesh import pool_of
from ugate_quic.shared import shared_endpoints

MiB = 1 << 20


def gateway_b(target: str, extra: str = "") -> str:
    return f"""
[admin]
listen = ""
[listeners.quic]
listen = "127.0.0.1:0"
protocols = ["quic"]
{extra}
[hosts."svc.test"]
endpoints = ["{target}"]
"""


def gateway_a(b: Gateway, expect: str, extra: str = "") -> str:
    return f"""
[admin]
listen = ""
[hosts."svc.test"]
endpoints = ["127.0.0.1:{b.port("quic")}"]
protocol = "quic"
identity = ["id:{expect}"]
{extra}
"""


async def read_all(s: Stream, limit: int, timeout: float = 30) -> bytes:
    out = bytearray()
    async with asyncio.timeout(timeout):
        while len(out) <= limit:
            d = await s.read(1 << 20)
            if not d:
                break
            out += d
    return bytes(out)


async def echo_through(s: Stream, data: bytes) -> bytes:
    async def send() -> None:
        for i in range(0, len(data), 65536):
            s.write(data[i:i + 65536])
            await s.drain()
        s.write_eof()

    t = asyncio.create_task(send())
    got = await read_all(s, len(data) + 1)
    await t
    return got


async def test_streams_echo_byte_for_byte_on_one_pooled_connection(
        start_gateway: StartGateway, echo_server: tuple[str, int]) -> None:
    b = await start_gateway(gateway_b(f"{echo_server[0]}:{echo_server[1]}"))
    a = await start_gateway(gateway_a(b, b.identity.id))
    streams = [await a.dial("svc.test:7") for _ in range(4)]
    assert all(s.meta.peer_id == b.identity.id for s in streams)
    blobs = [pattern(2 * MiB, seed=i) for i in range(4)]
    got = await asyncio.gather(*(echo_through(s, d) for s, d in zip(streams, blobs, strict=True)))
    assert [g == d for g, d in zip(got, blobs, strict=True)] == [True] * 4
    assert len(pool_of(a).peers) == 1  # one connection carried all four


async def test_wrong_server_identity_is_refused_before_any_stream(
        start_gateway: StartGateway, echo_server: tuple[str, int]) -> None:
    b = await start_gateway(gateway_b(f"{echo_server[0]}:{echo_server[1]}"))
    a = await start_gateway(gateway_a(b, "A" * 52))
    with pytest.raises(DialError) as e:
        await a.dial("svc.test:7")
    assert e.value.reason == "identity"
    assert "expected id " + "A" * 52 in str(e.value)
    assert b.identity.id in str(e.value)
    assert metric(a, "ugate_identity_failures_total", protocol="quic", direction="dial") == 1


async def test_shared_port_also_serves_quic_on_udp(start_gateway: StartGateway,
                                                   echo_server: tuple[str, int]) -> None:
    """A shared TCP port (protocols = ["*"]) gets QUIC on the same UDP port number, under the
    shared listener's name; [quic] shared_port = false turns it off."""
    b = await start_gateway(f"""
[admin]
listen = ""
[listeners.main]
listen = "127.0.0.1:0"
protocols = ["*"]
[hosts."svc.test"]
endpoints = ["{echo_server[0]}:{echo_server[1]}"]
""")
    eps = shared_endpoints(b)
    assert [ep.addresses() for ep in eps] == [[("127.0.0.1", b.port("main"))]]
    a = await start_gateway(f"""
[admin]
listen = ""
[hosts."svc.test"]
endpoints = ["127.0.0.1:{b.port("main")}"]
protocol = "quic"
identity = ["id:{b.identity.id}"]
""")
    s = await a.dial("svc.test:7")
    assert await echo_through(s, b"over the shared port") == b"over the shared port"
    off = await start_gateway("""
[admin]
listen = ""
[quic]
shared_port = false
[listeners.main]
listen = "127.0.0.1:0"
protocols = ["*"]
""")
    assert shared_endpoints(off) == []


def record_sizes(transport: object) -> list[int]:
    """Wrap a datagram transport's ``sendto``: the size of every datagram sent from now."""
    sizes: list[int] = []
    send = transport.sendto  # type: ignore[attr-defined]

    def sendto(data: bytes, addr: object = None) -> None:
        sizes.append(len(data))
        send(data, addr)

    transport.sendto = sendto  # type: ignore[attr-defined]
    return sizes


@pytest.mark.parametrize(("b_extra", "a_extra", "largest"), [
    ("", "", 16384),  # automatic: a mesh peer on loopback gets aioquic's largest
    ("max_datagram_size = 1200", "[quic]\nmax_datagram_size = 1200", 1200),
    ("max_datagram_size = 4000", "[quic]\nmax_datagram_size = 3000", 4000),
])
async def test_datagram_size_on_loopback(start_gateway: StartGateway,
                                         echo_server: tuple[str, int], b_extra: str,
                                         a_extra: str, largest: int) -> None:
    b = await start_gateway(gateway_b(f"{echo_server[0]}:{echo_server[1]}", b_extra))
    a = await start_gateway(gateway_a(b, b.identity.id, a_extra))
    s = await a.dial("svc.test:7")
    (peer,) = pool_of(a).peers.values()
    sent_a = record_sizes(peer._transport)
    sent_b = record_sizes(b.running["quic"].server._transport)  # type: ignore[attr-defined]
    s2 = await a.dial("svc.test:7")  # both ways: B's answers carry bulk too
    blob = pattern(3 * MiB, seed=7)
    got = await asyncio.gather(echo_through(s, blob), echo_through(s2, blob[::-1]))
    assert got == [blob, blob[::-1]]
    a_largest = 3000 if largest == 4000 else largest
    assert max(sent_a) == a_largest, (max(sent_a), a_largest)
    assert max(sent_b) == largest, (max(sent_b), largest)
