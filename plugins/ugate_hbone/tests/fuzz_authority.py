"""Fuzz target for the HBONE request checks (``:authority`` and request headers).

With atheris installed: ``python fuzz_authority.py [libFuzzer flags]``. Without it:
``python fuzz_authority.py SECONDS`` mutates a seed corpus with ``random`` for that long. The
properties are the hypothesis tests': any input gives a result or an ``AuthorityError`` (a
``Refusal`` for header lists), and an accepted authority's canonical form parses to itself.
"""

from __future__ import annotations

import random
import sys

from ugate_core.testing import run_fuzz_target
from ugate_hbone.authority import (
    AuthorityError,
    ConnectRequest,
    format_authority,
    parse_authority,
    parse_request,
)

SEEDS = [
    b"example.com:443", b"[::1]:15008", b"127.0.0.1:80", b"svc.ns.svc.cluster.local:9080",
    b"[fe80::1%eth0]:1", b"a..b:1", b"x:65536", b"_x.y:0", b"[2001:db8::1]:", b"1.2.3:4",
]


def check(data: bytes) -> None:
    try:
        host, port = parse_authority(data)
    except AuthorityError:
        pass
    else:
        assert parse_authority(format_authority(host, port)) == (host, port), data
    r = parse_request([(b":method", data[:8]), (b":authority", data), (b"baggage", data)],
                      methods=("CONNECT", "POST"))
    if isinstance(r, ConnectRequest):
        assert parse_authority(r.authority) == (r.host, r.port)


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1:
            b.insert(rng.randint(0, len(b)), rng.choice(b":[]%.-_0123456789aZ@/ \x00\xff"))
        elif op == 2 and b:
            del b[rng.randrange(len(b))]
        else:
            b += rng.choice(SEEDS)
    return bytes(b[:300])


if __name__ == "__main__":
    sys.exit(run_fuzz_target("fuzz_authority", check,
                             lambda rng: check(mutate(rng, rng.choice(SEEDS))), seed=1))
