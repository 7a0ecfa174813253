"""MQTT CONNECT and CONNACK, sans-IO: MQTT 3.1 (``MQIsdp``, level 3), 3.1.1 (level 4), 5.0.

:class:`ConnectParser` takes the client's bytes with :meth:`~ConnectParser.receive_data` until it
returns a :class:`Connect` (a CONNECT may arrive split across any number of reads); the bytes
after it (a client may pipeline SUBSCRIBE or PUBLISH) are in :meth:`~ConnectParser.leftover`.
Every violation is a :class:`MqttError` (a :class:`~ugate_core.ProtocolError`) carrying the
CONNACK to send before closing — empty when the client's version is not known yet, or when
MQTT 3.x has no code for it (the spec says: close the connection).

The parser is bounded: the remaining length may not exceed ``max_size`` (checked as soon as
the protocol level is known, before the body is buffered), the client identifier not
``max_client_id`` bytes; every other field is bounded by the remaining length.

:func:`encode_connect` writes a :class:`Connect` back (``decode(encode(c)) == c``: credentials
are stripped or rewritten that way); :func:`encode_connack` answers in each version's format.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ugate_core import ProtocolError, Sniff

CONNECT = 0x10
CONNACK = 0x20

#: protocol levels
MQTT31 = 3
MQTT311 = 4
MQTT5 = 5
PROTOCOL_NAMES = {MQTT31: b"MQIsdp", MQTT311: b"MQTT", MQTT5: b"MQTT"}
VERSION_NAMES = {MQTT31: "3.1", MQTT311: "3.1.1", MQTT5: "5.0"}

#: the largest remaining length the variable-byte integer can say (268,435,455)
MAX_VARINT = 0x0FFFFFFF
DEFAULT_MAX_SIZE = 65536
DEFAULT_MAX_CLIENT_ID = 256

# MQTT 3.1 / 3.1.1 CONNACK return codes
RC_ACCEPTED = 0
RC_UNACCEPTABLE_VERSION = 1
RC_IDENTIFIER_REJECTED = 2
RC_SERVER_UNAVAILABLE = 3
RC_BAD_USERNAME_PASSWORD = 4
RC_NOT_AUTHORIZED = 5

# MQTT 5 CONNACK reason codes (the ones a gateway gives)
RS_SUCCESS = 0x00
RS_UNSPECIFIED = 0x80
RS_MALFORMED = 0x81
RS_PROTOCOL_ERROR = 0x82
RS_UNSUPPORTED_VERSION = 0x84
RS_CLIENT_ID_NOT_VALID = 0x85
RS_BAD_USERNAME_PASSWORD = 0x86
RS_NOT_AUTHORIZED = 0x87
RS_SERVER_UNAVAILABLE = 0x88
RS_SERVER_BUSY = 0x89
RS_BANNED = 0x8A
RS_PACKET_TOO_LARGE = 0x95
RS_USE_ANOTHER_SERVER = 0x9C
RS_SERVER_MOVED = 0x9D

#: a refusal's reason → (3.x return code or None: close without a CONNACK, 5.0 reason code)
CODES: dict[str, tuple[int | None, int]] = {
    "unsupported_version": (RC_UNACCEPTABLE_VERSION, RS_UNSUPPORTED_VERSION),
    "bad_client_id": (RC_IDENTIFIER_REJECTED, RS_CLIENT_ID_NOT_VALID),
    "unavailable": (RC_SERVER_UNAVAILABLE, RS_SERVER_UNAVAILABLE),
    "use_another_server": (RC_SERVER_UNAVAILABLE, RS_USE_ANOTHER_SERVER),
    "bad_credentials": (RC_BAD_USERNAME_PASSWORD, RS_BAD_USERNAME_PASSWORD),
    "not_authorized": (RC_NOT_AUTHORIZED, RS_NOT_AUTHORIZED),
    "too_large": (None, RS_PACKET_TOO_LARGE),
    "malformed": (None, RS_MALFORMED),
    "protocol_error": (None, RS_PROTOCOL_ERROR),
}

# property identifiers (MQTT 5 section 2.2.2.2)
P_PAYLOAD_FORMAT = 0x01
P_MESSAGE_EXPIRY = 0x02
P_CONTENT_TYPE = 0x03
P_RESPONSE_TOPIC = 0x08
P_CORRELATION_DATA = 0x09
P_SESSION_EXPIRY = 0x11
P_AUTH_METHOD = 0x15
P_AUTH_DATA = 0x16
P_REQUEST_PROBLEM_INFO = 0x17
P_WILL_DELAY = 0x18
P_REQUEST_RESPONSE_INFO = 0x19
P_SERVER_REFERENCE = 0x1C
P_REASON_STRING = 0x1F
P_RECEIVE_MAXIMUM = 0x21
P_TOPIC_ALIAS_MAXIMUM = 0x22
P_USER_PROPERTY = 0x26
P_MAXIMUM_PACKET_SIZE = 0x27

_BYTE, _U16, _U32, _VARINT, _STR, _BIN, _PAIR = range(7)
#: the type of every property a CONNECT, its will or a CONNACK may carry
PROPERTY_TYPES: dict[int, int] = {
    P_PAYLOAD_FORMAT: _BYTE, P_MESSAGE_EXPIRY: _U32, P_CONTENT_TYPE: _STR,
    P_RESPONSE_TOPIC: _STR, P_CORRELATION_DATA: _BIN, P_SESSION_EXPIRY: _U32,
    P_AUTH_METHOD: _STR, P_AUTH_DATA: _BIN, P_REQUEST_PROBLEM_INFO: _BYTE,
    P_WILL_DELAY: _U32, P_REQUEST_RESPONSE_INFO: _BYTE, P_SERVER_REFERENCE: _STR,
    P_REASON_STRING: _STR, P_RECEIVE_MAXIMUM: _U16, P_TOPIC_ALIAS_MAXIMUM: _U16,
    P_USER_PROPERTY: _PAIR, P_MAXIMUM_PACKET_SIZE: _U32,
    0x12: _STR, 0x13: _U16, 0x1A: _STR, 0x24: _BYTE, 0x25: _BYTE, 0x28: _BYTE, 0x29: _BYTE,
    0x2A: _BYTE,
}
CONNECT_PROPERTIES = frozenset({
    P_SESSION_EXPIRY, P_RECEIVE_MAXIMUM, P_MAXIMUM_PACKET_SIZE, P_TOPIC_ALIAS_MAXIMUM,
    P_REQUEST_RESPONSE_INFO, P_REQUEST_PROBLEM_INFO, P_USER_PROPERTY, P_AUTH_METHOD,
    P_AUTH_DATA,
})
WILL_PROPERTIES = frozenset({
    P_WILL_DELAY, P_PAYLOAD_FORMAT, P_MESSAGE_EXPIRY, P_CONTENT_TYPE, P_RESPONSE_TOPIC,
    P_CORRELATION_DATA, P_USER_PROPERTY,
})

PropertyValue = int | str | bytes | tuple[str, str]
#: (identifier, value) in the order sent; only the user property may repeat
Properties = tuple[tuple[int, PropertyValue], ...]


@dataclass(frozen=True, kw_only=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = ()


@dataclass(frozen=True, kw_only=True)
class Connect:
    """A parsed CONNECT. ``raw`` is the packet as received (forwarded unchanged)."""

    level: int
    client_id: str
    clean_start: bool = True
    keep_alive: int = 60
    properties: Properties = ()
    will: Will | None = None
    username: str | None = None
    password: bytes | None = None
    raw: bytes = field(default=b"", compare=False)

    @property
    def version(self) -> str:
        return VERSION_NAMES[self.level]

    def get_property(self, ident: int) -> PropertyValue | None:
        return next((v for i, v in self.properties if i == ident), None)


class MqttError(ProtocolError):
    """The CONNECT is refused: send ``connack`` (may be empty), then close."""

    def __init__(self, message: str, reason: str, connack: bytes = b"") -> None:
        super().__init__(message, reason)
        self.connack = connack


# ---------------------------------------------------------------------------- primitives
def encode_varint(n: int) -> bytes:
    if not 0 <= n <= MAX_VARINT:
        raise ValueError(f"{n} does not fit an MQTT variable byte integer")
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def decode_varint(buf: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """(value, next position), ``None`` when more bytes are needed; ValueError past 4 bytes
    or for more bytes than the value needs (MQTT 5 1.5.5: the minimum number of bytes; a
    last byte of 0 after a continued one adds nothing)."""
    value = 0
    for i in range(4):
        if pos + i >= len(buf):
            return None
        b = buf[pos + i]
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            if b == 0 and i:
                raise ValueError("variable byte integer not in its shortest form")
            return value, pos + i + 1
    raise ValueError("variable byte integer longer than 4 bytes")


def _str(s: str) -> bytes:
    b = s.encode("utf-8")
    if len(b) > 0xFFFF:
        raise ValueError(f"string of {len(b)} bytes is longer than 65535")
    return struct.pack("!H", len(b)) + b


def _bin(b: bytes) -> bytes:
    if len(b) > 0xFFFF:
        raise ValueError(f"binary of {len(b)} bytes is longer than 65535")
    return struct.pack("!H", len(b)) + b


def encode_properties(props: Properties) -> bytes:
    body = bytearray()
    for ident, v in props:
        t = PROPERTY_TYPES.get(ident)
        if t is None:
            raise ValueError(f"unknown MQTT property {ident:#04x}")
        body += encode_varint(ident)
        if t == _BYTE:
            assert isinstance(v, int)
            body.append(v)
        elif t == _U16:
            assert isinstance(v, int)
            body += struct.pack("!H", v)
        elif t == _U32:
            assert isinstance(v, int)
            body += struct.pack("!I", v)
        elif t == _VARINT:
            assert isinstance(v, int)
            body += encode_varint(v)
        elif t == _STR:
            assert isinstance(v, str)
            body += _str(v)
        elif t == _BIN:
            assert isinstance(v, bytes)
            body += _bin(v)
        else:
            assert isinstance(v, tuple)
            body += _str(v[0]) + _str(v[1])
    return encode_varint(len(body)) + bytes(body)


class _Malformed(Exception):
    """Raised inside the body parser; becomes an MqttError with the version's CONNACK."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.buf):
            raise _Malformed(f"{what} runs past the end of the CONNECT")
        b = self.buf[self.pos : self.pos + n]
        self.pos += n
        return b

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int(struct.unpack("!H", self.take(2, what))[0])

    def u32(self, what: str) -> int:
        return int(struct.unpack("!I", self.take(4, what))[0])

    def varint(self, what: str) -> int:
        try:
            r = decode_varint(self.buf, self.pos)
        except ValueError as e:
            raise _Malformed(f"{what}: {e}") from None
        if r is None:
            raise _Malformed(f"{what} runs past the end of the CONNECT")
        self.pos = r[1]
        return r[0]

    def binary(self, what: str) -> bytes:
        return self.take(self.u16(what), what)

    def string(self, what: str) -> str:
        raw = self.binary(what)
        try:
            s = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Malformed(f"{what} is not UTF-8") from None
        if "\x00" in s:
            raise _Malformed(f"{what} contains U+0000")
        return s

    def properties(self, allowed: frozenset[int], what: str) -> Properties:
        n = self.varint(f"{what} length")
        end = self.pos + n
        if end > len(self.buf):
            raise _Malformed(f"{what} run past the end of the CONNECT")
        out: list[tuple[int, PropertyValue]] = []
        seen: set[int] = set()
        while self.pos < end:
            ident = self.varint(f"{what} identifier")
            if ident not in allowed:
                raise _Malformed(f"property {ident:#04x} is not allowed in the {what}",
                                 "protocol_error" if ident in PROPERTY_TYPES else "malformed")
            if ident in seen and ident != P_USER_PROPERTY:
                raise _Malformed(f"property {ident:#04x} appears twice in the {what}",
                                 "protocol_error")
            seen.add(ident)
            t = PROPERTY_TYPES[ident]
            name = f"{what} property {ident:#04x}"
            v: PropertyValue
            if t == _BYTE:
                v = self.byte(name)
                if ident in (P_PAYLOAD_FORMAT, P_REQUEST_PROBLEM_INFO,
                             P_REQUEST_RESPONSE_INFO) and v > 1:
                    raise _Malformed(f"{name} is {v}, not 0 or 1", "protocol_error")
            elif t == _U16:
                v = self.u16(name)
                if ident == P_RECEIVE_MAXIMUM and v == 0:
                    raise _Malformed(f"{name} (receive maximum) is 0", "protocol_error")
            elif t == _U32:
                v = self.u32(name)
                if ident == P_MAXIMUM_PACKET_SIZE and v == 0:
                    raise _Malformed(f"{name} (maximum packet size) is 0", "protocol_error")
            elif t == _STR:
                v = self.string(name)
            elif t == _BIN:
                v = self.binary(name)
            elif t == _PAIR:
                v = (self.string(name), self.string(name))
            else:  # pragma: no cover - no varint property is allowed in a CONNECT
                v = self.varint(name)
            out.append((ident, v))
        if self.pos != end:
            raise _Malformed(f"the last {what} runs past their length")
        if P_AUTH_DATA in seen and P_AUTH_METHOD not in seen:
            raise _Malformed("authentication data without an authentication method",
                             "protocol_error")
        return tuple(out)


