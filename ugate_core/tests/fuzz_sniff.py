"""Fuzz target for the shared-port sniffer, with every installed protocol's sniff function.

With atheris installed: ``python fuzz_sniff.py [libFuzzer flags]``. Without it:
``python fuzz_sniff.py SECONDS`` mutates a seed corpus of first bytes (SSH, TLS, h2c, HTTP/1.1,
SOCKS5, MQTT-like) with ``random``. The properties: no sniffer raises on any prefix (one that
did would be logged and skipped, but it is a bug); ``sniff_stream`` over a stream that ends
after the bytes answers with a protocol or a known reason, whole or byte by byte; and the
stream still holds every byte afterwards (the sniffer loses nothing).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile

from ugate_core import Gateway, loads
from ugate_core.sniff import sniff_stream
from ugate_core.stream import stream_pair
from ugate_core.testing import mutate_bytes, run_fuzz_target
from ugate_core.types import ListenerType

SEEDS = [
    b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"CONNECT a:443 HTTP/1.1\r\n\r\n",
    b"\x05\x01\x00",
    b"\x10\x0c\x00\x04MQTT\x04\x02\x00<",
    b"ECHO\nhi",
]
REASONS = {"no_match", "timeout", "too_long", "closed"}

_types: list[ListenerType] = []


def _listener_types() -> list[ListenerType]:
    if not _types:
        gw = Gateway(loads('[admin]\nlisten = ""\n'), state_dir=tempfile.mkdtemp())
        gw.load()
        _types.extend(t for t in gw.listener_types.values() if t.sniff is not None)
    return _types


async def _sniff(chunks: list[bytes]) -> tuple[str, str]:
    client, server = stream_pair()
    for c in chunks:
        client.write(c)
    client.write_eof()
    res = await sniff_stream(server, _listener_types(), timeout=0.2, max_bytes=64)
    got = bytearray()
    while d := await server.read():
        got += d
    assert bytes(got) == b"".join(chunks), "the sniffer lost or changed bytes"
    assert res.listener is not None or res.reason in REASONS, res.reason
    return (res.listener.name if res.listener else "", res.reason)


def TestOneInput(data: bytes, runner: asyncio.Runner | None = None) -> None:
    for lt in _listener_types():
        for n in range(len(data) + 1):
            assert lt.sniff is not None
            lt.sniff(data[:n])  # must not raise
    run = runner.run if runner is not None else asyncio.run
    whole = run(_sniff([data]))
    if whole[0]:
        # a protocol chosen from all the bytes at once: byte by byte ends in a choice too
        split = run(_sniff([data[i : i + 1] for i in range(len(data))]))
        assert split[0] or split[1] in REASONS


if __name__ == "__main__":
    with asyncio.Runner() as runner:
        sys.exit(run_fuzz_target(
            "fuzz_sniff", lambda data: TestOneInput(data, runner),
            lambda rng: TestOneInput(mutate_bytes(rng, rng.choice(SEEDS), 200), runner)))
