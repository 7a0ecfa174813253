"""SERVFAIL from a validating resolver: with a DNSSEC Extended DNS Error it is final (bogus);
without one it is a server failure, and the next server is asked. Two UDP servers on loopback,
answering with dnspython-built messages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import dns.edns
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from ugate_dns import DnsError, parse_settings
from ugate_dns.resolver import Resolver

Reply = Callable[[dns.message.Message], dns.message.Message]


class Server(asyncio.DatagramProtocol):
    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.asked = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.asked += 1
        assert self.transport is not None
        self.transport.sendto(self.reply(dns.message.from_wire(data)).to_wire(), addr)


def servfail(ede: int | None) -> Reply:
    def reply(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.set_rcode(dns.rcode.SERVFAIL)
        if ede is not None:
            r.use_edns(0, options=[dns.edns.EDEOption(ede, "validation failure <svc.h.zone. A>")])
        return r
    return reply


def answer(q: dns.message.Message) -> dns.message.Message:
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "127.0.0.1"))
    return r


@pytest.fixture
async def servers() -> AsyncIterator[Callable[[Reply], Any]]:
    transports: list[asyncio.BaseTransport] = []

    async def start(reply: Reply) -> tuple[Server, str]:
        s = Server(reply)
        tr, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: s, local_addr=("127.0.0.1", 0))
        transports.append(tr)
        return s, f"127.0.0.1:{tr.get_extra_info('sockname')[1]}"

    yield start
    for tr in transports:
        tr.close()


def resolver(*addrs: str) -> Resolver:
    return Resolver(parse_settings({"servers": list(addrs), "zones": ["h.zone"],
                                    "timeout": 0.5, "retries": 0}, 2.0))


@pytest.mark.parametrize("ede", [6, 7, 10])  # DNSSEC Bogus, Signature Expired, RRSIGs Missing
async def test_bogus_servfail_is_final(servers: Any, ede: int) -> None:
    bogus, a1 = await servers(servfail(ede))
    honest, a2 = await servers(answer)
    r = resolver(a1, a2)
    with pytest.raises(DnsError) as e:
        await r.query(dns.name.from_text("svc.h.zone"), dns.rdatatype.A)
    assert e.value.reason == "dnssec_bogus"
    assert f"DNSSEC validation failed at {a1}: SERVFAIL, EDE {ede}" in str(e.value)
    assert "validation failure <svc.h.zone. A>" in str(e.value)
    # the next server, which would hand out an unvalidated copy, is not asked
    assert (bogus.asked, honest.asked) == (1, 0)


async def test_plain_servfail_asks_the_next_server(servers: Any) -> None:
    broken, a1 = await servers(servfail(None))
    other, a2 = await servers(servfail(3))  # Stale Answer: not a DNSSEC code
    honest, a3 = await servers(answer)
    ans = await resolver(a1, a2, a3).query(dns.name.from_text("svc.h.zone"), dns.rdatatype.A)
    assert ans.rrset is not None and (broken.asked, other.asked, honest.asked) == (1, 1, 1)
    with pytest.raises(DnsError) as e:
        await resolver(a1, a2).query(dns.name.from_text("svc.h.zone"), dns.rdatatype.A)
    assert e.value.reason == "dns_unavailable"
    assert f"{a1}: answered SERVFAIL" in str(e.value)
