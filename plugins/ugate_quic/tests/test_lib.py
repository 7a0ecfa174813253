"""ugate_quic.lib reads aioquic internals: each helper, checked against the installed aioquic
on a real connection pair in memory (no sockets)."""

from __future__ import annotations

import aioquic
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ugate_quic.lib import (
    new_stream_id,
    peer_address,
    peer_certificates,
    presented_certificate,
    send_buffered,
    set_max_datagram_size,
)

from .test_attacks import self_signed

_CLIENT, _SERVER = ("10.0.0.1", 1234), ("10.0.0.2", 4433)


def _pump(a: QuicConnection, b: QuicConnection, now: float) -> None:
    for _ in range(20):
        moved = False
        for src, dst, frm in ((a, b, _CLIENT), (b, a, _SERVER)):
            for data, _addr in src.datagrams_to_send(now=now):
                dst.receive_datagram(data, frm, now=now)
                moved = True
        if not moved:
            return


def test_helpers_against_installed_aioquic() -> None:
    assert aioquic.__version__.startswith("1."), aioquic.__version__
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed(key, "lib")
    scfg = QuicConfiguration(is_client=False, alpn_protocols=["t"])
    scfg.certificate, scfg.private_key = cert, key
    ccfg = QuicConfiguration(is_client=True, alpn_protocols=["t"], verify_mode=0)
    client = QuicConnection(configuration=ccfg)
    client.connect(_SERVER, now=0.0)
    server = QuicConnection(
        configuration=scfg,
        original_destination_connection_id=client.original_destination_connection_id)
    _pump(client, server, 0.0)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert presented_certificate(server) == der
    assert peer_certificates(client) == (der, [])
    sid = new_stream_id(client, False)
    assert sid == 0 and new_stream_id(client, True) == 2
    assert send_buffered(client, sid) == 0  # not opened yet
    client.send_stream_data(sid, b"x" * 200_000)
    assert send_buffered(client, sid) == 200_000  # held, nothing acknowledged yet
    for step in range(1, 30):  # delayed ACKs: let the timers run
        for c in (client, server):
            t = c.get_timer()
            if t is not None and t <= step * 0.05:
                c.handle_timer(now=step * 0.05)
        _pump(client, server, step * 0.05)
    assert send_buffered(client, sid) < 200_000  # acknowledged bytes are released


def test_set_max_datagram_size_on_an_established_connection() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    scfg = QuicConfiguration(is_client=False, alpn_protocols=["t"])
    scfg.certificate, scfg.private_key = self_signed(key, "lib"), key
    client = QuicConnection(configuration=QuicConfiguration(
        is_client=True, alpn_protocols=["t"], verify_mode=0))
    client.connect(_SERVER, now=0.0)
    server = QuicConnection(
        configuration=scfg,
        original_destination_connection_id=client.original_destination_connection_id)
    _pump(client, server, 0.0)
    assert peer_address(server) == _CLIENT and peer_address(client) == _SERVER
    set_max_datagram_size(client, 16384)
    assert client._loss._pacer._max_datagram_size == 16384
    assert client._loss._cc._max_datagram_size == 16384  # type: ignore[attr-defined]
    sid = new_stream_id(client, False)
    client.send_stream_data(sid, bytes(range(256)) * 40, end_stream=True)
    sizes, got = [], bytearray()
    for data, _addr in client.datagrams_to_send(now=0.1):
        sizes.append(len(data))
        server.receive_datagram(data, _CLIENT, now=0.1)
    while (ev := server.next_event()) is not None:
        if getattr(ev, "stream_id", None) == sid:
            got += ev.data  # type: ignore[attr-defined]
    assert got == bytes(range(256)) * 40  # 10240 bytes, in one datagram
    assert len(sizes) == 1 and 10240 < sizes[0] <= 16384, sizes
