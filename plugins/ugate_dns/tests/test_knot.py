"""DNS discovery against a real Knot DNS server: records, cache, routing, CLI, failures."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ugate_core import ConfigError, DialError, Endpoint, ExpectedIdentity
from ugate_core.testing import (
    StartGateway,
    Upstream,
    free_port,
    metric,
    pattern,
    require_peer,
    run,
)
from ugate_dns import DnsDiscovery, DnsError, parse_settings

StartKnot = Callable[..., Awaitable[Any]]


def make_cert(cn: str, ca: bool = False) -> tuple[x509.Certificate, bytes]:
    """A self-signed P-256 certificate and the DER of its SubjectPublicKeyInfo."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return cert, spki


LEAF, LEAF_SPKI = make_cert("svc.test.zone")
CA, _ = make_cert("test CA", ca=True)
LEAF_DER = LEAF.public_bytes(serialization.Encoding.DER)
CA_DER = CA.public_bytes(serialization.Encoding.DER)
SPKI_SHA256 = hashlib.sha256(LEAF_SPKI).hexdigest()
CERT_SHA256 = hashlib.sha256(LEAF_DER).hexdigest()
SPKI_SHA512 = hashlib.sha512(LEAF_SPKI).hexdigest()


def zone(port: int = 9, extra: str = "") -> str:
    return f"""\
$ORIGIN test.zone.
$TTL 300
@ SOA ns.test.zone. admin.test.zone. 1 3600 600 86400 60
@ NS ns
ns A 127.0.0.1
svc 120 A 127.0.0.1
svc 300 AAAA ::1
svc TXT "v=spf1 -all"
svc TXT "ugate=1 proto=tcp label.app=echo" "label.team=a%20b"
_443._tcp.svc 200 TLSA 3 1 1 {SPKI_SHA256}
_443._tcp.svc 200 TLSA 3 0 1 {CERT_SHA256}
_443._tcp.svc 200 TLSA 3 1 2 {SPKI_SHA512}
_443._tcp.svc 200 TLSA 2 0 0 {CA_DER.hex()}
_443._tcp.svc 200 TLSA 2 1 1 {SPKI_SHA256}
_443._tcp.svc 200 TLSA 1 1 1 {SPKI_SHA256}
srv A 127.0.0.99
_ugate._tcp.srv SRV 20 0 {port + 1} backup.test.zone.
_ugate._tcp.srv SRV 10 5 {port} svc.test.zone.
backup A 127.0.0.2
odd A 127.0.0.1
odd TXT "ugate=1 proto=nosuch"
ttl1 1 A 127.0.0.1
nosrv A 127.0.0.1
_ugate._tcp.nosrv SRV 0 0 0 .
{extra}"""


REVERSE = """\
$ORIGIN 0.0.127.in-addr.arpa.
$TTL 300
@ SOA ns.test.zone. admin.test.zone. 1 3600 600 86400 60
@ NS ns.test.zone.
1 PTR svc.test.zone.
9 PTR evil.test.zone.
"""


def dns_toml(knot_addr: str, extra: str = "") -> str:
    return f"""
[admin]
listen = ""
[routing]
direct = false
[dns]
servers = ["{knot_addr}"]
zones = ["test.zone", "0.0.127.in-addr.arpa"]
timeout = 0.3
retries = 1
{extra}
"""


