"""Queries to the configured servers: UDP with TCP fallback, retries, cache, DNSSEC chain.

:meth:`Resolver.query` is the one entry point: ``(name, type) -> Answer``. An answer carries
its security status:

* ``secure``: every RRset (or the proof of non-existence) validates up to a trust anchor;
* ``insecure``: no trust anchor covers the name (nothing to validate against);
* ``bogus``: a trust anchor covers the name but validation failed (``why`` says how).

Answers are cached by (name, type) for their TTL, clamped to the configured bounds; negative
answers (NXDOMAIN, no data) for ``min(SOA TTL, SOA minimum)`` (RFC 2308 §5). Identical
queries in flight are sent once. Server failures raise :class:`DnsError` and are not cached;
neither are bogus answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.asyncquery
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DS
import dns.rdtypes.ANY.NSEC
import dns.rdtypes.ANY.NSEC3
import dns.rdtypes.ANY.SOA
import dns.rrset
from dns.rdatatype import RdataType

from ugate_core import DiscoveryError

from . import dnssec
from .cache import TtlCache
from .settings import Anchor, DnsSettings

log = logging.getLogger("ugate.dns")

IN = dns.rdataclass.IN
T = dns.rdatatype
SECURE, INSECURE, BOGUS = "secure", "insecure", "bogus"
_RANK = {SECURE: 0, INSECURE: 1, BOGUS: 2}
MAX_CNAME = 8
Key = tuple[dns.name.Name, RdataType]
#: the lookups a lookup is part of
Via = frozenset[Key]


#: reasons of a :class:`DnsError` (core's ``DialError.reason``)
BOGUS_REASON, UNAVAILABLE_REASON = "dnssec_bogus", "dns_unavailable"

#: Extended DNS Error codes (RFC 8914) with which a validating resolver says the data failed
#: DNSSEC validation (5 indeterminate .. 12 NSEC missing); SERVFAIL with one of them is bogus
BOGUS_EDE = frozenset(range(5, 13))


class DnsError(DiscoveryError):
    """DNS cannot answer safely, so the name must not be dialed (core ends the lookup).

    ``reason`` is ``dns_unavailable`` (no usable answer from any configured server: timeouts,
    SERVFAIL, REFUSED, a loop in the data) or ``dnssec_bogus`` (the answer failed DNSSEC
    validation: ours under a trust anchor, or a validating resolver's SERVFAIL with an
    Extended DNS Error code 5-12).
    """

    def __init__(self, message: str, reason: str = UNAVAILABLE_REASON) -> None:
        super().__init__(reason, message)


@dataclass(frozen=True)
class Answer:
    """The result of one (name, type) lookup."""

    qname: dns.name.Name
    rdtype: RdataType
    #: the data (after following CNAMEs); ``None`` for NXDOMAIN or no data
    rrset: dns.rrset.RRset | None
    nxdomain: bool
    #: seconds it may be cached (before clamping)
    ttl: float
    security: str
    why: str = ""

    @property
    def label(self) -> str:
        return f"{self.qname.to_text(omit_final_dot=True)} {dns.rdatatype.to_text(self.rdtype)}"


def worst(*states: str) -> str:
    return max(states, key=lambda s: _RANK[s])


@dataclass
class QueryStats:
    sent: int = 0
    timeouts: int = 0
    errors: int = 0


def _bogus_ede(resp: dns.message.Message) -> str | None:
    """The DNSSEC Extended DNS Error of a SERVFAIL (``EDE 6 DNSSEC Bogus: ...``), or None."""
    for opt in resp.options:
        if isinstance(opt, dns.edns.EDEOption) and int(opt.code) in BOGUS_EDE:
            code = dns.edns.EDECode.make(opt.code)
            name = code.name.replace("_", " ").title().replace("Dnssec", "DNSSEC")
            return f"EDE {int(opt.code)} {name}" + (f": {opt.text}" if opt.text else "")
    return None


class Resolver:
    def __init__(
        self,
        settings: DnsSettings,
        clock: Callable[[], float] = time.monotonic,
        on_query: Callable[[str, str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.cache: TtlCache[tuple[dns.name.Name, RdataType], Answer] = TtlCache(
            settings.cache_min_ttl, settings.cache_max_ttl, settings.cache_size, clock
        )
        self.stats = QueryStats()
        #: called with (type, result) for every query sent to a server (metrics)
        self.on_query = on_query or (lambda t, r: None)

    async def query(
        self, qname: dns.name.Name, rdtype: RdataType, via: Via = frozenset()
    ) -> Answer:
        """The (cached) answer for ``qname``/``rdtype``; DnsError if no server answers.

        ``via`` holds the lookups this one is part of (CNAME targets, DNSSEC keys): asking for
        one of them again is a loop in the data, an error rather than a wait on itself.
        """
        key: Key = (qname, rdtype)  # Name equality and hash ignore case
        if key in via:
            raise DnsError(f"loop in the data: {qname} {dns.rdatatype.to_text(rdtype)} "
                           "depends on itself (CNAME or DNSSEC chain)")
        if len(via) > 4 * MAX_CNAME:
            raise DnsError(f"{qname} {dns.rdatatype.to_text(rdtype)}: chain longer than "
                           f"{4 * MAX_CNAME} lookups")

        async def fetch() -> tuple[Answer, float | None]:
            # bounded on its own: waiters may give up, and a cycle through another caller's
            # lookup must not leave this one in flight forever
            try:
                async with asyncio.timeout(self.settings.deadline):
                    a = await self._fetch(qname, rdtype, via | {key})
            except TimeoutError:
                raise DnsError(f"no complete answer for {qname} "
                               f"{dns.rdatatype.to_text(rdtype)} within "
                               f"{self.settings.deadline:g}s") from None
            # a bogus answer is a failure, not data: asked again next time, so a repaired
            # zone (or a forger gone) is seen at once and a forgery is not kept for its TTL
            return a, (None if a.security == BOGUS else a.ttl)

        return await self.cache.get_or_fetch(key, fetch)

    async def query_many(
        self, questions: Sequence[tuple[dns.name.Name, RdataType]]
    ) -> list[Answer]:
        """Several lookups at once; cached ones without a task (the hot path)."""
        out: list[Answer | None] = [self.cache.get(q) for q in questions]
        missing = [i for i, a in enumerate(out) if a is None]
        self.cache.stats.hits += len(questions) - len(missing)
        if missing:
            got = await asyncio.gather(*(self.query(*questions[i]) for i in missing))
            for i, a in zip(missing, got, strict=True):
                out[i] = a
        return [a for a in out if a is not None]

    # ------------------------------------------------------------------------- the wire
    async def exchange(self, qname: dns.name.Name, rdtype: RdataType) -> dns.message.Message:
        """One question to the servers in order, ``retries`` extra rounds; UDP then TCP on TC."""
        s = self.settings
        if not s.servers:
            raise DnsError("no servers configured (dns.servers, or nameserver lines in "
                           "/etc/resolv.conf)")
        q = dns.message.make_query(qname, rdtype, want_dnssec=bool(s.anchors),
                                   use_edns=0, payload=1232)
        tname = dns.rdatatype.to_text(rdtype)
        what = f"{qname.to_text(omit_final_dot=True)} {tname}"
        errors: list[str] = []
        for _ in range(s.retries + 1):
            for host, port in s.servers:
                where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
                self.stats.sent += 1
                try:
                    resp, _tcp = await dns.asyncquery.udp_with_fallback(
                        q, host, timeout=s.timeout, port=port
                    )
                except dns.exception.Timeout:
                    self.stats.timeouts += 1
                    self.on_query(tname, "timeout")
                    errors.append(f"{where}: no answer within {s.timeout:g}s")
                    continue
                except (OSError, dns.exception.DNSException, EOFError) as e:
                    self.stats.errors += 1
                    self.on_query(tname, "error")
                    errors.append(f"{where}: {getattr(e, 'strerror', None) or e!r}")
                    continue
                rcode = resp.rcode()
                if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                    self.on_query(tname, dns.rcode.to_text(rcode).lower())
                    return resp
                self.on_query(tname, "servfail" if rcode == dns.rcode.SERVFAIL else "error")
                bogus = _bogus_ede(resp) if rcode == dns.rcode.SERVFAIL else None
                if bogus is not None:
                    # a validating resolver proved the data forged: asking the next server
                    # for a copy it did not validate would route around that
                    raise DnsError(f"{what}: DNSSEC validation failed at {where}: SERVFAIL, "
                                   f"{bogus}", BOGUS_REASON)
                errors.append(f"{where}: answered {dns.rcode.to_text(rcode)}")
                log.debug("dns_query_failed server=%s name=%s error=%s", where, what, errors[-1])
        uniq = list(dict.fromkeys(errors))
        raise DnsError(f"no answer for {what}: {'; '.join(uniq)}")

    # ------------------------------------------------------------------------- one lookup
    async def _fetch(self, qname: dns.name.Name, rdtype: RdataType, via: Via) -> Answer:
        msg = await self.exchange(qname, rdtype)
        chain: list[dns.rrset.RRset] = []
        name = qname
        final: dns.rrset.RRset | None = None
        for _ in range(MAX_CNAME):
            final = msg.get_rrset(msg.answer, name, IN, rdtype)
            if final is not None or rdtype == T.CNAME:
                break
            cn = msg.get_rrset(msg.answer, name, IN, T.CNAME)
            if cn is None:
                break
            chain.append(cn)
            name = cn[0].target
        nxdomain = msg.rcode() == dns.rcode.NXDOMAIN
        anchor = self.settings.anchor_for(qname)
        now = time.time()
        ttl = min([float(r.ttl) for r in [*chain, *([final] if final else [])]] or [3600.0])
        security, why = INSECURE, ""
        if anchor is not None:
            why = await self._validate(msg, qname, rdtype, chain, final, name, nxdomain, via)
            security = BOGUS if why else SECURE
            if chain and self.settings.anchor_for(name) is None:
                security = worst(security, INSECURE)
            for r in chain + ([final] if final else []):
                ttl = min(ttl, dnssec.sig_ttl(dnssec.rrsigs_for(msg, msg.answer, r), now))
        if final is None and not nxdomain and chain:
            # the CNAME leaves this server's data: ask for the target itself
            sub = await self.query(name, rdtype, via)
            return Answer(qname, rdtype, sub.rrset, sub.nxdomain, min(ttl, sub.ttl),
                          worst(security, sub.security), why or sub.why)
        if final is None:
            ttl = self._negative_ttl(msg)
        return Answer(qname, rdtype, final, nxdomain and not chain, ttl, security, why)

    @staticmethod
    def _negative_ttl(msg: dns.message.Message) -> float:
        for rr in msg.authority:
            if rr.rdtype == T.SOA:
                soa = rr[0]
                assert isinstance(soa, dns.rdtypes.ANY.SOA.SOA)
                return float(min(rr.ttl, soa.minimum))
        return 0.0  # RFC 2308 §5: no SOA, do not cache

    # ------------------------------------------------------------------------- DNSSEC
    async def _validate(
        self, msg: dns.message.Message, qname: dns.name.Name, rdtype: RdataType,
        chain: list[dns.rrset.RRset], final: dns.rrset.RRset | None, last: dns.name.Name,
        nxdomain: bool, via: Via,
    ) -> str:
        """Empty string if the answer validates to the anchor, else why not."""
        for rr in [*chain, *([final] if final else [])]:
            why = await self._check_rrset(msg, msg.answer, rr, via)
            if why:
                return why
        if final is not None or (chain and not nxdomain):
            return ""  # data, or a CNAME whose target is asked for (and validated) itself
        if self.settings.anchor_for(last) is None:
            return ""  # a CNAME out of the anchored tree: the rest is insecure
        # a denial: the SOA and NSEC/NSEC3 records must be signed, and must prove it
        nsecs: list[tuple[dns.name.Name, dns.rdtypes.ANY.NSEC.NSEC]] = []
        nsec3s: list[tuple[dns.name.Name, dns.rdtypes.ANY.NSEC3.NSEC3]] = []
        soa_seen = False
        for rr in msg.authority:
            if rr.rdtype == T.RRSIG:
                continue
            if rr.rdtype in (T.SOA, T.NSEC, T.NSEC3):
                why = await self._check_rrset(msg, msg.authority, rr, via)
                if why:
                    return why
            if rr.rdtype == T.SOA:
                soa_seen = True
            for rd in rr:
                if isinstance(rd, dns.rdtypes.ANY.NSEC3.NSEC3):
                    nsec3s.append((rr.name, rd))
                elif isinstance(rd, dns.rdtypes.ANY.NSEC.NSEC):
                    nsecs.append((rr.name, rd))
        if not soa_seen:
            return f"denial for {last} has no SOA"
        if nsecs:
            return dnssec.nsec_denial(last, rdtype, nxdomain, nsecs) or ""
        if nsec3s:
            return dnssec.nsec3_denial(last, rdtype, nxdomain, nsec3s) or ""
        return f"denial for {last} {dns.rdatatype.to_text(rdtype)} has no NSEC/NSEC3 (unsigned)"

    async def _check_rrset(
        self, msg: dns.message.Message, section: list[dns.rrset.RRset], rr: dns.rrset.RRset,
        via: Via,
    ) -> str:
        sigs = dnssec.rrsigs_for(msg, section, rr)
        if sigs is None:
            return f"{rr.name} {dns.rdatatype.to_text(rr.rdtype)} has no RRSIG (unsigned)"
        anchor = self.settings.anchor_for(rr.name)
        if anchor is None:
            return ""  # a CNAME into a name no anchor covers: that part is insecure
        reasons: list[str] = []
        for signer in dnssec.signers(sigs):
            if not rr.name.is_subdomain(signer) or not signer.is_subdomain(anchor.zone):
                reasons.append(f"signer {signer} is not between {anchor.zone} and {rr.name}")
                continue
            if rr.rdtype == T.DNSKEY and rr.name == signer:
                keys = self._self_keys(rr, anchor) if signer == anchor.zone else \
                    await self._ds_keys(rr, via)
                if isinstance(keys, str):
                    reasons.append(keys)
                    continue
            else:
                if rr.rdtype == T.DS and rr.name == signer:
                    reasons.append(f"DS for {rr.name} signed by the zone itself")
                    continue
                ka = await self.query(signer, T.DNSKEY, via)
                if ka.security != SECURE or ka.rrset is None:
                    reasons.append(f"DNSKEY of {signer} not trusted: {ka.why or 'none'}")
                    continue
                keys = ka.rrset
            why = dnssec.verify(rr, sigs, signer, keys)
            if why is None:
                return ""
            reasons.append(why)
        return "; ".join(reasons) or "no usable RRSIG"

    @staticmethod
    def _self_keys(dnskeys: dns.rrset.RRset, anchor: Anchor) -> dns.rrset.RRset | str:
        keys = dnssec.anchor_keys(anchor, dnskeys)
        if keys is None:
            return f"no DNSKEY of {anchor.zone} matches the configured trust anchor"
        return keys

    async def _ds_keys(self, dnskeys: dns.rrset.RRset, via: Via) -> dns.rrset.RRset | str:
        zone = dnskeys.name
        ds = await self.query(zone, T.DS, via)
        if ds.security != SECURE or ds.rrset is None:
            return f"DS of {zone} not trusted: {ds.why or 'no DS (insecure delegation)'}"
        rds = [d for d in ds.rrset if isinstance(d, dns.rdtypes.ANY.DS.DS)]
        keys = dnssec.vouched_keys(zone, dnskeys, rds)
        if keys is None:
            return f"no DNSKEY of {zone} matches its DS"
        return keys
