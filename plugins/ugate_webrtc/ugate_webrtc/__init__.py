"""ugate-webrtc: WebRTC data channels (aiortc) as streams, signaled over ugate-http."""

from .tokens import check_token, make_token

__all__ = ["check_token", "make_token"]
