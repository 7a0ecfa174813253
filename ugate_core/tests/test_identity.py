"""Identity: test vectors (checked with openssl), names, key files, renewal, config, anchor."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import ipaddress
import os
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from ugate_core import ConfigError, ExpectedIdentity, Gateway, loads
from ugate_core.certs import anchor_certificate, anchor_key, anchor_pem
from ugate_core.identity import (
    Identity,
    IdentityError,
    load_or_create_key,
    parse_settings,
    read_key_file,
)
from ugate_core.ids import (
    expected_identities_for,
    id_from_name,
    id_of_public_key,
    pin_sha256,
    raw_public_key,
    remember_key,
    spki_sha256,
    vip_of_public_key,
)
from ugate_core.testing import require_peer, run

P256_SCALAR = int.from_bytes(hashlib.sha256(b"ugate test vector p256").digest(), "big")
ED25519_SEED = bytes(range(32))

# Pinned vectors. They must never change: IDs are names other nodes (and Go ugate/meshauth)
# already use. P-256: base32(sha256(04||X||Y)); Ed25519: base32(raw 32 bytes).
P256_ID = "HWOFDKJK4NTIRIHKO7CUEZWR2B656M4HSD5AZKNEPKNRDEZWCSPQ"
P256_VIP = "fd00::35fa:bc51:64:c3cd"
P256_SPKI_SHA256 = "41e6b1af6cacf571800d295bc6914049424b014147ae13716de75b778870f2c9"
ED_ID = "AOQQPP7TZYIL4HLQ3UMOOS6ATFT6JVRQTOSQ2XY53SDGIESVGG4A"
ED_VIP = "fd00::1ddc:8664:1255:31b8"
ED_SPKI_SHA256 = "a050837d85070582ccf7394b0988847cc312cb88259b894899f6f239cf1791a5"
# the public mesh anchor certificate is deterministic (RFC 6979 signature): every node serves
# and trusts the same bytes, and users keep copies for curl --cacert
ANCHOR_CERT_SHA256 = "73623d7159bbdd1c4c742ae3bb6cb3896c0416e0da02adceccf30180a9ac3c46"


def p256() -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(P256_SCALAR, ec.SECP256R1())


def ed() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(ED25519_SEED)


def write_pem(path: Path, key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


# ------------------------------------------------------------------------------ vectors
def test_p256_vector() -> None:
    k = p256()
    assert raw_public_key(k)[0] == 4 and len(raw_public_key(k)) == 65
    assert id_of_public_key(k) == P256_ID
    assert id_of_public_key(k.public_key()) == P256_ID
    assert str(vip_of_public_key(k)) == P256_VIP
    assert spki_sha256(k) == P256_SPKI_SHA256
    ident = Identity(k)
    assert (ident.id, str(ident.vip), ident.spki_sha256) == (P256_ID, P256_VIP, P256_SPKI_SHA256)
    assert ident.vip in ipaddress.IPv6Network("fd00::/64")
    assert ident.ssh_public_key().startswith("ecdsa-sha2-nistp256 AAAA")


def test_ed25519_vector() -> None:
    k = ed()
    assert base64.b32encode(raw_public_key(k)).decode().rstrip("=") == ED_ID  # not hashed
    assert id_of_public_key(k) == ED_ID
    assert str(vip_of_public_key(k)) == ED_VIP
    assert spki_sha256(k) == ED_SPKI_SHA256
    ident = Identity(k)
    assert ident.key_type == "ed25519"
    assert ident.ssh_public_key().startswith("ssh-ed25519 AAAA")


async def test_vectors_computed_independently_with_openssl(tmp_path: Path) -> None:
    """raw point → sha256 → base32, done by openssl and coreutils, not by our code."""
    openssl = require_peer("openssl")
    require_peer("base32", apt="coreutils")
    write_pem(tmp_path / "p256.pem", p256())
    write_pem(tmp_path / "ed.pem", ed())
    # SPKI DER of P-256 ends with the 65-byte uncompressed point; Ed25519's with 32 raw bytes
    p = await run("sh", "-c", f"{openssl} pkey -in {tmp_path}/p256.pem -pubout -outform DER "
                  f"| tail -c 65 | {openssl} dgst -sha256 -binary | base32 -w0 | tr -d =",
                  check=True)
    assert p.stdout.decode().strip() == P256_ID
    e = await run("sh", "-c", f"{openssl} pkey -in {tmp_path}/ed.pem -pubout -outform DER "
                  "| tail -c 32 | base32 -w0 | tr -d =", check=True)
    assert e.stdout.decode().strip() == ED_ID
    s = await run("sh", "-c", f"{openssl} pkey -in {tmp_path}/p256.pem -pubout -outform DER "
                  f"| {openssl} dgst -sha256 -hex", check=True)
    assert s.stdout.decode().split()[-1] == P256_SPKI_SHA256
    # VIP: fd00::/64 + the last 8 bytes of the raw point
    v = await run("sh", "-c", f"{openssl} pkey -in {tmp_path}/p256.pem -pubout -outform DER "
                  "| tail -c 8 | od -An -tx1", check=True)
    tail = bytes.fromhex(v.stdout.decode().replace(" ", "").replace("\n", ""))
    assert ipaddress.IPv6Address(b"\xfd" + b"\x00" * 7 + tail) == ipaddress.IPv6Address(P256_VIP)


def test_rsa_peer_keys_get_an_id_too() -> None:
    """Istio issues RSA workload certs by default: they get an ID the Go way (PKCS#1 DER)."""
    k = rsa.generate_private_key(65537, 2048)
    pkcs1 = k.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.PKCS1)
    want = base64.b32encode(hashlib.sha256(pkcs1).digest()).decode().rstrip("=")
    assert id_of_public_key(k.public_key()) == want
    assert str(vip_of_public_key(k)).startswith("fd00::")


