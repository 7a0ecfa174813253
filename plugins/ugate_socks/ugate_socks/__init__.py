"""ugate-socks: a SOCKS5 listener for ugate (RFC 1928, username/password RFC 1929)."""

from .protocol import (
    AuthReceived,
    GreetingReceived,
    RequestReceived,
    Socks5Error,
    Socks5Server,
    encode_reply,
    sniff,
)
from .server import REPLY_FOR_REASON, reply_code, serve

__all__ = [
    "REPLY_FOR_REASON",
    "AuthReceived",
    "GreetingReceived",
    "RequestReceived",
    "Socks5Error",
    "Socks5Server",
    "encode_reply",
    "reply_code",
    "serve",
    "sniff",
]
