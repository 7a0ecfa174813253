"""DANE end to end: TLSA from Knot, core's tls dialer, ``openssl s_server`` as the backend."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ugate_core import DialError, Gateway
from ugate_core.testing import StartGateway, free_port, require_peer

StartKnot = Callable[..., Awaitable[Any]]
NOW = datetime.datetime.now(datetime.UTC)
PEM = serialization.Encoding.PEM


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _builder(subject: str, issuer: str, pub: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
        .public_key(pub).serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(hours=1))
        .not_valid_after(NOW + datetime.timedelta(days=7))
    )


CA_KEY = _key()
CA = (
    _builder("DANE test CA", "DANE test CA", CA_KEY.public_key())
    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                   critical=True)
    .add_extension(x509.SubjectKeyIdentifier.from_public_key(CA_KEY.public_key()), False)
    .sign(CA_KEY, hashes.SHA256())
)
LEAF_KEY = _key()
LEAF = (
    _builder("svc.test.zone", "DANE test CA", LEAF_KEY.public_key())
    .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    .add_extension(x509.SubjectAlternativeName([x509.DNSName("svc.test.zone")]), False)
    .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(CA_KEY.public_key()),
                   False)
    .sign(CA_KEY, hashes.SHA256())
)
OTHER_KEY = _key()


def spki_sha256(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def zone(port: int, tlsa: str) -> str:
    return f"""\
$ORIGIN test.zone.
$TTL 300
@ SOA ns.test.zone. admin.test.zone. 1 3600 600 86400 60
@ NS ns
ns A 127.0.0.1
svc A 127.0.0.1
svc TXT "ugate=1 proto=tls"
_{port}._tcp.svc TLSA {tlsa}
"""


def _write_pems(d: Path) -> None:
    (d / "leaf.pem").write_bytes(LEAF.public_bytes(PEM))
    (d / "ca.pem").write_bytes(CA.public_bytes(PEM))
    (d / "leaf.key").write_bytes(LEAF_KEY.private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as f:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=f, stderr=f)


@pytest.fixture
async def tls_backend(tmp_path: Path) -> AsyncIterator[int]:
    """``openssl s_server -rev`` (answers each line reversed) with LEAF + CA chain."""
    openssl = require_peer("openssl")
    _write_pems(tmp_path)
    port = free_port()
    proc = _spawn([openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-cert",
                   str(tmp_path / "leaf.pem"), "-key", str(tmp_path / "leaf.key"),
                   "-cert_chain", str(tmp_path / "ca.pem"), "-rev", "-quiet"],
                  tmp_path / "s_server.log")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


async def _gateway(start_gateway: StartGateway, knot_addr: str) -> Gateway:
    gw = await start_gateway(f"""
[admin]
listen = ""
[routing]
direct = false
[dns]
servers = ["{knot_addr}"]
zones = ["test.zone"]
timeout = 0.3
""")
    if "tls" not in gw.dialer_types:
        pytest.skip("core's tls dialer is not there yet")
    return gw


async def _round_trip(gw: Gateway, address: str) -> bytes:
    s = await gw.dial(address)
    try:
        s.write(b"hello dane\n")
        await s.drain()
        return await asyncio.wait_for(s.readuntil(b"\n", 1024), 10)
    finally:
        s.close()


@pytest.mark.parametrize(
    "tlsa",
    [f"3 1 1 {spki_sha256(LEAF_KEY)}",
     f"3 0 1 {hashlib.sha256(LEAF.public_bytes(serialization.Encoding.DER)).hexdigest()}",
     f"2 0 0 {CA.public_bytes(serialization.Encoding.DER).hex()}"],
    ids=["dane-ee-spki", "dane-ee-cert", "dane-ta-full-ca"],
)
async def test_tlsa_matching_the_backend_dials(
    start_knot: StartKnot, start_gateway: StartGateway, tls_backend: int, tlsa: str
) -> None:
    knot = await start_knot({"test.zone": zone(tls_backend, tlsa)})
    gw = await _gateway(start_gateway, knot.address)
    dest, _ = await gw.resolve(f"svc.test.zone:{tls_backend}")
    assert dest.protocol == "tls" and len(dest.identities) == 1
    assert await _round_trip(gw, f"svc.test.zone:{tls_backend}") == b"enad olleh\n"


async def test_tlsa_for_another_key_fails_the_dial(
    start_knot: StartKnot, start_gateway: StartGateway, tls_backend: int
) -> None:
    wrong = spki_sha256(OTHER_KEY)
    knot = await start_knot({"test.zone": zone(tls_backend, f"3 1 1 {wrong}")})
    gw = await _gateway(start_gateway, knot.address)
    with pytest.raises(DialError) as e:
        await gw.dial(f"svc.test.zone:{tls_backend}")
    assert e.value.reason == "identity"
    msg = str(e.value)
    # "svc.test.zone at 127.0.0.1: identity mismatch: expected spki_sha256 <TLSA data>,
    # presented spki_sha256 <the backend's SPKI hash> (mesh ID <its ID>)": like for like
    assert f"identity mismatch: expected spki_sha256 {wrong}" in msg, msg
    assert f"presented spki_sha256 {spki_sha256(LEAF_KEY)} (mesh ID " in msg, msg


async def test_signed_tlsa_dials_and_forged_tlsa_fails_closed(
    start_knot: StartKnot, start_gateway: StartGateway, tls_backend: int, tamper: Any,
) -> None:
    knot = await start_knot({"test.zone": zone(tls_backend, f"3 1 1 {spki_sha256(LEAF_KEY)}")},
                            signed={"test.zone": "nsec"})
    ds = await knot.keymgr("test.zone", "ds")
    anchors = ", ".join(f'"{a}"' for a in ds)
    _, forged_addr = await tamper(knot.address)
    toml = """
