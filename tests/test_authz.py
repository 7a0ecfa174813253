"""Authorization, tried as an attacker would: every relaying path of the shared port, on a
listener beyond loopback (bound to 0.0.0.0, reached on 127.0.0.1), driven with no identity, a
fresh key, an impostor certificate signed by the public mesh anchor, a password without a
rule, and a listed identity asking for an allowed destination, a destination no rule names,
the admin endpoint, the gateway's own port and a loopback address.

Clients that are not ours: curl (SOCKS5, HTTP proxy, CONNECT, HTTPS proxy with a client
certificate), the ``h2`` library (HBONE over h2c and over mTLS). SSH's ``direct-tcpip`` is in
``plugins/ugate_ssh/tests/test_authz_ssh.py`` (OpenSSH ``ssh -W``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ugate_core import Gateway, loads
from ugate_core.certs import issue_leaf
from ugate_core.ids import id_of_public_key
from ugate_core.testing import StartGateway, Upstream, free_port, metric, require_peer, run

GOOD_SPIFFE = "spiffe://cluster.local/ns/default/sa/good"


@dataclass
class Cred:
    cert: Path
    key: Path
    id: str = ""


def _write(tmp: Path, name: str, cert_pem: bytes, key_pem: bytes, mesh_id: str = "") -> Cred:
    (tmp / f"{name}.crt").write_bytes(cert_pem)
    (tmp / f"{name}.key").write_bytes(key_pem)
    (tmp / f"{name}.key").chmod(0o600)
    return Cred(tmp / f"{name}.crt", tmp / f"{name}.key", mesh_id)


def workload(tmp: Path, name: str) -> Cred:
    """A key made a second ago (as ``ugate id --cert`` makes one), anchor-issued cert."""
    ident = Gateway(loads('[admin]\nlisten = ""\n'), state_dir=str(tmp / name)).identity
    return _write(tmp, name, ident.cert_pem(), ident.private_key_pem(), ident.id)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def impostor(tmp: Path, victim: str) -> Cred:
    """Anyone can sign with the public mesh anchor: a certificate naming the victim's mesh
    name and the allowed SPIFFE ID, over the attacker's own key."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = issue_leaf(key, common_name="impostor", dns_names=[f"{victim.lower()}.m"],
                      uris=[GOOD_SPIFFE], not_before=now - dt.timedelta(minutes=5),
                      not_after=now + dt.timedelta(days=1))
    return _write(tmp, "impostor", cert.public_bytes(serialization.Encoding.PEM), _key_pem(key),
                  id_of_public_key(key.public_key()))


