"""Fuzz target for the ``ugate/1`` client's proof (``ugate_quic.mesh.check_auth``).

With atheris installed: ``python fuzz_client_auth.py [libFuzzer flags]``. Without it:
``python fuzz_client_auth.py SECONDS`` mutates valid proofs (P-256 and Ed25519) with
``random`` for that long. The property the hypothesis tests check too: any bytes give
``None`` (only for the empty message: no key), the certificate of a key that signed this
server's certificate, or ``AuthFailed`` — never another exception; and a proof made for
another server's certificate never verifies.
"""

from __future__ import annotations

import datetime as dt
import random
import sys

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from ugate_core.testing import mutate_bytes, run_fuzz_target
from ugate_quic.mesh import AuthFailed, auth_message, check_auth

Key = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _cert(key: Key) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz")])
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    algo = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
         .public_key(key.public_key()).serial_number(1).not_valid_before(now)
         .not_valid_after(now + dt.timedelta(days=1)).sign(key, algo))
    return c.public_bytes(serialization.Encoding.DER)


SERVER = _cert(ec.generate_private_key(ec.SECP256R1()))
OTHER_SERVER = _cert(ec.generate_private_key(ec.SECP256R1()))
KEYS: list[Key] = [ec.generate_private_key(ec.SECP256R1()),
                   ed25519.Ed25519PrivateKey.generate()]
SEEDS = [auth_message(k, _cert(k), SERVER) for k in KEYS]


def _signed_this_server(cert_der: bytes, msg: bytes) -> bool:
    """Whether the key of ``cert_der`` signed ``SERVER``'s binding in ``msg`` (what a
    returned certificate must mean), checked apart from ``check_auth``."""
    from ugate_quic.mesh import _signed_data

    sig = msg[3 + len(cert_der) + 2:]
    pub = x509.load_der_x509_certificate(cert_der).public_key()
    try:
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(sig, _signed_data(SERVER), ec.ECDSA(hashes.SHA256()))
        elif isinstance(pub, ed25519.Ed25519PublicKey):
            pub.verify(sig, _signed_data(SERVER))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def TestOneInput(data: bytes) -> None:
    try:
        got = check_auth(data, SERVER)
    except AuthFailed:
        pass
    else:
        if got is None:
            assert data == b""
        else:
            assert data[3:3 + len(got)] == got
            assert _signed_this_server(got, data)
    # bound to the server's certificate: the same bytes never verify for another server
    if data in SEEDS:
        try:
            check_auth(data, OTHER_SERVER)
        except AuthFailed:
            pass
        else:
            raise AssertionError("a proof for one server verified for another")


def random_case(rng: random.Random) -> None:
    seed = rng.choice(SEEDS)
    TestOneInput(seed if rng.random() < 0.05 else
                 mutate_bytes(rng, seed, max_len=2048, length_fields=True))


if __name__ == "__main__":
    sys.exit(run_fuzz_target("fuzz_client_auth", TestOneInput, random_case))
