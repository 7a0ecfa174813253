"""HBONE with Envoy when ugate's certificate comes from a CA by configuration only
(``[identity] cert_file`` / ``key_file`` / ``trust_bundles``): no identity plugin, no pins.
Both ends hold CA-issued SPIFFE certificates (root → intermediate → leaf); each verifies the
other's chain against the root and the SPIFFE URI — Envoy with
``match_typed_subject_alt_names`` and ``require_client_certificate``, ugate with ``peers`` /
``hosts.identity``. A wrong SAN and a certificate from another CA are refused on both sides,
with the reason in the log."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest

from ugate_core import DialError, Gateway
from ugate_core.testca import TestCA
from ugate_core.testing import StartGateway, metric, pattern

from . import envoycfg
from .conftest import Blob, Envoy, MiB, tcp_exchange
from .test_envoy import Recorder, read_all

TD = "cluster.local"
UGATE_SA = f"spiffe://{TD}/ns/default/sa/ugate"
ENVOY_SA = f"spiffe://{TD}/ns/default/sa/envoy"


def identity(ca: TestCA, name: str = "ugate", sa: str = UGATE_SA) -> str:
    chain, key = ca.issue(name, sa)
    return f"""
[identity]
cert_file = "{chain}"
key_file = "{key}"
trust_bundles = ["{ca.root_file}"]
"""


def listener_config(ca: TestCA) -> str:
    return f"""
[admin]
listen = ""
[listeners.hb]
listen = "127.0.0.1:0"
protocols = ["hbone"]
peers = ["{ENVOY_SA}"]
""" + identity(ca)


def envoy_tls(ca: TestCA, name: str, sa: str, *, signer: TestCA | None = None,
              expect: str = UGATE_SA) -> dict[str, Any]:
    chain, key = (signer or ca).issue(name, sa)
    return envoycfg.tls_context(str(chain), str(key), str(ca.root_file), sans=[expect])


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA.create(tmp_path / "ca", "Mesh CA")


@pytest.fixture
def other_ca(tmp_path: Path) -> TestCA:
    return TestCA.create(tmp_path / "other", "Other CA")


# ------------------------------------------------------------------------------ Envoy → ugate
async def test_envoy_client_and_ugate_listener_with_ca_issued_certificates(
        start_gateway: StartGateway, envoy: Any, blob_server: Any, ca: TestCA) -> None:
    reply = pattern(MiB, 21)
    up: Blob = await blob_server(reply)
    gw = await start_gateway(listener_config(ca))
    rec = Recorder()
    gw.pm.register(rec)
    # Envoy trusts only the CA root and ugate's SPIFFE URI: no mesh anchor, no pin
    e = await envoy(envoycfg.hbone_client("127.0.0.1", gw.port("hb"), up.address,
                                          tls=envoy_tls(ca, "envoy", ENVOY_SA)))
    payload = pattern(MiB, 22)
    out = await tcp_exchange("127.0.0.1", await e.listener_port("tcp_in"), payload, 32 + MiB)
    assert out == hashlib.sha256(payload).digest() + reply
    client = rec.records[0].client
    assert client.extra["spiffe"] == ENVOY_SA
    assert await e.stat("cluster.hbone_peer.ssl.handshake") == 1


async def test_a_new_envoy_connection_after_rotation_sees_the_new_certificate(
        start_gateway: StartGateway, envoy: Any, blob_server: Any, ca: TestCA) -> None:
    """The files are replaced (new key, as SPIRE and Istio rotate): the next handshake
    presents the new chain. The second Envoy pins the new key, so only it passes."""
    up: Blob = await blob_server(b"ok")
    gw = await start_gateway(listener_config(ca))
    first_pin = gw.identity.pin_sha256
    ca.issue("ugate", UGATE_SA)  # the same files, rewritten by rename
    for pin, want in ((first_pin, b""), (None, b"ok")):
        gw.identity.renew_if_needed()  # (the handshake does it too; here it gives the new pin)
        tls = envoy_tls(ca, "envoy", ENVOY_SA)
        tls["common_tls_context"]["validation_context"]["verify_certificate_spki"] = [
            (pin or gw.identity.pin_sha256).removeprefix("sha256//")]
        e = await envoy(envoycfg.hbone_client("127.0.0.1", gw.port("hb"), up.address, tls=tls))
        out = await tcp_exchange("127.0.0.1", await e.listener_port("tcp_in"), b"x", 100)
        assert out[32:] == want, (pin, out)
    assert gw.identity.pin_sha256 != first_pin


@pytest.mark.parametrize("case", ["wrong_san", "other_ca"])
async def test_ugate_listener_refuses_envoy_with_a_wrong_san_or_another_ca(
        start_gateway: StartGateway, envoy: Any, blob_server: Any, ca: TestCA,
        other_ca: TestCA, caplog: pytest.LogCaptureFixture, case: str) -> None:
    caplog.set_level(logging.INFO, "ugate")
    up: Blob = await blob_server(b"never")
    gw = await start_gateway(listener_config(ca))
    tls = (envoy_tls(ca, "envoy", f"spiffe://{TD}/ns/default/sa/intruder") if case == "wrong_san"
           else envoy_tls(ca, "envoy", ENVOY_SA, signer=other_ca))
    e = await envoy(envoycfg.hbone_client("127.0.0.1", gw.port("hb"), up.address, tls=tls))
    assert await tcp_exchange("127.0.0.1", await e.listener_port("tcp_in"), b"hi", 100) == b""
    assert up.received == []
    if case == "wrong_san":
        assert metric(gw, "ugate_rejections_total", listener="hb", reason="identity") >= 1
        line = next(r.getMessage() for r in caplog.records
                    if r.getMessage().startswith("identity_mismatch protocol=hbone"))
        assert f"expected spiffe {ENVOY_SA}" in line and "sa/intruder" in line, line
    else:
        assert metric(gw, "ugate_rejections_total", listener="hb", reason="tls_handshake") >= 1
        line = next(r.getMessage() for r in caplog.records
                    if "reason=tls_handshake" in r.getMessage())
        assert "CERTIFICATE" in line.upper(), line
    assert metric(gw, "ugate_identity_failures_total", protocol="hbone",
                  direction="accept") >= 1


# ------------------------------------------------------------------------------ ugate → Envoy
def dialer_config(ca: TestCA, eport: int, sa: str = ENVOY_SA) -> str:
    return f"""
