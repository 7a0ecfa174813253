"""Sans-IO HTTP/1.1 message parsing (RFC 9112): bytes in, events out, no socket in sight.

:class:`RequestParser` reads what a client sends, :class:`ResponseParser` what an origin
answers. Both take ``receive_data(bytes)`` / ``receive_eof()`` and return a list of events:
:class:`RequestReceived` or :class:`ResponseReceived` (the head, with its body framing worked
out), :class:`BodyReceived` (decoded body bytes, chunked framing removed) and
:class:`MessageEnded`. After a message ends the parser pauses and keeps any further bytes
(a pipelined request, a tunnel's first bytes) until ``next_message()`` or ``take_leftover()``.

Bounded and strict where laxness lets two parsers disagree (request smuggling): the header
block is at most ``max_header_bytes`` (431), a request with both ``Content-Length`` and
``Transfer-Encoding`` or with differing lengths is refused, obsolete line folding and
whitespace before a colon are refused, field values may not carry CR, LF or NUL. A bare LF
line ending is accepted: heads are re-serialized with CRLF before they go anywhere.
Every error is an :class:`HttpError` carrying the status to answer with.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from ugate_core import ProtocolError

Headers = tuple[tuple[str, str], ...]

DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_FIELDS = 256
MAX_CHUNK_LINE = 4096


class HttpError(ProtocolError):
    """A message broke HTTP/1.1 or a bound; ``status`` is the answer to give (400, 431, ...)."""

    def __init__(self, message: str, reason: str = "bad_request", status: int = 400) -> None:
        super().__init__(message, reason)
        self.status = status


class Framing(enum.Enum):
    """How a message's body is delimited."""

    NONE = "none"  # no body
    LENGTH = "length"  # Content-Length bytes
    CHUNKED = "chunked"  # chunked transfer coding
    CLOSE = "close"  # until the connection closes (responses only)
    TUNNEL = "tunnel"  # the connection stops being HTTP (CONNECT 2xx, 101)


@dataclass(kw_only=True, slots=True)
class Request:
    """A request head. ``target`` is as sent (origin-, absolute-, authority- or asterisk-form).
    Read-only by convention (not frozen: a frozen dataclass costs twice as much to make, and
    one is made per message)."""

    method: str
    target: str
    headers: Headers = ()
    version: str = "1.1"
    framing: Framing = Framing.NONE
    length: int = 0
    #: lower-cased tokens of Connection / Proxy-Connection
    connection: frozenset[str] = frozenset()

    def get(self, name: str) -> str | None:
        return get_field(self.headers, name)

    @property
    def keep_alive(self) -> bool:
        return self.version == "1.1" and "close" not in self.connection


@dataclass(kw_only=True, slots=True)
class Response:
    """A response head. ``framing`` depends on the request method, so the parser is told it.
    Read-only by convention, as :class:`Request`."""

    status: int
    reason: str = ""
    headers: Headers = ()
    version: str = "1.1"
    framing: Framing = Framing.NONE
    length: int = 0
    #: lower-cased tokens of Connection / Proxy-Connection
    connection: frozenset[str] = frozenset()

    def get(self, name: str) -> str | None:
        return get_field(self.headers, name)

    @property
    def interim(self) -> bool:
        """1xx other than 101: a final response follows."""
        return 100 <= self.status < 200 and self.status != 101

    @property
    def keep_alive(self) -> bool:
        return (self.framing is not Framing.CLOSE and self.version == "1.1"
                and "close" not in self.connection)


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestReceived:
    request: Request


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponseReceived:
    response: Response


@dataclass(frozen=True, kw_only=True, slots=True)
class BodyReceived:
    data: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class MessageEnded:
    trailers: Headers = ()


Event = RequestReceived | ResponseReceived | BodyReceived | MessageEnded

