"""A sans-IO TLS ClientHello reader: SNI and ALPN, without terminating TLS.

Feed the first bytes of a connection to :meth:`ClientHelloParser.receive_data`; it returns
``None`` while it needs more, a :class:`ClientHelloReceived` event once the whole ClientHello
arrived, or raises :class:`~ugate_core.ProtocolError` (reason ``tls_malformed`` or
``tls_too_long``). It keeps at most the handshake length the record headers announced, and
never more than ``max_bytes`` (RFC 8446 allows a ClientHello over several records; 16 KiB is
plenty for today's clients, post-quantum key shares included).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ProtocolError

CONTENT_HANDSHAKE = 0x16
HANDSHAKE_CLIENT_HELLO = 0x01
EXT_SERVER_NAME = 0x0000
EXT_ALPN = 0x0010
EXT_SUPPORTED_VERSIONS = 0x002B
MAX_RECORD = 16384 + 256


@dataclass(frozen=True, kw_only=True)
class ClientHelloReceived:
    """What the client asked for. ``sni`` is lower-case ASCII or ``None``."""

    sni: str | None
    alpn: tuple[str, ...]
    #: highest version offered, e.g. 0x0304 for TLS 1.3
    version: int
    #: bytes of the records that carried the hello (they stay in the stream)
    length: int


def looks_like_tls(prefix: bytes) -> bool | None:
    """True/False when decidable from the first bytes; None if more are needed."""
    if not prefix:
        return None
    if prefix[0] != CONTENT_HANDSHAKE:
        return False
    if len(prefix) < 2:
        return None
    if prefix[1] != 0x03:
        return False
    if len(prefix) < 3:
        return None
    return prefix[2] <= 0x04


def _bad(msg: str) -> ProtocolError:
    return ProtocolError(f"TLS ClientHello: {msg}", "tls_malformed")


class _Reader:
    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: memoryview, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def u8(self) -> int:
        if self.pos + 1 > self.end:
            raise _bad("truncated")
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def u16(self) -> int:
        if self.pos + 2 > self.end:
            raise _bad("truncated")
        v = (self.buf[self.pos] << 8) | self.buf[self.pos + 1]
        self.pos += 2
        return v

    def u24(self) -> int:
        return (self.u8() << 16) | self.u16()

    def sub(self, n: int) -> _Reader:
        if self.pos + n > self.end:
            raise _bad(f"length {n} runs past its container")
        r = _Reader(self.buf, self.pos, self.pos + n)
        self.pos += n
        return r

    def bytes(self, n: int) -> bytes:
        return bytes(self.sub(n).rest())

    def rest(self) -> memoryview:
        return self.buf[self.pos : self.end]

    @property
    def left(self) -> int:
        return self.end - self.pos


class ClientHelloParser:
    """Accumulates records until the ClientHello is complete (bounded by ``max_bytes``)."""

    def __init__(self, max_bytes: int = 16384 * 4) -> None:
        self.max_bytes = max_bytes
        self._raw = bytearray()  # record bytes seen (headers included)
        self._hs = bytearray()  # handshake payload reassembled from records
        self._consumed = 0  # offset in _raw of the next record header
        self._done = False

    def receive_data(self, data: bytes) -> ClientHelloReceived | None:
        if self._done:
            return None
        room = self.max_bytes - len(self._raw)
        self._raw += data[: max(room, 0)]
        while True:
            raw = self._raw
            off = self._consumed
            if len(raw) - off < 5:
                break
            if raw[off] != CONTENT_HANDSHAKE:
                raise _bad(f"record type {raw[off]:#04x} is not handshake (0x16)")
            if raw[off + 1] != 0x03:
                raise _bad(f"record version {raw[off + 1]:#04x}{raw[off + 2]:02x}")
            rlen = (raw[off + 3] << 8) | raw[off + 4]
            if rlen == 0 or rlen > MAX_RECORD:
                raise _bad(f"record length {rlen} out of range (1-{MAX_RECORD})")
            if off + 5 + rlen > self.max_bytes:
                raise ProtocolError(
                    f"TLS ClientHello longer than {self.max_bytes} bytes", "tls_too_long"
                )
            if len(raw) - off < 5 + rlen:
                break
            self._hs += raw[off + 5 : off + 5 + rlen]
            self._consumed = off + 5 + rlen
            if len(self._hs) >= 4:
                if self._hs[0] != HANDSHAKE_CLIENT_HELLO:
                    raise _bad(f"handshake type {self._hs[0]} is not ClientHello (1)")
                hlen = (self._hs[1] << 16) | (self._hs[2] << 8) | self._hs[3]
                if 4 + hlen > self.max_bytes:
                    raise ProtocolError(
                        f"TLS ClientHello of {hlen} bytes exceeds {self.max_bytes}",
                        "tls_too_long",
                    )
                if len(self._hs) >= 4 + hlen:
                    self._done = True
                    return self._parse(memoryview(bytes(self._hs[4 : 4 + hlen])))
        if len(self._raw) >= self.max_bytes:
            raise ProtocolError(f"TLS ClientHello longer than {self.max_bytes} bytes",
                                "tls_too_long")
        return None

    def _parse(self, body: memoryview) -> ClientHelloReceived:
        r = _Reader(body)
        legacy_version = r.u16()
        r.sub(32)  # random
        sid = r.u8()
        if sid > 32:
            raise _bad(f"session id length {sid} > 32")
        r.sub(sid)
        cs = r.u16()
        if cs == 0 or cs % 2:
            raise _bad(f"cipher suites length {cs} is not a positive even number")
        r.sub(cs)
        comp = r.u8()
        if comp == 0:
            raise _bad("no compression methods")
        r.sub(comp)
        sni: str | None = None
        alpn: tuple[str, ...] = ()
        version = legacy_version
        if r.left == 0:
            return ClientHelloReceived(sni=None, alpn=(), version=version,
                                       length=self._consumed)
        ext = r.sub(r.u16())
        seen: set[int] = set()
        while ext.left:
            etype = ext.u16()
            data = ext.sub(ext.u16())
            if etype in seen:
                raise _bad(f"extension {etype:#06x} appears twice")
            seen.add(etype)
            if etype == EXT_SERVER_NAME:
                sni = self._sni(data)
            elif etype == EXT_ALPN:
                alpn = self._alpn(data)
            elif etype == EXT_SUPPORTED_VERSIONS:
                lst = data.sub(data.u8())
                vs = []
                while lst.left:
                    vs.append(lst.u16())
                known = [v for v in vs if 0x0300 <= v <= 0x0304]
                if known:
                    version = max(known)
        if r.left:
            raise _bad("bytes after the extensions")
        return ClientHelloReceived(sni=sni, alpn=alpn, version=version, length=self._consumed)

    @staticmethod
    def _sni(data: _Reader) -> str | None:
        lst = data.sub(data.u16())
        name: str | None = None
        while lst.left:
            kind = lst.u8()
            raw = lst.bytes(lst.u16())
            if kind != 0:
                continue
            if name is not None:
                raise _bad("two host names in server_name")
            if not raw or len(raw) > 253:
                raise _bad(f"server name of {len(raw)} bytes")
            try:
                txt = raw.decode("ascii")
            except UnicodeDecodeError:
                raise _bad("server name is not ASCII") from None
            if not all(c.isalnum() or c in "-._" for c in txt):
                raise _bad(f"server name {txt!r} has characters a host name cannot have")
            name = txt.lower().rstrip(".")
        return name

    @staticmethod
    def _alpn(data: _Reader) -> tuple[str, ...]:
        lst = data.sub(data.u16())
        out = []
        while lst.left:
            n = lst.u8()
            if n == 0:
                raise _bad("empty ALPN protocol name")
            out.append(lst.bytes(n).decode("latin-1"))
        if not out:
            raise _bad("empty ALPN list")
        return tuple(out)


def alert(description: int = 112) -> bytes:
    """A fatal TLS alert record (default 112: unrecognized_name) to send before closing."""
    return bytes((0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description))
