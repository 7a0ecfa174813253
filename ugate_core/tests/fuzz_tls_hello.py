"""Fuzz target for the sans-IO TLS ClientHello parser (the TLS front's SNI/ALPN reader).

With atheris installed: ``python fuzz_tls_hello.py [libFuzzer flags]``. Without it:
``python fuzz_tls_hello.py SECONDS`` mutates a seed corpus (ClientHellos made by the ssl module,
so by OpenSSL) with ``random`` for that long. The property: any bytes give a ClientHello event,
``None`` (more needed) or a ``ProtocolError``; never another exception; how the bytes are split
never changes the outcome; the parser never holds more than its bound.
"""

from __future__ import annotations

import ssl
import sys

from ugate_core import ProtocolError
from ugate_core.testing import mutate_bytes, run_fuzz_target
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


if __name__ == "__main__":
    sys.exit(run_fuzz_target(
        "fuzz_tls_hello", TestOneInput,
        lambda rng: TestOneInput(mutate_bytes(rng, rng.choice(SEEDS), MAX + 512,
                                              length_fields=True))))
