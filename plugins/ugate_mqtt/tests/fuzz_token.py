"""Fuzz target for the mesh token check (``ugate_mqtt.token.verify``): a device's password.

With atheris installed: ``python fuzz_token.py [libFuzzer flags]``. Without it:
``python fuzz_token.py SECONDS`` mutates a valid token with ``random`` for that long. The
property: any password gives the device's ID (only for a token its key signed, for this
audience, unexpired) or ``TokenError`` — never another exception (a refusal CONNACK, not a
dropped connection with a traceback).
"""

from __future__ import annotations

import base64
import random
import sys

from cryptography.hazmat.primitives.asymmetric import ec

from ugate_core.testing import mutate_bytes, run_fuzz_target
from ugate_mqtt.token import TokenError, mint, verify

NOW = 1_796_000_000.0
KEY = ec.generate_private_key(ec.SECP256R1())
IDENT, TOKEN = mint(KEY, "fuzz", 300, now=NOW)
DEEP = (base64.urlsafe_b64encode(b'{"a":' + b"[" * 1400 + b"]" * 1400 + b"}").rstrip(b"=")
        .decode() + ".e30.AAAA")  # a header nested past the JSON decoder's recursion limit
#: a header whose jwk x is JSON for a letter beyond ASCII ("\u00e9")
WIDE = (base64.urlsafe_b64encode(b'{"alg":"ES256","jwk":{"kty":"EC","crv":"P-256",'
                                 b'"x":"\\u00e9AAA","y":"AAAA"}}').rstrip(b"=").decode()
        + ".e30.AAAA")


def TestOneInput(data: bytes) -> None:
    try:
        got = verify(IDENT, data, audience="fuzz", max_lifetime=600, now=NOW)
    except TokenError:
        return
    assert got == IDENT


def random_case(rng: random.Random) -> None:
    seed = rng.choice([TOKEN.encode(), DEEP.encode(), WIDE.encode()])
    TestOneInput(seed if rng.random() < 0.05 else mutate_bytes(rng, seed, max_len=4200))


if __name__ == "__main__":
    sys.exit(run_fuzz_target("fuzz_token", TestOneInput, random_case))