# ---------------------------------------------------------------------------- CONNACK
def encode_connack(level: int, code: int, *, session_present: bool = False,
                   properties: Properties = ()) -> bytes:
    """A CONNACK in the format of protocol ``level`` (3.1 and 3.1.1: a return code 0-5;
    5.0: a reason code and properties such as the reason string or server reference)."""
    if not 0 <= code <= 255:
        raise ValueError(f"CONNACK code {code} is not a byte")
    flags = 1 if session_present and code == 0 and level != MQTT31 else 0
    if level != MQTT5:
        if properties:
            raise ValueError("MQTT 3.x CONNACKs carry no properties")
        return bytes([CONNACK, 2, flags, code])
    body = bytes([flags, code]) + encode_properties(properties)
    return bytes([CONNACK]) + encode_varint(len(body)) + body


def refusal(level: int | None, reason: str, *, reason_string: str = "",
            server_reference: str = "") -> bytes:
    """The CONNACK that refuses a client of ``level`` for ``reason`` (a key of :data:`CODES`);
    empty when the version is unknown or MQTT 3.x has no code for it."""
    v3, v5 = CODES[reason]
    if level == MQTT5:
        props: list[tuple[int, PropertyValue]] = []
        if reason_string:
            props.append((P_REASON_STRING, reason_string[:200]))
        if server_reference and v5 in (RS_USE_ANOTHER_SERVER, RS_SERVER_MOVED):
            props.append((P_SERVER_REFERENCE, server_reference))
        return encode_connack(MQTT5, v5, properties=tuple(props))
    if level in (MQTT31, MQTT311) and v3 is not None:
        return encode_connack(level, v3)
    if level is not None and reason == "unsupported_version":
        return encode_connack(MQTT311, RC_UNACCEPTABLE_VERSION)
    return b""


