"""A hostile or broken DNS server: any answer gives a Destination, None or DnsError, in bounds.

The server is faked at :meth:`Resolver.exchange` (the wire itself is dnspython's); hypothesis
picks each response from a pool of odd records: CNAME loops and chains out of the zone, SRV to
nowhere, garbage TXT, TLSA of every shape, stray RRSIG/NSEC/NSEC3/SOA/DNSKEY/DS records, and
every rcode. With and without a trust anchor.
"""

from __future__ import annotations

import asyncio
import time

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
from hypothesis import event, given, settings
from hypothesis import strategies as st

from ugate_core import Destination
from ugate_dns import DnsDiscovery, DnsError, parse_settings
from ugate_dns.resolver import Resolver

Z = "h.zone."
POOL = [
    (f"svc.{Z}", "A", "127.0.0.1"),
    (f"svc.{Z}", "AAAA", "::1"),
    (f"svc.{Z}", "CNAME", f"svc.{Z}"),
    (f"svc.{Z}", "CNAME", f"other.{Z}"),
    (f"other.{Z}", "CNAME", f"svc.{Z}"),
    (f"other.{Z}", "CNAME", "outside.example."),
    (f"svc.{Z}", "TXT", '"ugate=1 proto=ssh id=MFRGGZDFMZTWQ2LK label.a=b"'),
    (f"svc.{Z}", "TXT", '"ugate=1 proto=ssh proto=tcp"'),
    (f"svc.{Z}", "TXT", '"ugate=1" "\\255\\000"'),
    (f"svc.{Z}", "TXT", '"ugate=7 anything"'),
    (f"_ugate._tcp.svc.{Z}", "SRV", "0 0 0 ."),
    (f"_ugate._tcp.svc.{Z}", "SRV", f"1 1 80 svc.{Z}"),
    (f"_ugate._tcp.svc.{Z}", "SRV", "5 9 65535 outside.example."),
    (f"_443._tcp.svc.{Z}", "TLSA", "3 1 1 " + "ab" * 32),
    (f"_443._tcp.svc.{Z}", "TLSA", "3 1 0 abcd"),
    (f"_443._tcp.svc.{Z}", "TLSA", "2 0 0 3082"),
    (f"_443._tcp.svc.{Z}", "TLSA", "255 255 255 00"),
    (f"svc.{Z}", "RRSIG", f"A 13 3 300 20300101000000 20200101000000 1 {Z} AAAA"),
    (f"svc.{Z}", "RRSIG", f"TLSA 13 5 300 20300101000000 20200101000000 1 svc.{Z} AAAA"),
    (f"_443._tcp.svc.{Z}", "RRSIG", f"TLSA 8 5 300 20300101000000 20200101000000 9 {Z} AAAA"),
    (Z, "SOA", f"ns.{Z} a.{Z} 1 2 3 4 5"),
    (Z, "SOA", f"ns.{Z} a.{Z} 1 2 3 4 4294967295"),
    (Z, "NSEC", f"svc.{Z} A RRSIG NSEC"),
    (f"svc.{Z}", "NSEC", f"{Z} TLSA"),
    (f"0p9mhaveqvm6t7vbl5lop2u3t2rp3tom.{Z}", "NSEC3",
     "1 0 0 - 0P9MHAVEQVM6T7VBL5LOP2U3T2RP3TOM A"),
    (f"zz.{Z}", "NSEC3", "1 0 600 ab CPNMUOJ1E8VQPFT1O5FOEJ73UDMDT1L6 A"),
    (Z, "DNSKEY", "257 3 13 " + "A" * 88),
    (Z, "DS", "1 13 2 " + "00" * 32),
    (Z, "RRSIG", f"DNSKEY 13 2 300 20300101000000 20200101000000 1 {Z} AAAA"),
]
RRSETS = [dns.rrset.from_text(o, 60, "IN", t, d) for o, t, d in POOL]
RCODES = [dns.rcode.NOERROR] * 12 + [dns.rcode.NXDOMAIN] * 2 + [dns.rcode.SERVFAIL,
                                                                 dns.rcode.REFUSED]