# ------------------------------------------------------------------------------ names
def test_fqdns_and_expected_identities() -> None:
    ident = Identity(p256(), domain="Example.COM.")
    low = P256_ID.lower()
    assert ident.fqdns == (f"{low}.m", f"{low}.h.mesh.internal", f"{low}.m.example.com",
                           f"{low}.h.example.com")
    for name in (*ident.fqdns, f"{P256_ID}.M.", f"{low}.h.other.domain"):
        assert id_from_name(name) == P256_ID, name
        assert expected_identities_for(name) == (ExpectedIdentity("id", P256_ID),)
    for name in ("example.com", f"{low}", f"{low}.x", f"{low}.h", f"x{low}.m", "aaaa.m",
                 f"{low[:-1]}1.m", "", ".", "1.2.3.4", "::1"):
        assert expected_identities_for(name) == (), name


def test_vip_maps_back_only_to_a_verified_key() -> None:
    k = ec.generate_private_key(ec.SECP256R1())
    vip = str(vip_of_public_key(k))
    assert expected_identities_for(vip) == ()  # a VIP alone is not invertible
    assert remember_key(k.public_key()) == id_of_public_key(k)
    assert expected_identities_for(vip) == (ExpectedIdentity("id", id_of_public_key(k)),)
    assert expected_identities_for(f"[{vip}]") == (ExpectedIdentity("id", id_of_public_key(k)),)


@given(st.text(max_size=300))
def test_name_parsing_never_raises(name: str) -> None:
    got = id_from_name(name)
    assert got is None or (len(got) == 52 and got == got.upper())
    assert isinstance(expected_identities_for(name), tuple)


@given(st.binary(min_size=32, max_size=32), st.sampled_from([".m", ".h.mesh.internal",
                                                               ".m.a.b", ".h.c"]))
def test_name_round_trip(raw: bytes, suffix: str) -> None:
    mesh_id = base64.b32encode(raw).decode().rstrip("=")
    assert id_from_name(mesh_id.lower() + suffix) == mesh_id


