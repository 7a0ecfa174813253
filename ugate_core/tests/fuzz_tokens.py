"""Fuzz target for browser tokens (``ugate_core.tokens.verify_token``).

With atheris installed: ``python fuzz_tokens.py [libFuzzer flags]``. Without it:
``python fuzz_tokens.py SECONDS`` mutates valid tokens (Ed25519 and P-256 signers) with
``random`` for that long. The property test_tokens.py checks with hypothesis too: any text
gives the subject (only for a token a trusted key signed, for this audience, in its lifetime)
or ``AuthError`` with one of the documented reasons — never another exception.
"""

from __future__ import annotations

import random
import sys

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ugate_core import AuthError, id_of_public_key, make_token, verify_token
from ugate_core.testing import mutate_bytes, run_fuzz_target
from ugate_core.tokens import TokenKey

NOW = 1_796_000_000.0
SIGNERS = [ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1())]
KEYS: dict[str, TokenKey] = {id_of_public_key(k.public_key()): k.public_key() for k in SIGNERS}
SEEDS = [make_token(k, "alice", "gw", 300, now=NOW) for k in SIGNERS]
REASONS = {"token_malformed", "token_unknown_key", "token_signature", "token_audience",
           "token_expired", "token_lifetime"}


def TestOneInput(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        sub = verify_token(text, KEYS, "gw", 3600, now=NOW)
    except AuthError as e:
        assert e.reason in REASONS, e.reason
        assert text not in str(e) or len(text) < 8  # the log line never holds the token
        return
    assert isinstance(sub, str) and sub


def random_case(rng: random.Random) -> None:
    seed = rng.choice(SEEDS).encode()
    TestOneInput(seed if rng.random() < 0.05 else mutate_bytes(rng, seed, max_len=2100))


if __name__ == "__main__":
    sys.exit(run_fuzz_target("fuzz_tokens", TestOneInput, random_case))
