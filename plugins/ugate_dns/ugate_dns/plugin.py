"""Hook implementations of the ``dns`` plugin (thin: the work is in :mod:`.discovery`)."""

from __future__ import annotations

import logging

from ugate_core import Discovery, GatewayAPI, hookimpl

from .discovery import DnsDiscovery

log = logging.getLogger("ugate.dns")


@hookimpl
def ugate_config_sections() -> list[str]:
    return ["dns"]


@hookimpl
def ugate_discovery(gateway: GatewayAPI) -> list[Discovery]:
    return [DnsDiscovery.for_gateway(gateway)]


@hookimpl
def ugate_startup(gateway: GatewayAPI) -> None:
    s = DnsDiscovery.for_gateway(gateway).settings
    log.info("dns_discovery servers=%s zones=%s dnssec_anchors=%s deadline=%g",
             ",".join(f"{h}:{p}" for h, p in s.servers) or "-",
             ",".join(z.to_text() for z in s.zones) or "-(answers for no name)",
             ",".join(a.to_text() for a in s.anchors) or "-", s.deadline)
