"""One shared port, many protocols at once, each proven by a real client: curl over SOCKS5
and as an HTTP proxy, openssl through TLS SNI passthrough, ssh-keyscan against SSH (its host key
is the workload key; ssh-keyscan waits for the server to speak first, so it gets the listener's
default protocol after the sniff deadline), and bytes nobody claims rejected."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ugate_core.testing import (
    StartGateway,
    Upstream,
    free_port,
    metric,
    pattern,
    require_peer,
    run,
)


async def test_every_protocol_on_one_port(
    start_gateway: StartGateway, http_upstream: Upstream, tmp_path: Path
) -> None:
    curl = require_peer("curl")
    keyscan = require_peer("ssh-keyscan", apt="openssh-client")
    openssl = require_peer("openssl")
    # a TLS backend for the passthrough route
    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    await run(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "1",
              "-subj", "/CN=tls.backend.test", check=True)
    sport = free_port()
    srv = await asyncio.create_subprocess_exec(
        openssl, "s_server", "-accept", f"127.0.0.1:{sport}", "-cert", str(crt), "-key",
        str(key), "-www", "-quiet", stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.shared]
listen = "127.0.0.1:0"
protocols = ["*"]
sniff_timeout = 0.5
default = "ssh"          # server-speaks-first clients (ssh-keyscan) get SSH after the deadline
passthrough = ["tls.backend.test"]
passthrough_port = {sport}
[hosts."web.test"]
endpoints = ["{http_upstream.address}"]
[hosts."tls.backend.test"]
endpoints = ["127.0.0.1"]
""")
        port = gw.port("shared")
        url = f"http://web.test:{http_upstream.port}/bytes/100000"
        want = pattern(100000)
        socks = await run(curl, "-sS", "--socks5-hostname", f"127.0.0.1:{port}", url)
        assert socks.stdout == want, socks.stderr
        proxy = await run(curl, "-sS", "-x", f"http://127.0.0.1:{port}", url)
        assert proxy.stdout == want, proxy.stderr
        connect = await run(curl, "-sS", "-p", "-x", f"http://127.0.0.1:{port}", url)
        assert connect.stdout == want, connect.stderr
        for _ in range(50):  # s_server may take a moment to listen
            tls = await run(openssl, "s_client", "-connect", f"127.0.0.1:{port}",
                            "-servername", "tls.backend.test", "-ign_eof",
                            input=b"GET / HTTP/1.0\r\n\r\n", timeout=20)
            if b"HTTP/1.0 200 ok" in tls.stdout:
                break
            await asyncio.sleep(0.1)
        assert b"CN = tls.backend.test" in tls.stdout or b"CN=tls.backend.test" in tls.stdout
        assert b"HTTP/1.0 200 ok" in tls.stdout
        scan = await run(keyscan, "-p", str(port), "-t", "ecdsa", "127.0.0.1", timeout=20)
        host_key = scan.stdout.decode().split(None, 1)[1].strip()
        want_key = " ".join(gw.identity.ssh_public_key().split()[:2])
        assert host_key == want_key
        # bytes no protocol claims: closed at once and counted
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"\x00\x01garbage")
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()
        assert metric(gw, "ugate_rejections_total", listener="shared",
                      reason="sniff_no_match") == 1
        by = {p: metric(gw, "ugate_connections_total", listener="shared", protocol=p)
              for p in ("socks5", "http", "tls", "ssh")}
        assert (by["socks5"], by["http"], by["ssh"]) == (1, 2, 1)
        assert by["tls"] >= 1  # s_client may have retried while s_server started
    finally:
        srv.kill()
        await srv.wait()
