"""HTTP/2 wire constants (RFC 9113 sections 6, 7 and 11), the codec's errors and frame writers.

Frame types, flags and limits are plain ints on the hot path; :class:`H2ErrorCode` and
:class:`H2Setting` name them for callers and logs.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from ..errors import ProtocolError

#: what a client sends before its first frame (RFC 9113 3.4)
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types (RFC 9113 6)
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

MAX_WINDOW = (1 << 31) - 1
DEFAULT_WINDOW = 65535
MIN_MAX_FRAME = 16384
MAX_MAX_FRAME = (1 << 24) - 1
MAX_STREAM_ID = (1 << 31) - 1


class H2ErrorCode(IntEnum):
    """RST_STREAM and GOAWAY error codes (RFC 9113 7)."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


class H2Setting(IntEnum):
    """SETTINGS parameters (RFC 9113 6.5.2, RFC 8441 3)."""

    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6
    ENABLE_CONNECT_PROTOCOL = 0x8


def code_name(code: int) -> str:
    """``PROTOCOL_ERROR`` for 1; the number for codes RFC 9113 does not name."""
    try:
        return H2ErrorCode(code).name
    except ValueError:
        return str(code)


class H2Error(ProtocolError):
    """An HTTP/2 rule was broken; ``code`` is the RFC 9113 error code that says which."""

    def __init__(self, message: str, code: int = H2ErrorCode.PROTOCOL_ERROR) -> None:
        self.code = code
        super().__init__(message, "h2_protocol")


class H2ConnectionError(H2Error):
    """The peer broke a connection-level rule: GOAWAY(``code``) is already queued in the
    codec's output and the codec takes no more bytes. Flush, then close the transport."""


class H2UsageError(H2Error):
    """A call of ours cannot be carried out on this connection: the stream is closed or
    unknown, the peer's stream limit or the stream IDs are used up, a window would overflow."""


HEADER = struct.Struct(">HBBBL")  # 24-bit length as 16 + 8 bits, type, flags, stream id
_pack = HEADER.pack
_u32 = struct.Struct(">L")
_two_u32 = struct.Struct(">LL")
_setting = struct.Struct(">HL")


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    """One whole frame."""
    n = len(payload)
    return _pack(n >> 8, n & 0xFF, ftype, flags, sid) + payload


def settings_payload(values: dict[int, int]) -> bytes:
    return b"".join(_setting.pack(k, v) for k, v in values.items())


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    """(identifier, value) pairs of a SETTINGS payload whose length is a multiple of 6."""
    return [_setting.unpack_from(payload, i) for i in range(0, len(payload), 6)]


def window_update(sid: int, n: int) -> bytes:
    return _pack(0, 4, WINDOW_UPDATE, 0, sid) + _u32.pack(n)


def rst_stream(sid: int, code: int) -> bytes:
    return _pack(0, 4, RST_STREAM, 0, sid) + _u32.pack(code)


def goaway(last_sid: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, _two_u32.pack(last_sid, code) + debug)


def u32(payload: bytes, offset: int = 0) -> int:
    return int(_u32.unpack_from(payload, offset)[0])
