"""Client authentication against the OpenSSH client: keys, mesh IDs, certificates, refusals
(each logged with its reason and counted), sessions off, limits."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ugate_core.testing import StartGateway, Upstream, metric, pattern

from .conftest import OpenSsh, gateway_host_key_line
from .test_openssh_server import body_of, http_get


async def start(start_gateway: StartGateway, openssh: OpenSsh, options: str) -> tuple:
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.ssh]
listen = "127.0.0.1:0"
protocols = ["ssh"]
{options}
""")
    port = gw.port("ssh")
    return gw, port, openssh.known_hosts(gateway_host_key_line(gw, port))


async def fetch(openssh: OpenSsh, port: int, key: str, kh: object, up: Upstream,
                user: str = "alice", n: int = 1000) -> tuple[int, bytes, bytes]:
    res = await openssh.run(openssh.args(port, key, kh, "-W", up.address,  # type: ignore[arg-type]
                                         user=user), input=http_get(f"/bytes/{n}"))
    return res.returncode, res.stdout, res.stderr


async def rejected(gw: object, reason: str) -> float:
    for _ in range(100):
        v = metric(gw, "ugate_rejections_total", listener="ssh", reason=reason)  # type: ignore[arg-type]
        if v:
            return v
        await asyncio.sleep(0.02)
    return 0.0


async def test_unauthorized_key_refused_logged_and_counted(
    start_gateway: StartGateway, openssh: OpenSsh, http_upstream: Upstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "ugate")
    gw, port, kh = await start(start_gateway, openssh,
                               f'authorized_keys = ["{openssh.pub("alice")}"]')
    rc, out, err = await fetch(openssh, port, "mallory", kh, http_upstream)
    assert rc == 255 and out == b""
    assert b"Permission denied (publickey)" in err, err.decode()
    assert await rejected(gw, "auth_unknown_key") == 1
    assert "reason=auth_unknown_key" in caplog.text
    assert http_upstream.requests == []
    # the authorized key still works, and the connection metadata names it
    rc, out, err = await fetch(openssh, port, "alice", kh, http_upstream)
    assert rc == 0, err.decode()
    assert body_of(out) == pattern(1000)


async def test_allow_ids_admits_a_mesh_key(
    start_gateway: StartGateway, openssh: OpenSsh, http_upstream: Upstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncssh

    from ugate_ssh.keys import mesh_id

    caplog.set_level(logging.INFO, "ugate")
    peer = asyncssh.import_public_key(openssh.pub("peer"))
    pid = mesh_id(peer)
    _gw, port, kh = await start(start_gateway, openssh, f'allow_ids = ["{pid}"]')
    rc, out, err = await fetch(openssh, port, "peer", kh, http_upstream, user="gw")
    assert rc == 0, err.decode()
    assert body_of(out) == pattern(1000)
    assert f"peer_id={pid}" in caplog.text and "how=allow_id" in caplog.text


async def test_certificate_from_trusted_ca(
    start_gateway: StartGateway, openssh: OpenSsh, http_upstream: Upstream,
) -> None:
    openssh.sign("carol", "ca", "carol,ops")
    gw, port, kh = await start(start_gateway, openssh, f'ca_keys = ["{openssh.pub("ca")}"]')
    rc, out, err = await fetch(openssh, port, "carol", kh, http_upstream, user="carol")
    assert rc == 0, err.decode()
    assert body_of(out) == pattern(1000)
    # the certificate names carol and ops, not bob
    rc, _, err = await fetch(openssh, port, "carol", kh, http_upstream, user="bob")
    assert rc == 255
    assert await rejected(gw, "auth_cert_principal") == 1


async def test_certificate_from_wrong_ca_refused(
    start_gateway: StartGateway, openssh: OpenSsh, http_upstream: Upstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "ugate")
    openssh.sign("dave", "rogue-ca", "dave")
    gw, port, kh = await start(start_gateway, openssh, f'ca_keys = ["{openssh.pub("ca")}"]')
    rc, out, err = await fetch(openssh, port, "dave", kh, http_upstream, user="dave")
    assert rc == 255 and out == b"", err.decode()
    assert await rejected(gw, "auth_cert_untrusted_ca") == 1
    assert "which is not in ca_keys" in caplog.text


async def test_expired_certificate_refused(
    start_gateway: StartGateway, openssh: OpenSsh, http_upstream: Upstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "ugate")
    openssh.sign("erin", "ca", "erin", validity="20200101:20200102")
    gw, port, kh = await start(start_gateway, openssh, f'ca_keys = ["{openssh.pub("ca")}"]')
    rc, out, _err = await fetch(openssh, port, "erin", kh, http_upstream, user="erin")
    assert rc == 255 and out == b""
    assert await rejected(gw, "auth_cert_expired") == 1
    assert "Certificate expired" in caplog.text


async def test_sessions_are_refused_with_a_message(
    start_gateway: StartGateway, openssh: OpenSsh,
) -> None:
    gw, port, kh = await start(start_gateway, openssh,
                               f'authorized_keys = ["{openssh.pub("alice")}"]')
    res = await openssh.run([*openssh.args(port, "alice", kh), "echo", "hi"], timeout=20)
    assert res.returncode != 0
    assert b"sessions are disabled" in res.stderr, res.stderr.decode()
    assert res.stdout == b""
    assert await rejected(gw, "session_disabled") == 1


async def test_auth_deadline_and_unauthenticated_cap(
    start_gateway: StartGateway, openssh: OpenSsh,
) -> None:
    gw, port, _ = await start(start_gateway, openssh,
                              'auth_timeout = 0.5\nmax_unauthenticated = 2\n'
                              f'authorized_keys = ["{openssh.pub("alice")}"]')
    # two silent clients hold the unauthenticated slots; a third is refused at once
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    for r, _ in conns:
        assert (await asyncio.wait_for(r.readline(), 5)).startswith(b"SSH-2.0-ugate")
    r3, w3 = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(r3.read(), 5) == b""
    w3.close()
    assert await rejected(gw, "max_unauthenticated") == 1
    # the silent ones are cut at the deadline
    for r, w in conns:
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()
    assert await rejected(gw, "auth_timeout") == 2
