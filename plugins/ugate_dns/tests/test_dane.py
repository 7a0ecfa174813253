"""TLSA records → expected identities (RFC 6698 usages, selectors, matching types)."""

from __future__ import annotations

import dns.rdata
import dns.rdataclass
import dns.rdatatype

from ugate_core import ExpectedIdentity
from ugate_dns import tlsa_identities, tlsa_identity


def tlsa(text: str) -> dns.rdata.Rdata:
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, text)


def test_dane_ee_kinds() -> None:
    h32, h64 = "11" * 32, "22" * 64
    assert tlsa_identity(3, 1, 1, bytes.fromhex(h32)) == ExpectedIdentity("spki_sha256", h32)
    assert tlsa_identity(3, 1, 2, bytes.fromhex(h64)) == ExpectedIdentity("spki_sha512", h64)
    assert tlsa_identity(3, 1, 0, b"\x30\x01") == ExpectedIdentity("spki", "3001")
    assert tlsa_identity(3, 0, 1, bytes.fromhex(h32)) == ExpectedIdentity("cert_sha256", h32)
    assert tlsa_identity(3, 0, 2, bytes.fromhex(h64)) == ExpectedIdentity("cert_sha512", h64)
    assert tlsa_identity(3, 0, 0, b"\x30\x02") == ExpectedIdentity("cert", "3002")


def test_unusable_records_say_why() -> None:
    assert "needs 32" in str(tlsa_identity(3, 1, 1, b"short"))
    assert "full CA certificate" in str(tlsa_identity(2, 1, 1, b"\x00" * 32))
    assert "not a DER certificate" in str(tlsa_identity(2, 0, 0, b"junk"))
    assert "PKIX usages" in str(tlsa_identity(1, 1, 1, b"\x00" * 32))
    assert "unknown usage 9" in str(tlsa_identity(9, 1, 1, b"\x00" * 32))
    assert "not supported" in str(tlsa_identity(3, 2, 1, b"\x00" * 32))


def test_set_dedups_and_reports() -> None:
    recs = [tlsa("3 1 1 " + "aa" * 32), tlsa("3 1 1 " + "AA" * 32), tlsa("0 0 1 " + "bb" * 32)]
    ids, skipped = tlsa_identities(recs)  # type: ignore[arg-type]
    assert ids == (ExpectedIdentity("spki_sha256", "aa" * 32),)
    assert len(skipped) == 1 and "TLSA 0 0 1" in skipped[0]
