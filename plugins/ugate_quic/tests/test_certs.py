"""Browser certificates: ECDSA P-256 over the workload key, valid ≤ 14 days, two at a time,
rotated every STEP; the endpoint presents the current one and mesh dialers still verify."""

from __future__ import annotations

import datetime as dt
import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ugate_core import id_of_public_key
from ugate_core.testing import StartGateway
from ugate_quic.certs import STEP, BrowserCerts, browser_certs

from .test_attacks import self_signed
from .test_mesh import gateway_a, gateway_b, read_all


def test_rotation_keeps_a_published_next_and_never_exceeds_14_days() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    t0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    certs = BrowserCerts(key, self_signed(leaf_key), "x", now=t0)
    first = [certs.current.sha256, certs.next.sha256]
    assert certs.rotate_if_due(t0 + STEP - dt.timedelta(seconds=1)) is False
    assert certs.rotate_if_due(t0 + STEP) is True
    assert certs.current.sha256 == first[1]  # what pages got as "next" is now presented
    assert certs.next.sha256 not in first
    for c in (certs.current, certs.next):
        life = c.cert.not_valid_after_utc - c.cert.not_valid_before_utc
        assert life <= dt.timedelta(days=14)
        assert isinstance(c.cert.public_key(), ec.EllipticCurvePublicKey)
        assert c.cert.public_key().public_numbers() == key.public_key().public_numbers()
    # at the next rotation the current one still has most of a day left
    assert certs.current.cert.not_valid_after_utc >= t0 + 2 * STEP + dt.timedelta(hours=22)


async def test_endpoint_presents_the_current_hash_and_mesh_dialers_still_verify(
        start_gateway: StartGateway, echo_server: tuple[str, int]) -> None:
    b = await start_gateway(gateway_b(f"{echo_server[0]}:{echo_server[1]}"))
    a = await start_gateway(gateway_a(b, b.identity.id))
    s = await a.dial("svc.test:7")
    s.write(b"x")
    s.write_eof()
    assert await read_all(s, 2) == b"x"
    certs = browser_certs(b)
    assert certs is not None
    from ugate_quic.lib import peer_certificates
    from ugate_quic.mesh import pool_of
    leaf, _ = peer_certificates(next(iter(pool_of(a).peers.values())).quic)
    assert leaf is not None and hashlib.sha256(leaf).hexdigest() == certs.hashes()[0]
    pub = certs.current.cert.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    assert pub and id_of_public_key(certs.current.cert.public_key()) == b.identity.id
