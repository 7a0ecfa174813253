"""Authorization of SSH clients (OpenSSH ``ssh -W``) on a listener beyond loopback: an
authorized key says who, a ``[[rules]]`` entry says where; the admin endpoint, the gateway's own
listeners and loopback addresses stay out of reach unless a rule names them."""

from __future__ import annotations

import asyncssh

from ugate_core.testing import StartGateway, Upstream, free_port, metric
from ugate_ssh.keys import mesh_id

from .conftest import OpenSsh, gateway_host_key_line
from .test_openssh_server import body_of, http_get


async def test_authorized_key_reaches_only_what_a_rule_names(
        start_gateway: StartGateway, openssh: OpenSsh, http_upstream: Upstream) -> None:
    alice = mesh_id(asyncssh.import_public_key(openssh.pub("alice")))
    admin = free_port()
    gw = await start_gateway(f"""
[admin]
listen = "127.0.0.1:{admin}"
[listeners.ssh]
listen = "0.0.0.0:0"
protocols = ["ssh"]
authorized_keys = ["{openssh.pub("alice")}", "{openssh.pub("bob")}"]
[hosts."svc.test"]
endpoints = ["127.0.0.1:{http_upstream.port}"]
[hosts."other.test"]
endpoints = ["127.0.0.1:{http_upstream.port}"]
[[rules]]
clients = ["id:{alice}"]
to = ["svc.test:80"]
""")
    port = gw.port("ssh")
    kh = openssh.known_hosts(gateway_host_key_line(gw, port))

    async def w(key: str, target: str) -> tuple[int, bytes, bytes]:
        res = await openssh.run(openssh.args(port, key, kh, "-W", target),
                                input=http_get("/authz"))
        return res.returncode, res.stdout, res.stderr

    rc, out, err = await w("alice", "svc.test:80")
    assert rc == 0, err.decode()
    assert body_of(out) == b"hello /authz\n"
    assert len(http_upstream.requests) == 1
    # the same key, somewhere the rule does not name: refused by the channel open
    for target in ("other.test:80", "svc.test:81", f"127.0.0.1:{admin}",
                   f"127.0.0.1:{port}", f"127.0.0.1:{http_upstream.port}", f"localhost:{admin}"):
        rc, out, err = await w("alice", target)
        assert rc != 0 and out == b"", target
        assert b"administratively prohibited" in err, (target, err.decode())
    # bob's key is authorized to log in, but no rule names bob: he may reach nothing
    rc, out, err = await w("bob", "svc.test:80")
    assert rc != 0 and b"administratively prohibited" in err, err.decode()
    # a fresh key does not log in at all
    rc, out, err = await w("mallory", "svc.test:80")
    assert rc == 255 and b"Permission denied (publickey)" in err, err.decode()
    assert len(http_upstream.requests) == 1  # nothing but alice's first request got through
    assert metric(gw, "ugate_dial_errors_total", reason="denied") == 7
