"""ugate-mqtt hooks: the ``mqtt`` listener type."""

from __future__ import annotations

from ugate_core import ListenerType, hookimpl

from .codec import sniff
from .options import KEYS, check_options, has_auth
from .server import serve


@hookimpl
def ugate_listener_types() -> list[ListenerType]:
    return [
        ListenerType(
            name="mqtt",
            serve=serve,
            sniff=sniff,
            relays=True,
            has_auth=has_auth,
            check_options=check_options,
            option_keys=frozenset(KEYS),
            alpn=("mqtt",),
            description="MQTT 3.1/3.1.1/5.0 to brokers found through discovery (route by "
            "broker, SNI, client id or user name; mesh identity by mTLS or ES256 token)",
        )
    ]
