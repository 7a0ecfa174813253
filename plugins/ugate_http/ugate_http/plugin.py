"""Hook implementations of the ``http`` plugin (thin: the protocol lives beside this file)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

from ugate_core import ListenerType, hookimpl

from .options import check_options, has_auth
from .proxy import close_state, serve
from .sniff import sniff

if TYPE_CHECKING:
    from ugate_core import Gateway


@hookimpl
def ugate_listener_types() -> list[ListenerType]:
    return [
        ListenerType(
            name="http",
            serve=serve,
            sniff=sniff,
            relays=True,
            has_auth=has_auth,
            check_options=check_options,
            description="HTTP/1.1 forward proxy (CONNECT, absolute URIs) and reverse proxy "
            "(route by Host; option mode)",
        )
    ]


@hookimpl
def ugate_shutdown(gateway: Gateway) -> Awaitable[None] | None:
    return close_state(gateway)
