"""verify_peer for every identity kind, Istio-style CA chains and SPIFFE IDs; openssl s_server."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from ugate_core import DialError, ExpectedIdentity
from ugate_core.certs import anchor_certificate, issue_leaf
from ugate_core.identity import Identity
from ugate_core.ids import id_of_public_key, spki_der
from ugate_core.testing import StartGateway, free_port, metric, require_peer
from ugate_core.verify import describe, verify_peer

P256_SCALAR = int.from_bytes(hashlib.sha256(b"ugate test vector p256").digest(), "big")
ED25519_SEED = bytes(range(32))


def p256_key() -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(P256_SCALAR, ec.SECP256R1())


def ed25519_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(ED25519_SEED)


def key_pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass
class CaChain:
    """root CA → intermediate CA → workload leaf with only a SPIFFE URI SAN (like Istio)."""

    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    inter_key: ec.EllipticCurvePrivateKey
    inter: x509.Certificate
    leaf_key: ec.EllipticCurvePrivateKey
    leaf: x509.Certificate
    spiffe: str


def _ca(name: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
        issuer_key: ec.EllipticCurvePrivateKey, now: dt.datetime) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer_key.public_key()), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )


def istio_like_chain(spiffe: str = "spiffe://cluster.local/ns/default/sa/echo",
                     org: str = "cluster.local") -> CaChain:
    now = dt.datetime.now(dt.UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])
    root = _ca(org, root_key, root_name, root_key, now)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = _ca(org + " intermediate", inter_key, root.subject, root_key, now)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(inter.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=True,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe)]),
                       critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            inter_key.public_key()), critical=False)
        .sign(inter_key, hashes.SHA256())
    )
    return CaChain(root_key, root, inter_key, inter, leaf_key, leaf, spiffe)


# ------------------------------------------------------------------------------ tests
NAME = "peer.test"
_GOOD_CERT = der(Identity(p256_key()).cert_chain()[0])


def _mismatch(exc: DialError) -> str:
    assert exc.reason == "identity"
    return str(exc)


def test_every_dane_kind_matches_the_right_peer_and_only_it() -> None:
    b = Identity(p256_key())
    other = Identity(ec.generate_private_key(ec.SECP256R1()))
    cert = der(b.cert_chain()[0])
    spki = spki_der(b.key)
    kinds = {
        "id": b.id,
        "spki_sha256": hashlib.sha256(spki).hexdigest(),
        "spki_sha512": hashlib.sha512(spki).hexdigest(),
        "spki": spki.hex(),
        "cert_sha256": hashlib.sha256(cert).hexdigest(),
        "cert_sha512": hashlib.sha512(cert).hexdigest(),
        "cert": cert.hex(),
    }
    ocert = der(other.cert_chain()[0])
    ospki = spki_der(other.key)
    theirs = {
        "id": other.id,
        "spki_sha256": hashlib.sha256(ospki).hexdigest(),
        "spki_sha512": hashlib.sha512(ospki).hexdigest(),
        "spki": ospki.hex(),
        "cert_sha256": hashlib.sha256(ocert).hexdigest(),
        "cert_sha512": hashlib.sha512(ocert).hexdigest(),
        "cert": ocert.hex(),
    }
    for kind, value in kinds.items():
        assert verify_peer(cert, [ExpectedIdentity(kind, value)], NAME) == b.id, kind
        # TLSA presentation: upper-case hex works too
        assert verify_peer(cert, [ExpectedIdentity(kind, value.upper())], NAME) == b.id, kind
        with pytest.raises(DialError) as e:
            verify_peer(der(other.cert_chain()[0]), [ExpectedIdentity(kind, value)], NAME)
        msg = _mismatch(e.value)
        assert msg.startswith(f"{NAME}: identity mismatch: expected {kind} "), msg
        # the same kind of value on both sides, then the mesh ID for the logs
        got = describe(ExpectedIdentity(kind, theirs[kind]))
        assert msg.endswith(f"presented {got}" if kind == "id" else
                            f"presented {got} (mesh ID {other.id})"), msg
    # the id kind names both IDs in full
    with pytest.raises(DialError) as e:
        verify_peer(der(other.cert_chain()[0]), b.expected(), NAME)
    assert str(e.value) == (f"{NAME}: identity mismatch: expected id {b.id}, "
                            f"presented id {other.id}")


def test_alternatives_one_match_is_enough_and_all_are_named() -> None:
    b = Identity(ed25519_key())
    cert = der(b.cert_chain()[0])
    wrong = ExpectedIdentity("spki_sha256", "00" * 32)
    assert verify_peer(cert, [wrong, ExpectedIdentity("id", b.id.lower())], NAME) == b.id
    with pytest.raises(DialError) as e:
        verify_peer(cert, [wrong, ExpectedIdentity("id", "A" * 52)], NAME)
    spki = hashlib.sha256(spki_der(b.key)).hexdigest()
    assert (f"expected one of [spki_sha256 {'00' * 32}, id {'A' * 52}], presented spki_sha256 "
            f"{spki} (id {b.id})") in str(e.value), str(e.value)


def test_no_certificate_bad_certificate_unknown_kind_no_expectation() -> None:
    exp = [ExpectedIdentity("id", "A" * 52)]
    with pytest.raises(DialError, match=r"presented no certificate"):
        verify_peer(None, exp, NAME)
    with pytest.raises(DialError, match=r"certificate is unusable"):
        verify_peer(b"\x30\x03junk", exp, NAME)
    cert = der(Identity(p256_key()).cert_chain()[0])
    with pytest.raises(DialError, match=r"unknown identity kind 'x509'"):
        verify_peer(cert, [ExpectedIdentity("x509", "zz")], NAME)
    with pytest.raises(DialError, match="no expected identity"):
        verify_peer(cert, [], NAME)


def test_spiffe_and_ca_need_a_real_chain() -> None:
    c = istio_like_chain()
    leaf, inter = der(c.leaf), [der(c.inter)]
    leaf_id = id_of_public_key(c.leaf_key)
    spiffe = ExpectedIdentity("spiffe", c.spiffe)
    assert verify_peer(leaf, [spiffe], NAME, chain=inter, trust_roots=[c.root]) == leaf_id
    ca = ExpectedIdentity("ca", pem(c.root).decode())
    assert verify_peer(leaf, [ca], NAME, chain=inter) == leaf_id
    # the intermediate bundled with the root works without the peer sending it
    assert verify_peer(leaf, [ExpectedIdentity("ca", pem(c.root, c.inter).decode())],
                       NAME) == leaf_id
    # no intermediate: no path
    with pytest.raises(DialError, match="chain does not verify"):
        verify_peer(leaf, [ca], NAME)
    # wrong SPIFFE ID
    with pytest.raises(DialError, match=r"expected spiffe spiffe://cluster\.local/ns/x/sa/y"):
        verify_peer(leaf, [ExpectedIdentity("spiffe", "spiffe://cluster.local/ns/x/sa/y")],
                    NAME, chain=inter, trust_roots=[c.root])
    # spiffe without trust bundles: nobody vouches for the URI
    with pytest.raises(DialError, match=r"no trust roots.*trust_bundles"):
        verify_peer(leaf, [spiffe], NAME, chain=inter)
    # another CA's chain
    o = istio_like_chain(org="evil.local")
    with pytest.raises(DialError, match="chain does not verify"):
        verify_peer(der(o.leaf), [spiffe], NAME, chain=[der(o.inter)], trust_roots=[c.root])
    with pytest.raises(DialError, match=r"expected ca \[O=cluster.local\]"):
        verify_peer(der(o.leaf), [ca], NAME, chain=[der(o.inter)])


def test_the_public_anchor_vouches_for_nothing() -> None:
    """Anyone can issue from the anchor: a forged SPIFFE URI on an anchor-issued cert fails,
    even if someone lists the anchor as a trust root or a ca identity."""
    now = dt.datetime.now(dt.UTC)
    evil = ec.generate_private_key(ec.SECP256R1())
    forged = issue_leaf(evil, common_name="x", dns_names=["victim.example"],
                        uris=["spiffe://cluster.local/ns/default/sa/echo"],
                        not_before=now - dt.timedelta(hours=1),
                        not_after=now + dt.timedelta(hours=1))
    anchor = anchor_certificate()
    with pytest.raises(DialError, match="public mesh anchor does not count"):
        verify_peer(der(forged), [ExpectedIdentity("spiffe",
                                                   "spiffe://cluster.local/ns/default/sa/echo")],
                    NAME, trust_roots=[anchor])
    with pytest.raises(DialError, match="public mesh anchor does not count"):
        verify_peer(der(forged), [ExpectedIdentity("ca", pem(anchor).decode())], NAME)


def test_expired_chain_fails() -> None:
    c = istio_like_chain()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)  # the leaf lives one day
    with pytest.raises(DialError, match="chain does not verify"):
        verify_peer(der(c.leaf), [ExpectedIdentity("spiffe", c.spiffe)], NAME,
                    chain=[der(c.inter)], trust_roots=[c.root], now=later)


# ------------------------------------------------------------------------------ real peer
async def _s_server(tmp_path: Path, c: CaChain) -> tuple[asyncio.subprocess.Process, int]:
    openssl = require_peer("openssl")
    (tmp_path / "leaf.pem").write_bytes(pem(c.leaf))
    (tmp_path / "chain.pem").write_bytes(pem(c.inter))
    (tmp_path / "leaf.key").write_bytes(c.leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    for _ in range(3):
        port = free_port()
        p = await asyncio.create_subprocess_exec(
            openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-cert",
            str(tmp_path / "leaf.pem"), "-key", str(tmp_path / "leaf.key"), "-cert_chain",
            str(tmp_path / "chain.pem"), "-rev", "-quiet",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        for _ in range(100):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                return p, port
            except OSError:
                if p.returncode is not None:
                    break
                await asyncio.sleep(0.05)
        p.kill()
        await p.wait()
    raise AssertionError("openssl s_server did not start")


async def test_istio_style_peer_with_openssl_s_server(
    tmp_path: Path, start_gateway: StartGateway
) -> None:
    """A CA-issued SPIFFE workload (openssl s_server, leaf + intermediate): the tls dialer
    accepts it by SPIFFE ID with [identity] trust_bundles, or by a ca identity; it refuses a
    wrong SPIFFE ID and counts it."""
    c = istio_like_chain()
    proc, port = await _s_server(tmp_path, c)
    root = tmp_path / "root.pem"
    root.write_bytes(pem(c.root))
    ca_value = "ca:" + pem(c.root).decode()
    try:
        gw = await start_gateway(f"""
