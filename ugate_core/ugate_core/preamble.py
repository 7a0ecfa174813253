"""The stream preamble, sans-IO: the destination header of a stream that has none of its own.

Raw QUIC streams, WebTransport bidirectional streams and libp2p streams carry bytes and nothing
else. The opener of such a stream first sends a *request* naming the destination (and optional
``key=value`` metadata); the acceptor answers a *status* with HBONE's meanings before any
payload byte. The byte format (``docs/preamble.md``), both messages alike::

    version (1 byte, 0x01) | length (unsigned LEB128 varint, minimal) | length bytes of UTF-8

    request text:  host:port ( "\\n" key "=" value )*       at most MAX_REQUEST bytes
    status text:   3 digits ( " " reason )?                 at most MAX_STATUS bytes

:class:`PreambleAcceptor` takes the opener's bytes with :meth:`~PreambleAcceptor.receive_data`
and gives a :class:`PreambleReceived`; :meth:`~PreambleAcceptor.answer` gives the status bytes.
:class:`PreambleOpener` does the other side (:func:`encode_request`, :class:`StatusReceived`).
Bytes after a message are payload (``leftover()``): an opener may send its first payload
bytes right behind the request. Every error is a :class:`PreambleError` (a
:class:`~ugate_core.ProtocolError`) carrying the answer to send before closing.
:mod:`ugate_core.preamble_io` is the asyncio side over a :class:`~ugate_core.Stream`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import ProtocolError

VERSION = 0x01
#: most bytes of request text: a name (253) and a port, plus tracing metadata (``traceparent``
#: 55, ``baggage`` a few hundred); a bound so an acceptor never buffers more
MAX_REQUEST = 4096
#: most bytes of status text: three digits and a short reason
MAX_STATUS = 256
#: most ``key=value`` lines in a request
MAX_META = 32
MAX_KEY = 64

#: what each status means (HBONE's): anything but 200 ends the stream after the status
STATUS_TEXT = {
    200: "connected",
    400: "bad request",  # malformed preamble or destination
    401: "unauthenticated",  # policy denied a client that proved no identity
    403: "forbidden",  # policy denied an authenticated client
    502: "bad gateway",  # the destination refused or failed (connection refused, identity)
    503: "unavailable",  # no route, no dialer: nothing to dial
    504: "gateway timeout",  # the destination did not answer in time
}

_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")
_V6_CHARS = frozenset("0123456789abcdefABCDEF:.%") | _HOST_CHARS


class PreambleError(ProtocolError):
    """The peer's preamble breaks the format. ``answer`` (may be empty) goes out before the
    stream is closed. ``reason``: ``preamble_version``, ``preamble_too_long``,
    ``preamble_malformed``."""

    def __init__(self, message: str, reason: str, answer: bytes = b"") -> None:
        super().__init__(message, reason)
        self.answer = answer


@dataclass(frozen=True, kw_only=True)
class PreambleReceived:
    """A request: ``target`` is ``host:port`` as sent (``[v6]:port`` for IPv6), as
    :meth:`ugate_core.Gateway.dial` takes it. ``meta`` is the opener's claim, not an identity."""

    target: str
    host: str
    port: int
    meta: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class StatusReceived:
    """The acceptor's answer: ``200`` means payload follows; anything else, the stream ends."""

    status: int
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


# ------------------------------------------------------------------------------ varint
def encode_varint(n: int) -> bytes:
    """Unsigned LEB128 (multiformats ``unsigned-varint``, protobuf's): 7 bits a byte, low
    group first, high bit set on all but the last byte."""
    if n < 0:
        raise ValueError(f"varint {n} is negative")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def decode_varint(data: bytes | bytearray, start: int, limit: int) -> tuple[int, int] | None:
    """The varint at ``data[start:]`` as (value, end), ``None`` if incomplete. Raises
    ``ValueError`` when it exceeds ``limit`` or is not minimally encoded (one value, one
    encoding: nothing to smuggle past a second parser)."""
    most = len(encode_varint(limit))
    value = shift = 0
    for i in range(start, min(len(data), start + most)):
        b = data[i]
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            if b == 0 and i > start:
                raise ValueError("varint not minimally encoded")
            if value > limit:
                raise ValueError(f"length {value} over the limit of {limit}")
            return value, i + 1
    if len(data) - start >= most:
        raise ValueError(f"length over the limit of {limit}")
    return None


