"""DNSSEC checks on one response, given keys already trusted (no I/O).

:mod:`ugate_dns.resolver` fetches DNSKEY and DS sets and walks the chain to a trust anchor;
this module answers the questions along the way: does this RRset carry a valid signature by
these keys, which of these DNSKEYs does the anchor (or the parent's DS) vouch for, and does
the authority section prove that a name or type does not exist (NSEC, NSEC3)?
Functions return ``None`` for "proven" and a short reason otherwise, for the log.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence

import dns.dnssec
import dns.exception
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.DS
import dns.rdtypes.ANY.NSEC
import dns.rdtypes.ANY.NSEC3
import dns.rdtypes.ANY.RRSIG
import dns.rrset
from dns.rdatatype import RdataType

from .settings import Anchor

IN = dns.rdataclass.IN
RRSIG = dns.rdatatype.RRSIG


def rrsigs_for(
    msg: dns.message.Message, section: list[dns.rrset.RRset], rrset: dns.rrset.RRset
) -> dns.rrset.RRset | None:
    """The RRSIG set covering ``rrset`` in ``section`` of ``msg``."""
    return msg.get_rrset(section, rrset.name, IN, RRSIG, rrset.rdtype)


def signers(rrsigs: dns.rrset.RRset | None) -> list[dns.name.Name]:
    """Distinct signer names of an RRSIG set, in order."""
    out: list[dns.name.Name] = []
    for sig in rrsigs or ():
        assert isinstance(sig, dns.rdtypes.ANY.RRSIG.RRSIG)
        if sig.signer not in out:
            out.append(sig.signer)
    return out


def verify(
    rrset: dns.rrset.RRset, rrsigs: dns.rrset.RRset | None, zone: dns.name.Name,
    keys: dns.rrset.RRset, now: float | None = None,
) -> str | None:
    """``None`` if one RRSIG by ``zone``'s ``keys`` validates ``rrset``, else why not."""
    if rrsigs is None:
        return f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} has no RRSIG (unsigned)"
    try:
        dns.dnssec.validate(rrset, rrsigs, {zone: keys}, now=now)
    except dns.exception.ValidationFailure as e:
        return f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} signature by {zone}: {e}"
    except dns.exception.DNSException as e:  # unsupported algorithm and the like
        return f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}: {e!r}"
    return None


def sig_ttl(rrsigs: dns.rrset.RRset | None, now: float) -> float:
    """How long the signatures stay good: min of original TTL and time to expiry."""
    best = float("inf")
    for sig in rrsigs or ():
        assert isinstance(sig, dns.rdtypes.ANY.RRSIG.RRSIG)
        best = min(best, float(sig.original_ttl), max(0.0, sig.expiration - now))
    return best


def vouched_keys(
    zone: dns.name.Name,
    dnskeys: dns.rrset.RRset,
    ds: Iterable[dns.rdtypes.ANY.DS.DS],
    anchor_keys: Iterable[dns.rdtypes.ANY.DNSKEY.DNSKEY] = (),
) -> dns.rrset.RRset | None:
    """The DNSKEYs of ``zone`` that a DS digest or an anchor key names (``None`` if none)."""
    ds = list(ds)
    anchor_keys = list(anchor_keys)
    found = []
    for key in dnskeys:
        assert isinstance(key, dns.rdtypes.ANY.DNSKEY.DNSKEY)
        if key in anchor_keys:
            found.append(key)
            continue
        for d in ds:
            try:
                if dns.dnssec.make_ds(zone, key, d.digest_type) == d:
                    found.append(key)
                    break
            except (dns.exception.DNSException, ValueError):
                continue
    if not found:
        return None
    return dns.rrset.from_rdata_list(zone, dnskeys.ttl, found)


def anchor_keys(anchor: Anchor, dnskeys: dns.rrset.RRset) -> dns.rrset.RRset | None:
    return vouched_keys(anchor.zone, dnskeys, anchor.ds, anchor.keys)


# ----------------------------------------------------------------------- denial of existence
def _nsec_types(rd: dns.rdtypes.ANY.NSEC.NSEC | dns.rdtypes.ANY.NSEC3.NSEC3) -> set[int]:
    out: set[int] = set()
    for window, bitmap in rd.windows:
        for i, byte in enumerate(bitmap):
            for bit in range(8):
                if byte & (0x80 >> bit):
                    out.add(window * 256 + i * 8 + bit)
    return out