async def test_destination_from_knot_records(
    start_knot: StartKnot, start_gateway: StartGateway
) -> None:
    knot = await start_knot({"test.zone": zone()})
    gw = await start_gateway(dns_toml(knot.address))
    dest, port = await gw.resolve("svc.test.zone:443")
    assert port == 443
    assert dest.source == "dns"
    assert dest.endpoints == (Endpoint("127.0.0.1"), Endpoint("::1"))
    # the TXT says proto=tcp, but a TLSA for the port says the service speaks TLS
    assert dest.protocol == "tls"
    assert dict(dest.labels) == {"app": "echo", "team": "a b", "dns.dnssec": "insecure"}
    # the smallest TTL of the answers used: the negative SRV answer (SOA minimum 60)
    assert dest.ttl == 60
    assert set(dest.identities) == {
        ExpectedIdentity("spki_sha256", SPKI_SHA256),
        ExpectedIdentity("cert_sha256", CERT_SHA256),
        ExpectedIdentity("spki_sha512", SPKI_SHA512),
        ExpectedIdentity("ca", CA.public_bytes(serialization.Encoding.PEM).decode()),
    }  # 2 1 1 and 1 1 1 are skipped: they cannot be checked without a CA store
    assert metric(gw, "ugate_dns_queries_total", type="TLSA", result="noerror") == 1

    # another port has no TLSA: same endpoints, no identities
    other = await DnsDiscovery.for_gateway(gw).resolve("svc.test.zone", 8443)
    assert other is not None and other.identities == ()


async def test_truncated_udp_answer_is_retried_over_tcp(
    start_knot: StartKnot, start_gateway: StartGateway
) -> None:
    long = " ".join(f'"label.k{i}={"v" * 200}"' for i in range(10))  # ~2 KB of TXT
    knot = await start_knot({"test.zone": zone(extra=f"big A 127.0.0.1\nbig TXT \"ugate=1\" "
                                                     f"{long}\n")})
    gw = await start_gateway(dns_toml(knot.address))
    dest = await DnsDiscovery.for_gateway(gw).resolve("big.test.zone", 80)
    assert dest is not None and dest.labels["k9"] == "v" * 200
    stats = await knot.knotc("stats", "mod-stats.request-protocol")
    assert "request-protocol[tcp4]" in stats, stats  # the TXT came over TCP after TC=1


async def test_srv_gives_endpoints_by_priority(
    start_knot: StartKnot, start_gateway: StartGateway
) -> None:
    knot = await start_knot({"test.zone": zone(port=7000)})
    gw = await start_gateway(dns_toml(knot.address))
    dest, _ = await gw.resolve("srv.test.zone:80")
    # SRV replaces the name's own A (127.0.0.99); priority 10 before 20
    assert dest.endpoints == (
        Endpoint("127.0.0.1", 7000), Endpoint("::1", 7000), Endpoint("127.0.0.2", 7001)
    )
    d = DnsDiscovery.for_gateway(gw)
    assert await d.resolve("nosrv.test.zone", 80) is None  # SRV "." = no service
    assert await d.resolve("nothere.test.zone", 80) is None  # NXDOMAIN
    assert await d.resolve("svc.other.zone", 80) is None  # not in dns.zones: no query
    assert await d.resolve("svc", 80) is None  # single label, no search list


async def test_search_suffix_for_short_names(
    start_knot: StartKnot, start_gateway: StartGateway
) -> None:
    knot = await start_knot({"test.zone": zone()})
    gw = await start_gateway(dns_toml(knot.address, 'search = ["test.zone"]'))
    dest = await DnsDiscovery.for_gateway(gw).resolve("svc", 443)
    assert dest is not None and dest.name == "svc"
    assert dest.endpoints[0] == Endpoint("127.0.0.1")


async def test_tcp_listener_reaches_name_from_knot(
    start_knot: StartKnot, start_gateway: StartGateway, echo_server: tuple[str, int]
) -> None:
    knot = await start_knot({"test.zone": zone()})
    _, eport = echo_server
    gw = await start_gateway(dns_toml(knot.address) + f"""
[listeners.fwd]
listen = "127.0.0.1:0"
protocols = ["tcp"]
target = "svc.test.zone:{eport}"
""")
    r, w = await asyncio.open_connection("127.0.0.1", gw.port("fwd"))
    data = pattern(200_000, seed=3)
    w.write(data)
    w.write_eof()
    assert await asyncio.wait_for(r.read(-1), 10) == data
    w.close()
    assert metric(gw, "ugate_discovery_lookups_total", discovery="dns", result="hit") == 1


