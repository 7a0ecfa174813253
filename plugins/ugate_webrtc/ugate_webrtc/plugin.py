"""ugate-webrtc hooks: the signaling route on ugate-http's listeners, the ``webrtc`` dialer."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

from ugate_core import DialerType, hookimpl
from ugate_http.routes import HttpRoute

from .dialer import POOL, Pool, dialer_type
from .options import PATH, SECTION, parse
from .session import state_of
from .signaling import Signaling

if TYPE_CHECKING:
    from ugate_core import GatewayAPI


@hookimpl
def ugate_http_routes(gateway: GatewayAPI) -> list[HttpRoute]:
    return [HttpRoute(PATH, Signaling(gateway), methods=frozenset({"POST", "DELETE", "OPTIONS"}),
                      name="webrtc")]


@hookimpl
def ugate_dialer_types() -> list[DialerType]:
    return [dialer_type()]


@hookimpl
def ugate_config_sections(gateway: GatewayAPI) -> list[str]:
    parse(gateway.config.section(SECTION))  # `ugate config check` names a bad key or value
    return [SECTION]


@hookimpl
def ugate_startup(gateway: GatewayAPI) -> None:
    state_of(gateway)  # parse [webrtc] now: a bad value stops the start, naming the key


@hookimpl
def ugate_shutdown(gateway: GatewayAPI) -> Awaitable[None] | None:
    return _shutdown(gateway)


async def _shutdown(gateway: GatewayAPI) -> None:
    await gateway.stash.get_or_create(POOL, Pool).close()
    await state_of(gateway).close_all()
