"""HTTP/2 (RFC 9113) for ugate, sans-IO: :class:`H2Codec` turns the peer's bytes into calls on
an :class:`H2Handler` and queues the frames to send; :class:`H2Endpoint` runs a codec over a
core Stream (I/O and flow-control policy) for HBONE and the HTTP proxy. HPACK is the
``hpack`` library's (extra ``ugate-core[h2]``); framing, stream states and flow control are
ours (see ``docs/h2.md``).
"""

from .codec import H2Codec
from .endpoint import H2Endpoint, H2Flow
from .flood import DEFAULT_LIMITS, FloodLimits
from .frames import (
    PREFACE,
    H2ConnectionError,
    H2Error,
    H2ErrorCode,
    H2Setting,
    H2UsageError,
    code_name,
)
from .handler import LOCAL_DEFAULTS, H2Handler
from .headers import Header, check_request, check_response, check_trailers
from .streamerrors import (
    H2StreamRefused,
    H2StreamReset,
    goaway_error,
    refused_by_goaway,
    reset_by_peer,
    stream_error,
    unprocessed,
)

__all__ = [
    "DEFAULT_LIMITS",
    "LOCAL_DEFAULTS",
    "PREFACE",
    "FloodLimits",
    "H2Codec",
    "H2ConnectionError",
    "H2Endpoint",
    "H2Error",
    "H2ErrorCode",
    "H2Flow",
    "H2Handler",
    "H2Setting",
    "H2StreamRefused",
    "H2StreamReset",
    "H2UsageError",
    "Header",
    "check_request",
    "check_response",
    "check_trailers",
    "code_name",
    "goaway_error",
    "refused_by_goaway",
    "reset_by_peer",
    "stream_error",
    "unprocessed",
]
