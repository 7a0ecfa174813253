"""``gateway.round_trip`` with ``scheme="https"``: only over a dialer that encrypts and
verifies the peer. A destination that discovery says is plain TCP gets nothing, not even a
connection (the request and its Authorization would cross the network in clear); a TLS
origin whose certificate the config names is reached."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ugate_core import DialError, HttpRequest, UgateError
from ugate_core.testing import StartGateway, metric, read_request_head, require_peer, run

if TYPE_CHECKING:
    from conftest import Origin  # type: ignore[import-not-found]

SECRET = "Bearer do-not-leak-8c1f"


def config(tail: str) -> str:
    return f'[admin]\nlisten = ""\n[routing]\ndirect = true\n{tail}'


async def test_https_to_a_plain_tcp_destination_sends_nothing(
    start_gateway: StartGateway, origin: Origin
) -> None:
    gw = await start_gateway(config(f"""
[hosts."plain.test"]
endpoints = ["127.0.0.1:{origin.port}"]
"""))
    for authority in ("plain.test:443", f"plain.test:{origin.port}",
                      f"127.0.0.1:{origin.port}"):  # an unknown name: dialed as plain tcp
        with pytest.raises(DialError) as e:
            await gw.round_trip(HttpRequest(method="GET", authority=authority, scheme="https",
                                            headers=[("Authorization", SECRET)]))
        assert e.value.reason == "insecure"
        assert "refusing to send an https request in clear" in str(e.value)
        assert "'tcp'" in str(e.value) and "tls" in str(e.value)
    secure = {n for n, d in gw.dialer_types.items() if d.secure}
    assert "tls" in secure and not secure & {"tcp", "hbonec"}
    await asyncio.sleep(0.05)
    assert origin.connections == 0 and origin.requests == []
    assert metric(gw, "ugate_dial_errors_total", reason="insecure") == 3
    assert metric(gw, "ugate_http_requests_total", listener="round_trip", code="502") == 3
    # the same destination over http is still reached (the caller chose clear text)
    resp = await gw.round_trip(HttpRequest(method="GET", authority=f"plain.test:{origin.port}"))
    assert (resp.status, await resp.read_all()) == (200, b"hello /\n")
    with pytest.raises(UgateError) as bad:
        await gw.round_trip(HttpRequest(method="GET", authority="plain.test:80", scheme="ftp"))
    assert getattr(bad.value, "status", None) == 400


class TlsOrigin:
    def __init__(self) -> None:
        self.port = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.cert_sha256 = ""


@pytest.fixture
async def tls_origin(tmp_path: Path) -> AsyncIterator[TlsOrigin]:
    """An HTTPS origin with a self-signed certificate made by openssl."""
    openssl = require_peer("openssl")
    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    await run(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "1",
              "-subj", "/CN=secure.test", "-addext", "subjectAltName=DNS:secure.test",
              check=True)
    o = TlsOrigin()
    der = x509.load_pem_x509_certificate(crt.read_bytes()).public_bytes(
        serialization.Encoding.DER)
    o.cert_sha256 = hashlib.sha256(der).hexdigest()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(crt, key)

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while (got := await read_request_head(r)) is not None:
                o.requests.append(got)
                body = f"hello over tls {got[1]}\n".encode()
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
                await w.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    o.port = server.sockets[0].getsockname()[1]
    try:
        yield o
    finally:
        server.close()


async def test_https_to_a_tls_origin_works(
    start_gateway: StartGateway, tls_origin: TlsOrigin
) -> None:
    gw = await start_gateway(config(f"""
[hosts."secure.test"]
endpoints = ["127.0.0.1:{tls_origin.port}"]
protocol = "tls"
identity = ["cert_sha256:{tls_origin.cert_sha256}"]
[hosts."impostor.test"]
endpoints = ["127.0.0.1:{tls_origin.port}"]
protocol = "tls"
identity = ["cert_sha256:{'0' * 64}"]
"""))
    resp = await gw.round_trip(HttpRequest(method="GET", authority="secure.test:443",
                                           target="/private", scheme="https",
                                           headers=[("Authorization", SECRET)]))
    assert (resp.status, await resp.read_all()) == (200, b"hello over tls /private\n")
    method, target, headers = tls_origin.requests[-1]
    assert (method, target, headers["authorization"]) == ("GET", "/private", SECRET)
    assert headers["host"] == "secure.test:443"
    # TLS to a server that does not prove the expected certificate: refused, nothing sent
    n = len(tls_origin.requests)
    with pytest.raises(DialError) as e:
        await gw.round_trip(HttpRequest(method="GET", authority="impostor.test:443",
                                        scheme="https", headers=[("Authorization", SECRET)]))
    assert e.value.reason == "identity"
    assert len(tls_origin.requests) == n


async def test_pools_check_the_connection_a_secure_request_goes_out_on(
    start_gateway: StartGateway, origin: Origin
) -> None:
    """A clear-text connection already in a pool (HTTP/1.1 or HTTP/2) never carries a request
    marked secure, whatever discovery said when the caller looked."""
    from ugate_http.client import OutgoingRequest
    from ugate_http.state import ROUND_TRIP, state_for

    b = await start_gateway(config(f"""
[listeners.web]
listen = "127.0.0.1:0"
protocols = ["http"]
mode = "reverse"
[hosts."h2.test"]
endpoints = ["127.0.0.1:{origin.port}"]
"""))
    gw = await start_gateway(config(f"""
[hosts."plain.test"]
endpoints = ["127.0.0.1:{origin.port}"]
[hosts."h2.test"]
endpoints = ["127.0.0.1:{b.port('web')}"]
labels = {{ http = "h2" }}
"""))
    st = state_for(gw)
    opts = st.round_trip_options()
    for authority in ("plain.test:80", "h2.test:80"):
        resp = await gw.round_trip(HttpRequest(method="GET", authority=authority))
        assert (resp.status, await resp.read_all()) == (200, b"hello /\n")
        n = len(origin.requests)
        req = OutgoingRequest(method="GET", target="/secret", authority=authority,
                              headers=(("Host", authority), ("Authorization", SECRET)),
                              secure=True)
        with pytest.raises(DialError) as e:
            await st.round_trip(ROUND_TRIP, opts, req, source=None, scheme="https")
        assert e.value.reason == "insecure" and "'tcp'" in str(e.value)
        await asyncio.sleep(0.05)
        assert len(origin.requests) == n, authority
    assert st.pools[ROUND_TRIP].reused == 1 and st.h2pools[ROUND_TRIP].reused == 1
