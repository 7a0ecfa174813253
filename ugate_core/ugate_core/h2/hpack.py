"""HPACK (RFC 7541) for the codec: the ``hpack`` library's Encoder and Decoder (the extra
``ugate-core[h2]``, imported when the first codec is made), behind caches of repeated blocks.

A tunnel's headers repeat: after the first ``CONNECT`` to a name, ``:authority`` is in the
dynamic table and the whole request encodes as one indexed byte per field; ``:status 200`` is
in the static table. A block made only of one-byte indexed fields leaves the table as it was,
so its bytes (encoding) or its fields (decoding) stay right until a block that changes the
table; then the cache is emptied. In the per-tunnel exchange this skipped most of the codec's
time (the library encodes and decodes field by field in Python, logging each block).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .frames import H2Error, H2ErrorCode
from .headers import Header

if TYPE_CHECKING:
    from hpack import Decoder, Encoder

_CACHED = 256  # blocks per cache
#: bytes of blocks the decode cache holds at most: a block of literals sent without indexing
#: holds its own values (up to the header list bound each), so 256 of them could pin tens of
#: MiB per connection; repeated requests are a few dozen bytes once their fields are indexed
_CACHED_BYTES = 16 * 1024


def _after_int(block: bytes, i: int, mask: int) -> int:
    """Index just past the integer (RFC 7541 5.1) whose prefix is ``block[i] & mask``; past
    the end of ``block`` if it is cut short."""
    if block[i] & mask != mask:
        return i + 1
    i += 1
    while i < len(block) and block[i] & 0x80:
        i += 1
    return i + 1


def _after_string(block: bytes, i: int) -> int:
    """Index just past the string literal (RFC 7541 5.2) starting at ``i``."""
    if i >= len(block):
        return i + 1
    first = block[i] & 0x7F
    if first != 0x7F:
        return i + 1 + first
    n, shift, i = 0x7F, 0, i + 1
    while i < len(block):
        b = block[i]
        n += (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return i + n
        shift += 7
    return i + 1


def keeps_table(block: bytes) -> bool:
    """True if decoding ``block`` leaves the dynamic table as it is: only indexed fields and
    literals without indexing or never indexed (RFC 7541 6.1, 6.2.2, 6.2.3), as an HTTP/2
    client sends a repeated request (nghttp2 sends ``:path`` without indexing). False for a
    literal with incremental indexing, a table size update, or most bytes that do not parse
    (asked only of blocks the decoder took)."""
    if not block:
        return False
    if min(block) >= 0x80:  # one-byte indexed fields only
        return True
    i, n = 0, len(block)
    while i < n:
        b = block[i]
        if b & 0x80:
            i = _after_int(block, i, 0x7F)
        elif b & 0xE0:  # 01xxxxxx: incremental indexing; 001xxxxx: table size update
            return False
        else:  # 0000xxxx / 0001xxxx: name by index (or a literal name), then the value
            named = b & 0x0F
            i = _after_int(block, i, 0x0F)
            if not named:
                i = _after_string(block, i)
            i = _after_string(block, i)
    return i == n


class Hpack:
    """Both directions' HPACK contexts of one connection."""

    def __init__(self, max_header_list: int, table_size: int = 4096) -> None:
        from hpack import Decoder, Encoder, HPACKError

        self.encoder: Encoder = Encoder()
        self.decoder: Decoder = Decoder(max_header_list_size=max_header_list)
        self.decoder.max_allowed_table_size = table_size
        self._errors = (HPACKError, IndexError, ValueError, TypeError)
        self._enc: dict[tuple[Header, ...], bytes] = {}
        self._dec: dict[bytes, tuple[Header, ...]] = {}
        self._dec_bytes = 0
        #: cached blocks whose fields the codec found a well-formed request: a repeated
        #: request is not checked again (emptied with the decode cache)
        self.request_ok: set[bytes] = set()

    def encode(self, headers: Iterable[Header]) -> bytes:
        key = tuple(headers)
        block = self._enc.get(key)
        if block is not None:
            return block
        block = self.encoder.encode(key)
        if len(block) == len(key) and block and min(block) >= 0x80:
            if len(self._enc) >= _CACHED:
                self._enc.clear()
            self._enc[key] = block
        else:
            self._enc.clear()  # the table may have changed: indexes in cached blocks moved
        return block

    def decode(self, block: bytes, sid: int) -> list[Header]:
        """The fields of ``block``; :class:`H2Error` (COMPRESSION_ERROR) when it cannot be
        decoded: a connection error, the tables are out of step with the peer's from then on."""
        fields = self._dec.get(block)
        if fields is not None:
            return list(fields)
        try:
            headers: list[Header] = self.decoder.decode(block, raw=True)  # type: ignore
        except self._errors as e:
            raise H2Error(f"header block of stream {sid}: {e}",
                                    H2ErrorCode.COMPRESSION_ERROR) from None
        if keeps_table(block):
            if len(block) <= _CACHED_BYTES // 8:
                if len(self._dec) >= _CACHED or self._dec_bytes + len(block) > _CACHED_BYTES:
                    self._drop_decoded()
                self._dec[block] = tuple(headers)
                self._dec_bytes += len(block)
        elif self._dec:
            self._drop_decoded()
        return headers

    def _drop_decoded(self) -> None:
        self._dec.clear()
        self._dec_bytes = 0
        self.request_ok.clear()

    def cached(self, block: bytes) -> bool:
        """``block``'s fields are in the decode cache (it was decoded before and the table
        has not moved since)."""
        return block in self._dec

    def peer_table_size(self, size: int) -> None:
        """The peer's SETTINGS_HEADER_TABLE_SIZE: our encoder uses at most that (and 4096)."""
        self.encoder.header_table_size = min(size, 4096)
        self._enc.clear()