def ca_issued(tmp: Path) -> tuple[Path, Cred]:
    """A cluster CA (the kind cert-manager or an Istio CA runs) and a workload certificate
    with the allowed SPIFFE ID."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test cluster CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=True, content_commitment=False, key_encipherment=False,
              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
              encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "good")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(GOOD_SPIFFE)]), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH,
                                                  x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    (tmp / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return tmp / "ca.pem", _write(tmp, "good", leaf.public_bytes(serialization.Encoding.PEM),
                                  _key_pem(key))


# ----------------------------------------------------------------------------- the clients
async def curl(*args: str) -> tuple[bool, bytes]:
    """(got the origin's answer, what curl printed)."""
    res = await run(require_peer("curl"), "-sS", "--noproxy", "", "--max-time", "20", *args,
                    timeout=30)
    return res.returncode == 0 and res.stdout == b"hello /authz\n", res.stdout + res.stderr


def _tls(sock: socket.socket, cred: Cred | None, alpn: str | None) -> ssl.SSLSocket:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the attacker does not care who the gateway is
    if cred is not None:
        ctx.load_cert_chain(cred.cert, cred.key)
    if alpn:
        ctx.set_alpn_protocols([alpn])
    return ctx.wrap_socket(sock)


def h2_connect(port: int, authority: str, cred: Cred | None, tls: bool) -> tuple[bool, bytes]:
    """HBONE: CONNECT ``authority`` over h2c or mTLS, then an HTTP/1.0 GET through it."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    raw = socket.create_connection(("127.0.0.1", port), 10)
    try:
        s: socket.socket = _tls(raw, cred, "h2") if tls else raw
        s.settimeout(10)
        conn.initiate_connection()
        conn.send_headers(1, [(":method", "CONNECT"), (":authority", authority)])
        s.sendall(conn.data_to_send())
        status, got = b"", b""
        while True:
            data = s.recv(65536)
            if not data:
                return False, b"closed " + status + got
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    status = dict(ev.headers).get(b":status", b"")
                    if status != b"200":
                        return False, b"status " + status
                    conn.send_data(1, b"GET /authz HTTP/1.0\r\nConnection: close\r\n\r\n")
                elif isinstance(ev, h2.events.DataReceived):
                    got += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, 1)
                elif isinstance(ev, h2.events.StreamEnded | h2.events.StreamReset |
                                h2.events.ConnectionTerminated):
                    return got.endswith(b"hello /authz\n"), status + b" " + got
            s.sendall(conn.data_to_send())
    except (OSError, ssl.SSLError) as e:
        return False, repr(e).encode()
    finally:
        raw.close()


def socks_in_tls(port: int, host: str, dport: int, cred: Cred | None) -> tuple[bool, bytes]:
    """SOCKS5 (no auth) inside TLS with a client certificate: what curl cannot do."""
    raw = socket.create_connection(("127.0.0.1", port), 10)
    try:
        s = _tls(raw, cred, None)
        s.settimeout(10)
        s.sendall(b"\x05\x01\x00")
        if s.recv(2) != b"\x05\x00":
            return False, b"method refused"
        s.sendall(b"\x05\x01\x00\x03" + bytes([len(host)]) + host.encode() +
                  struct.pack(">H", dport))
        rep = s.recv(10)
        if len(rep) < 2 or rep[1] != 0:
            return False, b"reply " + rep[:2].hex().encode()
        s.sendall(b"GET /authz HTTP/1.0\r\nConnection: close\r\n\r\n")
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        return got.endswith(b"hello /authz\n"), got
    except (OSError, ssl.SSLError) as e:
        return False, repr(e).encode()
    finally:
        raw.close()


# ------------------------------------------------------------------------------- the matrix
async def test_every_relaying_path_allows_only_what_a_rule_names(
        start_gateway: StartGateway, http_upstream: Upstream, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "ugate")
    listed, fresh = workload(tmp_path, "listed"), workload(tmp_path, "fresh")
    fake = impostor(tmp_path, listed.id)
    ca, good = ca_issued(tmp_path)
    admin = free_port()
    gw = await start_gateway(f"""
[admin]
listen = "127.0.0.1:{admin}"
[identity]
trust_bundles = ["{ca}"]
[listeners.shared]
listen = "0.0.0.0:0"
protocols = ["*"]
[listeners.pw]
listen = "0.0.0.0:0"
protocols = ["socks5", "http"]
users = {{ alice = "alice-pw", mallory = "mallory-pw" }}
[hosts."svc.test"]
endpoints = ["127.0.0.1:{http_upstream.port}"]
[hosts."other.test"]
endpoints = ["127.0.0.1:{http_upstream.port}"]
[[rules]]
clients = ["id:{listed.id}", "{GOOD_SPIFFE}", "user:alice"]
to = ["svc.test:80"]
""")
    shared, pw = gw.port("shared"), gw.port("pw")
    px, ppw = f"127.0.0.1:{shared}", f"127.0.0.1:{pw}"
    origin = f"127.0.0.1:{http_upstream.port}"
    refused = [("other.test", 80), ("svc.test", 81), ("127.0.0.1", admin),
               ("127.0.0.1", shared), ("127.0.0.1", http_upstream.port), ("localhost", admin)]

    def tls_proxy(c: Cred | None) -> list[str]:
        out = ["--proxy", f"https://{px}", "--proxy-insecure"]
        return out + (["--proxy-cert", str(c.cert), "--proxy-key", str(c.key)] if c else [])

    cases: list[tuple[str, bool, object]] = []

    def add(name: str, want: bool, got: object) -> None:
        cases.append((name, want, got))

    # no identity on the shared port: nothing at all, whatever the path
    add("socks5 plain", False, curl("--socks5-hostname", px, "http://svc.test/authz"))
    add("http proxy plain", False, curl("-x", f"http://{px}", "http://svc.test/authz"))
    add("connect plain", False, curl("-p", "-x", f"http://{px}", "http://svc.test/authz"))
    add("hbonec (h2c)", False, asyncio.to_thread(h2_connect, shared, "svc.test:80", None, False))
    add("https proxy, no cert", False, curl(*tls_proxy(None), "http://svc.test/authz"))
    # keys that verify but that no rule names, and the anchor-signed impostor
    for who, c in (("fresh key", fresh), ("impostor", fake)):
        add(f"https proxy, {who}", False, curl(*tls_proxy(c), "http://svc.test/authz"))
        add(f"https connect, {who}", False, curl("-p", *tls_proxy(c), "http://svc.test/authz"))
        add(f"hbone mtls, {who}", False,
            asyncio.to_thread(h2_connect, shared, "svc.test:80", c, True))
        add(f"socks5 in tls, {who}", False,
            asyncio.to_thread(socks_in_tls, shared, "svc.test", 80, c))
    # the listed mesh ID and the CA-issued SPIFFE ID: the named destination only
    for who, c in (("listed id", listed), ("ca spiffe", good)):
        add(f"https proxy, {who}", True, curl(*tls_proxy(c), "http://svc.test/authz"))
        add(f"https connect, {who}", True, curl("-p", *tls_proxy(c), "http://svc.test/authz"))
        add(f"hbone mtls, {who}", True,
            asyncio.to_thread(h2_connect, shared, "svc.test:80", c, True))
        add(f"socks5 in tls, {who}", True,
            asyncio.to_thread(socks_in_tls, shared, "svc.test", 80, c))
        for host, port in refused:
            url = f"http://{host}:{port}/authz"
            add(f"https proxy, {who} -> {host}:{port}", False, curl(*tls_proxy(c), url))
            add(f"hbone mtls, {who} -> {host}:{port}", False,
                asyncio.to_thread(h2_connect, shared, f"{host}:{port}", c, True))
        add(f"socks5 in tls, {who} -> admin", False,
            asyncio.to_thread(socks_in_tls, shared, "127.0.0.1", admin, c))
    # passwords: alice is named by a rule, mallory's password is right but names nothing
    add("socks5 alice", True,
        curl("--socks5-hostname", ppw, "-U", "alice:alice-pw", "http://svc.test/authz"))
    add("http proxy alice", True,
        curl("-x", f"http://{ppw}", "-U", "alice:alice-pw", "http://svc.test/authz"))
    add("connect alice", True,
        curl("-p", "-x", f"http://{ppw}", "-U", "alice:alice-pw", "http://svc.test/authz"))
    add("socks5 mallory", False,
        curl("--socks5-hostname", ppw, "-U", "mallory:mallory-pw", "http://svc.test/authz"))
    add("http proxy mallory", False,
        curl("-x", f"http://{ppw}", "-U", "mallory:mallory-pw", "http://svc.test/authz"))
    for host, port in refused:
        url = f"http://{host}:{port}/authz"
        add(f"socks5 alice -> {host}:{port}", False,
            curl("--socks5-hostname", ppw, "-U", "alice:alice-pw", url))
        add(f"http proxy alice -> {host}:{port}", False,
            curl("-x", f"http://{ppw}", "-U", "alice:alice-pw", url))
        add(f"connect alice -> {host}:{port}", False,
            curl("-p", "-x", f"http://{ppw}", "-U", "alice:alice-pw", url))
    add("http proxy alice -> origin ip", False,
        curl("-x", f"http://{ppw}", "-U", "alice:alice-pw", f"http://{origin}/authz"))

    wrong = []
    allowed = 0
    for name, want, aw in cases:
        ok, out = await aw  # type: ignore[misc]
        allowed += want
        if ok != want:
            wrong.append(f"{name}: want {'allowed' if want else 'refused'}, got "
                         f"{'allowed' if ok else 'refused'}: {out[-300:]!r}")
    assert not wrong, "\n".join(wrong)
    # every allowed request reached the origin once; no refused one reached it at all
    assert len(http_upstream.requests) == allowed
    assert metric(gw, "ugate_dial_errors_total", reason="denied") >= len(cases) - allowed - 12
    # each refusal is logged (at a bounded rate) with its reason, who, and what
    log = caplog.text
    for who in ("an unauthenticated client", f"id:{fresh.id}", "user:mallory"):
        assert "reason=denied" in log and f"no rule allows {who} on listener" in log, who
    assert f"not allowed: no rule allows id:{listed.id} on listener 'shared' to reach " \
        f"other.test:80" in log
    # the CA-issued client is named by its verified SPIFFE ID too; the impostor's anchor-signed
    # SAN never is
    assert f" {GOOD_SPIFFE} on listener 'shared' to reach other.test:80" in log
    assert f"no rule allows id:{fake.id} on listener 'shared' to reach svc.test:80" in log
