"""The TLS front of the shared port: SNI passthrough (no termination), termination with the
workload certificate and ALPN dispatch, unknown names refused with an alert; real peers are
openssl s_client / s_server and curl."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from ugate_core.certs import anchor_pem
from ugate_core.testing import StartGateway, Upstream, free_port, metric, require_peer, run


async def _s_server(tmp: Path, cn: str) -> tuple[asyncio.subprocess.Process, int]:
    openssl = require_peer("openssl")
    key, crt = tmp / "k.pem", tmp / "c.pem"
    await run(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", f"/CN={cn}",
              check=True)
    port = free_port()
    p = await asyncio.create_subprocess_exec(
        openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(crt), "-key", str(key),
        "-www", "-quiet", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    for _ in range(100):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            break
        except OSError:
            await asyncio.sleep(0.05)
    return p, port


async def test_sni_passthrough_shows_the_backends_certificate(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    srv, sport = await _s_server(tmp_path, "backend.test")
    try:
        gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.shared]
listen = "127.0.0.1:0"
protocols = ["*"]
passthrough = ["*.pass.test", "backend.test"]
passthrough_port = {sport}
[hosts."backend.test"]
endpoints = ["127.0.0.1"]
""")
        res = await run(require_peer("openssl"), "s_client", "-connect",
                        f"127.0.0.1:{gw.port('shared')}", "-servername", "backend.test", "-ign_eof",
                        input=b"GET / HTTP/1.0\r\n\r\n", timeout=20)
        out = res.stdout.decode(errors="replace")
        assert "subject=CN = backend.test" in out or "subject=CN=backend.test" in out
        assert "HTTP/1.0 200 ok" in out  # s_server -www answered through the relay
        assert metric(gw, "ugate_connections_total", listener="shared", protocol="tls") == 1
    finally:
        srv.kill()
        await srv.wait()


async def test_wildcard_passthrough_beyond_loopback_never_reaches_this_host(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    """A wildcard route lets the client choose the name; one resolving to this host is refused
    for a listener beyond loopback (the same route named exactly is the operator's choice)."""
    srv, sport = await _s_server(tmp_path, "backend.test")
    try:
        gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.shared]
listen = "0.0.0.0:0"
protocols = ["*"]
allow = ["nothing.test:1"]                 # the relaying protocols here may reach nothing
passthrough = ["*.pass.test", "backend.test"]
passthrough_port = {sport}
[hosts."evil.pass.test"]
endpoints = ["127.0.0.1"]
[hosts."backend.test"]
endpoints = ["127.0.0.1"]
""")

        async def hello(sni: str) -> str:
            res = await run(require_peer("openssl"), "s_client", "-connect",
                            f"127.0.0.1:{gw.port('shared')}", "-servername", sni, "-ign_eof",
                            input=b"GET / HTTP/1.0\r\n\r\n", timeout=20)
            return (res.stdout + res.stderr).decode(errors="replace")

        out = await hello("evil.pass.test")
        assert "HTTP/1.0 200 ok" not in out and "backend.test" not in out
        assert metric(gw, "ugate_dial_errors_total", reason="denied") == 1
        assert "HTTP/1.0 200 ok" in await hello("backend.test")  # named exactly: allowed
    finally:
        srv.kill()
        await srv.wait()


async def test_unknown_sni_gets_an_alert_and_a_counter(start_gateway: StartGateway) -> None:
    gw = await start_gateway('[admin]\nlisten = ""\n[listeners.shared]\n'
                             'listen = "127.0.0.1:0"\nprotocols = ["*"]\n')
    res = await run(require_peer("openssl"), "s_client", "-connect",
                    f"127.0.0.1:{gw.port('shared')}", "-servername", "elsewhere.example",
                    input=b"", timeout=20)
    assert res.returncode != 0
    assert "unrecognized name" in (res.stderr + res.stdout).decode(errors="replace")
    assert metric(gw, "ugate_rejections_total", listener="shared", reason="tls_unknown_sni") == 1


async def test_terminates_our_name_and_forwards_https_to_target(
    start_gateway: StartGateway, http_upstream: Upstream, tmp_path: Path
) -> None:
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.shared]
listen = "127.0.0.1:0"
protocols = ["*"]
target = "{http_upstream.address}"
""")
    ident = gw.identity
    name = ident.fqdns[0]
    port = gw.port("shared")
    spki = ident.key.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
    pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    anchor = tmp_path / "anchor.pem"
    anchor.write_bytes(anchor_pem())
    res = await run(require_peer("curl"), "-sS", "--http1.1", "--resolve",
                    f"{name}:{port}:127.0.0.1", "--cacert", str(anchor),
                    "--pinnedpubkey", f"sha256//{pin}", f"https://{name}:{port}/bytes/70000",
                    timeout=30)
    assert res.returncode == 0, res.stderr
    from ugate_core.testing import pattern

    assert res.stdout == pattern(70000)
    # a wrong pin fails: the certificate is the workload key's, nothing else
    res = await run(require_peer("curl"), "-sS", "--http1.1", "--resolve",
                    f"{name}:{port}:127.0.0.1", "--cacert", str(anchor),
                    "--pinnedpubkey", "sha256//" + base64.b64encode(b"x" * 32).decode(),
                    f"https://{name}:{port}/", timeout=30)
    assert res.returncode == 90


async def test_mesh_client_identity_reaches_the_stream_meta(
    start_gateway: StartGateway, echo_server: tuple[str, int]
) -> None:
    b = await start_gateway(f"""
[admin]
listen = ""
[listeners.shared]
listen = "127.0.0.1:0"
protocols = ["*"]
target = "{echo_server[0]}:{echo_server[1]}"
""")
    b_name = f"{b.identity.id.lower()}.m"
    a = await start_gateway(f"""
[admin]
listen = ""
[hosts."{b_name}"]
endpoints = ["127.0.0.1:{b.port('shared')}"]
protocol = "tls"
""")
    s = await a.dial(f"{b_name}:7")
    assert s.meta.peer_id == b.identity.id
    s.write(b"ping")
    assert await asyncio.wait_for(s.readexactly(4), 10) == b"ping"
    (rec,) = list(b.streams.values())
    assert rec.client.peer_id == a.identity.id  # B verified A's key
    assert rec.client.sni == b_name
    s.close()
