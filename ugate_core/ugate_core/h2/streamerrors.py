"""What a peer's RST_STREAM and GOAWAY mean for a stream's waiter, written once for every
HTTP/2 user of :class:`~ugate_core.h2.H2Endpoint` (HBONE tunnels, the HTTP proxy).

* RST_STREAM ``REFUSED_STREAM``: the peer did not process the stream (RFC 9113 8.7), so it
  is safe to retry: :class:`H2StreamRefused`, which is a ``ConnectionRefusedError`` too.
* any other RST_STREAM: :class:`H2StreamReset` (a ``ConnectionResetError``) with the code.
* GOAWAY with an error code: the connection ends, every stream with
  :class:`H2StreamReset` (:func:`goaway_error`).
* GOAWAY ``NO_ERROR``: running streams finish; streams we opened above its last stream id
  were never processed (:func:`unprocessed`) and fail with :class:`H2StreamRefused`
  (:func:`refused_by_goaway`), so a dialer retries them on another connection.
"""

from __future__ import annotations

from .frames import H2ErrorCode, code_name

__all__ = [
    "H2StreamRefused",
    "H2StreamReset",
    "goaway_error",
    "refused_by_goaway",
    "reset_by_peer",
    "stream_error",
    "unprocessed",
]


class H2StreamReset(ConnectionResetError):
    """The peer reset the stream (``code``), or the connection went away under it."""

    def __init__(self, message: str, code: int = H2ErrorCode.CANCEL) -> None:
        super().__init__(message)
        self.code = code


class H2StreamRefused(H2StreamReset, ConnectionRefusedError):
    """The peer did not process the stream (REFUSED_STREAM, or beyond a GOAWAY): retryable."""


def reset_by_peer(sid: int, code: int) -> H2StreamReset:
    """The error for the peer's RST_STREAM on ``sid``: refused (retryable) or reset."""
    msg = f"HTTP/2 stream {sid} reset by the peer ({code_name(code)})"
    if code == H2ErrorCode.REFUSED_STREAM:
        return H2StreamRefused(msg, code)
    return H2StreamReset(msg, code)


def stream_error(sid: int, code: int, message: str) -> H2StreamReset:
    """The error for a stream the codec reset itself (malformed: RFC 9113 8.1.1)."""
    return H2StreamReset(f"HTTP/2 stream {sid}: {message}", code)


def goaway_error(connection: str, code: int) -> H2StreamReset | None:
    """A GOAWAY with an error code ends the connection and every stream on it: the error for
    them; ``None`` for ``NO_ERROR`` (a graceful GOAWAY: running streams finish)."""
    if code == H2ErrorCode.NO_ERROR:
        return None
    return H2StreamReset(f"HTTP/2 connection {connection}: GOAWAY {code_name(code)}", code)


def unprocessed(sid: int, last_sid: int, client: bool) -> bool:
    """Whether a graceful GOAWAY naming ``last_sid`` left ``sid`` unprocessed: one we opened
    (odd ids are a client's) above the last stream id the peer processed."""
    return sid > last_sid and (sid % 2 == 1) == client


def refused_by_goaway(sid: int, last_sid: int) -> H2StreamRefused:
    """The error for a stream :func:`unprocessed` says the peer never saw."""
    return H2StreamRefused(f"HTTP/2 stream {sid} refused by GOAWAY (last stream {last_sid})",
                           H2ErrorCode.REFUSED_STREAM)