# ------------------------------------------------------------------------------ key files
def test_key_file_created_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "key.pem"
    k1, created = load_or_create_key(path, "p256")
    assert created
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    k2, created2 = load_or_create_key(path, "p256")
    assert not created2 and id_of_public_key(k1) == id_of_public_key(k2)
    assert not [p for p in path.parent.iterdir() if p.name != "key.pem"]  # no temp left
    ek, _ = load_or_create_key(tmp_path / "ed.pem", "ed25519")
    assert isinstance(ek, ed25519.Ed25519PrivateKey)


def test_key_file_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        load_or_create_key(tmp_path / "key.pem", "p256")
    finally:
        os.umask(old)
    assert (tmp_path / "key.pem").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_loose_permissions_are_a_clear_error(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "key.pem"
    load_or_create_key(path, "p256")
    before = path.read_bytes()
    path.chmod(mode)
    with pytest.raises(IdentityError) as e:
        load_or_create_key(path, "p256")
    assert str(e.value) == (
        f"key file {path}: mode {mode:04o} lets other users read or change the private key; "
        f"it must be 0600 (chmod 600 {path}). Refusing to use it")
    assert path.read_bytes() == before  # never replaced by a new identity


@pytest.mark.parametrize("content,why", [
    (b"", "not an unencrypted PEM private key"),
    (b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n",
     "not an unencrypted PEM private key"),
    (b"\x00" * 70000, "larger than 65536 bytes"),
])
def test_unreadable_key_is_a_clear_error(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "key.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(IdentityError, match=why) as e:
        load_or_create_key(path, "p256")
    assert str(e.value).startswith(f"key file {path}: ")
    assert path.read_bytes() == content


def test_wrong_key_types_are_refused(tmp_path: Path) -> None:
    for name, key in [("rsa", rsa.generate_private_key(65537, 2048)),
                      ("p384", ec.generate_private_key(ec.SECP384R1()))]:
        path = tmp_path / f"{name}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
        os.close(fd)
        with pytest.raises(IdentityError, match="identities are EC P-256 or Ed25519"):
            read_key_file(path)


def test_a_directory_is_not_a_key(tmp_path: Path) -> None:
    (tmp_path / "key.pem").mkdir(mode=0o700)
    with pytest.raises(IdentityError, match=r"not a regular file|cannot open"):
        read_key_file(tmp_path / "key.pem")


def test_private_key_is_not_in_repr() -> None:
    ident = Identity(p256())
    body = ident.private_key_pem().decode().splitlines()[1]
    assert body not in repr(ident) and body not in str(ident)
    assert repr(ident) == f"Identity(id={P256_ID}, vip={P256_VIP}, key_type=p256)"


# ------------------------------------------------------------------------------ certificates
def test_certificate_sans_and_spiffe() -> None:
    ident = Identity(p256(), domain="mesh.example", trust_domain="cluster.local",
                     namespace="prod", service_account="web")
    cert = x509.load_pem_x509_certificate(ident.cert_pem())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == list(ident.fqdns)
    assert san.get_values_for_type(x509.IPAddress) == [ident.vip]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cluster.local/ns/prod/sa/web"]
    assert cert.public_key() == ident.key.public_key()
    assert cert.issuer == anchor_certificate().subject
    cert.verify_directly_issued_by(anchor_certificate())
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert life < dt.timedelta(days=14)  # WebTransport serverCertificateHashes limit


def test_anchor_is_public_stable_and_a_ca() -> None:
    d = int.from_bytes(hashlib.sha256(
        b"ugate public mesh anchor v1: this private key is public; never trust it for names"
    ).digest(), "big")
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    assert anchor_key().private_numbers().private_value == d % (n - 1) + 1
    a = anchor_certificate()
    assert a.public_key() == anchor_key().public_key()
    bc = a.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca and bc.path_length == 0
    # deterministic signature: the same bytes on every node
    assert anchor_pem() == x509.load_pem_x509_certificate(anchor_pem()).public_bytes(
        serialization.Encoding.PEM)
    digest = hashlib.sha256(a.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert digest == ANCHOR_CERT_SHA256


async def _served_serial(ctx: ssl.SSLContext) -> int:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    port = srv.sockets[0].getsockname()[1]
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    try:
        _, w = await asyncio.open_connection("127.0.0.1", port, ssl=cctx)
        leaf = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
        w.close()
        return x509.load_der_x509_certificate(leaf).serial_number
    finally:
        srv.close()


async def test_renewal_reloads_live_contexts() -> None:
    ident = Identity(p256(), cert_days=1)
    ctx = ident.server_ssl_context()
    first = ident.cert_chain()[0]
    assert await _served_serial(ctx) == first.serial_number
    assert not ident.renew_if_needed(time.time() + 0.5 * 86400)  # half-way: keep
    assert ident.renew_if_needed(time.time() + 0.7 * 86400)  # past 2/3: renew
    second = ident.cert_chain()[0]
    assert second.serial_number != first.serial_number
    assert second.public_key() == first.public_key()
    assert await _served_serial(ctx) == second.serial_number  # same context, new cert


# ------------------------------------------------------------------------------ config
@pytest.mark.parametrize("table,path,msg", [
    ({"key_type": "rsa"}, "identity.key_type", "'rsa' is not one of p256, ed25519"),
    ({"keytype": "p256"}, "identity.keytype", "unknown key"),
    ({"domain": 3}, "identity.domain", "3 is not a string"),
    ({"cert_days": 0}, "identity.cert_days", "0 is not a number of days"),
    ({"cert_days": True}, "identity.cert_days", "True is not a number of days"),
    ({"trust_domain": "a/b"}, "identity.trust_domain", "cannot be part of a SPIFFE ID"),
    ({"trust_bundles": [1]}, "identity.trust_bundles", "is not a list of file names"),
])
def test_config_errors_name_key_and_value(table: dict[str, object], path: str,
                                          msg: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_settings(table)
    assert e.value.path == path and msg in str(e.value)


def test_gateway_identity_is_lazy_and_reused(tmp_path: Path) -> None:
    cfg = loads('[identity]\nkey_type = "ed25519"\ndomain = "corp.example"\n')
    state = tmp_path / "state"
    gw = Gateway(cfg, state_dir=state)
    gw.load()
    gw.check()  # 'ugate plugins' and 'config check' must not create a key
    assert not state.exists()
    ident = gw.identity
    assert (state / "key.pem").stat().st_mode & 0o777 == 0o600
    assert ident.key_type == "ed25519" and ident.fqdns[2].endswith(".m.corp.example")
    again = Gateway(cfg, state_dir=state).identity
    assert again.id == ident.id and again is not ident
    with pytest.raises(ConfigError, match=r"identity\.key_type"):
        Gateway(loads('[identity]\nkey_type = "dsa"\n'), state_dir=state).check()


def test_trust_bundle_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("nope")
    anchor = tmp_path / "anchor.pem"
    anchor.write_bytes(anchor_pem())
    for files, msg in [([str(tmp_path / "missing.pem")], "cannot read"),
                       ([str(bad)], "no certificate in it|not a PEM certificate bundle"),
                       ([str(anchor)], "holds the public mesh anchor")]:
        cfg = loads(f"[identity]\ntrust_bundles = {files!r}\n".replace("'", '"'))
        with pytest.raises(ConfigError, match=msg):
            _ = Gateway(cfg, state_dir=tmp_path / "s").identity


def test_pin_is_curl_format() -> None:
    k = p256()
    assert pin_sha256(k) == "sha256//" + base64.b64encode(bytes.fromhex(P256_SPKI_SHA256)).decode()