def parse_connack(data: bytes, level: int) -> tuple[int, bool, Properties]:
    """(code, session present, properties) of a whole CONNACK packet (for tests and
    clients); ValueError if it is not one."""
    if len(data) < 2 or data[0] != CONNACK:
        raise ValueError(f"not a CONNACK: {data[:8].hex()}")
    r = decode_varint(data, 1)
    if r is None or r[0] + r[1] != len(data):
        raise ValueError(f"CONNACK length does not match: {data.hex()}")
    body = _Reader(data[r[1]:])
    try:
        flags, code = body.byte("flags"), body.byte("code")
        props: Properties = ()
        if level == MQTT5 and body.pos < len(body.buf):
            props = body.properties(frozenset(PROPERTY_TYPES), "CONNACK properties")
    except _Malformed as e:
        raise ValueError(str(e)) from None
    return code, bool(flags & 1), props


# ---------------------------------------------------------------------------- CONNECT
def encode_connect(c: Connect) -> bytes:
    """The CONNECT packet for ``c`` (its ``raw`` is ignored)."""
    if c.level not in PROTOCOL_NAMES:
        raise ValueError(f"unknown MQTT protocol level {c.level}")
    flags = 0x02 if c.clean_start else 0
    if c.will is not None:
        flags |= 0x04 | (c.will.qos << 3) | (0x20 if c.will.retain else 0)
    if c.password is not None:
        flags |= 0x40
    if c.username is not None:
        flags |= 0x80
    body = bytearray(_bin(PROTOCOL_NAMES[c.level]))
    body += bytes([c.level, flags]) + struct.pack("!H", c.keep_alive)
    if c.level == MQTT5:
        body += encode_properties(c.properties)
    body += _str(c.client_id)
    if c.will is not None:
        if c.level == MQTT5:
            body += encode_properties(c.will.properties)
        body += _str(c.will.topic) + _bin(c.will.payload)
    if c.username is not None:
        body += _str(c.username)
    if c.password is not None:
        body += _bin(c.password)
    return bytes([CONNECT]) + encode_varint(len(body)) + bytes(body)


