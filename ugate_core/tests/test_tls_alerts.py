"""A TLS alert from the peer is reported as that alert, not as "unreachable".

The peer is ``openssl s_server -Verify 1 -verify_return_error`` trusting only an unrelated CA:
it refuses the gateway's client certificate with ``unknown_ca``. With TLS 1.2 the alert ends
the handshake, so the dial fails with reason ``tls_alert``; with TLS 1.3 the server decides
after our side of the handshake is done, so the alert arrives after the dial, and
ends the stream, whose error (and the log) name it. The mesh dialers speak TLS 1.3 only, so a
TLS 1.2-only peer refuses them in the handshake with ``protocol_version``: named, too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ugate_core import DialError, Gateway
from ugate_core.testing import StartGateway, free_port, metric, require_peer, run

PEM = serialization.Encoding.PEM


def _self_signed(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


SERVER_KEY, SERVER_CERT = _self_signed("strict.test")
_, OTHER_CA = _self_signed("a CA that never issued the gateway's certificate")
SPKI = hashlib.sha256(SERVER_KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()

StartStrict = Callable[[str], Awaitable[int]]


@pytest.fixture
async def strict_server(tmp_path: Path) -> AsyncIterator[StartStrict]:
    """``await strict_server("-tls1_2")`` → the port of an s_server that requires a client
    certificate issued by OTHER_CA (stopped by PID at the end)."""
    openssl = require_peer("openssl")
    (tmp_path / "srv.pem").write_bytes(SERVER_CERT.public_bytes(PEM))
    (tmp_path / "srv.key").write_bytes(SERVER_KEY.private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "ca.pem").write_bytes(OTHER_CA.public_bytes(PEM))
    procs: list[asyncio.subprocess.Process] = []

    async def start(version: str) -> int:
        for _ in range(3):
            port = free_port()
            p = await asyncio.create_subprocess_exec(
                openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-cert",
                str(tmp_path / "srv.pem"), "-key", str(tmp_path / "srv.key"), "-Verify", "1",
                "-verify_return_error", "-CAfile", str(tmp_path / "ca.pem"), version, "-rev",
                "-quiet", stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            procs.append(p)
            for _ in range(100):
                try:
                    _, w = await asyncio.open_connection("127.0.0.1", port)
                    w.close()
                    return port
                except OSError:
                    if p.returncode is not None:
                        break
                    await asyncio.sleep(0.05)
        raise AssertionError("openssl s_server did not start")

    try:
        yield start
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()


async def _gateway(start_gateway: StartGateway, port: int) -> Gateway:
    return await start_gateway(f"""
[admin]
listen = ""
[routing]
direct = false
[hosts."strict.test"]
endpoints = ["127.0.0.1:{port}"]
protocol = "tls"
identity = ["spki_sha256:{SPKI}"]
""")


async def test_alert_during_the_handshake_is_the_dial_error(
    strict_server: StartStrict, start_gateway: StartGateway
) -> None:
    gw = await _gateway(start_gateway, await strict_server("-tls1_2"))
    with pytest.raises(DialError) as e:
        await gw.dial("strict.test:1")
    msg = str(e.value)
    assert e.value.reason == "tls_alert", msg
    # the tls dialer is a mesh path (TLS 1.3 only): "strict.test: 127.0.0.1:N: TLS handshake
    # failed: the peer sent TLS alert protocol_version (TLSV1_ALERT_PROTOCOL_VERSION)"
    assert "the peer sent TLS alert protocol_version (TLSV1_ALERT_PROTOCOL_VERSION)" in msg, msg
    assert "does not accept our certificate" not in msg, msg
    assert metric(gw, "ugate_dial_errors_total", reason="tls_alert") == 1
    assert metric(gw, "ugate_dial_errors_total", reason="unreachable") == 0


async def test_tls13_alert_after_the_handshake_names_it_on_the_stream(
    strict_server: StartStrict, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await _gateway(start_gateway, await strict_server("-tls1_3"))
    caplog.set_level(logging.INFO, "ugate.tls")
    s = await gw.dial("strict.test:1")  # our side of the handshake is complete, key checked
    try:
        s.write(b"hello\n")
        await s.drain()
        # the server's next flight is the alert: the stream ends (a relay ends as "reset")
        assert await asyncio.wait_for(s.read(), 10) == b""
        with pytest.raises(ConnectionError) as e:
            s.write(b"more\n")
            await s.drain()
        assert "the peer sent TLS alert unknown_ca" in str(e.value), str(e.value)
        assert "does not accept our certificate" in str(e.value)
        assert "tls_alert_received protocol=tls" in caplog.text
        assert "TLSV1_ALERT_UNKNOWN_CA" in caplog.text
    finally:
        s.close()


async def test_alert_escaping_any_dialer_is_not_unreachable(
    strict_server: StartStrict, start_gateway: StartGateway, tmp_path: Path
) -> None:
    """A plugin dialer that lets ``ssl.SSLError`` (an OSError) through: core still names the
    alert instead of calling it unreachable."""
    from ugate_core import DialerType, DialRequest, Stream, hookimpl
    from ugate_core.plugins import create_manager, load_plugins

    async def dial(req: DialRequest) -> Stream:
        # a TLS 1.2 client with the workload's certificate: the server's unknown_ca alert
        # ends this handshake
        ident = req.gateway.identity
        (tmp_path / "me.pem").write_bytes(ident.cert_pem())
        (tmp_path / "me.key").write_bytes(ident.private_key_pem())
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(tmp_path / "me.pem", tmp_path / "me.key")
        await asyncio.open_connection(req.host, req.target_port, ssl=ctx, server_hostname="")
        raise AssertionError("the server accepted a certificate it does not trust")

    class RawTls:
        @hookimpl
        def ugate_dialer_types(self) -> list[DialerType]:
            return [DialerType("rawtls", dial)]

    port = await strict_server("-tls1_2")
    pm = create_manager()
    load_plugins(pm)
    pm.register(RawTls(), name="rawtls")
    gw = await start_gateway(f"""
[admin]
listen = ""
[routing]
direct = false
[hosts."strict.test"]
endpoints = ["127.0.0.1:{port}"]
protocol = "rawtls"
""", pm=pm)
    with pytest.raises(DialError) as e:
        await gw.dial("strict.test:1")
    assert e.value.reason == "tls_alert", str(e.value)
    assert "the peer sent TLS alert unknown_ca" in str(e.value)


async def test_listener_names_the_alert_a_client_refused_us_with(
    start_gateway: StartGateway, echo_server: tuple[str, int], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``openssl s_client`` that trusts only OTHER_CA refuses the listener's certificate: the
    rejection logged by the listener names the alert."""
    openssl = require_peer("openssl")
    (tmp_path / "ca.pem").write_bytes(OTHER_CA.public_bytes(PEM))
    caplog.set_level(logging.INFO, "ugate")
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.mtls]
listen = "127.0.0.1:0"
protocols = ["tls"]
target = "{echo_server[0]}:{echo_server[1]}"
""")
    res = await run(openssl, "s_client", "-connect", f"127.0.0.1:{gw.port('mtls')}",
                    "-CAfile", str(tmp_path / "ca.pem"), "-verify_return_error", "-quiet",
                    input=b"", timeout=20)
    assert res.returncode != 0
    for _ in range(100):  # bounded: the listener logs once the handshake failed
        if metric(gw, "ugate_rejections_total", listener="mtls", reason="tls_handshake"):
            break
        await asyncio.sleep(0.05)
    assert "the peer sent TLS alert unknown_ca" in caplog.text, caplog.text
    assert "does not accept our certificate" in caplog.text
