"""ugate-quic: one QUIC endpoint on UDP, mesh streams over QUIC and the ``quic`` dialer."""

from .alpn import AlpnHandler, AlpnSession, QuicConn
from .qstream import QuicStream

__all__ = ["AlpnHandler", "AlpnSession", "QuicConn", "QuicStream"]