def _frame(text: str, limit: int, what: str) -> bytes:
    body = text.encode()
    if not 0 < len(body) <= limit:
        raise ValueError(f"preamble {what} of {len(body)} bytes: not 1-{limit}")
    return bytes([VERSION]) + encode_varint(len(body)) + body


class _Framed:
    """Buffers one ``version | varint | text`` message, never more than its bound."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self.buf = bytearray()
        self.done = False
        self.rest = b""

    def feed(self, data: bytes) -> str | None:
        """The text once complete; raises PreambleError (with no answer yet)."""
        if self.done:
            raise RuntimeError(f"preamble {self.what} already received")
        self.buf += data
        buf = self.buf
        if not buf:
            return None
        if buf[0] != VERSION:
            raise PreambleError(f"preamble {self.what}: version {buf[0]} not supported "
                                f"(this end speaks {VERSION})", "preamble_version")
        try:
            got = decode_varint(buf, 1, self.limit)
        except ValueError as e:
            raise PreambleError(f"preamble {self.what}: {e}", "preamble_too_long"
                                if "limit" in str(e) else "preamble_malformed") from None
        if got is None:
            return None
        n, start = got
        if n == 0:
            raise PreambleError(f"preamble {self.what}: empty", "preamble_malformed")
        if len(buf) < start + n:
            return None
        raw, self.rest = bytes(buf[start : start + n]), bytes(buf[start + n :])
        self.buf = bytearray()
        self.done = True
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise PreambleError(f"preamble {self.what}: not UTF-8", "preamble_malformed") \
                from None


# ------------------------------------------------------------------------------ request
def _check_text(s: str, what: str) -> None:
    if any(c < " " or c == "\x7f" or "\ud800" <= c <= "\udfff" for c in s):
        raise ValueError(f"{what} {s[:40]!r} holds a control character or a lone surrogate")


def parse_target(target: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); ``ValueError`` naming the fault."""
    host, sep, port_s = target.rpartition(":")
    if not sep or not host:
        raise ValueError(f"destination {target[:80]!r}: not host:port")
    if not (port_s.isascii() and port_s.isdigit() and len(port_s) <= 5) or \
            not 1 <= int(port_s) <= 65535:
        raise ValueError(f"destination {target[:80]!r}: port {port_s[:8]!r} is not 1-65535")
    if host.startswith("[") and host.endswith("]"):
        inner = host[1:-1]
        if ":" not in inner or not set(inner) <= _V6_CHARS:
            raise ValueError(f"destination {target[:80]!r}: not an IPv6 literal in brackets")
        return inner, int(port_s)
    if len(host) > 253 or not set(host) <= _HOST_CHARS:
        raise ValueError(f"destination {target[:80]!r}: host is not a name or an IP address "
                         "(letters, digits, '-', '.', '_'; IPv6 in brackets)")
    return host, int(port_s)


def _check_meta(meta: Mapping[str, str]) -> None:
    if len(meta) > MAX_META:
        raise ValueError(f"{len(meta)} metadata lines: at most {MAX_META}")
    for k, v in meta.items():
        if not 0 < len(k) <= MAX_KEY or not set(k) <= _KEY_CHARS:
            raise ValueError(f"metadata key {k[:80]!r}: not 1-{MAX_KEY} of a-z 0-9 - _ .")
        _check_text(v, f"metadata {k!r} value")


