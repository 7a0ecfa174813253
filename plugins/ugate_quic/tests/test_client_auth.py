"""The ``ugate/1`` client's proof parser (``check_auth``) under hypothesis: any bytes, and
valid proofs with bytes changed, give ``None`` (empty only), a certificate whose key signed
this server's binding, or ``AuthFailed`` — never another exception (fuzz_client_auth.py
checks the same property for longer)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ugate_quic.mesh import AuthFailed, check_auth

from .fuzz_client_auth import SEEDS, SERVER, TestOneInput


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes(data: bytes) -> None:
    TestOneInput(bytes([1]) + data)
    TestOneInput(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SEEDS), st.integers(0, 2000), st.integers(0, 255))
def test_a_proof_with_one_byte_changed(seed: bytes, at: int, value: int) -> None:
    i = at % len(seed)
    TestOneInput(seed[:i] + bytes([value]) + seed[i + 1:])


def test_the_seeds_verify_for_their_server_only() -> None:
    for seed in SEEDS:
        assert check_auth(seed, SERVER) is not None
        TestOneInput(seed)  # and not for another server's certificate
    try:
        check_auth(SEEDS[0][:-1], SERVER)
    except AuthFailed as e:
        assert "truncated" in str(e)
    else:
        raise AssertionError("a truncated proof verified")