# ------------------------------------------------------------------------------ grammar
_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_REQUEST_LINE = re.compile(rb"([" + _TCHAR + rb"]+) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
_STATUS_LINE = re.compile(rb"HTTP/([0-9])\.([0-9]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?")
_FIELD_LINE = re.compile(rb"([" + _TCHAR + rb"]+):[\t ]*([\t\x20-\x7e\x80-\xff]*?)[\t ]*")
# the same grammar over a whole head decoded as latin-1: one C-level pass validates every
# field line and one extracts them, instead of a regex call, two decodes and a tuple per line
# in Python (a head with an error is parsed again line by line, for the exact message)
_REQUEST_LINE_S = re.compile(_REQUEST_LINE.pattern.decode("latin-1"))
_STATUS_LINE_S = re.compile(_STATUS_LINE.pattern.decode("latin-1"))
# (the value without its trailing whitespace, with possessive repeats: the lazy form of
# _FIELD_LINE tries the line's end after every character, several times slower)
_VCHAR = r"[\x21-\x7e\x80-\xff]"
_FIELD_PAIRS = re.compile(_TCHAR.decode("latin-1").join(["([", "]+):[\\t ]*+"])
                          + f"((?:{_VCHAR}++|[\\t ]++(?={_VCHAR}))*+)[\\t ]*+\\r?\\n")
_FIELD_BLOCK = re.compile(_TCHAR.decode("latin-1").join(["(?:[", "]+:"])
                          + r"[\t\x20-\x7e\x80-\xff]*\r?\n)*")
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})[\t ]*(?:;[\t\x20-\x7e\x80-\xff]*)?")
_LENGTH = re.compile(r"[0-9]{1,18}")


def get_field(headers: Headers, name: str) -> str | None:
    """The first value of field ``name`` (case-insensitive), or ``None``."""
    name = name.lower()
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def field_values(headers: Headers, name: str) -> list[str]:
    """All comma-separated elements of every ``name`` field, stripped, empty ones dropped."""
    name = name.lower()
    out: list[str] = []
    for k, v in headers:
        if k.lower() == name:
            out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


def connection_tokens(headers: Headers) -> set[str]:
    """Lower-cased tokens of ``Connection`` (and the legacy ``Proxy-Connection``)."""
    return {t.lower() for t in field_values(headers, "connection")} | {
        t.lower() for t in field_values(headers, "proxy-connection")
    }


def _split_head(buf: bytearray, start: int) -> int:
    """Index just past the empty line ending a head in ``buf`` (searching from ``start``), or
    -1. Lines end in CRLF or LF."""
    i = buf.find(b"\n\r\n", start)
    j = buf.find(b"\n\n", start)
    if i < 0:
        return -1 if j < 0 else j + 2
    if j < 0 or i < j:
        return i + 3
    return j + 2


def _strip_end(block: bytes) -> bytes:
    """A head block without its final empty line (``\\n\\r\\n`` or ``\\n\\n``)."""
    return block[:-3] if block.endswith(b"\n\r\n") else block[:-2]


def _lines(block: bytes) -> list[bytes]:
    lines = block.split(b"\n")
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]


#: fields the parser itself needs, collected while parsing (lower-case name → raw values)
_SPECIAL = frozenset({"content-length", "transfer-encoding", "connection", "proxy-connection"})
Special = dict[str, list[str]]


def _parse_fields(lines: list[bytes], max_fields: int, status: int) -> tuple[Headers, Special]:
    if len(lines) > max_fields:
        raise HttpError(f"{len(lines)} header fields; at most {max_fields} allowed",
                        "header_too_large", 431 if status == 400 else status)
    out: list[tuple[str, str]] = []
    special: Special = {}
    match = _FIELD_LINE.fullmatch
    for ln in lines:
        m = match(ln)
        if m is None:
            if ln[:1] in (b" ", b"\t"):
                why = "obsolete line folding is not allowed"
            elif b":" in ln and ln.split(b":", 1)[0].rstrip() != ln.split(b":", 1)[0]:
                why = "whitespace before ':'"
            else:
                why = "not 'name: value' with a token name and no control characters"
            raise HttpError(f"bad header field {ln[:80]!r}: {why}", "bad_request", status)
        name, value = m.group(1).decode("ascii"), m.group(2).decode("latin-1")
        out.append((name, value))
        low = name.lower()
        if low in _SPECIAL:
            special.setdefault(low, []).append(value)
    return tuple(out), special


def _first_line(block: bytes) -> tuple[str, str]:
    """A head block (as ``_take_head`` gives it), decoded → (first line, field lines each
    ending in a line feed)."""
    text = block.decode("latin-1")
    nl = text.find("\n")
    if nl < 0:
        return (text[:-1] if text.endswith("\r") else text), ""
    first = text[:nl - 1] if nl and text[nl - 1] == "\r" else text[:nl]
    return first, text[nl + 1:] + "\n"


