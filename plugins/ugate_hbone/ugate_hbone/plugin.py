"""ugate-hbone hooks: ``hbone``/``hbonec`` listener and dialer types, pools closed on shutdown."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ugate_core import IDENTITY_KINDS, DialerType, GatewayAPI, ListenerType, hookimpl

from .dialer import close_pool, dial_hbone, dial_hbonec
from .listener import OPTION_KEYS, check_options, start_hbone_listener
from .server import goaway_all, serve_hbone, serve_hbonec, sniff_preface
from .settings import settings_of


def _mtls(options: Mapping[str, Any]) -> bool:
    return True  # every HBONE client proves a certificate


@hookimpl
def ugate_listener_types() -> list[ListenerType]:
    return [
        ListenerType(
            name="hbone",
            serve=serve_hbone,
            start=start_hbone_listener,
            alpn=("h2",),
            tls_client_cert=True,  # on a shared TLS port, h2 from mesh peers is HBONE
            relays=True,
            has_auth=_mtls,
            check_options=check_options,
            option_keys=OPTION_KEYS,
            description="Istio HBONE: HTTP/2 CONNECT over mTLS (TLS 1.3, ALPN h2, client "
            "certificate required); :authority host:port is dialed for the verified client",
        ),
        ListenerType(
            name="hbonec",
            serve=serve_hbonec,
            sniff=sniff_preface,
            relays=True,
            option_keys=frozenset(),
            description="HBONE over plaintext h2c (prior knowledge, CONNECT or POST): only "
            "on loopback or with an allow rule",
        ),
    ]


@hookimpl
def ugate_dialer_types(gateway: GatewayAPI) -> list[DialerType]:
    settings_of(gateway)  # validates [hbone] when plugins load ('ugate config check' too)
    return [
        DialerType("hbone", dial_hbone, "HTTP/2 CONNECT over mTLS through a peer gateway or "
                   "ztunnel (endpoint port 15008); pooled connections",
                   verifies=frozenset(IDENTITY_KINDS), secure=True),
        DialerType("hbonec", dial_hbonec, "HTTP/2 CONNECT over plaintext h2c through a peer "
                   "(trusted networks only)"),
    ]


@hookimpl
def ugate_config_sections() -> list[str]:
    return ["hbone"]


@hookimpl
def ugate_startup(gateway: GatewayAPI) -> None:
    settings_of(gateway)  # a bad [hbone] table stops the start with its key and value


@hookimpl
def ugate_shutdown(gateway: GatewayAPI) -> None:
    goaway_all(gateway)
    close_pool(gateway)
