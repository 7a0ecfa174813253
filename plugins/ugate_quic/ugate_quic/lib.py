"""Everything ugate needs from the QUIC library that is not its documented API, in one place.

The library is aioquic (docs/quic.md says why: qh3 measured 2-5x faster here, but never
completes a handshake with Chromium). These helpers read aioquic 1.x internals;
``tests/test_lib.py`` pins each to the installed version, so an aioquic release that moves
them fails there first, naming the helper.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aioquic.quic.connection import MAX_STREAM_DATA_FRAME_CAPACITY
from aioquic.quic.packet import QuicFrameType
from cryptography.hazmat.primitives import serialization

if TYPE_CHECKING:
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.packet_builder import QuicPacketBuilder
    from aioquic.quic.recovery import QuicPacketSpace
    from aioquic.quic.stream import QuicStream

    from ugate_core import Identity

_DER = serialization.Encoding.DER


def send_buffered(quic: QuicConnection, stream_id: int) -> int:
    """Bytes this side holds for ``stream_id``: not yet sent, or sent and not yet acknowledged
    (aioquic's sender keeps both in one buffer, which grows without bound when written to)."""
    s = quic._streams.get(stream_id)
    return 0 if s is None else len(s.sender._buffer)


def new_stream_id(quic: QuicConnection, unidirectional: bool) -> int:
    """A locally-initiated stream id; the first send on it opens the stream (aioquic's own
    ``create_stream`` does the same)."""
    return quic.get_next_available_stream_id(is_unidirectional=unidirectional)


def peer_certificates(quic: QuicConnection) -> tuple[bytes | None, list[bytes]]:
    """The peer's leaf certificate (DER) and the rest of its chain, after the handshake."""
    tls = quic.tls
    leaf = tls._peer_certificate
    chain = tls._peer_certificate_chain
    return (None if leaf is None else leaf.public_bytes(_DER),
            [c.public_bytes(_DER) for c in chain])


def set_max_datagram_size(quic: QuicConnection, size: int) -> None:
    """Change the largest datagram an established connection sends: the packet builder's
    size, and the unit the congestion controller (window growth) and pacer count in."""
    quic._max_datagram_size = size
    loss = quic._loss
    loss._pacer._max_datagram_size = size
    cc = loss._cc
    if hasattr(cc, "_max_datagram_size"):  # reno and cubic keep one (aioquic 1.x)
        cc._max_datagram_size = size
    if hasattr(cc, "additive_increase_factor"):  # cubic's
        cc.additive_increase_factor = size


def peer_address(quic: QuicConnection) -> tuple[str, int]:
    """The address the connection's packets go to (its active network path)."""
    addr = quic._network_paths[0].addr
    return str(addr[0]), int(addr[1])


def use_identity(cfg: QuicConfiguration, ident: Identity) -> None:
    """Present the workload's certificate chain and key."""
    chain = ident.cert_chain()
    cfg.certificate = chain[0]
    cfg.certificate_chain = list(chain[1:])
    cfg.private_key = ident.key


def presented_certificate(quic: QuicConnection) -> bytes:
    """The certificate (DER) this side presented in ``quic``'s handshake, ``b""`` if none
    (the configuration's may have rotated since)."""
    cert = quic.tls.certificate
    return b"" if cert is None else cert.public_bytes(_DER)


class StreamCredit:
    """Receive credit that follows what this side can take, for the streams it tracks.

    aioquic doubles a stream's MAX_STREAM_DATA whenever the peer has sent half of it, whether
    or not anything was read: a receiver that stalls lets the sender fill memory without
    bound. For a tracked stream the credit is instead ``received + window`` (raised in steps
    of ``window / 2``), and it is not raised at all while the stream is held (its reader
    paused): the peer can then send at most ``window`` bytes beyond what was taken.
    Untracked streams (HTTP/3's control streams, ...) keep the library's rule.
    """

    def __init__(self, quic: QuicConnection, window: int) -> None:
        self.window = window
        self.tracked: set[int] = set()
        self.held: set[int] = set()
        self._original = quic._write_stream_limits
        self._quic = quic
        # an instance attribute: aioquic calls self._write_stream_limits for every stream
        # each time it builds a packet (aioquic 1.x, pinned by tests/test_lib.py)
        quic._write_stream_limits = self._write_stream_limits  # type: ignore[method-assign]

    def _write_stream_limits(self, builder: QuicPacketBuilder, space: QuicPacketSpace,
                             stream: QuicStream) -> None:
        sid = stream.stream_id
        if sid not in self.tracked or not stream.max_stream_data_local:
            self._original(builder=builder, space=space, stream=stream)
            return
        if sid not in self.held:
            want = stream.receiver.highest_offset + self.window
            if want - stream.max_stream_data_local >= self.window // 2:
                stream.max_stream_data_local = want
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(QuicFrameType.MAX_STREAM_DATA,
                                      capacity=MAX_STREAM_DATA_FRAME_CAPACITY,
                                      handler=self._quic._on_max_stream_data_delivery,
                                      handler_args=(stream,))
            buf.push_uint_var(sid)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local