[admin]
listen = ""
[routing]
direct = false
[identity]
trust_bundles = ["{root}"]
[hosts."echo.istio.test"]
endpoints = ["127.0.0.1:{port}"]
protocol = "tls"
identity = ["{c.spiffe}"]
[hosts."ca.istio.test"]
endpoints = ["127.0.0.1:{port}"]
protocol = "tls"
identity = ['''{ca_value}''']
[hosts."wrong.istio.test"]
endpoints = ["127.0.0.1:{port}"]
protocol = "tls"
identity = ["spiffe://cluster.local/ns/default/sa/other"]
""")
        for name in ("echo.istio.test", "ca.istio.test"):
            s = await gw.dial(f"{name}:1")
            assert s.meta.peer_id == id_of_public_key(c.leaf_key)
            s.write(b"hello istio\n")
            await s.drain()
            assert await asyncio.wait_for(s.readuntil(b"\n", 100), 10) == b"oitsi olleh\n"
            s.close()
        with pytest.raises(DialError) as e:
            await gw.dial("wrong.istio.test:1")
        assert re.search(r"wrong.istio.test at 127.0.0.1:\d+: identity mismatch: expected "
                         r"spiffe spiffe://cluster.local/ns/default/sa/other, presented "
                         r"spiffe spiffe://cluster.local/ns/default/sa/\S+ \(mesh ID "
                         + id_of_public_key(c.leaf_key), str(e.value)), str(e.value)
        assert metric(gw, "ugate_identity_failures_total", protocol="tls",
                      direction="dial") == 1
    finally:
        proc.kill()
        await proc.wait()


_KINDS = ["id", "spki_sha256", "spki_sha512", "spki", "cert_sha256", "cert_sha512", "cert",
          "spiffe", "ca", "bogus"]


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=600), st.just(_GOOD_CERT)),
       st.lists(st.tuples(st.sampled_from(_KINDS), st.text(max_size=120)), min_size=1,
                max_size=4))
def test_verify_peer_only_ever_raises_dial_error(cert: bytes, exp: list[tuple[str, str]]) -> None:
    """Whatever the peer sends and whatever discovery said: an ID or DialError("identity")."""
    try:
        got = verify_peer(cert, [ExpectedIdentity(k, v) for k, v in exp], NAME)
    except DialError as e:
        assert e.reason == "identity" and str(e).startswith(f"{NAME}: ")
    else:
        assert cert == _GOOD_CERT and got == Identity(p256_key()).id
