"""``ssh -J`` through ugate to a real sshd, and ``ssh -D`` (OpenSSH's SOCKS) through ugate."""

from __future__ import annotations

import getpass

from ugate_core.testing import StartGateway, Upstream, free_port, pattern, require_peer, run

from .conftest import OpenSsh, Sshd, gateway_host_key_line, wait_port


async def test_ssh_J_reaches_sshd_behind_the_gateway(
    start_gateway: StartGateway, openssh: OpenSsh, sshd: Sshd
) -> None:
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.main]
listen = "127.0.0.1:0"
protocols = ["*"]
authorized_keys = ["{openssh.pub("alice")}"]
""")
    port = gw.port("main")
    sshd.authorized_keys.write_text(openssh.pub("alice") + "\n")
    await sshd.start()
    alg, b64 = sshd.host_key.with_name(sshd.host_key.name + ".pub").read_text().split()[:2]
    kh = openssh.known_hosts(gateway_host_key_line(gw, port) + "\n"
                             f"[127.0.0.1]:{sshd.port} {alg} {b64}")
    cfg = openssh.home / "ssh_config"
    common = (f"  HostName 127.0.0.1\n  IdentityFile {openssh.key('alice')}\n"
              "  IdentitiesOnly yes\n  IdentityAgent none\n  BatchMode yes\n"
              f"  StrictHostKeyChecking yes\n  UserKnownHostsFile {kh}\n"
              "  GlobalKnownHostsFile /dev/null\n  ConnectTimeout 10\n")
    cfg.write_text(f"Host gw\n  Port {port}\n  User alice\n{common}\n"
                   f"Host target\n  Port {sshd.port}\n  User {getpass.getuser()}\n{common}")
    res = await run(openssh.ssh, "-F", str(cfg), "-J", "gw", "target", "echo", "via-ugate",
                    timeout=30)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == b"via-ugate\n"


async def test_ssh_D_socks_through_the_gateway(
    start_gateway: StartGateway, openssh: OpenSsh, http_upstream: Upstream
) -> None:
    curl = require_peer("curl")
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.main]
listen = "127.0.0.1:0"
protocols = ["ssh"]
authorized_keys = ["{openssh.pub("alice")}"]
[hosts."svc.test"]
endpoints = ["{http_upstream.address}"]
""")
    port = gw.port("main")
    kh = openssh.known_hosts(gateway_host_key_line(gw, port))
    lport = free_port()
    await openssh.start(openssh.args(port, "alice", kh, "-N", "-o", "ExitOnForwardFailure=yes",
                                     "-D", f"127.0.0.1:{lport}"))
    await wait_port(lport)
    # OpenSSH's own SOCKS server sends the name in direct-tcpip; ugate routes it by [hosts]
    res = await run(curl, "-sS", "--fail", "--max-time", "20", "--socks5-hostname",
                    f"127.0.0.1:{lport}", "http://svc.test/bytes/4096", timeout=30)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stdout == pattern(4096)