class ConnectParser:
    """One client's CONNECT, fed in pieces (see the module docs)."""

    __slots__ = ("_buf", "_failed", "connect", "level", "max_client_id", "max_size")

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE,
                 max_client_id: int = DEFAULT_MAX_CLIENT_ID) -> None:
        self.max_size = max_size
        self.max_client_id = max_client_id
        #: the protocol level, once read (the CONNACK of a refusal is in its format)
        self.level: int | None = None
        self.connect: Connect | None = None
        self._buf = bytearray()
        self._failed = False

    def leftover(self) -> bytes:
        """Bytes the client sent after its CONNECT."""
        if not self._buf:
            return b""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def receive_data(self, data: bytes) -> Connect | None:
        """Buffer ``data``; the :class:`Connect` once it is whole (then again on later calls)."""
        if self.connect is not None:
            self._buf += data
            return self.connect
        if self._failed:
            return None
        buf = self._buf
        # a CONNECT in one read (nearly every client's): parsed from ``data`` itself, no copy
        # into the buffer and out again
        b: bytes | bytearray = data if not buf and type(data) is bytes else buf
        if b is buf:
            buf += data
        try:
            c = self._parse(b)
        except MqttError:
            self._failed = True
            buf.clear()
            raise
        if b is buf:
            if c is not None:
                del buf[:len(c.raw)]
        elif c is None:
            buf += data
        elif len(c.raw) < len(data):
            buf += data[len(c.raw):]
        return c

    def _fail(self, message: str, reason: str, detail: str = "") -> MqttError:
        return MqttError(message, reason, refusal(self.level, reason,
                                                  reason_string=detail or message))

    def _parse(self, b: bytes | bytearray) -> Connect | None:
        """The CONNECT at the start of ``b`` if it is whole (``b`` is left as it is)."""
        if not b:
            return None
        if b[0] != CONNECT:
            if b[0] >> 4 == CONNECT >> 4:
                raise self._fail(f"CONNECT with reserved flags {b[0] & 0x0F:#x}", "malformed")
            raise self._fail(f"first packet is type {b[0] >> 4}, not CONNECT (1)", "malformed")
        if len(b) > 1 and b[1] < 0x80:  # a remaining length below 128: one byte
            remaining, start = b[1], 2
        else:
            try:
                r = decode_varint(b, 1)
            except ValueError as e:
                raise self._fail(f"CONNECT remaining length: {e}", "malformed") from None
            if r is None:
                return None
            remaining, start = r
        # protocol name and level come first: the refusal of an oversized CONNECT is in the
        # client's format, and the bound is checked before the body is buffered
        if len(b) < start + 2:
            return None
        nlen = b[start] << 8 | b[start + 1]
        if nlen not in (4, 6):
            raise self._fail(f"protocol name of {nlen} bytes is neither MQTT nor MQIsdp",
                             "malformed")
        if len(b) < start + 3 + nlen:
            name = bytes(b[start + 2 : start + 2 + nlen])
            if not (b"MQTT" if nlen == 4 else b"MQIsdp").startswith(name):
                raise self._fail(f"protocol name {name!r} is neither MQTT nor MQIsdp",
                                 "malformed")
            return None
        name = bytes(b[start + 2 : start + 2 + nlen])
        level = b[start + 2 + nlen]
        if name not in (b"MQTT", b"MQIsdp"):
            raise self._fail(f"protocol name {name!r} is neither MQTT nor MQIsdp", "malformed")
        if PROTOCOL_NAMES.get(level) != name:
            self.level = MQTT311  # answered in the 3.1.1 format (return code 1)
            raise self._fail(f"protocol {name.decode()} level {level} is not supported",
                             "unsupported_version")
        self.level = level
        if remaining > self.max_size:
            raise self._fail(f"CONNECT of {remaining} bytes is larger than {self.max_size}",
                             "too_large")
        end = start + remaining
        if len(b) < end:
            return None
        raw = b[:end] if type(b) is bytes else bytes(b[:end])  # bytes: the same object if whole
        try:
            c = self._body(raw, start)
        except _Malformed as e:
            raise self._fail(f"MQTT {VERSION_NAMES[level]} CONNECT: {e}", e.reason,
                             str(e)) from None
        self.connect = c
        return c

    def _body(self, raw: bytes, start: int) -> Connect:
        # the fixed fields and the client identifier by index; a _Reader only for what few
        # CONNECTs carry (5.0 properties, a will, credentials): this runs per connection
        level = self.level
        assert level is not None
        n = len(raw)
        pos = start + 3 + len(PROTOCOL_NAMES[level])
        if pos + 3 > n:  # the reader names the field that runs past the end
            r = _Reader(raw)
            r.pos = pos
            r.byte("connect flags")
            r.u16("keep alive")
        flags = raw[pos]
        keep_alive = raw[pos + 1] << 8 | raw[pos + 2]
        pos += 3
        if flags & 0x01:
            raise _Malformed("the reserved connect flag is set")
        will_flag, will_qos, will_retain = flags & 0x04, (flags >> 3) & 3, bool(flags & 0x20)
        if will_qos == 3:
            raise _Malformed("will QoS is 3")
        if not will_flag and (will_qos or will_retain):
            raise _Malformed("will QoS or retain set without the will flag")
        has_user, has_pw = bool(flags & 0x80), bool(flags & 0x40)
        if has_pw and not has_user and level != MQTT5:
            raise _Malformed("password flag without the user name flag")
        props: Properties = ()
        if level == MQTT5:
            if pos < n and raw[pos] == 0:  # no properties
                pos += 1
            else:
                r = _Reader(raw)
                r.pos = pos
                props = r.properties(CONNECT_PROPERTIES, "CONNECT properties")
                pos = r.pos
        client_id, pos, id_len = _string_at(raw, pos, "client identifier")
        clean = bool(flags & 0x02)
        if id_len > self.max_client_id:
            raise _Malformed(f"client identifier of {id_len} bytes is longer "
                             f"than {self.max_client_id}", "bad_client_id")
        if not client_id and (level == MQTT31 or (level == MQTT311 and not clean)):
            raise _Malformed("empty client identifier" + (
                "" if level == MQTT31 else " with a persistent session"), "bad_client_id")
        will = None
        username = password = None
        if will_flag or has_user or has_pw:
            r = _Reader(raw)
            r.pos = pos
            if will_flag:
                wprops: Properties = ()
                if level == MQTT5:
                    wprops = r.properties(WILL_PROPERTIES, "will properties")
                topic = r.string("will topic")
                if not topic or "+" in topic or "#" in topic:
                    raise _Malformed(f"will topic {topic[:64]!r} is not a topic name")
                will = Will(topic=topic, payload=r.binary("will payload"), qos=will_qos,
                            retain=will_retain, properties=wprops)
            username = r.string("user name") if has_user else None
            password = r.binary("password") if has_pw else None
            pos = r.pos
        if pos != n:
            raise _Malformed(f"{n - pos} bytes after the last CONNECT field")
        return _new_connect(level, client_id, clean, keep_alive, props, will, username,
                            password, raw)