def _head_fields(block: bytes, rest: str, status: int, max_fields: int
                 ) -> tuple[Headers, Special]:
    """The field lines ``rest`` of ``block`` → fields and the ones the parser acts on; the
    same results and errors as ``_lines`` + ``_parse_fields``."""
    if not rest:
        return (), {}
    if rest.count("\n") > max_fields or _FIELD_BLOCK.fullmatch(rest) is None:
        return _parse_fields(_lines(block)[1:], max_fields, status)  # raises, with the reason
    headers = tuple(_FIELD_PAIRS.findall(rest))
    special: Special = {}
    low = rest.lower()
    if "content-length" in low or "transfer-encoding" in low or "connection" in low:
        for name, value in headers:
            lname = name.lower()
            if lname in _SPECIAL:
                special.setdefault(lname, []).append(value)
    return headers, special


def _elements(values: list[str]) -> list[str]:
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


_NO_TOKENS: frozenset[str] = frozenset()


def _connection(special: Special) -> frozenset[str]:
    if not special:
        return _NO_TOKENS
    vals = special.get("connection", []) + special.get("proxy-connection", [])
    return frozenset(t.lower() for t in _elements(vals)) if vals else _NO_TOKENS


def _content_length(special: Special, status: int) -> int | None:
    raw = special.get("content-length")
    if raw is None:
        return None
    if len(raw) == 1:  # the common case: one plain number
        v = raw[0]
        if v.isdigit() and v.isascii() and len(v) <= 18:
            return int(v)
    vals = _elements(raw)
    if not vals:
        raise HttpError("empty Content-Length", "bad_request", status)
    if any(_LENGTH.fullmatch(v) is None for v in vals):
        raise HttpError(f"Content-Length {', '.join(vals)[:80]!r} is not a number",
                        "bad_request", status)
    if len(set(map(int, vals))) != 1:
        raise HttpError(f"conflicting Content-Length values {', '.join(vals)[:80]!r}",
                        "bad_request", status)
    return int(vals[0])


def _codings(special: Special) -> list[str] | None:
    raw = special.get("transfer-encoding")
    return None if raw is None else [c.lower() for c in _elements(raw)]


# ------------------------------------------------------------------------------ parsers
class _State(enum.Enum):
    HEAD = 1
    LENGTH = 2
    CHUNK_SIZE = 3
    CHUNK_DATA = 4
    CHUNK_END = 5
    TRAILERS = 6
    CLOSE = 7
    DONE = 8