[admin]
listen = ""
[hosts."svc.test"]
endpoints = ["127.0.0.1:{eport}"]
protocol = "hbone"
identity = ["{sa}"]
""" + identity(ca)


async def envoy_server(envoy: Any, up: Blob, tls: dict[str, Any]) -> tuple[Envoy, int]:
    e = await envoy(envoycfg.hbone_server("127.0.0.1", up.port, tls=tls))
    return e, await e.listener_port("connect_in")


async def test_ugate_dialer_and_envoy_server_with_ca_issued_certificates(
        start_gateway: StartGateway, envoy: Any, blob_server: Any, ca: TestCA) -> None:
    reply = pattern(256 * 1024, 23)
    up: Blob = await blob_server(reply)
    # Envoy requires a client certificate from the root with exactly ugate's SPIFFE URI
    _, eport = await envoy_server(envoy, up, envoy_tls(ca, "envoy", ENVOY_SA))
    gw: Gateway = await start_gateway(dialer_config(ca, eport))
    s = await gw.dial("svc.test:443")
    assert s.meta.extra["spiffe"] == ENVOY_SA
    payload = pattern(MiB, 24)
    s.write(payload)
    s.write_eof()
    assert await read_all(s, 32 + len(reply)) == hashlib.sha256(payload).digest() + reply
    s.close()


@pytest.mark.parametrize("case", ["wrong_san", "other_ca"])
async def test_ugate_dialer_refuses_envoy_with_a_wrong_san_or_another_ca(
        start_gateway: StartGateway, envoy: Any, blob_server: Any, ca: TestCA,
        other_ca: TestCA, caplog: pytest.LogCaptureFixture, case: str) -> None:
    caplog.set_level(logging.INFO, "ugate")
    up: Blob = await blob_server(b"never")
    tls = (envoy_tls(ca, "envoy", f"spiffe://{TD}/ns/default/sa/intruder") if case == "wrong_san"
           else envoy_tls(ca, "envoy", ENVOY_SA, signer=other_ca))
    _, eport = await envoy_server(envoy, up, tls)
    gw = await start_gateway(dialer_config(ca, eport))
    with pytest.raises(DialError) as ei:
        await gw.dial("svc.test:443")
    assert ei.value.reason == "identity"
    msg = str(ei.value)
    assert f"expected spiffe {ENVOY_SA}" in msg
    assert ("sa/intruder" if case == "wrong_san" else "chain does not verify") in msg, msg
    assert any(r.getMessage().startswith("identity_mismatch protocol=hbone direction=dial")
               for r in caplog.records)
    assert metric(gw, "ugate_identity_failures_total", protocol="hbone", direction="dial") == 1
    assert up.received == []


async def test_envoy_server_refuses_ugate_with_a_san_it_does_not_expect(
        start_gateway: StartGateway, envoy: Any, blob_server: Any, ca: TestCA) -> None:
    """Envoy's ``match_typed_subject_alt_names`` really checks ugate's certificate: the
    dial fails when Envoy expects another SPIFFE URI."""
    up: Blob = await blob_server(b"never")
    tls = envoy_tls(ca, "envoy", ENVOY_SA, expect=f"spiffe://{TD}/ns/default/sa/someone-else")
    e, eport = await envoy_server(envoy, up, tls)
    gw = await start_gateway(dialer_config(ca, eport))
    with pytest.raises(DialError) as ei:
        await gw.dial("svc.test:443")
    assert ei.value.reason == "unreachable", ei.value
    stats = (await e.admin_get("/stats?filter=ssl.fail_verify_san")).decode()
    assert any(line.endswith("ssl.fail_verify_san: 1") for line in stats.splitlines()), stats
    assert up.received == []