def _string_at(buf: bytes, pos: int, what: str) -> tuple[str, int, int]:
    """The UTF-8 string at ``pos`` (what :meth:`_Reader.string` reads, in one call): the
    string, the position after it and its length in bytes."""
    start = pos + 2
    if start > len(buf):
        raise _Malformed(f"{what} runs past the end of the CONNECT")
    size = buf[pos] << 8 | buf[pos + 1]
    end = start + size
    if end > len(buf):
        raise _Malformed(f"{what} runs past the end of the CONNECT")
    try:
        s = buf[start:end].decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed(f"{what} is not UTF-8") from None
    if "\x00" in s:
        raise _Malformed(f"{what} contains U+0000")
    return s, end, size


def _new_connect(level: int, client_id: str, clean_start: bool, keep_alive: int,
                 properties: Properties, will: Will | None, username: str | None,
                 password: bytes | None, raw: bytes) -> Connect:
    """``Connect(...)`` as the parser makes one per connection: a frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__`` (19k instructions for the nine
    on CPython 3.11, a third of the whole parse); its fields are filled in at once here. The
    result is the same object (equality, hash, ``replace``)."""
    c = object.__new__(Connect)
    c.__dict__.update(level=level, client_id=client_id, clean_start=clean_start,
                      keep_alive=keep_alive, properties=properties, will=will,
                      username=username, password=password, raw=raw)
    return c


def sniff(prefix: bytes) -> Sniff:
    """Shared-port test: a CONNECT (0x10), a remaining length, then the protocol name
    ``MQTT`` or ``MQIsdp``."""
    if not prefix:
        return Sniff.NEED_MORE
    if prefix[0] != CONNECT:
        return Sniff.NO
    try:
        r = decode_varint(prefix, 1)
    except ValueError:
        return Sniff.NO
    if r is None:
        return Sniff.NEED_MORE
    start = r[1]
    head = bytes(prefix[start : start + 8])
    for name in (b"\x00\x04MQTT", b"\x00\x06MQIsdp"):
        if head[: len(name)] == name:
            return Sniff.MATCH
        if name.startswith(head):
            need = Sniff.NEED_MORE
            break
    else:
        return Sniff.NO
    return need
