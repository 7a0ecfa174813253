"""Policy on every quic stream: who the client proved decides (fresh key, no key, impostor
certificate); a malformed preamble gets a clear 400."""

from __future__ import annotations

import datetime as dt
import ssl

import pytest
from aioquic.asyncio.client import connect
from aioquic.quic.configuration import QuicConfiguration
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ugate_core import DialError, Gateway, PreambleOpener
from ugate_core.testing import StartGateway, metric
from ugate_quic.endpoint import QuicPeer
from ugate_quic.mesh import ALPN, MeshClientSession, auth_message, open_stream_id

from .test_mesh import gateway_a, read_all


def guarded_b(echo: tuple[str, int], allowed_id: str) -> str:
    # an allow list makes the loopback listener a policy-checked one (not the local proxy)
    return f"""
[admin]
listen = ""
[listeners.quic]
listen = "127.0.0.1:0"
protocols = ["quic"]
allow = ["status.test:9"]
[hosts."svc.test"]
endpoints = ["{echo[0]}:{echo[1]}"]
[[rules]]
clients = ["id:{allowed_id}"]
to = ["svc.test:7"]
"""


async def test_only_the_named_key_passes_a_fresh_key_is_refused(
        start_gateway: StartGateway, echo_server: tuple[str, int]) -> None:
    a = await start_gateway("[admin]\nlisten = \"\"")
    b = await start_gateway(guarded_b(echo_server, a.identity.id))
    a2 = await start_gateway(gateway_a(b, b.identity.id))  # a fresh key no rule names
    ok = await start_gateway(gateway_a(b, b.identity.id), state_dir=a.state_dir)  # a's key
    s = await ok.dial("svc.test:7")
    s.write(b"ping")
    s.write_eof()
    assert await read_all(s, 10) == b"ping"
    with pytest.raises(DialError) as e:
        await a2.dial("svc.test:7")
    assert e.value.reason == "denied"
    assert "403 denied" in str(e.value)
    assert metric(b, "ugate_dial_errors_total", reason="denied") == 1


def self_signed(key: ec.EllipticCurvePrivateKey, cn: str = "x") -> x509.Certificate:
    """A one-day self-signed certificate over ``key`` (a client's or a test server's)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))


async def _raw_client(b: Gateway, auth: bytes | None, request: bytes) -> tuple[bytes, str]:
    """A hand-made ugate/1 client: ``auth`` on the first uni stream (None: none at all),
    then one bidi stream with ``request``; returns what came back and how it ended."""
    cfg = QuicConfiguration(is_client=True, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE)
    key = ec.generate_private_key(ec.SECP256R1())
    cfg.certificate = self_signed(key)
    cfg.private_key = key

    def make(quic: object, stream_handler: object = None) -> QuicPeer:
        from ugate_quic.alpn import AlpnHandler
        return QuicPeer(quic, handlers={ALPN: AlpnHandler(ALPN, MeshClientSession)})  # type: ignore[arg-type]

    async with connect("127.0.0.1", b.port("quic"), configuration=cfg,
                       create_protocol=make) as c:
        assert isinstance(c, QuicPeer)
        if auth is not None:
            c.quic.send_stream_data(open_stream_id(c, True), auth, end_stream=True)
        from ugate_core import StreamMeta
        s = c.stream(open_stream_id(c, False), StreamMeta())
        s.write(request)
        got = await read_all(s, 1 << 16, timeout=10)
        return got, c.closed_reason or "open"


async def test_no_key_is_401_and_an_impostor_certificate_is_cut_off(
        start_gateway: StartGateway, echo_server: tuple[str, int]) -> None:
    victim = await start_gateway("[admin]\nlisten = \"\"")
    b = await start_gateway(guarded_b(echo_server, victim.identity.id))
    req = PreambleOpener().request("svc.test:7")
    # no key: an empty auth stream
    got, how = await _raw_client(b, b"", req)
    assert got == b"\x01\x0a401 denied" and how == "open"
    # impostor: the victim's certificate, signed with another key
    other = ec.generate_private_key(ec.SECP256R1())
    forged = auth_message(other, victim.identity.cert_der(), b.identity.cert_der())
    got, how = await _raw_client(b, forged, req)
    assert got == b""
    assert how == "connection closed: client authentication failed"
    assert metric(b, "ugate_identity_failures_total", protocol="quic", direction="accept") == 1
    assert metric(b, "ugate_rejections_total", listener="quic", reason="auth") == 1
    # a certificate whose key type the library does not know (the EC OID, one byte changed:
    # found by fuzz_client_auth.py, it raised UnsupportedAlgorithm past the auth check)
    mine = auth_message(other, self_signed(other).public_bytes(Encoding.DER),
                        b.identity.cert_der())
    oid = bytes.fromhex("2a8648ce3d0201")  # 1.2.840.10045.2.1, id-ecPublicKey
    assert oid in mine
    got, how = await _raw_client(b, mine.replace(oid, bytes.fromhex("2a9648ce3d0201")), req)
    assert (got, how) == (b"", "connection closed: client authentication failed")
    assert metric(b, "ugate_rejections_total", listener="quic", reason="auth") == 2
    # and the endpoint serves on: the victim's own key still gets its stream through
    ok = await start_gateway(gateway_a(b, b.identity.id), state_dir=victim.state_dir)
    s = await ok.dial("svc.test:7")
    s.write(b"still here")
    s.write_eof()
    assert await read_all(s, 10) == b"still here"


async def test_malformed_preamble_gets_400(start_gateway: StartGateway,
                                           echo_server: tuple[str, int]) -> None:
    b = await start_gateway(guarded_b(echo_server, "A" * 52))
    got, _ = await _raw_client(b, b"", b"\x02\x05hello")
    assert got.startswith(b"\x01") and b"400 " in got, got
    assert metric(b, "ugate_rejections_total", listener="quic", reason="preamble_version") == 1


def test_a_quic_listener_beyond_loopback_without_rules_refuses_to_start(tmp_path: object) -> None:
    """An open relay over QUIC is refused like any other (checked before binding anything)."""
    from ugate_core import ConfigError, loads

    gw = Gateway(loads('[listeners.q]\nlisten = "0.0.0.0:15443"\nprotocols = ["quic"]\n', "t"),
                 state_dir=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as e:
        gw.check()
    assert "relays (quic) but no rule says who may reach what" in str(e.value)
