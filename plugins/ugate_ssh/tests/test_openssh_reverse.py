"""``ssh -R`` from OpenSSH: the forwarded port is reachable by the client's mesh name."""

from __future__ import annotations

import asyncio

import asyncssh

from ugate_core.testing import StartGateway, Upstream, pattern
from ugate_ssh.keys import fqdn_of_id, mesh_id

from .conftest import OpenSsh, gateway_host_key_line
from .test_openssh_server import body_of, http_get


async def wait_forward(p: asyncio.subprocess.Process, gw: object, name: str) -> None:
    from ugate_ssh.state import SshState

    reg = SshState.of(gw).reverse  # type: ignore[arg-type]
    for _ in range(200):
        if reg.knows(name):
            return
        if p.returncode is not None:
            err = await p.stderr.read() if p.stderr else b""
            raise AssertionError(f"ssh -R exited {p.returncode}: {err.decode()}")
        await asyncio.sleep(0.05)
    raise AssertionError(f"no reverse forward registered for {name}")


async def test_ssh_R_exposes_a_local_server_by_client_fqdn(
    start_gateway: StartGateway, openssh: OpenSsh, http_upstream: Upstream
) -> None:
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.main]
listen = "127.0.0.1:0"
protocols = ["*"]
authorized_keys = ["{openssh.pub("alice")}", "{openssh.pub("bob")}"]
""")
    port = gw.port("main")
    kh = openssh.known_hosts(gateway_host_key_line(gw, port))
    alice_name = fqdn_of_id(mesh_id(asyncssh.import_public_key(openssh.pub("alice"))))
    # a name nobody serves yet is a clean failure for bob (and must not stick in a cache)
    res = await openssh.run(openssh.args(port, "bob", kh, "-W", f"{alice_name}:8080",
                                         user="bob"), input=http_get("/x"))
    assert res.returncode == 255 and res.stdout == b""
    p = await openssh.start(openssh.args(
        port, "alice", kh, "-N", "-o", "ExitOnForwardFailure=yes",
        "-R", f"8080:{http_upstream.address}"))
    await wait_forward(p, gw, alice_name)
    n = 200_000
    res = await openssh.run(openssh.args(port, "bob", kh, "-W", f"{alice_name}:8080",
                                         user="bob"), input=http_get(f"/bytes/{n}"))
    assert res.returncode == 0, res.stderr.decode()
    assert body_of(res.stdout) == pattern(n)
    # a port alice did not forward is refused with a reason
    res = await openssh.run(openssh.args(port, "bob", kh, "-W", f"{alice_name}:9999",
                                         user="bob"), input=b"")
    assert res.returncode == 255
    assert b"no reverse forward for this port" in res.stderr, res.stderr.decode()
    # alice leaves: the name is gone
    p.kill()
    await p.wait()
    from ugate_ssh.state import SshState

    for _ in range(100):
        if not SshState.of(gw).reverse.knows(alice_name):
            break
        await asyncio.sleep(0.05)
    assert not SshState.of(gw).reverse.knows(alice_name)


async def test_ssh_R_dynamic_port(
    start_gateway: StartGateway, openssh: OpenSsh, http_upstream: Upstream
) -> None:
    gw = await start_gateway(f"""
[admin]
listen = ""
[listeners.main]
listen = "127.0.0.1:0"
protocols = ["ssh"]
authorized_keys = ["{openssh.pub("alice")}"]
""")
    port = gw.port("main")
    kh = openssh.known_hosts(gateway_host_key_line(gw, port))
    name = fqdn_of_id(mesh_id(asyncssh.import_public_key(openssh.pub("alice"))))
    p = await openssh.start(openssh.args(port, "alice", kh, "-N", "-R",
                                         f"0:{http_upstream.address}"))
    await wait_forward(p, gw, name)
    assert p.stderr is not None
    line = await asyncio.wait_for(p.stderr.readline(), 10)
    assert line.startswith(b"Allocated port "), line
    vport = int(line.split()[2])
    stream = await gw.dial(f"{name}:{vport}")
    stream.write(http_get("/bytes/5000"))
    data = b""
    while chunk := await asyncio.wait_for(stream.read(), 10):
        data += chunk
    stream.close()
    assert body_of(data) == pattern(5000)
