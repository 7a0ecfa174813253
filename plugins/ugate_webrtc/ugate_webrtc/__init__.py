"""ugate-webrtc: WebRTC data channels (aiortc) as streams, signaled over ugate-http."""

__all__: list[str] = []