[admin]
listen = ""
[routing]
direct = false
[dns]
servers = ["{server}"]
zones = ["test.zone"]
timeout = 0.3
trust_anchor = [{anchors}]
"""
    gw = await start_gateway(toml.format(server=knot.address, anchors=anchors))
    if "tls" not in gw.dialer_types:
        pytest.skip("core's tls dialer is not there yet")
    dest, _ = await gw.resolve(f"svc.test.zone:{tls_backend}")
    assert dest.labels["dns.dnssec"] == "secure"
    assert await _round_trip(gw, f"svc.test.zone:{tls_backend}") == b"enad olleh\n"
    # the same zone through a man in the middle that rewrites the TLSA: the forged record
    # ends the lookup (dnssec_bogus); it is neither an identity nor silently dropped
    gw2 = await start_gateway(toml.format(server=forged_addr, anchors=anchors))
    with pytest.raises(DialError) as e:
        await gw2.dial(f"svc.test.zone:{tls_backend}")
    assert e.value.reason == "dnssec_bogus"
    assert f"_{tls_backend}._tcp.svc.test.zone TLSA" in str(e.value), str(e.value)
    assert "DNSSEC-bogus" in str(e.value), str(e.value)


def tcp_zone(port: int, tlsa: str) -> str:
    return zone(port, tlsa).replace('"ugate=1 proto=tls"', '"ugate=1 proto=tcp"')


async def test_validated_tlsa_makes_proto_tcp_dial_tls(
    start_knot: StartKnot, start_gateway: StartGateway, tls_backend: int,
) -> None:
    """A signed TLSA for the port says the service speaks TLS: the TXT's proto=tcp does not
    turn the check off. Against the real TLS backend the key is checked; against a plain
    server the dial fails, and the server saw a ClientHello, never plaintext."""
    seen: list[bytes] = []

    async def plain(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        seen.append(await r.read(5))
        w.write(b"plain text, no TLS\n")
        await w.drain()
        w.close()

    server = await asyncio.start_server(plain, "127.0.0.1", 0)
    plain_port = server.sockets[0].getsockname()[1]
    good = f"3 1 1 {spki_sha256(LEAF_KEY)}"
    body = tcp_zone(tls_backend, good) + f"_{plain_port}._tcp.svc TLSA {good}\n"
    knot = await start_knot({"test.zone": body}, signed={"test.zone": "nsec"})
    anchors = ", ".join(f'"{a}"' for a in await knot.keymgr("test.zone", "ds"))
    gw = await start_gateway(f"""
[admin]
listen = ""
[dns]
servers = ["{knot.address}"]
zones = ["test.zone"]
timeout = 0.3
trust_anchor = [{anchors}]
""")
    dest, _ = await gw.resolve(f"svc.test.zone:{tls_backend}")
    assert (dest.protocol, dest.labels["dns.dnssec"]) == ("tls", "secure")
    s = await gw.dial(f"svc.test.zone:{tls_backend}")
    try:
        assert s.meta.protocol == "tls"
        s.write(b"hello dane\n")
        await s.drain()
        assert await asyncio.wait_for(s.readuntil(b"\n", 1024), 10) == b"enad olleh\n"
    finally:
        s.close()
    async with server:
        with pytest.raises(DialError) as e:
            await gw.dial(f"svc.test.zone:{plain_port}")
        assert "TLS handshake failed" in str(e.value), str(e.value)
        assert seen and seen[0][:2] == b"\x16\x03"  # a ClientHello: nothing sent in clear
    # without the TLSA for the port, proto=tcp stays plain TCP
    dest2, _ = await gw.resolve("svc.test.zone:9")
    assert dest2.protocol == "tcp"