async def test_curl_through_socks5_reaches_name_from_knot(
    start_knot: StartKnot, start_gateway: StartGateway, http_upstream: Upstream
) -> None:
    curl = require_peer("curl")
    knot = await start_knot({"test.zone": zone()})
    try:
        gw = await start_gateway(dns_toml(knot.address) + """
[listeners.socks]
listen = "127.0.0.1:0"
protocols = ["socks5"]
""")
    except ConfigError as e:  # the socks plugin is another distribution
        pytest.skip(f"ugate-socks not installed: {e}")
    url = f"http://svc.test.zone:{http_upstream.port}/from-dns"
    res = await run(curl, "-sS", "--max-time", "10", "--socks5-hostname",
                    f"127.0.0.1:{gw.port('socks')}", url)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == b"hello /from-dns\n"
    # the HTTP Host header carried the name; DNS (not the system resolver) found the address
    assert http_upstream.requests[-1][2]["host"] == f"svc.test.zone:{http_upstream.port}"
    assert metric(gw, "ugate_discovery_lookups_total", discovery="dns", result="hit") == 1


async def test_cli_dial_uses_txt_protocol(
    start_knot: StartKnot, echo_server: tuple[str, int], tmp_path: os.PathLike[str]
) -> None:
    knot = await start_knot({"test.zone": zone()})
    _, eport = echo_server
    cfg = os.path.join(tmp_path, "ugate.toml")
    _write(cfg, dns_toml(knot.address))
    cli = [sys.executable, "-m", "ugate_core.cli", "--log-level", "warning", "dial", "-c", cfg,
           "--state-dir", os.path.join(tmp_path, "state")]
    # TXT says proto=tcp: the tcp dialer carries the bytes to the echo server
    res = await run_cli(*cli, f"svc.test.zone:{eport}", input=b"hello through dns\n")
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == b"hello through dns\n"
    # TXT says proto=nosuch: the CLI picks that dialer, and says it is missing
    res = await run_cli(*cli, f"odd.test.zone:{eport}", input=b"x")
    assert res.returncode == 1
    assert "protocol 'nosuch' has no installed dialer" in res.stderr.decode()


def _write(path: str, text: str) -> None:
    Path(path).write_text(text)


