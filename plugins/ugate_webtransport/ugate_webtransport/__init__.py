"""ugate-webtransport: browser WebTransport sessions on ugate-quic's QUIC endpoint (ALPN h3)."""

from .session import WT_PATH, WebTransportSession

__all__ = ["WT_PATH", "WebTransportSession"]
