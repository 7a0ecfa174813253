"""DNSSEC against zones Knot signs itself: validated identities, and forged answers refused."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from ugate_core import Endpoint, ExpectedIdentity
from ugate_core.testing import StartGateway
from ugate_dns import DnsDiscovery, DnsError

StartKnot = Callable[..., Awaitable[Any]]
T = dns.rdatatype

SPKI = hashlib.sha256(b"the backend's SubjectPublicKeyInfo").hexdigest()
ZONE = f"""\
$ORIGIN test.zone.
$TTL 300
@ SOA ns.test.zone. admin.test.zone. 1 3600 600 86400 60
@ NS ns
ns A 127.0.0.1
svc A 127.0.0.1
svc TXT "ugate=1 proto=tcp id=MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43UOV3HO6DZPI label.app=x"
_443._tcp.svc TLSA 3 1 1 {SPKI}
"""


def toml(server: str, anchors: list[str]) -> str:
    lines = ", ".join(f'"{a}"' for a in anchors)
    return f"""
[admin]
listen = ""
[dns]
servers = ["{server}"]
zones = ["test.zone"]
timeout = 0.3
trust_anchor = [{lines}]
"""


async def test_signed_zone_validates_with_ds_anchor(
    start_knot: StartKnot, start_gateway: StartGateway
) -> None:
    knot = await start_knot({"test.zone": ZONE}, signed={"test.zone": "nsec"})
    ds = await knot.keymgr("test.zone", "ds")  # "test.zone. DS 28579 13 2 873d..."
    assert ds and all(" DS " in line for line in ds)
    gw = await start_gateway(toml(knot.address, ds))
    dest, _ = await gw.resolve("svc.test.zone:443")
    assert dest.labels["dns.dnssec"] == "secure"
    assert dest.endpoints == (Endpoint("127.0.0.1"),)
    assert set(dest.identities) == {
        ExpectedIdentity("spki_sha256", SPKI),
        ExpectedIdentity("id", "MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43UOV3HO6DZPI"),
    }
    r = DnsDiscovery.for_gateway(gw).resolver
    # the negative answers (no AAAA, no SRV) were proven by signed NSEC records
    aaaa = await r.query(dns.name.from_text("svc.test.zone"), T.AAAA)
    assert (aaaa.rrset, aaaa.security) == (None, "secure")
    nx = await r.query(dns.name.from_text("nothing.test.zone"), T.TLSA)
    assert (nx.nxdomain, nx.security) == (True, "secure")


async def test_nsec3_zone_and_dnskey_anchor(
    start_knot: StartKnot, start_gateway: StartGateway
) -> None:
    knot = await start_knot({"test.zone": ZONE}, signed={"test.zone": "nsec3"})
    keys = await knot.keymgr("test.zone", "dnskey")  # the KSK as a DNSKEY line
    gw = await start_gateway(toml(knot.address, keys))
    dest, _ = await gw.resolve("svc.test.zone:443")
    assert dest.labels["dns.dnssec"] == "secure"
    assert ExpectedIdentity("spki_sha256", SPKI) in dest.identities
    r = DnsDiscovery.for_gateway(gw).resolver
    nodata = await r.query(dns.name.from_text("svc.test.zone"), T.SRV)
    assert (nodata.rrset, nodata.nxdomain, nodata.security) == (None, False, "secure")
    nx = await r.query(dns.name.from_text("a.b.nothing.test.zone"), T.A)
    assert (nx.nxdomain, nx.security, nx.why) == (True, "secure", "")


async def test_tampered_tlsa_ends_the_lookup(
    start_knot: StartKnot, start_gateway: StartGateway, tamper: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    knot = await start_knot({"test.zone": ZONE}, signed={"test.zone": "nsec"})
    ds = await knot.keymgr("test.zone", "ds")
    proxy, addr = await tamper(knot.address)
    caplog.set_level(logging.INFO, "ugate.dns")
    gw = await start_gateway(toml(addr, ds))
    # the forged TLSA (ab ab ...) is neither an identity nor dropped (which would leave the
    # dial without the check): the lookup ends, although the A and TXT validated
    with pytest.raises(DnsError) as e:
        await gw.resolve("svc.test.zone:443")
    assert proxy.tampered >= 1
    assert e.value.reason == "dnssec_bogus"
    assert "_443._tcp.svc.test.zone TLSA" in str(e.value)
    assert "dns_untrusted name=_443._tcp.svc.test.zone type=TLSA" in caplog.text
    assert "signature by test.zone." in caplog.text
    assert gw.metrics.registry.get_sample_value("ugate_dns_untrusted_total",
                                                {"type": "TLSA"}) == 1


async def test_unsigned_answers_are_not_trusted(
    start_knot: StartKnot, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    signed = await start_knot({"test.zone": ZONE}, signed={"test.zone": "nsec"})
    ds = await signed.keymgr("test.zone", "ds")
    unsigned = await start_knot({"test.zone": ZONE})
    caplog.set_level(logging.INFO, "ugate.dns")
    gw = await start_gateway(toml(unsigned.address, ds))
    d = DnsDiscovery.for_gateway(gw)
    tlsa = await d.resolver.query(dns.name.from_text("_443._tcp.svc.test.zone"), T.TLSA)
    assert tlsa.rrset is not None and tlsa.security == "bogus"
    assert "has no RRSIG (unsigned)" in tlsa.why
    # nothing from an unsigned copy of an anchored zone is used, not even the address, and
    # the name is not handed on as unknown (which could dial it through the system resolver)
    with pytest.raises(DnsError) as e:
        await d.resolve("svc.test.zone", 443)
    assert e.value.reason == "dnssec_bogus"
    assert "has no RRSIG (unsigned)" in str(e.value)
    assert "dns_untrusted name=svc.test.zone type=A" in caplog.text


async def test_zone_signed_with_other_keys_is_not_trusted(
    start_knot: StartKnot, start_gateway: StartGateway
) -> None:
    real = await start_knot({"test.zone": ZONE}, signed={"test.zone": "nsec"})
    ds = await real.keymgr("test.zone", "ds")
    impostor = await start_knot({"test.zone": ZONE}, signed={"test.zone": "nsec"})
    gw = await start_gateway(toml(impostor.address, ds))
    d = DnsDiscovery.for_gateway(gw)
    tlsa = await d.resolver.query(dns.name.from_text("_443._tcp.svc.test.zone"), T.TLSA)
    assert tlsa.security == "bogus"
    assert "no DNSKEY of test.zone. matches the configured trust anchor" in tlsa.why
    with pytest.raises(DnsError, match="matches the configured trust anchor") as e:
        await d.resolve("svc.test.zone", 443)
    assert e.value.reason == "dnssec_bogus"
