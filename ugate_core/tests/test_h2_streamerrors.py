"""core's one mapping of RST_STREAM / GOAWAY to a stream's error (HBONE and HTTP use it)."""

from __future__ import annotations

from ugate_core import H2ErrorCode, H2StreamRefused, H2StreamReset
from ugate_core.h2 import goaway_error, refused_by_goaway, reset_by_peer, stream_error, unprocessed


def test_refused_is_retryable_and_reset_carries_its_code() -> None:
    r = reset_by_peer(3, H2ErrorCode.REFUSED_STREAM)
    assert isinstance(r, H2StreamRefused) and isinstance(r, ConnectionRefusedError)
    assert isinstance(r, ConnectionResetError) and r.code == H2ErrorCode.REFUSED_STREAM
    e = reset_by_peer(1, H2ErrorCode.CONNECT_ERROR)
    assert type(e) is H2StreamReset and not isinstance(e, ConnectionRefusedError)
    assert str(e) == "HTTP/2 stream 1 reset by the peer (CONNECT_ERROR)"
    assert e.code == H2ErrorCode.CONNECT_ERROR
    assert stream_error(5, H2ErrorCode.PROTOCOL_ERROR, "bad").code == H2ErrorCode.PROTOCOL_ERROR


def test_goaway() -> None:
    assert goaway_error("c1", H2ErrorCode.NO_ERROR) is None
    g = goaway_error("c1", H2ErrorCode.ENHANCE_YOUR_CALM)
    assert isinstance(g, H2StreamReset) and not isinstance(g, H2StreamRefused)
    assert str(g) == "HTTP/2 connection c1: GOAWAY ENHANCE_YOUR_CALM"
    # a client's own streams (odd) above the last processed id were never seen
    assert unprocessed(5, 3, client=True) and not unprocessed(3, 3, client=True)
    assert not unprocessed(4, 2, client=True) and unprocessed(4, 2, client=False)
    assert isinstance(refused_by_goaway(5, 3), H2StreamRefused)
