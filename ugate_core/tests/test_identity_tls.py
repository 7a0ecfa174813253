"""The tls listener and dialer end to end: gateways with their own keys, openssl s_client,
curl --pinnedpubkey, and 'ugate run' / 'ugate dial' / 'ugate id' processes (uvloop)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from ugate_core import DialError, Gateway
from ugate_core.certs import anchor_pem
from ugate_core.identity import Identity, generate_key
from ugate_core.testing import StartGateway, Upstream, metric, pattern, require_peer, run

# the installed console script (python -m ugate_core.cli would miss 'id': identity_cli
# registers into the imported ugate_core.cli, not into __main__)
UGATE = [shutil.which("ugate") or str(Path(sys.executable).with_name("ugate"))]
ENV = {**os.environ, "UGATE_PLUGINS": "", "UGATE_LOG_LEVEL": "debug"}


def tls_listener(target: str, extra: str = "") -> str:
    return f"""
[admin]
listen = ""
[listeners.mtls]
listen = "127.0.0.1:0"
protocols = ["tls"]
target = "{target}"
{extra}
"""


def dialer_config(name: str, port: int) -> str:
    return f"""
[admin]
listen = ""
[routing]
direct = false
[discovery]
order = ["local"]
[hosts."{name}"]
endpoints = ["127.0.0.1:{port}"]
protocol = "tls"
"""


def key_body(ident: Identity) -> str:
    """The base64 body of the private key PEM: must never show up in a log."""
    return "".join(ident.private_key_pem().decode().splitlines()[1:-1])


async def test_mesh_name_reaches_the_key_it_names(
    start_gateway: StartGateway, echo_server: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    """A dials <B-id>.m (hosts → B's tls listener) and reaches B's target; the same name
    answered by C (another key) fails naming both IDs, and the failure is counted."""
    caplog.set_level(logging.DEBUG)
    target = "{}:{}".format(*echo_server)
    b = await start_gateway(tls_listener(target))
    c = await start_gateway(tls_listener(target))
    b_name = f"{b.identity.id.lower()}.m"
    a = await start_gateway(dialer_config(b_name, b.port("mtls")))
    a2 = await start_gateway(dialer_config(b_name, c.port("mtls")))
    assert len({a.identity.id, a2.identity.id, b.identity.id, c.identity.id}) == 4

    s = await a.dial(f"{b_name}:9")
    assert s.meta.peer_id == b.identity.id
    assert s.meta.protocol == "tls" and s.meta.sni == b_name
    data = pattern(300_000, seed=5)
    s.write(data)
    await s.drain()
    assert await asyncio.wait_for(s.readexactly(len(data)), 20) == data
    # B verified A's client certificate: its relay record carries A's ID
    recs = list(b.streams.values())
    assert [r.client.peer_id for r in recs] == [a.identity.id]
    assert recs[0].client.sni == b_name and recs[0].listener == "mtls"
    s.close()

    with pytest.raises(DialError) as e:
        await a2.dial(f"{b_name}:9")
    assert e.value.reason == "identity"
    assert str(e.value) == (f"{b_name} at 127.0.0.1:{c.port('mtls')}: identity mismatch: "
                            f"expected id {b.identity.id}, presented id {c.identity.id}")
    assert metric(a2, "ugate_identity_failures_total", protocol="tls", direction="dial") == 1
    assert metric(a2, "ugate_dial_errors_total", reason="identity") == 1
    assert metric(a, "ugate_identity_failures_total", protocol="tls", direction="dial") == 0
    assert "identity_mismatch protocol=tls direction=dial" in caplog.text
    for g in (a, a2, b, c):
        assert key_body(g.identity) not in caplog.text.replace("\n", "")


async def test_a_plain_name_without_identity_is_refused(start_gateway: StartGateway) -> None:
    a = await start_gateway(dialer_config("svc.example", 9))
    with pytest.raises(DialError) as e:
        await a.dial("svc.example:9")
    assert e.value.reason == "identity" and "no identity to expect" in str(e.value)


async def _s_client(*args: str, stdin: bytes = b"") -> tuple[int, str]:
    openssl = require_peer("openssl")
    p = await run(openssl, "s_client", *args, input=stdin, timeout=20)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace")


async def test_openssl_s_client_sees_sans_and_verifies_with_the_anchor(
    start_gateway: StartGateway, echo_server: tuple[str, int], tmp_path: Path
) -> None:
    openssl = require_peer("openssl")
    b = await start_gateway(tls_listener("{}:{}".format(*echo_server)))
    ident, port = b.identity, b.port("mtls")
    (tmp_path / "anchor.pem").write_bytes(anchor_pem())
    name = ident.fqdns[0]
    rc, out = await _s_client("-connect", f"127.0.0.1:{port}", "-servername", name,
                              "-CAfile", str(tmp_path / "anchor.pem"), "-verify_hostname",
                              name, "-verify_return_error", "-showcerts")
    assert rc == 0, out
    assert "Verify return code: 0 (ok)" in out
    assert f"CN = {ident.id.lower()}" in out
    leaf_pem = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n", out,
                         re.S)
    assert leaf_pem
    (tmp_path / "leaf.pem").write_text(leaf_pem.group(0))
    p = await run(openssl, "x509", "-in", str(tmp_path / "leaf.pem"), "-noout", "-ext",
                  "subjectAltName", check=True)
    sans = p.stdout.decode()
    for fqdn in ident.fqdns:
        assert f"DNS:{fqdn}" in sans
    ips = re.findall(r"IP Address:([0-9A-Fa-f:]+)", sans)
    import ipaddress

    assert [ipaddress.ip_address(x) for x in ips] == [ident.vip]
    # a name the certificate does not carry fails openssl's own hostname check
    rc, out = await _s_client("-connect", f"127.0.0.1:{port}", "-CAfile",
                              str(tmp_path / "anchor.pem"), "-verify_hostname",
                              "other.example", "-verify_return_error")
    assert rc != 0 and "hostname mismatch" in out


async def test_client_certificates_from_openssl(
    start_gateway: StartGateway, http_upstream: Upstream, tmp_path: Path
) -> None:
    """'peers' lets only the listed client keys in; the client proves its key with openssl."""
    good, bad = Identity(generate_key("p256")), Identity(generate_key("ed25519"))
    for n, i in (("good", good), ("bad", bad)):
        (tmp_path / f"{n}.pem").write_bytes(i.cert_pem())
        (tmp_path / f"{n}.key").write_bytes(i.private_key_pem())
    b = await start_gateway(tls_listener(http_upstream.address, f'peers = ["id:{good.id}"]'))
    port = b.port("mtls")
    req = b"GET /client-cert HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    _, out = await _s_client("-connect", f"127.0.0.1:{port}", "-quiet", "-cert",
                             str(tmp_path / "good.pem"), "-key", str(tmp_path / "good.key"),
                             stdin=req)
    assert "hello /client-cert" in out, out
    _, out = await _s_client("-connect", f"127.0.0.1:{port}", "-quiet", "-cert",
                             str(tmp_path / "bad.pem"), "-key", str(tmp_path / "bad.key"),
                             stdin=req)
    assert "hello" not in out
    _, out = await _s_client("-connect", f"127.0.0.1:{port}", "-quiet", stdin=req)
    assert "hello" not in out
    for _ in range(100):
        if metric(b, "ugate_rejections_total", listener="mtls", reason="tls_handshake"):
            break
        await asyncio.sleep(0.05)
    assert [r[1] for r in http_upstream.requests] == ["/client-cert"]
    assert metric(b, "ugate_rejections_total", listener="mtls", reason="identity") == 1
    assert metric(b, "ugate_rejections_total", listener="mtls", reason="tls_handshake") == 1
    # the wrong key, and no certificate where 'peers' requires one
    assert metric(b, "ugate_identity_failures_total", protocol="tls", direction="accept") == 2


# ------------------------------------------------------------------------------ processes
async def ugate(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run the ugate command with core only (UGATE_PLUGINS="") and debug logs."""
    p = await asyncio.create_subprocess_exec(*UGATE, *args, env=ENV,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 60)
    res = subprocess.CompletedProcess(list(args), p.returncode or 0, out, err)
    if check and res.returncode:
        raise AssertionError(f"ugate {' '.join(args)} exited {res.returncode}: {err.decode()}")
    return res


async def ugate_id(state: Path) -> dict[str, str]:
    p = await ugate("id", "--json", "--state-dir", str(state))
    out: dict[str, str] = json.loads(p.stdout)
    return out


async def test_curl_pinned_pubkey_from_ugate_id(
    start_gateway: StartGateway, http_upstream: Upstream, tmp_path: Path
) -> None:
    curl = require_peer("curl")
    b = await start_gateway(tls_listener(http_upstream.address))
    info = await ugate_id(b.state_dir)
    assert set(info) >= {"id", "vip", "fqdns", "spki_sha256", "ssh_public_key",
                         "public_key_pem"}
    assert info["id"] == b.identity.id and info["spki_sha256"] == b.identity.spki_sha256
    assert info["ssh_public_key"] == b.identity.ssh_public_key()
    pin = "sha256//" + base64.b64encode(bytes.fromhex(info["spki_sha256"])).decode()
    assert info["pin"] == pin  # what curl --pinnedpubkey takes, ready to use
    port, name = b.port("mtls"), info["fqdns"][0]
    (tmp_path / "anchor.pem").write_bytes(anchor_pem())
    ok = await run(curl, "-sS", "--cacert", str(tmp_path / "anchor.pem"), "--pinnedpubkey",
                   pin, "--resolve", f"{name}:{port}:127.0.0.1", f"https://{name}:{port}/pinned")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == b"hello /pinned\n"
    wrong = "sha256//" + base64.b64encode(bytes(32)).decode()
    bad = await run(curl, "-sS", "-k", "--pinnedpubkey", wrong,
                    f"https://127.0.0.1:{port}/wrong")
    assert bad.returncode == 90 and b"public key does not match pinned" in bad.stderr
    assert bad.stdout == b""
    assert [r[1] for r in http_upstream.requests] == ["/pinned"]


async def _start_run(cfg: Path, state: Path) -> tuple[asyncio.subprocess.Process, int, str]:
    p = await asyncio.create_subprocess_exec(
        *UGATE, "run", "-c", str(cfg), "--state-dir", str(state), env=ENV,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert p.stderr is not None
    seen = ""
    while True:
        line = (await asyncio.wait_for(p.stderr.readline(), 30)).decode()
        if not line:
            raise AssertionError(f"ugate run exited: {seen}")
        seen += line
        m = re.search(r"listening listener=mtls address=127\.0\.0\.1:(\d+)", line)
        if m:
            return p, int(m.group(1)), seen


async def test_ugate_run_under_uvloop_reuses_its_key_and_never_logs_it(
    tmp_path: Path, http_upstream: Upstream, echo_server: tuple[str, int]
) -> None:
    curl = require_peer("curl")
    state = tmp_path / "state"
    info = await ugate_id(state)  # first use creates the key
    assert (state / "key.pem").stat().st_mode & 0o777 == 0o600
    cfg = tmp_path / "b.toml"
    cfg.write_text(tls_listener(http_upstream.address))
    proc, port, log = await _start_run(cfg, state)
    try:
        assert "loop=uvloop" in log
        assert f"identity id={info['id']} " in log  # the second start reused the key
        name = info["fqdns"][0]
        (tmp_path / "anchor.pem").write_bytes(anchor_pem())
        ok = await run(curl, "-sS", "--cacert", str(tmp_path / "anchor.pem"),
                       "--resolve", f"{name}:{port}:127.0.0.1", f"https://{name}:{port}/uv")
        assert ok.stdout == b"hello /uv\n", ok.stderr
        # the dialer under uvloop too: 'ugate dial <id>.m' from another identity
        acfg = tmp_path / "a.toml"
        acfg.write_text(dialer_config(name, port))
        d = await asyncio.create_subprocess_exec(
            *UGATE, "dial", f"{name}:1", "-c", str(acfg), "--state-dir", str(tmp_path / "a"),
            env=ENV, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(d.communicate(
            b"GET /dial HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 30)
        assert out.endswith(b"hello /dial\n"), err.decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = await asyncio.wait_for(proc.communicate(), 30)
    logs = log + rest.decode() + err.decode()
    assert "stream_closed listener=mtls" in logs
    key = "".join((state / "key.pem").read_text().splitlines()[1:-1])
    assert key and key not in logs.replace("\n", "")
    assert not re.search(r"PRIVATE KEY", logs)


async def test_bad_key_permissions_stop_run_and_id(tmp_path: Path) -> None:
    state = tmp_path / "state"
    await ugate_id(state)
    key = state / "key.pem"
    before = key.read_bytes()
    key.chmod(0o644)
    cfg = tmp_path / "b.toml"
    cfg.write_text(tls_listener("127.0.0.1:9"))
    for cmd in (["id"], ["run", "-c", str(cfg)]):
        p = await ugate(*cmd, "--state-dir", str(state), check=False)
        assert p.returncode == 1, (cmd, p.stderr)
        assert (f"ugate: key file {key}: mode 0644 lets other users read or change the "
                f"private key; it must be 0600 (chmod 600 {key}). Refusing to use it"
                ) in p.stderr.decode(), p.stderr
    assert key.read_bytes() == before


async def test_plugins_and_config_check_create_no_key(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cfg = tmp_path / "b.toml"
    cfg.write_text(tls_listener("127.0.0.1:9"))
    env_state = {**ENV, "UGATE_STATE_DIR": str(state)}
    for cmd in (["plugins", "--state-dir", str(state)], ["config", "check", str(cfg)]):
        p = await asyncio.create_subprocess_exec(*UGATE, *cmd, env=env_state,
                                                 stdout=asyncio.subprocess.PIPE,
                                                 stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(p.communicate(), 30)
        assert p.returncode == 0, err
    assert not state.exists()


def test_ssh_public_key_is_the_same_key(tmp_path: Path) -> None:
    ident = Gateway(state_dir=tmp_path).identity
    pub = serialization.load_ssh_public_key(ident.ssh_public_key().encode())
    assert pub == ident.key.public_key()


async def test_half_close_over_tls_still_gets_the_whole_reply(
    start_gateway: StartGateway, http_upstream: Upstream
) -> None:
    """TLS in asyncio cannot half-close: the dialer's write_eof lingers for the reply, and
    the server side closes when its target is done, which is the client's EOF."""
    b = await start_gateway(tls_listener(http_upstream.address))
    name = b.identity.fqdns[1]  # <id>.h.mesh.internal
    a = await start_gateway(dialer_config(name, b.port("mtls")))
    s = await a.dial(f"{name}:80")
    s.write(b"GET /bytes/200000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    s.write_eof()
    got = b""
    while chunk := await asyncio.wait_for(s.read(), 10):
        got += chunk
    assert got.endswith(pattern(200000)) and got.startswith(b"HTTP/1.1 200 OK\r\n")
    await asyncio.wait_for(s.wait_closed(), 5)


async def test_ugate_id_text_output(tmp_path: Path) -> None:
    state = tmp_path / "state"
    info = await ugate_id(state)
    p = await ugate("id", "--state-dir", str(state))
    rows = dict(line.split(None, 1) for line in p.stdout.decode().splitlines())
    assert rows["id"] == info["id"] and rows["vip"] == info["vip"]
    assert rows["fqdns"].split() == info["fqdns"]
    assert rows["spki_sha256"] == info["spki_sha256"]
    assert rows["tlsa"] == f"3 1 1 {info['spki_sha256']}"
    assert rows["ssh"] == info["ssh_public_key"]
    pin = "sha256//" + base64.b64encode(bytes.fromhex(info["spki_sha256"])).decode()
    assert rows["pin"].split()[0] == pin
    anchor = await ugate("id", "--anchor", "--state-dir", str(state))
    assert anchor.stdout == anchor_pem()


async def test_bad_and_silent_clients_are_rejected_and_counted(
    start_gateway: StartGateway, echo_server: tuple[str, int]
) -> None:
    b = await start_gateway("[gateway]\nhandshake_timeout = 0.3\n"
                            + tls_listener("{}:{}".format(*echo_server)))
    port = b.port("mtls")
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # not TLS
    assert await asyncio.wait_for(r.read(), 5) == b""
    w.close()
    r2, w2 = await asyncio.open_connection("127.0.0.1", port)  # says nothing
    assert await asyncio.wait_for(r2.read(), 5) == b""
    w2.close()
    for _ in range(100):
        if metric(b, "ugate_rejections_total", listener="mtls", reason="handshake_timeout"):
            break
        await asyncio.sleep(0.05)
    assert metric(b, "ugate_rejections_total", listener="mtls", reason="tls_handshake") == 1
    assert metric(b, "ugate_rejections_total", listener="mtls", reason="handshake_timeout") == 1
    assert metric(b, "ugate_connections_total", listener="mtls", protocol="tls") == 2
    assert not b.streams