async def run_cli(*cmd: str, input: bytes) -> subprocess.CompletedProcess[bytes]:
    # the CLI as a user runs it: its own process, uvloop when installed
    p = await asyncio.create_subprocess_exec(
        *cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(p.communicate(input), 30)
    except TimeoutError:
        p.kill()
        await p.wait()
        raise AssertionError(f"{cmd} did not finish within 30s") from None
    return subprocess.CompletedProcess(list(cmd), p.returncode or 0, out, err)


async def test_short_ttl_is_requeried_after_expiry(
    start_knot: StartKnot, start_gateway: StartGateway
) -> None:
    knot = await start_knot({"test.zone": zone()})
    gw = await start_gateway(dns_toml(knot.address))
    d = DnsDiscovery.for_gateway(gw)
    first = await d.resolve("ttl1.test.zone", 80)
    assert first is not None and first.endpoints == (Endpoint("127.0.0.1"),)
    assert first.ttl == 1
    await knot.set_record("test.zone", "ttl1", 1, "A", "127.0.0.3")
    cached = await d.resolve("ttl1.test.zone", 80)
    assert cached is not None and cached.endpoints == (Endpoint("127.0.0.1"),)
    await asyncio.sleep(1.3)
    after = await d.resolve("ttl1.test.zone", 80)
    assert after is not None and after.endpoints == (Endpoint("127.0.0.3"),)
    # and through the gateway's router, which caches the Destination for its ttl too
    dest, _ = await gw.resolve("ttl1.test.zone:80")
    assert dest.endpoints == (Endpoint("127.0.0.3"),)


async def test_nxdomain_is_cached_and_queries_coalesce(
    start_knot: StartKnot, start_gateway: StartGateway
) -> None:
    knot = await start_knot({"test.zone": zone()})
    gw = await start_gateway(dns_toml(knot.address))
    d = DnsDiscovery.for_gateway(gw)
    q0 = await knot.queries()
    # ten callers at once: one query per record type reaches Knot
    got = await asyncio.gather(*(d.resolve("missing.test.zone", 443) for _ in range(10)))
    assert got == [None] * 10
    q1 = await knot.queries()
    assert q1 - q0 == 5  # A, AAAA, TXT, SRV, TLSA
    # negative answers are cached (SOA minimum 60 s): Knot sees nothing more
    assert await d.resolve("missing.test.zone", 443) is None
    assert await knot.queries() == q1
    assert d.resolver.cache.stats.coalesced >= 9 * 5


async def test_ptr_forward_confirmed(
    start_knot: StartKnot, start_gateway: StartGateway
) -> None:
    knot = await start_knot({"test.zone": zone(extra="evil A 127.0.0.10\n"),
                             "0.0.127.in-addr.arpa": REVERSE})
    gw = await start_gateway(dns_toml(knot.address))
    d = DnsDiscovery.for_gateway(gw)
    assert await d.ptr("127.0.0.1") == "svc.test.zone"
    # evil.test.zone's A is not 127.0.0.9: the PTR claim is not confirmed
    assert await d.ptr("127.0.0.9") is None
    assert await d.ptr("127.0.0.5") is None  # no PTR
    assert await d.ptr("10.0.0.1") is None  # reverse zone not in dns.zones
    with pytest.raises(DnsError, match="'nope' is not an IP address"):
        await d.ptr("nope")


async def test_stopped_server_fails_within_deadline(
    start_knot: StartKnot, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    knot = await start_knot({"test.zone": zone()})
    gw = await start_gateway(dns_toml(knot.address, "deadline = 1.0"))
    knot.stop()
    caplog.set_level(logging.INFO, "ugate")
    t0 = time.monotonic()
    with pytest.raises(DialError) as ei:
        await gw.dial("svc.test.zone:443")
    took = time.monotonic() - t0
    assert took < 1.5, took  # the dns deadline, below core's discovery.timeout (2 s)
    assert ei.value.reason == "dns_unavailable"  # not "no_route": DNS knows the name
    assert "DNS unavailable (dns_unavailable)" in str(ei.value)
    text = caplog.text
    assert "discovery_failed discovery=dns name=svc.test.zone port=443 reason=dns_unavailable" \
        in text
    assert f"127.0.0.1:{knot.port}" in text
    # the discovery's own error says which server failed and how
    d = DnsDiscovery.for_gateway(gw)
    with pytest.raises(DnsError) as de:
        await d.resolve("svc.test.zone", 443)
    msg = str(de.value)
    # e.g. "dns: svc.test.zone: DNS unavailable (dns_unavailable): no answer for svc.test.zone
    # A: 127.0.0.1:PORT: no answer within 0.3s" (whichever parallel query gives up first)
    assert msg.startswith("dns: svc.test.zone: DNS unavailable (dns_unavailable): no answer "
                          "for "), msg
    assert f"127.0.0.1:{knot.port}: no answer within 0.3s" in msg, msg


async def test_dead_server_then_live_one(
    start_knot: StartKnot, start_gateway: StartGateway
) -> None:
    knot = await start_knot({"test.zone": zone()})
    dead = free_port()
    gw = await start_gateway(f"""
[admin]
listen = ""
[dns]
servers = ["127.0.0.1:{dead}", "{knot.address}"]
zones = ["test.zone"]
timeout = 0.2
""")
    t0 = time.monotonic()
    dest, _ = await gw.resolve("svc.test.zone:443")
    assert dest.endpoints[0] == Endpoint("127.0.0.1")
    assert time.monotonic() - t0 < 1.0


def test_deadline_must_be_below_core_timeout() -> None:
    from ugate_core import ConfigError

    with pytest.raises(ConfigError, match=r"dns.deadline: 2s must be below discovery.timeout"):
        parse_settings({"servers": ["127.0.0.1"], "deadline": 2.0}, 2.0)