_response = st.tuples(
    st.sampled_from(RCODES),
    st.lists(st.integers(0, len(RRSETS) - 1), max_size=6).map(lambda x: [0, *x]),
    st.lists(st.integers(0, len(RRSETS) - 1), max_size=4),
)


class FakeServer(Resolver):
    def __init__(self, *a: object, answers: list[tuple[int, list[int], list[int]]],
                 **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.answers = answers
        self.n = 0

    async def exchange(
        self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> dns.message.Message:
        rcode, answer, authority = self.answers[self.n % len(self.answers)]
        self.n += 1
        if self.n > 200:
            raise AssertionError("unbounded number of queries")
        await asyncio.sleep(0)
        if rcode in (dns.rcode.SERVFAIL, dns.rcode.REFUSED):
            raise DnsError(f"no answer for {qname}: answered {dns.rcode.to_text(rcode)}")
        msg = dns.message.make_response(dns.message.make_query(qname, rdtype))
        msg.set_rcode(rcode)
        for i in dict.fromkeys(answer):
            msg.answer.append(RRSETS[i])
        for i in dict.fromkeys(authority):
            msg.authority.append(RRSETS[i])
        return dns.message.from_wire(msg.to_wire())  # as it comes off the wire


def _discovery(anchored: bool, answers: list[tuple[int, list[int], list[int]]]) -> DnsDiscovery:
    table: dict[str, object] = {"servers": ["127.0.0.1:1"], "zones": ["h.zone", "in-addr.arpa"]}
    if anchored:
        table["trust_anchor"] = ["h.zone. DS 1 13 2 " + "00" * 32]
    d = DnsDiscovery(parse_settings(table, 2.0))
    d.resolver = FakeServer(d.settings, answers=answers)
    return d


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.lists(_response, min_size=1, max_size=12))
def test_any_response_is_handled(
    anchored: bool, answers: list[tuple[int, list[int], list[int]]]
) -> None:
    async def main() -> None:
        d = _discovery(anchored, answers)
        t0 = time.monotonic()
        try:
            dest = await asyncio.wait_for(d.resolve("svc.h.zone", 443), 5)
        except DnsError as e:
            # a loop in the data is found, not waited out until the deadline
            assert time.monotonic() - t0 < 1.0, (str(e), time.monotonic() - t0)
            assert str(e).startswith("dns: svc.h.zone: ")
            event("DnsError")
            return
        event(f"anchored={anchored} destination={dest is not None}")
        assert dest is None or isinstance(dest, Destination)
        if dest is not None:
            assert dest.endpoints and dest.ttl >= 0
            if anchored:  # nothing validates against this anchor
                assert dest.identities == ()
        try:
            await asyncio.wait_for(d.ptr("127.0.0.1"), 5)
        except DnsError:
            pass

    asyncio.run(main())


class CrossServer(Resolver):
    """svc CNAME other, other CNAME svc, each answered without the other's record."""

    async def exchange(
        self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> dns.message.Message:
        await asyncio.sleep(0.01)
        msg = dns.message.make_response(dns.message.make_query(qname, rdtype))
        other = "other." + Z if qname.labels[0] == b"svc" else "svc." + Z
        if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) and qname.labels[0] in (b"svc",
                                                                                 b"other"):
            msg.answer.append(dns.rrset.from_text(qname, 60, "IN", "CNAME", other))
        else:
            msg.set_rcode(dns.rcode.NXDOMAIN)
        return dns.message.from_wire(msg.to_wire())


async def test_cname_cycle_across_concurrent_lookups_ends() -> None:
    d = DnsDiscovery(parse_settings(
        {"servers": ["127.0.0.1:1"], "zones": ["h.zone"], "timeout": 0.1, "deadline": 0.4}
    ))
    d.resolver = CrossServer(d.settings)
    t0 = time.monotonic()
    got = await asyncio.gather(d.resolve("svc.h.zone", 80), d.resolve("other.h.zone", 80),
                               return_exceptions=True)
    assert all(isinstance(g, DnsError) for g in got), got
    assert time.monotonic() - t0 < 1.0
    await asyncio.sleep(0.5)  # each fetch is bounded by the deadline itself
    assert not d.resolver.cache._inflight
