"""SOCKS5 server side, sans-IO (RFC 1928, username/password sub-negotiation RFC 1929).

:class:`Socks5Server` takes the client's bytes with :meth:`~Socks5Server.receive_data` and
returns events; the server answers each event with a method that returns the bytes to send::

    GreetingReceived  -> select_method(m)
    AuthReceived      -> auth_reply(ok)
    RequestReceived   -> reply(code, bind_host, bind_port)

After a decision, call ``receive_data(b"")`` to parse bytes the client already sent (clients
may pipeline the greeting, the credentials and the request). Once a request is accepted,
:meth:`~Socks5Server.leftover` gives the bytes that followed it: they belong to the relayed
stream. Every error is a :class:`Socks5Error` (a :class:`~ugate_core.ProtocolError`) carrying
the bytes to send before closing.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import NoReturn

from ugate_core import ProtocolError, Sniff

VERSION = 0x05

# methods (RFC 1928 section 3)
METHOD_NO_AUTH = 0x00
METHOD_GSSAPI = 0x01
METHOD_USERPASS = 0x02
METHOD_NONE_ACCEPTABLE = 0xFF

# commands
CMD_CONNECT = 0x01
CMD_BIND = 0x02
CMD_UDP_ASSOCIATE = 0x03

# address types
ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04

# replies (RFC 1928 section 6)
REP_SUCCEEDED = 0x00
REP_GENERAL_FAILURE = 0x01
REP_NOT_ALLOWED = 0x02
REP_NETWORK_UNREACHABLE = 0x03
REP_HOST_UNREACHABLE = 0x04
REP_CONNECTION_REFUSED = 0x05
REP_TTL_EXPIRED = 0x06
REP_COMMAND_NOT_SUPPORTED = 0x07
REP_ADDRESS_TYPE_NOT_SUPPORTED = 0x08

# username/password sub-negotiation (RFC 1929)
AUTH_VERSION = 0x01
AUTH_SUCCESS = 0x00
AUTH_FAILURE = 0x01

#: a client that has sent this much without finishing its handshake is refused
MAX_BUFFER = 65536

_HOST_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")


@dataclass(frozen=True, kw_only=True)
class GreetingReceived:
    """The client's version/method selection message: the methods it offers, in its order."""

    methods: tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class AuthReceived:
    """RFC 1929 credentials. Bytes that are not UTF-8 are kept as surrogate escapes."""

    user: str
    password: str


@dataclass(frozen=True, kw_only=True)
class RequestReceived:
    """A request: ``host`` is a dotted IPv4, a compressed IPv6 or a domain name as sent."""

    cmd: int
    host: str
    port: int
    atyp: int

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 in brackets), as :meth:`ugate_core.Gateway.dial` takes it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


Event = GreetingReceived | AuthReceived | RequestReceived


class Socks5Error(ProtocolError):
    """The client broke the protocol; send ``reply`` (may be empty), then close."""

    def __init__(self, message: str, reason: str, reply: bytes = b"") -> None:
        super().__init__(message, reason)
        self.reply = reply


class State(enum.Enum):
    GREETING = "greeting"
    #: waiting for the server's select_method()
    METHOD = "method"
    AUTH = "auth"
    #: waiting for the server's auth_reply()
    AUTH_REPLY = "auth_reply"
    REQUEST = "request"
    #: waiting for the server's reply()
    REPLY = "reply"
    #: request accepted: the rest is the relayed stream
    RELAY = "relay"
    CLOSED = "closed"


_REPLY_V4 = bytes([VERSION, 0, 0x00, ATYP_IPV4])


def encode_reply(code: int, bind_host: str = "0.0.0.0", bind_port: int = 0) -> bytes:
    """A reply message; ``bind_host`` an IP literal (a name is sent as a domain)."""
    if not 0 <= code <= 255:
        raise ValueError(f"SOCKS5 reply code {code} is not a byte")
    if not 0 <= bind_port <= 65535:
        raise ValueError(f"SOCKS5 bind port {bind_port} is not a port")
    try:  # the usual IPv4 answer without ipaddress (this runs per connection)
        return _REPLY_V4[:1] + bytes([code]) + _REPLY_V4[2:] + \
            socket.inet_pton(socket.AF_INET, bind_host) + struct.pack("!H", bind_port)
    except OSError:
        pass
    try:
        ip = ipaddress.ip_address(bind_host.split("%", 1)[0])
    except ValueError:
        name = bind_host.encode("idna")
        if not 0 < len(name) <= 255:
            raise ValueError(f"SOCKS5 bind host {bind_host!r} is not 1-255 bytes") from None
        addr = bytes([ATYP_DOMAIN, len(name)]) + name
    else:
        atyp = ATYP_IPV4 if ip.version == 4 else ATYP_IPV6
        addr = bytes([atyp]) + ip.packed
    return bytes([VERSION, code, 0x00]) + addr + struct.pack("!H", bind_port)


