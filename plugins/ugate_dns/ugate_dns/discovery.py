"""The ``dns`` discovery: a name → endpoints, protocol, identities and labels from DNS.

For ``resolve("svc.example", 443)`` it asks, all at once:

* ``svc.example`` A and AAAA: the endpoints (requested port kept);
* ``_ugate._tcp.svc.example`` SRV: if present, the endpoints instead (target addresses and the
  SRV port, by priority then weight);
* ``svc.example`` TXT: ugate metadata (:mod:`ugate_dns.txt`): protocol, mesh ID, labels;
* ``_443._tcp.svc.example`` TLSA: DANE identities (:mod:`ugate_dns.dane`).

With a trust anchor covering the name, every answer must validate (DNSSEC); one that does not
ends the lookup with :class:`DnsError` ``dnssec_bogus`` (logged as ``dns_untrusted``), as
servers that do not answer end it with ``dns_unavailable``: core then dials nothing, so a
forged or suppressed answer never becomes an endpoint, a protocol or a missing identity. A
validated TLSA record for the port means the service speaks TLS: ``proto=tcp`` becomes
``tls``, so the DANE identities are checked. :meth:`DnsDiscovery.ptr` maps an address back
to a name for IP-only traffic.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import dns.name
import dns.rdatatype
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.TLSA
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.reversename
from prometheus_client import Counter

from ugate_core import Destination, Endpoint, ExpectedIdentity, StashKey

from .cache import TtlCache
from .dane import tlsa_identities
from .resolver import (
    BOGUS,
    BOGUS_REASON,
    SECURE,
    Answer,
    DnsError,
    Resolver,
    worst,
)
from .settings import DnsSettings, names_for, parse_settings
from .txt import TxtError, UgateTxt, select_txt

if TYPE_CHECKING:
    from ugate_core import GatewayAPI

log = logging.getLogger("ugate.dns")
T = dns.rdatatype

#: owner label pair of the SRV record that names a destination's endpoints
SRV_PREFIX = (b"_ugate", b"_tcp")

_DISCOVERY = StashKey["DnsDiscovery"]("dns")


#: DnsError.reason → the words the client reads before the details
_WHAT = {
    BOGUS_REASON: "answer is DNSSEC-bogus (dnssec_bogus)",
    "dns_unavailable": "DNS unavailable (dns_unavailable)",
}


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


class DnsDiscovery:
    """A :class:`ugate_core.Discovery` backed by DNS servers (see the module docs)."""

    name = "dns"

    def __init__(self, settings: DnsSettings, metrics: object | None = None) -> None:
        self.settings = settings
        self._queries: Counter | None = None
        self._untrusted: Counter | None = None
        if metrics is not None:
            self._queries = Counter(
                "ugate_dns_queries", "DNS queries sent to servers, by type and result",
                ["type", "result"], registry=getattr(metrics, "registry", None),
            )
            self._untrusted = Counter(
                "ugate_dns_untrusted", "Answers dropped because DNSSEC validation failed",
                ["type"], registry=getattr(metrics, "registry", None),
            )
        self.resolver = Resolver(settings, on_query=self._count)
        #: assembled answers by (name, port), for the shortest TTL of their parts
        self._dests: TtlCache[tuple[str, int], tuple[Destination | None]] = TtlCache(
            settings.cache_min_ttl, settings.cache_max_ttl, settings.cache_size
        )

    @classmethod
    def for_gateway(cls, gateway: GatewayAPI) -> DnsDiscovery:
        """The gateway's one dns discovery, built from its ``[dns]`` table."""
        d = gateway.stash.get(_DISCOVERY, None)
        if d is None:
            cfg = gateway.config
            d = cls(parse_settings(cfg.section("dns"), cfg.discovery.timeout), gateway.metrics)
            gateway.stash[_DISCOVERY] = d
        return d

    def _count(self, rdtype: str, result: str) -> None:
        if self._queries is not None:
            self._queries.labels(rdtype, result).inc()

    # ------------------------------------------------------------------------- resolve
    async def resolve(self, fqdn: str, port: int) -> Destination | None:
        """The destination for ``fqdn`` from DNS, ``None`` if DNS does not know it.

        Names outside ``dns.zones`` get ``None`` at once, without a query. Raises
        :class:`DnsError` (a core ``DiscoveryError``, which ends the lookup) with reason
        ``dnssec_bogus`` when an answer fails DNSSEC validation and ``dns_unavailable`` when
        the servers give no usable answer within ``dns.deadline``; neither is cached.
        """
        hit = self._dests.get((fqdn, port))
        if hit is not None:
            return hit[0]
        names = names_for(self.settings, fqdn)
        if not names:
            return None
        try:
            async with asyncio.timeout(self.settings.deadline):
                ttl = float("inf")
                for name in names:
                    dest, t = await self._resolve(name, fqdn, port)
                    ttl = min(ttl, t)
                    if dest is not None:
                        break
                # every part is cached at least this long: keep the assembled answer as well
                self._dests.put((fqdn, port), (dest,), ttl)
                return dest
        except TimeoutError:
            servers = ", ".join(f"{h}:{p}" for h, p in self.settings.servers)
            raise DnsError(f"dns: {fqdn}: DNS unavailable (dns_unavailable): no complete answer"
                           f" within {self.settings.deadline:g}s (servers {servers})") from None
        except DnsError as e:
            raise DnsError(f"dns: {fqdn}: {_WHAT.get(e.reason, e.reason)}: {e}",
                           e.reason) from None
        except Exception as e:  # a name in dns.zones is ours: a bug must not route around us
            log.exception("dns_resolve_failed name=%s port=%d", fqdn, port)
            raise DnsError(f"dns: {fqdn}: DNS unavailable (dns_unavailable): {e!r}") from None

    def _trusted(self, ans: Answer) -> Answer:
        """The answer; DnsError ``dnssec_bogus`` if DNSSEC says it is forged (logged, counted).

        Dropping it instead would let a forger delete records: a TLSA (no identity check), a
        TXT (another protocol), the addresses (a fall back to the system resolver).
        """
        if ans.security != BOGUS:
            return ans
        log.warning("dns_untrusted name=%s type=%s reason=%r action=refused", _text(ans.qname),
                    T.to_text(ans.rdtype), ans.why)
        if self._untrusted is not None:
            self._untrusted.labels(T.to_text(ans.rdtype)).inc()
        raise DnsError(f"{ans.label}: {ans.why}", BOGUS_REASON)

    async def _addresses(self, name: dns.name.Name) -> tuple[list[str], list[Answer]]:
        a, aaaa = await self.resolver.query_many([(name, T.A), (name, T.AAAA)])
        return self._ips(a, aaaa)

    def _ips(self, a: Answer, aaaa: Answer) -> tuple[list[str], list[Answer]]:
        a, aaaa = self._trusted(a), self._trusted(aaaa)
        ips = [rd.address for ans in (a, aaaa) for rd in (ans.rrset or ())
               if isinstance(rd, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA)]
        return ips, [a, aaaa]

    async def _resolve(
        self, name: dns.name.Name, fqdn: str, port: int
    ) -> tuple[Destination | None, float]:
        """The destination (or None) and how long that answer holds."""
        srv_name = dns.name.Name(SRV_PREFIX + name.labels)
        tlsa_name = dns.name.Name((f"_{port}".encode(), b"_tcp", *name.labels))
        a, aaaa, txt, srv, tlsa = await self.resolver.query_many([
            (name, T.A), (name, T.AAAA), (name, T.TXT), (srv_name, T.SRV), (tlsa_name, T.TLSA)
        ])
        ips, addr_answers = self._ips(a, aaaa)
        txt, srv, tlsa = self._trusted(txt), self._trusted(srv), self._trusted(tlsa)
        answers = [*addr_answers, txt, srv, tlsa]
        endpoints: list[Endpoint] = [Endpoint(ip) for ip in ips]
        if srv.rrset is not None:
            recs = sorted((rd for rd in srv.rrset if isinstance(rd, dns.rdtypes.IN.SRV.SRV)),
                          key=lambda rd: (rd.priority, -rd.weight))
            if len(recs) == 1 and recs[0].target == dns.name.root:
                log.info("dns_no_service name=%s srv=%s reason='SRV target .'", fqdn,
                         _text(srv_name))
                return None, srv.ttl
            found = await asyncio.gather(*(self._addresses(rd.target) for rd in recs))
            endpoints = [Endpoint(ip, rd.port) for rd, (ips2, _) in zip(recs, found, strict=True)
                         for ip in ips2]
            for _, more in found:
                answers += more
        ttl = min(a.ttl for a in answers)
        if not endpoints:
            return None, ttl
        meta = self._metadata(fqdn, txt)
        identities, tls_required = self._identities(fqdn, tlsa, txt, meta)
        security = worst(SECURE, *(a.security for a in answers))
        labels = dict(meta.labels) if meta else {}
        labels["dns.dnssec"] = security
        protocol = meta.proto if meta and meta.proto else "tcp"
        if tls_required and protocol == "tcp":
            # RFC 6698/7671: a usable TLSA RRset for the port says the service speaks TLS;
            # plain TCP would skip the check the record asks for
            log.info("dns_tls_required name=%s tlsa=%s txt_proto=tcp protocol=tls", fqdn,
                     tlsa.label)
            protocol = "tls"
        return Destination(
            name=fqdn,
            endpoints=tuple(dict.fromkeys(endpoints)),
            protocol=protocol,
            identities=identities,
            labels=labels,
            ttl=ttl,
            source="dns",
        ), ttl

    def _metadata(self, fqdn: str, txt: Answer) -> UgateTxt | None:
        records: Sequence[Sequence[bytes]] = [
            rd.strings for rd in (txt.rrset or ()) if isinstance(rd, dns.rdtypes.ANY.TXT.TXT)
        ]
        try:
            return select_txt(records)
        except TxtError as e:
            log.warning("dns_txt_invalid name=%s error=%r action=ignored", fqdn, str(e))
            return None

    def _identities(
        self, fqdn: str, tlsa: Answer, txt: Answer, meta: UgateTxt | None
    ) -> tuple[tuple[ExpectedIdentity, ...], bool]:
        """TLSA and TXT ``id=`` identities, only from validated data when anchors exist, and
        whether a TLSA RRset was used (then the service must be dialed with TLS)."""
        anchored = bool(self.settings.anchors)
        out: list[ExpectedIdentity] = []
        tls_required = False
        if tlsa.rrset is not None:
            if anchored and tlsa.security != SECURE:
                log.warning("dns_tlsa_unvalidated name=%s tlsa=%s security=%s reason=%r "
                            "action=not_used_for_identity", fqdn, tlsa.label, tlsa.security,
                            tlsa.why or "no trust anchor covers the name")
            else:
                ids, skipped = tlsa_identities(
                    rd for rd in tlsa.rrset if isinstance(rd, dns.rdtypes.ANY.TLSA.TLSA)
                )
                for why in skipped:
                    log.info("dns_tlsa_skipped name=%s reason=%r", fqdn, why)
                out += ids
                tls_required = True
        if meta is not None and meta.id:
            if anchored and txt.security != SECURE:
                log.warning("dns_txt_id_unvalidated name=%s security=%s "
                            "action=not_used_for_identity", fqdn, txt.security)
            else:
                out.append(ExpectedIdentity("id", meta.id))
        return tuple(out), tls_required

    # ------------------------------------------------------------------------- PTR
    async def ptr(self, address: str) -> str | None:
        """The FQDN for an IP address (PTR), for traffic that arrives with no name.

        Only names inside ``dns.zones`` are returned; the reverse zone (``in-addr.arpa`` /
        ``ip6.arpa`` suffix) must be listed there too. With ``dns.ptr_confirm`` (default) the
        name's own A/AAAA must contain the address (forward-confirmed reverse DNS), so whoever
        controls a reverse zone cannot claim any name. ``None`` if nothing matches.
        """
        try:
            ip = ipaddress.ip_address(address.strip("[]"))
        except ValueError:
            raise DnsError(f"dns: ptr: {address!r} is not an IP address", "bad_address") from None
        rev = dns.reversename.from_address(str(ip))
        if not self.settings.in_zones(rev):
            return None
        try:
            async with asyncio.timeout(self.settings.deadline):
                ans = self._trusted(await self.resolver.query(rev, T.PTR))
                for rd in ans.rrset or ():
                    if not isinstance(rd, dns.rdtypes.ANY.PTR.PTR):
                        continue
                    target = rd.target
                    if not self.settings.in_zones(target):
                        log.info("dns_ptr_ignored address=%s name=%s reason='outside zones'",
                                 ip, _text(target))
                        continue
                    if self.settings.ptr_confirm:
                        ips, _ = await self._addresses(target)
                        if not any(ipaddress.ip_address(x) == ip for x in ips):
                            log.info("dns_ptr_ignored address=%s name=%s reason='A/AAAA of "
                                     "the name does not contain the address'", ip,
                                     _text(target))
                            continue
                    return _text(target)
        except TimeoutError:
            raise DnsError(f"dns: ptr {ip}: DNS unavailable (dns_unavailable): no complete "
                           f"answer within {self.settings.deadline:g}s") from None
        except DnsError as e:
            raise DnsError(f"dns: ptr {ip}: {_WHAT.get(e.reason, e.reason)}: {e}",
                           e.reason) from None
        return None
