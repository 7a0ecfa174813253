"""ugate-socks hooks: the ``socks5`` listener type."""

from __future__ import annotations

from ugate_core import ListenerType, hookimpl

from .options import KEYS, check_options, has_auth
from .protocol import sniff
from .server import serve


@hookimpl
def ugate_listener_types() -> list[ListenerType]:
    return [
        ListenerType(
            name="socks5",
            serve=serve,
            sniff=sniff,
            relays=True,
            has_auth=has_auth,
            check_options=check_options,
            option_keys=frozenset(KEYS),
            description="SOCKS5 proxy (RFC 1928/1929): CONNECT to IPv4, IPv6 or a name",
        )
    ]
