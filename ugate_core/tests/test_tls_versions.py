"""TLS versions, TLS 1.2 suites and resumption, as docs/identity.md states them: identity
(mesh, mTLS) contexts speak TLS 1.3 only and never resume, so every connection proves its key
again; a configured public certificate on the TLS front keeps TLS 1.2 with ECDHE + AEAD suites
and ordinary resumption. Checked with ``openssl s_client -reconnect`` (six handshakes)."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

from ugate_core.certs import PUBLIC_TLS12_CIPHERS, public_server_context
from ugate_core.identity import Identity, generate_key
from ugate_core.testing import StartGateway, Upstream, require_peer, run

from .test_identity_tls import tls_listener

#: every TLS 1.2 suite that is not AEAD (CBC with SHA-1/SHA-256/SHA-384 MACs, ...)
NOT_AEAD = "ALL:COMPLEMENTOFALL:!AESGCM:!CHACHA20:!AESCCM:!ARIAGCM:@SECLEVEL=0"


async def s_client(port: int, *args: str, name: str = "") -> tuple[int, str]:
    openssl = require_peer("openssl")
    sni = ["-servername", name] if name else []
    p = await run(openssl, "s_client", "-connect", f"127.0.0.1:{port}", *sni, *args,
                  input=b"", timeout=30)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace")


def handshakes(out: str) -> list[str]:
    """``New, TLSv1.3`` / ``Reused, TLSv1.2`` per handshake s_client made."""
    return re.findall(r"^(New|Reused), (TLSv1\.[0-3])", out, re.M)


def client_cert(tmp: Path) -> list[str]:
    who = Identity(generate_key("p256"))
    (tmp / "c.pem").write_bytes(who.cert_pem())
    (tmp / "c.key").write_bytes(who.private_key_pem())
    return ["-cert", str(tmp / "c.pem"), "-key", str(tmp / "c.key")]


async def assert_mesh_path(port: int, cert: list[str], name: str = "") -> None:
    rc, out = await s_client(port, "-reconnect", *cert, name=name)
    assert rc == 0, out
    got = handshakes(out)
    assert got == [("New", "TLSv1.3")] * 6, got  # nothing resumed: six full handshakes
    rc, out = await s_client(port, "-reconnect", "-tls1_2", *cert, name=name)
    assert rc != 0 and handshakes(out) == [], out  # no TLS 1.2 handshake at all


async def test_mtls_listener_is_tls13_only_and_never_resumes(
    start_gateway: StartGateway, http_upstream: Upstream, tmp_path: Path,
) -> None:
    gw = await start_gateway(tls_listener(http_upstream.address, "require_client_cert = true"))
    await assert_mesh_path(gw.port("mtls"), client_cert(tmp_path))


async def test_shared_port_mesh_termination_is_tls13_only_and_never_resumes(
    start_gateway: StartGateway, http_upstream: Upstream, tmp_path: Path,
) -> None:
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.shared]
listen = "127.0.0.1:0"
protocols = ["*"]
require_client_cert = true
target = "{http_upstream.address}"
""")
    await assert_mesh_path(gw.port("shared"), client_cert(tmp_path), gw.identity.fqdns[0])


async def public_cert(tmp: Path, cn: str) -> tuple[Path, Path]:
    key, crt = tmp / "pub.key", tmp / "pub.pem"
    await run(require_peer("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt",
              "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(crt),
              "-days", "1", "-subj", f"/CN={cn}", "-addext", f"subjectAltName=DNS:{cn}",
              check=True)
    return crt, key


async def test_public_front_keeps_tls12_with_aead_suites_only(
    start_gateway: StartGateway, http_upstream: Upstream, tmp_path: Path,
) -> None:
    crt, key = await public_cert(tmp_path, "www.public.test")
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.shared]
listen = "127.0.0.1:0"
protocols = ["*"]
target = "{http_upstream.address}"
certificates = [{{names = ["www.public.test"], cert = "{crt}", key = "{key}"}}]
""")
    port, name = gw.port("shared"), "www.public.test"
    rc, out = await s_client(port, "-tls1_2", "-cipher", NOT_AEAD, name=name)
    assert rc != 0 and not handshakes(out), out  # no CBC (or any non-AEAD) suite under 1.2
    rc, out = await s_client(port, "-tls1_2", name=name)
    assert rc == 0, out
    cipher = re.search(r"^New, TLSv1\.2, Cipher is (\S+)", out, re.M)
    assert cipher and cipher.group(1).startswith("ECDHE-ECDSA-"), out
    assert "GCM" in cipher.group(1) or "CHACHA20" in cipher.group(1), out
    # ordinary resumption here, as the docs say: it authenticates no client
    rc, out = await s_client(port, "-tls1_2", "-reconnect", name=name)
    assert rc == 0 and handshakes(out)[1:] == [("Reused", "TLSv1.2")] * 5, out


def test_contexts_in_memory(tmp_path: Path) -> None:
    ident = Identity(generate_key("p256"))
    for ctx in (ident.server_ssl_context(), ident.client_ssl_context()):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ident.server_ssl_context().num_tickets == 0
    (tmp_path / "c.pem").write_bytes(ident.cert_pem())
    (tmp_path / "c.key").write_bytes(ident.private_key_pem())
    ctx = public_server_context(str(tmp_path / "c.pem"), str(tmp_path / "c.key"))
    tls12 = [c for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 and all(c["aead"] and c["kea"] == "kx-ecdhe" for c in tls12), tls12
    assert PUBLIC_TLS12_CIPHERS == "ECDHE+AESGCM:ECDHE+CHACHA20"
