"""Fuzz target for the sans-IO TLS ClientHello parser (the TLS front's SNI/ALPN reader).

With atheris installed: ``python fuzz_tls_hello.py [libFuzzer flags]``. Without it:
``python fuzz_tls_hello.py SECONDS`` mutates a seed corpus (ClientHellos made by the ssl module,
so by OpenSSL) with ``random`` for that long. The property: any bytes give a ClientHello event,
``None`` (more needed) or a ``ProtocolError``; never another exception; how the bytes are split
never changes the outcome; the parser never holds more than its bound.
"""

from __future__ import annotations

import random
import ssl
import sys
import time

from ugate_core import ProtocolError
from ugate_core.tls_hello import ClientHelloParser, ClientHelloReceived

MAX = 4096  # a small bound, so the fuzzer reaches the limit checks too


def _hello(sni: str | None, alpn: list[str] | None) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_side=False, server_hostname=sni)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


SEEDS = [
    _hello("svc.example", ["h2", "http/1.1"]),
    _hello(None, None),
    _hello("a." * 60 + "test", ["istio-peer-exchange", "h2"]),
    b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x03",
]


def _drive(chunks: list[bytes]) -> tuple[str, object]:
    p = ClientHelloParser(MAX)
    try:
        for c in chunks:
            ev = p.receive_data(c)
            assert len(p._raw) <= MAX, len(p._raw)
            if ev is not None:
                assert isinstance(ev, ClientHelloReceived)
                assert ev.sni is None or (ev.sni and ev.sni == ev.sni.lower())
                return "hello", (ev.sni, ev.alpn, ev.version)
    except ProtocolError as e:
        return "error", e.reason
    return "more", None


def TestOneInput(data: bytes) -> None:
    whole = _drive([data])
    cut = data[0] % (len(data) + 1) if data else 0
    assert _drive([data[:cut], data[cut:]]) == whole, (data[:40], cut)
    if len(data) <= 600:  # byte by byte is quadratic: keep it to short inputs
        assert _drive([data[i : i + 1] for i in range(len(data))]) == whole


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(i, len(b) - 1)] = rng.randrange(256)
        elif op == 1:
            b[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 2 and b:
            del b[i : i + rng.randint(1, 8)]
        elif b:  # length fields are where parsers break: nudge a 16-bit one
            j = min(i, len(b) - 2)
            if j >= 0:
                v = (b[j] << 8 | b[j + 1]) + rng.choice([-1, 1, 255, -255, 4096])
                b[j : j + 2] = (v & 0xFFFF).to_bytes(2, "big")
    return bytes(b[: MAX + 512])


def main(argv: list[str]) -> int:
    try:
        import atheris  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        seconds = float(argv[1]) if len(argv) > 1 else 10.0
        rng = random.Random(0)
        end, n = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            TestOneInput(_mutate(rng, rng.choice(SEEDS)))
            n += 1
        print(f"fuzz_tls_hello: {n} inputs, no failure")
        return 0
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
