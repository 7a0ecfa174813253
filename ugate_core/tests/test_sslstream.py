"""TLS over any Stream (memory BIO): handshake with buffered bytes, bulk, close_notify."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ugate_core import relay, stream_pair
from ugate_core.sslstream import SslStream
from ugate_core.testing import pattern


def server_context(tmp: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (tmp / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "c.pem", tmp / "k.pem")
    ctx.set_alpn_protocols(["h2", "x"])
    return ctx


def client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["x"])
    return ctx


async def test_tls_over_memory_streams(tmp_path: Path) -> None:
    a, b = stream_pair()
    cli = SslStream(a, client_context(), server_side=False, server_hostname="t")
    srv = SslStream(b, server_context(tmp_path), server_side=True)
    await asyncio.gather(cli.handshake(5), srv.handshake(5))
    assert (cli.meta.alpn, srv.meta.alpn) == ("x", "x")
    assert cli.peer_certificate() is not None
    data = pattern(1 << 20, 5)
    cli.write(data)
    assert await srv.readexactly(len(data)) == data
    srv.write(b"reply")
    assert await cli.readexactly(5) == b"reply"
    cli.write_eof()  # close_notify: the server sees EOF, may still answer (TLS 1.3)
    assert await asyncio.wait_for(srv.read(), 5) == b""
    srv.write(b"after")
    assert await cli.readexactly(5) == b"after"


async def test_relay_through_tls_both_ways(tmp_path: Path) -> None:
    # client <-TLS-> [srv | relay | x] <-> echo-ish peer y
    a, b = stream_pair()
    cli = SslStream(a, client_context(), server_side=False)
    srv = SslStream(b, server_context(tmp_path), server_side=True)
    await asyncio.gather(cli.handshake(5), srv.handshake(5))
    x, y = stream_pair()
    task = asyncio.create_task(relay(srv, x))
    data = pattern(3 << 20, 6)
    cli.write(data)
    cli.write_eof()
    got = await asyncio.wait_for(y.readexactly(len(data)), 20)
    assert got == data
    assert await asyncio.wait_for(y.read(), 5) == b""
    y.write(b"back")
    y.write_eof()
    assert await asyncio.wait_for(cli.readexactly(4), 5) == b"back"
    st = await asyncio.wait_for(task, 5)
    assert (st.up, st.down, st.end) == (len(data), 4, "done")