class _Parser:
    """Shared body machinery; subclasses parse the head."""

    _error_status = 400

    def __init__(
        self,
        *,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_fields: int = DEFAULT_MAX_FIELDS,
    ) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_fields = max_fields
        self._buf = bytearray()
        self._state = _State.HEAD
        self._remaining = 0
        self._scan = 0
        self._framing = Framing.NONE
        self._head_started = False

    # -------------------------------------------------------------------- public
    @property
    def paused(self) -> bool:
        """True after a message ended, until :meth:`next_message`."""
        return self._state is _State.DONE

    @property
    def framing(self) -> Framing:
        """Framing of the current (or just ended) message's body."""
        return self._framing

    def buffered(self) -> int:
        return len(self._buf)

    def at_rest(self) -> bool:
        """Waiting for a head with nothing buffered: a whole message may be taken raw."""
        return self._state is _State.HEAD and not self._buf and not self._head_started

    def took_whole(self, framing: Framing) -> None:
        """A whole message was taken without this parser (the raw lane, ``raw.py``): pause
        after it, as after :class:`MessageEnded`."""
        self._framing = framing
        self._state = _State.DONE

    def receive_data(self, data: bytes) -> list[Event]:
        if not data:
            return []
        st = self._state
        if not self._buf and st in (_State.LENGTH, _State.CHUNK_DATA, _State.CLOSE):
            # fast path for body bytes: no copy into the buffer
            out: list[Event] = []
            if st is _State.CLOSE:
                return [BodyReceived(data=data)]
            n = self._remaining
            if len(data) <= n:
                out.append(BodyReceived(data=data))
                self._remaining = n - len(data)
                if self._remaining:
                    return out
                data = b""
            else:
                out.append(BodyReceived(data=data[:n]))
                self._remaining = 0
                data = data[n:]
            self._body_done(out)
            self._buf += data
            out.extend(self._run())
            return out
        self._buf += data
        return self._run()

    def receive_whole(self, data: bytes) -> tuple[Request | Response, bytes] | None:
        """The short way for the common case: when nothing is buffered and ``data`` is exactly
        one whole message (a CRLF head, then all of its Content-Length body or none), return
        its head and body and leave the parser paused after it, as ``receive_data`` would
        after :class:`MessageEnded` — but with no event objects. ``None``, with nothing
        changed, for anything else (then call ``receive_data``). Raises what ``receive_data``
        would for a bad head."""
        if self._state is not _State.HEAD or self._buf or self._head_started:
            return None
        i = data.find(b"\n\r\n")
        if i < 0 or i + 3 > self.max_header_bytes or data[:1] in (b"\r", b"\n") \
                or data.find(b"\n\n", 0, i + 1) >= 0:  # a bare-LF end before (or in) it
            return None
        msg = self._parse(data[:i])
        body = data[i + 3:]
        framing = msg.framing
        if framing is Framing.LENGTH:
            if len(body) != msg.length:
                return None
        elif framing is not Framing.NONE or body or (type(msg) is Response and msg.interim):
            return None
        self._framing = framing
        self._state = _State.DONE
        return msg, body

    def _parse(self, block: bytes) -> Request | Response:  # pragma: no cover - abstract
        raise NotImplementedError

    def receive_eof(self, reset: bool = False) -> list[Event]:
        """The peer closed. Ends a close-delimited body; raises if a message was cut short,
        and (``reset``: the connection was reset, not closed) for a close-delimited body too,
        whose end a reset does not mark."""
        st = self._state
        if st is _State.CLOSE and reset:
            raise HttpError("connection reset in the middle of a close-delimited body",
                            "incomplete", self._error_status)
        if st is _State.CLOSE:
            self._state = _State.DONE
            return [MessageEnded()]
        if st is _State.DONE or (st is _State.HEAD and not self._buf.strip(b"\r\n")):
            return []
        what = "head" if st is _State.HEAD else "body"
        raise HttpError(f"connection closed in the middle of the message {what}", "incomplete",
                        self._error_status)

    def next_message(self) -> list[Event]:
        """Resume after :class:`MessageEnded`; returns events already buffered."""
        if self._state is _State.DONE:
            self._state = _State.HEAD
            self._scan = 0
            self._framing = Framing.NONE
        return self._run() if self._buf else []  # (no state makes an event of nothing)

    def take_leftover(self) -> bytes:
        """Bytes received beyond the last message (CONNECT / Upgrade: the tunnel's start)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    # -------------------------------------------------------------------- machinery
    def _head(self) -> Event | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _run(self) -> list[Event]:
        out: list[Event] = []
        buf = self._buf
        while True:
            st = self._state
            if st is _State.HEAD:
                ev = self._head()
                if ev is None:
                    break
                out.append(ev)
            elif st is _State.LENGTH or st is _State.CHUNK_DATA:
                if not buf:
                    break
                n = min(len(buf), self._remaining)
                out.append(BodyReceived(data=bytes(buf[:n])))
                del buf[:n]
                self._remaining -= n
                if not self._remaining:
                    self._body_done(out)
            elif st is _State.CHUNK_SIZE:
                if not self._chunk_size():
                    break
            elif st is _State.CHUNK_END:
                if buf[:2] == b"\r\n":
                    del buf[:2]
                elif buf[:1] == b"\n":
                    del buf[:1]
                elif buf == b"\r" or not buf:
                    break
                else:
                    raise HttpError("chunk data not followed by CRLF", "bad_chunk",
                                    self._error_status)
                self._state = _State.CHUNK_SIZE
            elif st is _State.TRAILERS:
                trailers = self._trailers()
                if trailers is None:
                    break
                self._end(out, trailers)
            elif st is _State.CLOSE:
                if buf:
                    out.append(BodyReceived(data=bytes(buf)))
                    buf.clear()
                break
            else:  # DONE: paused
                break
        return out

    def _body_done(self, out: list[Event]) -> None:
        if self._state is _State.CHUNK_DATA:
            self._state = _State.CHUNK_END
        else:
            self._end(out, ())

    def _end(self, out: list[Event], trailers: Headers) -> None:
        out.append(MessageEnded(trailers=trailers))
        self._state = _State.DONE

    def _start_body(self, framing: Framing, length: int) -> None:
        self._framing = framing
        if framing is Framing.LENGTH and length > 0:
            self._state, self._remaining = _State.LENGTH, length
        elif framing is Framing.CHUNKED:
            self._state = _State.CHUNK_SIZE
        elif framing is Framing.CLOSE:
            self._state = _State.CLOSE
        else:
            self._state = _State.DONE

    def _take_head(self) -> bytes | None:
        """The head block (without the empty line), or None if incomplete; bounds it."""
        buf = self._buf
        if not self._head_started:
            # RFC 9112 2.2: ignore empty lines before a request line
            n = len(buf) - len(buf.lstrip(b"\r\n"))
            if n:
                del buf[:n]
            if not buf:
                return None
            self._head_started = True
            self._scan = 0
        end = _split_head(buf, max(0, self._scan - 2))
        if end < 0:
            if len(buf) > self.max_header_bytes:
                raise self._too_large("header")
            self._scan = len(buf)
            return None
        if end > self.max_header_bytes:
            raise self._too_large("header")
        block = _strip_end(bytes(buf[:end]))
        del buf[:end]
        self._scan = 0
        self._head_started = False
        return block

    def _too_large(self, what: str) -> HttpError:
        return HttpError(f"{what} block longer than {self.max_header_bytes} bytes",
                         "header_too_large", 431 if self._error_status == 400
                         else self._error_status)

    def _chunk_size(self) -> bool:
        buf = self._buf
        i = buf.find(b"\n")
        if i < 0:
            if len(buf) > MAX_CHUNK_LINE:
                raise HttpError(f"chunk size line longer than {MAX_CHUNK_LINE} bytes",
                                "bad_chunk", self._error_status)
            return False
        line = bytes(buf[:i])
        if line.endswith(b"\r"):
            line = line[:-1]
        m = _CHUNK_LINE.fullmatch(line)
        if m is None or i > MAX_CHUNK_LINE:
            raise HttpError(f"bad chunk size line {line[:40]!r}", "bad_chunk",
                            self._error_status)
        del buf[: i + 1]
        size = int(m.group(1), 16)
        if size == 0:
            self._state = _State.TRAILERS
        else:
            self._state, self._remaining = _State.CHUNK_DATA, size
        return True

    def _trailers(self) -> Headers | None:
        buf = self._buf
        if buf[:2] == b"\r\n":
            del buf[:2]
            return ()
        if buf[:1] == b"\n":
            del buf[:1]
            return ()
        if buf == b"\r" or not buf:
            return None
        end = _split_head(buf, 0)
        if end < 0:
            if len(buf) > self.max_header_bytes:
                raise self._too_large("trailer")
            return None
        if end > self.max_header_bytes:
            raise self._too_large("trailer")
        block = _strip_end(bytes(buf[:end]))
        del buf[:end]
        return _parse_fields(_lines(block), self.max_fields, self._error_status)[0]


class RequestParser(_Parser):
    """Parses the requests a client sends (the server side of a connection)."""

    _error_status = 400

    def _head(self) -> Event | None:
        block = self._take_head()
        if block is None:
            return None
        req = self._parse(block)
        self._start_body(req.framing, req.length)
        return RequestReceived(request=req)

    def parse_head(self, block: bytes) -> Request:
        """A request head taken whole elsewhere (the raw lane), without its final CRLF CRLF's
        last three bytes, parsed as :meth:`receive_data` would (HttpError)."""
        return self._parse(block)

    def _parse(self, block: bytes) -> Request:
        first, rest = _first_line(block)
        m = _REQUEST_LINE_S.fullmatch(first)
        if m is None:
            raise HttpError(f"malformed request line {first[:80].encode('latin-1')!r}",
                            "bad_request")
        major, minor = int(m.group(3)), int(m.group(4))
        if major != 1:
            raise HttpError(f"HTTP version {major}.{minor} is not supported on HTTP/1.1",
                            "bad_version", 505)
        headers, special = _head_fields(block, rest, 400, self.max_fields)
        if not special:  # no framing or Connection fields: the common GET
            return Request(method=m.group(1), target=m.group(2), headers=headers,
                           version="1.0" if minor == 0 else "1.1")
        length = _content_length(special, 400)
        codings = _codings(special)
        framing, n = Framing.NONE, 0
        if codings is not None:
            if length is not None:
                raise HttpError("both Content-Length and Transfer-Encoding", "bad_request")
            if codings != ["chunked"]:
                raise HttpError(f"transfer coding {', '.join(codings)[:80]!r} is not "
                                "supported (only 'chunked')", "not_implemented", 501)
            framing = Framing.CHUNKED
        elif length:
            framing, n = Framing.LENGTH, length
        return Request(
            method=m.group(1),
            target=m.group(2),
            headers=headers,
            version="1.0" if minor == 0 else "1.1",
            framing=framing,
            length=n,
            connection=_connection(special),
        )

    def _run(self) -> list[Event]:
        out = super()._run()
        # a request with no body has ended as soon as its head is complete
        if out and isinstance(out[-1], RequestReceived) and self._state is _State.DONE:
            out.append(MessageEnded())
        return out


class ResponseParser(_Parser):
    """Parses the responses an origin sends (the client side of a connection).

    Call :meth:`expect` with the request method before each response: ``HEAD`` responses have
    no body and a 2xx answer to ``CONNECT`` starts a tunnel. Interim 1xx responses (not 101)
    are reported and followed by the final one.
    """

    _error_status = 502

    def __init__(
        self,
        *,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_fields: int = DEFAULT_MAX_FIELDS,
    ) -> None:
        super().__init__(max_header_bytes=max_header_bytes, max_fields=max_fields)
        self._method = "GET"
        self._state = _State.DONE  # nothing expected until a request is sent

    def expect(self, method: str) -> list[Event]:
        """A request with ``method`` was sent: parse its response."""
        self._method = method
        return self.next_message()

    def _head(self) -> Event | None:
        block = self._take_head()
        if block is None:
            return None
        resp = self._parse(block)
        if not resp.interim:
            self._start_body(resp.framing, resp.length)
        return ResponseReceived(response=resp)

    def _parse(self, block: bytes) -> Response:
        first, rest = _first_line(block)
        m = _STATUS_LINE_S.fullmatch(first)
        if m is None:
            raise HttpError(f"malformed status line {first[:80].encode('latin-1')!r}",
                            "bad_response", 502)
        major, minor, status = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if major != 1 or status < 100:
            raise HttpError(f"status line {first[:80].encode('latin-1')!r} is not HTTP/1.x",
                            "bad_response", 502)
        headers, special = _head_fields(block, rest, 502, self.max_fields)
        reason = m.group(4) or ""
        version = "1.0" if minor == 0 else "1.1"
        conn = _connection(special)
        if 100 <= status < 200 and status != 101:
            return Response(status=status, reason=reason, headers=headers, version=version,
                            connection=conn)
        framing, n = self._framing_for(status, special)
        return Response(status=status, reason=reason, headers=headers, version=version,
                        framing=framing, length=n, connection=conn)

    def _framing_for(self, status: int, special: Special) -> tuple[Framing, int]:
        if status == 101 or (self._method == "CONNECT" and 200 <= status < 300):
            return Framing.TUNNEL, 0
        if self._method == "HEAD" or status in (204, 304):
            return Framing.NONE, 0
        codings = _codings(special)
        if codings is not None:
            if codings and codings[-1] == "chunked":
                if codings != ["chunked"]:
                    raise HttpError(f"transfer coding {', '.join(codings)[:80]!r} is not "
                                    "supported (only 'chunked')", "bad_response", 502)
                return Framing.CHUNKED, 0
            return Framing.CLOSE, 0
        length = _content_length(special, 502)
        if length is None:
            return Framing.CLOSE, 0
        return (Framing.LENGTH, length) if length else (Framing.NONE, 0)

    def _run(self) -> list[Event]:
        out = super()._run()
        if out and isinstance(out[-1], ResponseReceived) and self._state is _State.DONE:
            out.append(MessageEnded())
        return out


# ------------------------------------------------------------------------------ writing
def encode_head(first_line: str, headers: Headers | list[tuple[str, str]]) -> bytes:
    """``first_line`` and fields, CRLF-terminated. Values must already be valid (no CR/LF)."""
    return "\r\n".join([first_line, *[f"{k}: {v}" for k, v in headers], "", ""]).encode(
        "latin-1")


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def encode_last_chunk(trailers: Headers = ()) -> bytes:
    if not trailers:
        return b"0\r\n\r\n"
    return b"0\r\n" + encode_head("", trailers)[2:]
