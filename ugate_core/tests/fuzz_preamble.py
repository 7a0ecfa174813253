"""Fuzz target for the sans-IO stream preamble (the destination header of QUIC, WebTransport
and libp2p streams).

With atheris installed: ``python fuzz_preamble.py [libFuzzer flags]``. Without it:
``python fuzz_preamble.py SECONDS`` mutates a seed corpus of requests and statuses with
``random``. The properties: any bytes give a request, ``None`` (more needed) or a
``PreambleError`` with a 400 answer, never another exception; how the bytes are split never
changes the outcome; the acceptor never buffers more than its bound; a request it accepts
encodes back to exactly the bytes it consumed (one meaning, one encoding); the opener's status
parser has the same properties.
"""

from __future__ import annotations

import sys

from ugate_core.preamble import (
    MAX_REQUEST,
    MAX_STATUS,
    PreambleAcceptor,
    PreambleError,
    PreambleOpener,
    encode_request,
    encode_status,
)
from ugate_core.testing import mutate_bytes, run_fuzz_target

SEEDS = [
    encode_request("svc.example:443"),
    encode_request("[fd00::1]:8080", {"traceparent": "00-0af7651916cd43dd-b7ad6b7169203331-01",
                                      "baggage": "k=v"}),
    encode_request("10.0.0.1:22") + b"SSH-2.0-x\r\n",
    encode_status(200) + b"payload",
    encode_status(503, "no_route"),
    b"\x01\xa0\x1f" + b"a" * 300,
]


def _accept(chunks: list[bytes]) -> tuple[str, object]:
    p = PreambleAcceptor()
    fed = 0
    try:
        for c in chunks:
            fed += len(c)
            req = p.receive_data(c)
            assert len(p._in.buf) <= 1 + 2 + MAX_REQUEST, len(p._in.buf)
            if req is not None:
                rest = p.leftover()
                consumed = b"".join(chunks)[: fed - len(rest)]
                assert encode_request(req.target, req.meta) == consumed
                return "request", (req, rest + b"".join(chunks)[fed:])
    except PreambleError as e:
        assert PreambleOpener().receive_data(e.answer) is not None
        return "error", e.reason
    return "more", None


def _open(chunks: list[bytes]) -> tuple[str, object]:
    p = PreambleOpener()
    fed = 0
    try:
        for c in chunks:
            fed += len(c)
            st = p.receive_data(c)
            assert len(p._in.buf) <= 1 + 2 + MAX_STATUS
            if st is not None:
                return "status", (st, p.leftover() + b"".join(chunks)[fed:])
    except PreambleError as e:
        return "error", e.reason
    return "more", None


def TestOneInput(data: bytes) -> None:
    cut = data[-1] % (len(data) + 1) if data else 0
    for drive in (_accept, _open):
        whole = drive([data])
        assert drive([data[:cut], data[cut:]]) == whole, (data[:40], cut)
        if len(data) <= 300:
            assert drive([data[i : i + 1] for i in range(len(data))]) == whole


if __name__ == "__main__":
    sys.exit(run_fuzz_target(
        "fuzz_preamble", TestOneInput,
        lambda rng: TestOneInput(mutate_bytes(rng, rng.choice(SEEDS), MAX_REQUEST + 64))))