def _covers(owner: dns.name.Name, nxt: dns.name.Name, name: dns.name.Name) -> bool:
    """NSEC ``owner``→``nxt`` covers ``name`` (canonical order; the last NSEC wraps)."""
    if owner < nxt:
        return bool(owner < name < nxt)
    return bool(name > owner or name < nxt)


def _common(a: dns.name.Name, b: dns.name.Name) -> dns.name.Name:
    _, _, n = a.fullcompare(b)
    return dns.name.Name(a.labels[len(a.labels) - n :])


def nsec_denial(
    qname: dns.name.Name, rdtype: RdataType, nxdomain: bool,
    nsecs: Sequence[tuple[dns.name.Name, dns.rdtypes.ANY.NSEC.NSEC]],
) -> str | None:
    """RFC 4035 §5.4 with NSEC: ``None`` if the (already validated) NSECs prove the answer."""
    if not nxdomain:
        for owner, rd in nsecs:
            if owner == qname:
                types = _nsec_types(rd)
                if rdtype in types or dns.rdatatype.CNAME in types:
                    return f"NSEC at {qname} lists the type: the denial is false"
                return None
            if _covers(owner, rd.next, qname) and rd.next.is_subdomain(qname):
                return None  # empty non-terminal
        return f"no NSEC proves {qname} has no {dns.rdatatype.to_text(rdtype)}"
    cover = next(((o, rd) for o, rd in nsecs if _covers(o, rd.next, qname)), None)
    if cover is None:
        return f"no NSEC covers {qname}"
    ce = max(_common(qname, cover[0]), _common(qname, cover[1].next), key=len)
    wild = dns.name.Name((b"*", *ce.labels))
    if not any(_covers(o, rd.next, wild) for o, rd in nsecs):
        return f"no NSEC proves that {wild} does not exist"
    return None


def _b32hex(label: bytes) -> bytes | None:
    try:
        return base64.b32hexdecode(label.upper() + b"=" * (-len(label) % 8))
    except ValueError:
        return None


def nsec3_denial(
    qname: dns.name.Name, rdtype: RdataType, nxdomain: bool,
    nsec3s: Sequence[tuple[dns.name.Name, dns.rdtypes.ANY.NSEC3.NSEC3]],
) -> str | None:
    """RFC 5155 §8 with NSEC3 (opt-out aside): ``None`` if the NSEC3s prove the answer."""
    if not nsec3s:
        return "no NSEC3"
    first = nsec3s[0][1]
    if first.iterations > 500:
        return f"NSEC3 iterations {first.iterations} > 500"
    entries: list[tuple[bytes, bytes, dns.rdtypes.ANY.NSEC3.NSEC3]] = []
    for owner, rd in nsec3s:
        h = _b32hex(owner.labels[0])
        if h is not None:
            entries.append((h, rd.next, rd))

    def hashed(n: dns.name.Name) -> bytes:
        s = dns.dnssec.nsec3_hash(n, first.salt, first.iterations, first.algorithm)
        return _b32hex(s.encode()) or b""

    def match(h: bytes) -> dns.rdtypes.ANY.NSEC3.NSEC3 | None:
        return next((rd for o, _, rd in entries if o == h), None)

    def covered(h: bytes) -> bool:
        return any((o < h < n) if o < n else (h > o or h < n) for o, n, _ in entries)

    if not nxdomain:
        hit = match(hashed(qname))
        if hit is None:
            return f"no NSEC3 matches {qname}"
        types = _nsec_types(hit)
        if rdtype in types or dns.rdatatype.CNAME in types:
            return f"NSEC3 at {qname} lists the type: the denial is false"
        return None
    name = qname
    while len(name) > 1:
        parent = name.parent()
        if match(hashed(parent)) is not None:
            if not covered(hashed(name)):
                return f"no NSEC3 covers the next closer name {name}"
            if not covered(hashed(dns.name.Name((b"*", *parent.labels)))):
                return f"no NSEC3 proves that *.{parent} does not exist"
            return None
        name = parent
    return f"no NSEC3 closest-encloser proof for {qname}"