def socks4_rejection() -> bytes:
    """SOCKS4 reply 91, "request rejected or failed": the answer a SOCKS4 client understands."""
    return b"\x00\x5b" + b"\x00" * 6


class Socks5Server:
    """One server-side SOCKS5 handshake. Accepts only the commands in ``commands``."""

    def __init__(self, commands: frozenset[int] = frozenset({CMD_CONNECT})) -> None:
        self.commands = commands
        self.state = State.GREETING
        self.method: int | None = None
        self._buf = bytearray()

    # ------------------------------------------------------------------ input
    def receive_data(self, data: bytes) -> list[Event]:
        """Buffer ``data`` and return every event it completes (possibly none)."""
        if self.state is State.CLOSED:
            return []  # refused: the server closes; late bytes are dropped
        self._buf += data
        events: list[Event] = []
        while True:
            if self.state is State.GREETING:
                ev: Event | None = self._greeting()
            elif self.state is State.AUTH:
                ev = self._auth()
            elif self.state is State.REQUEST:
                ev = self._request()
            else:
                ev = None
            if ev is None:
                break
            events.append(ev)
        # No message is longer than 517 bytes, so only a caller that keeps feeding without
        # answering the events can get here.
        if self.state is not State.RELAY and len(self._buf) > MAX_BUFFER:
            self._fail()
            raise Socks5Error(f"SOCKS5 client sent more than {MAX_BUFFER} bytes before its "
                              "handshake finished", "too_long")
        return events

    def leftover(self) -> bytes:
        """Bytes the client sent after its request (after :meth:`reply` succeeded)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def _fail(self) -> None:
        self.state = State.CLOSED
        self._buf.clear()

    def _greeting(self) -> GreetingReceived | None:
        b = self._buf
        if not b:
            return None
        ver = b[0]
        if ver != VERSION:
            self._fail()
            if ver == 0x04:
                raise Socks5Error("SOCKS4 is not supported, only SOCKS5", "socks4",
                                  socks4_rejection())
            raise Socks5Error(f"SOCKS version {ver:#04x} is not 5", "bad_version")
        if len(b) < 2:
            return None
        n = b[1]
        if n == 0:
            self._fail()
            raise Socks5Error("SOCKS5 greeting offers no methods (NMETHODS 0)", "no_methods",
                              bytes([VERSION, METHOD_NONE_ACCEPTABLE]))
        if len(b) < 2 + n:
            return None
        methods = tuple(b[2 : 2 + n])
        del b[: 2 + n]
        self.state = State.METHOD
        return GreetingReceived(methods=methods)

    def _auth(self) -> AuthReceived | None:
        b = self._buf
        if not b:
            return None
        ver = b[0]
        if ver != AUTH_VERSION:
            self._fail()
            raise Socks5Error(f"SOCKS5 username/password version {ver:#04x} is not 1",
                              "bad_auth_version", bytes([AUTH_VERSION, AUTH_FAILURE]))
        if len(b) < 2:
            return None
        ulen = b[1]
        if len(b) < 3 + ulen:
            return None
        plen = b[2 + ulen]
        end = 3 + ulen + plen
        if len(b) < end:
            return None
        user = bytes(b[2 : 2 + ulen]).decode("utf-8", "surrogateescape")
        password = bytes(b[3 + ulen : end]).decode("utf-8", "surrogateescape")
        del b[:end]
        self.state = State.AUTH_REPLY
        return AuthReceived(user=user, password=password)

    def _request(self) -> RequestReceived | None:
        b = self._buf
        if len(b) < 4:
            if b and b[0] != VERSION:
                self._bad_request_version(b[0])
            return None
        ver, cmd, _rsv, atyp = b[0], b[1], b[2], b[3]  # RSV is ignored (must be 0)
        if ver != VERSION:
            self._bad_request_version(ver)
        if atyp == ATYP_IPV4:
            alen, off = 4, 4
        elif atyp == ATYP_IPV6:
            alen, off = 16, 4
        elif atyp == ATYP_DOMAIN:
            if len(b) < 5:
                return None
            alen, off = b[4], 5
        else:
            self._fail()
            raise Socks5Error(f"SOCKS5 address type {atyp:#04x} is not supported",
                              "bad_address_type", encode_reply(REP_ADDRESS_TYPE_NOT_SUPPORTED))
        end = off + alen + 2
        if len(b) < end:
            return None
        raw = bytes(b[off : off + alen])
        (port,) = struct.unpack("!H", b[off + alen : end])
        del b[:end]
        if cmd not in self.commands:
            self._fail()
            names = {CMD_CONNECT: "CONNECT", CMD_BIND: "BIND", CMD_UDP_ASSOCIATE: "UDP ASSOCIATE"}
            what = names.get(cmd, f"{cmd:#04x}")
            raise Socks5Error(f"SOCKS5 command {what} is not supported", "unsupported_command",
                              encode_reply(REP_COMMAND_NOT_SUPPORTED))
        if atyp == ATYP_IPV4:
            host = socket.inet_ntop(socket.AF_INET, raw)  # str(IPv4Address(raw)), cheaper
        elif atyp == ATYP_IPV6:
            host = str(ipaddress.IPv6Address(raw))
        else:
            host = self._domain(raw)
        self.state = State.REPLY
        return RequestReceived(cmd=cmd, host=host, port=port, atyp=atyp)

    def _bad_request_version(self, ver: int) -> NoReturn:
        self._fail()
        raise Socks5Error(f"SOCKS5 request version {ver:#04x} is not 5", "bad_version",
                          encode_reply(REP_GENERAL_FAILURE))

    def _domain(self, raw: bytes) -> str:
        if not raw:
            self._fail()
            raise Socks5Error("SOCKS5 request names an empty domain", "bad_address",
                              encode_reply(REP_HOST_UNREACHABLE))
        if all(c in _HOST_CHARS for c in raw):
            return raw.decode("ascii")
        text = raw.decode("ascii", "backslashreplace")
        try:  # an IP literal sent as a name (IPv6 has ':'): keep it if it parses
            return str(ipaddress.ip_address(text))
        except ValueError:
            pass
        self._fail()
        raise Socks5Error(f"SOCKS5 request names {text[:64]!r}: not a host name", "bad_address",
                          encode_reply(REP_HOST_UNREACHABLE))

    # ------------------------------------------------------------------ decisions
    def select_method(self, method: int) -> bytes:
        """Answer the greeting; ``METHOD_NONE_ACCEPTABLE`` ends the handshake."""
        self._expect(State.METHOD, "select_method")
        self.method = method
        if method == METHOD_NO_AUTH:
            self.state = State.REQUEST
        elif method == METHOD_USERPASS:
            self.state = State.AUTH
        elif method == METHOD_NONE_ACCEPTABLE:
            self._fail()
        else:
            raise ValueError(f"SOCKS5 method {method:#04x} is not implemented here")
        return bytes([VERSION, method])

    def auth_reply(self, ok: bool) -> bytes:
        """Answer the credentials; a failure ends the handshake (RFC 1929: close)."""
        self._expect(State.AUTH_REPLY, "auth_reply")
        if ok:
            self.state = State.REQUEST
            return bytes([AUTH_VERSION, AUTH_SUCCESS])
        self._fail()
        return bytes([AUTH_VERSION, AUTH_FAILURE])

    def reply(self, code: int, bind_host: str = "0.0.0.0", bind_port: int = 0) -> bytes:
        """Answer the request; success switches to relaying, any other code ends it."""
        self._expect(State.REPLY, "reply")
        data = encode_reply(code, bind_host, bind_port)
        if code == REP_SUCCEEDED:
            self.state = State.RELAY
        else:
            self._fail()
        return data

    def _expect(self, state: State, what: str) -> None:
        if self.state is not state:
            raise RuntimeError(f"SOCKS5 {what}() in state {self.state.value}, "
                               f"expected {state.value}")


def sniff(prefix: bytes) -> Sniff:
    """Shared-port test: version 5 and at least one method offered."""
    if not prefix:
        return Sniff.NEED_MORE
    if prefix[0] != VERSION:
        return Sniff.NO
    if len(prefix) < 2:
        return Sniff.NEED_MORE
    return Sniff.MATCH if prefix[1] >= 1 else Sniff.NO
