"""HBONE through the shared port's TLS front: gateway A's HBONE dialer (mTLS, ALPN h2) reaches
gateway B's shared port, where core's TLS front terminates, sees A's client certificate and hands
the h2 connection to the hbone plugin, which dials the CONNECT authority for A."""

from __future__ import annotations

import asyncio

import pytest

from ugate_core import DialError
from ugate_core.testing import StartGateway, pattern


async def test_hbone_mtls_via_shared_port(
    start_gateway: StartGateway, echo_server: tuple[str, int]
) -> None:
    b = await start_gateway(f"""
[admin]
listen = ""
[listeners.shared]
listen = "127.0.0.1:0"
protocols = ["*"]
[hosts."svc.test"]
endpoints = ["{echo_server[0]}:{echo_server[1]}"]
""")
    a = await start_gateway(f"""
[admin]
listen = ""
[routing]
direct = false
[hosts."svc.test"]
endpoints = ["127.0.0.1:{b.port('shared')}"]
protocol = "hbone"
identity = ["id:{b.identity.id}"]
""")
    s = await a.dial("svc.test:7")
    assert s.meta.peer_id == b.identity.id
    data = pattern(1 << 20, 9)
    s.write(data)
    got = await asyncio.wait_for(s.readexactly(len(data)), 20)
    assert got == data
    (rec,) = [r for r in b.streams.values() if r.listener == "shared"]
    assert rec.client.peer_id == a.identity.id  # B saw A's key through the TLS front
    assert rec.client.protocol == "hbone"
    s.close()

    # the same name answered by a gateway with another key: the identity error
    c = await start_gateway('[admin]\nlisten = ""\n[listeners.shared]\n'
                            'listen = "127.0.0.1:0"\nprotocols = ["*"]\n')
    a2 = await start_gateway(f"""
[admin]
listen = ""
[routing]
direct = false
[hosts."svc.test"]
endpoints = ["127.0.0.1:{c.port('shared')}"]
protocol = "hbone"
identity = ["id:{b.identity.id}"]
""")
    with pytest.raises(DialError) as ei:
        await a2.dial("svc.test:7")
    assert ei.value.reason == "identity"
    assert b.identity.id in str(ei.value) and c.identity.id in str(ei.value)
