"""The SSH algorithms offered (:mod:`ugate_ssh.algorithms`): ssh-audit against the shared port,
and the dialer against an sshd that offers only legacy ones."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from ugate_core import ConfigError, DialError
from ugate_core.testing import StartGateway, Upstream, pattern, require_peer, run
from ugate_ssh import algorithms
from ugate_ssh.client import parse_section
from ugate_ssh.server import parse_options

from .conftest import OpenSsh, Sshd
from .test_openssh_server import gateway
from .test_sshd_dialer import gateway_via, get

#: what issue #16 found offered, by kind
WEAK_KEX = ("diffie-hellman-group14-sha1", "diffie-hellman-group1-sha1",
            "diffie-hellman-group-exchange-sha1", "diffie-hellman-group-exchange-sha256")
WEAK_MAC = ("hmac-sha1", "hmac-sha1-etm@openssh.com", "umac-64@openssh.com",
            "umac-64-etm@openssh.com")


async def audit(port: int) -> dict[str, Any]:
    exe = require_peer(str(Path(sys.executable).with_name("ssh-audit")),
                       hint="pip install ssh-audit (requirements-dev.txt)")
    res = await run(exe, "-j", "-p", str(port), "127.0.0.1", timeout=90)
    assert res.stdout.startswith(b"{"), (res.returncode, res.stdout[:500], res.stderr[:500])
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def names(report: dict[str, Any], kind: str) -> list[str]:
    return [a["algorithm"] for a in report[kind]]


# ssh-audit opens a connection per check and logs in on none of them: no penalty for that here
QUIET = "penalty_no_auth = 0"


async def test_ssh_audit_finds_only_the_hardened_set(
    start_gateway: StartGateway, openssh: OpenSsh,
) -> None:
    _gw, port, _ = await gateway(start_gateway, openssh, QUIET)
    r = await audit(port)
    kex, mac = names(r, "kex"), names(r, "mac")
    assert not [a for a in kex if a in WEAK_KEX or "sha1" in a or "group-exchange" in a], kex
    assert not [a for a in kex if "nistp" in a], kex
    assert not [a for a in mac if a in WEAK_MAC or "sha1" in a or "md5" in a or "umac-64" in a
                or not a.endswith("-etm@openssh.com")], mac
    assert r["compression"] == ["none"]
    assert set(names(r, "enc")) == set(algorithms.CIPHERS)  # what the fast paths accelerate
    assert "curve25519-sha256" in kex and "kex-strict-s-v00@openssh.com" in kex
    # nothing ssh-audit fails but the P-256 host key, which is the identity by design
    fails = [(k, a["algorithm"]) for k in ("kex", "key", "enc", "mac") for a in r[k]
             if a.get("notes", {}).get("fail")]
    assert fails == [("key", "ecdsa-sha2-nistp256")], fails
    assert r["cves"] == []


async def test_ssh_audit_sees_the_legacy_set_when_asked_for(
    start_gateway: StartGateway, openssh: OpenSsh,
) -> None:
    """The same check sees what issue #16 reported once ``algorithms = "legacy"``: so the test
    above would notice them."""
    _gw, port, _ = await gateway(start_gateway, openssh, QUIET + '\nalgorithms = "legacy"')
    r = await audit(port)
    assert "diffie-hellman-group14-sha1" in names(r, "kex")
    assert {"hmac-sha1", "umac-64-etm@openssh.com"} <= set(names(r, "mac"))
    assert "zlib@openssh.com" in r["compression"]


def test_settings() -> None:
    assert parse_options({}, "listeners.x").algorithms == "hardened"
    assert parse_section({}, set()).algorithms == "hardened"
    assert parse_section({"algorithms": "legacy"}, set()).algorithms == "legacy"
    with pytest.raises(ConfigError, match=r"listeners\.x\.algorithms"):
        parse_options({"algorithms": "modern"}, "listeners.x")
    with pytest.raises(ConfigError, match=r"ssh\.algorithms"):
        parse_section({"algorithms": ""}, set())
    o = algorithms.options("hardened", client=True)
    assert o["compression_algs"] == ["none"]
    assert "ssh-rsa" not in o["server_host_key_algs"]
    assert not [a for a in o["kex_algs"] + o["mac_algs"] if "sha1" in a]
    assert algorithms.options("legacy", client=True) == {}


LEGACY_SSHD = ("KexAlgorithms diffie-hellman-group14-sha1\nMACs hmac-sha1\n"
               "Ciphers aes128-ctr\n")


async def test_dialer_refuses_an_sshd_with_only_legacy_algorithms(
    start_gateway: StartGateway, sshd: Sshd, http_upstream: Upstream, tmp_path: Path,
) -> None:
    with (tmp_path / "sshd" / "sshd_config").open("a") as f:
        f.write(LEGACY_SSHD)
    gw = await gateway_via(start_gateway, sshd)
    with pytest.raises(DialError) as ei:
        await gw.dial(http_upstream.address)
    assert ei.value.reason == "unreachable"
    assert "key exchange" in str(ei.value).lower() or "kex" in str(ei.value).lower(), \
        str(ei.value)


async def test_dialer_reaches_a_legacy_sshd_with_the_legacy_setting(
    start_gateway: StartGateway, sshd: Sshd, http_upstream: Upstream, tmp_path: Path,
) -> None:
    with (tmp_path / "sshd" / "sshd_config").open("a") as f:
        f.write(LEGACY_SSHD)
    gw = await gateway_via(start_gateway, sshd, ssh_extra='algorithms = "legacy"')
    assert await get(gw, http_upstream.address, 5000) == pattern(5000)