def encode_request(target: str, meta: Mapping[str, str] | None = None) -> bytes:
    """The request bytes for ``target`` (``host:port``) and ``meta``; ``ValueError`` if they
    do not fit the format (the same checks the acceptor makes)."""
    parse_target(target)
    meta = meta or {}
    _check_meta(meta)
    text = "\n".join([target, *(f"{k}={v}" for k, v in meta.items())])
    return _frame(text, MAX_REQUEST, "request")


def _parse_request(text: str) -> PreambleReceived:
    target, *lines = text.split("\n")
    host, port = parse_target(target)
    meta: dict[str, str] = {}
    for line in lines:
        k, eq, v = line.partition("=")
        if not eq:
            raise ValueError(f"metadata line {line[:80]!r}: not key=value")
        if k in meta:
            raise ValueError(f"metadata key {k[:80]!r} given twice")
        meta[k] = v
    _check_meta(meta)
    return PreambleReceived(target=target, host=host, port=port, meta=meta)


def encode_status(status: int, reason: str = "") -> bytes:
    """The status bytes; ``reason`` is cut to fit and stripped of control characters."""
    if not 100 <= status <= 599:
        raise ValueError(f"preamble status {status}: not 100-599")
    reason = "".join(c for c in reason if c >= " " and c != "\x7f")
    text = f"{status} {reason}" if reason else str(status)
    raw = text.encode(errors="replace")[:MAX_STATUS].decode(errors="ignore")
    return _frame(raw, MAX_STATUS, "status")


class PreambleAcceptor:
    """The accepting side: one request in, one status out."""

    def __init__(self) -> None:
        self._in = _Framed(MAX_REQUEST, "request")
        self.request: PreambleReceived | None = None
        self.answered: int | None = None

    def receive_data(self, data: bytes) -> PreambleReceived | None:
        """Bytes from the opener; the request once complete (bytes after it: ``leftover()``).
        Raises :class:`PreambleError` whose ``answer`` is a ``400`` saying why."""
        if self.request is not None:
            self._in.rest += data
            return None
        try:
            text = self._in.feed(data)
            if text is None:
                return None
            try:
                self.request = _parse_request(text)
            except ValueError as e:
                raise PreambleError(f"preamble request: {e}", "preamble_malformed") from None
        except PreambleError as e:
            self.answered = 400
            e.answer = encode_status(400, str(e))
            raise
        return self.request

    def answer(self, status: int, reason: str = "") -> bytes:
        """The status bytes to send; once."""
        if self.answered is not None:
            raise RuntimeError(f"preamble already answered {self.answered}")
        out = encode_status(status, reason)
        self.answered = status
        return out

    def leftover(self) -> bytes:
        """Payload bytes that came after the request."""
        rest, self._in.rest = self._in.rest, b""
        return rest


class PreambleOpener:
    """The opening side: :meth:`request` out, one status in."""

    def __init__(self) -> None:
        self._in = _Framed(MAX_STATUS, "status")
        self.status: StatusReceived | None = None

    @staticmethod
    def request(target: str, meta: Mapping[str, str] | None = None) -> bytes:
        return encode_request(target, meta)

    def receive_data(self, data: bytes) -> StatusReceived | None:
        """Bytes from the acceptor; the status once complete. Raises PreambleError."""
        if self.status is not None:
            self._in.rest += data
            return None
        text = self._in.feed(data)
        if text is None:
            return None
        code, _, reason = text.partition(" ")
        if not (len(code) == 3 and code.isascii() and code.isdigit()) or \
                not 100 <= int(code) <= 599:
            raise PreambleError(f"preamble status {text[:40]!r}: not a 3-digit status",
                                "preamble_malformed")
        self.status = StatusReceived(status=int(code), reason=reason)
        return self.status

    def leftover(self) -> bytes:
        """Payload bytes that came after the status."""
        rest, self._in.rest = self._in.rest, b""
        return rest
