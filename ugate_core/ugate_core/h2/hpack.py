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
        if block and min(block) >= 0x80:  # one-byte indexed fields only: table unchanged
            if len(self._dec) >= _CACHED:
                self._dec.clear()
            self._dec[block] = tuple(headers)
        else:
            self._dec.clear()
        return headers

    def peer_table_size(self, size: int) -> None:
        """The peer's SETTINGS_HEADER_TABLE_SIZE: our encoder uses at most that (and 4096)."""
        self.encoder.header_table_size = min(size, 4096)
        self._enc.clear()
