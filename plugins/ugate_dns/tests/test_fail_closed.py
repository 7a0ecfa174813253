"""DNS that cannot answer safely ends the lookup: nothing is dialed, even with routing.direct.

The name is ``localhost`` with ``search = ["test.zone"]``: DNS is asked for
``localhost.test.zone``, and the system resolver knows ``localhost`` (``/etc/hosts``). So a
lookup that gave up and let core fall back to a direct dial would reach the origin below, on
127.0.0.1, through the system resolver, as plain TCP: the tests count its connections.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.rdatatype
import pytest

from ugate_core import DialError, Gateway
from ugate_core.testing import StartGateway, metric

StartKnot = Callable[..., Awaitable[Any]]

ZONE = """\
$ORIGIN test.zone.
$TTL 300
@ SOA ns.test.zone. admin.test.zone. 1 3600 600 86400 60
@ NS ns
ns A 127.0.0.1
localhost A 127.0.0.1
localhost TXT "ugate=1 proto=tcp"
"""


@dataclass
class Origin:
    port: int
    accepted: int = 0


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    """A TCP server on 127.0.0.1 that counts connections and answers ``ok``."""
    o = Origin(0)

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        o.accepted += 1
        w.write(b"ok\n")
        await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    o.port = server.sockets[0].getsockname()[1]
    async with server:
        yield o


def gateway_toml(server: str, anchors: Sequence[str] = ()) -> str:
    lines = ", ".join(f'"{a}"' for a in anchors)
    return f"""
[admin]
listen = ""
[routing]
direct = true
[dns]
servers = ["{server}"]
search = ["test.zone"]
timeout = 0.5
retries = 0
trust_anchor = [{lines}]
"""


async def dial_ok(gw: Gateway, address: str) -> bytes:
    s = await gw.dial(address)
    try:
        return await asyncio.wait_for(s.read(16), 5)
    finally:
        s.close()


async def dial_fails(gw: Gateway, address: str) -> DialError:
    with pytest.raises(DialError) as e:
        s = await gw.dial(address)
        s.close()
    return e.value


async def test_forged_address_under_an_anchor_dials_nothing(
    start_knot: StartKnot, start_gateway: StartGateway, tamper: Any, origin: Origin,
) -> None:
    knot = await start_knot({"test.zone": ZONE}, signed={"test.zone": "nsec"})
    ds = await knot.keymgr("test.zone", "ds")
    proxy, addr = await tamper(knot.address)
    proxy.rewrite = set()  # first an honest path: the setup reaches the origin
    gw = await start_gateway(gateway_toml(addr, ds))
    target = f"localhost:{origin.port}"
    assert await dial_ok(gw, target) == b"ok\n"
    assert origin.accepted == 1
    dest, _ = await gw.resolve(target)
    assert (dest.source, dest.labels["dns.dnssec"]) == ("dns", "secure")

    gw2 = await start_gateway(gateway_toml(addr, ds))
    proxy.rewrite = {dns.rdatatype.A}  # the A record forged, its RRSIG kept
    err = await dial_fails(gw2, target)
    assert proxy.tampered >= 1
    assert err.reason == "dnssec_bogus"
    msg = str(err)
    assert "DNSSEC-bogus (dnssec_bogus)" in msg and "localhost.test.zone A" in msg, msg
    assert "no discovery knows it" not in msg
    assert origin.accepted == 1  # nothing dialed: not the forged address, not "direct"
    assert metric(gw2, "ugate_dial_errors_total", reason="dnssec_bogus") == 1

    # a bogus answer is not cached: once the forger is gone, the next dial goes through
    proxy.rewrite = set()
    assert await dial_ok(gw2, target) == b"ok\n"
    assert origin.accepted == 2


async def test_validating_resolver_servfail_is_bogus_and_dials_nothing(
    start_knot: StartKnot, start_unbound: Any, start_gateway: StartGateway, tamper: Any,
    origin: Origin,
) -> None:
    """ugate without its own anchor, behind a validating Unbound that has one."""
    knot = await start_knot({"test.zone": ZONE}, signed={"test.zone": "nsec"})
    ds = await knot.keymgr("test.zone", "ds")
    target = f"localhost:{origin.port}"
    honest = await start_unbound("test.zone", knot.address, ds)
    gw = await start_gateway(gateway_toml(honest.address))
    assert await dial_ok(gw, target) == b"ok\n"  # Unbound validates the real zone
    assert origin.accepted == 1

    proxy, forged = await tamper(knot.address)
    proxy.rewrite = {dns.rdatatype.A}
    fooled = await start_unbound("test.zone", forged, ds)
    gw2 = await start_gateway(gateway_toml(fooled.address))
    err = await dial_fails(gw2, target)
    assert err.reason == "dnssec_bogus", str(err)
    msg = str(err)
    # "dns: localhost.test.zone: answer is DNSSEC-bogus (dnssec_bogus): localhost.test.zone A:
    # DNSSEC validation failed at 127.0.0.1:N: SERVFAIL, EDE 6 DNSSEC Bogus: validation ..."
    assert "DNSSEC-bogus (dnssec_bogus)" in msg and f"at {fooled.address}: SERVFAIL" in msg, msg
    assert "EDE 6 DNSSEC Bogus" in msg, msg
    assert origin.accepted == 1


async def test_resolver_that_stops_answering_dials_nothing_and_is_not_cached(
    start_knot: StartKnot, start_gateway: StartGateway, tamper: Any, origin: Origin,
) -> None:
    knot = await start_knot({"test.zone": ZONE})
    proxy, addr = await tamper(knot.address)
    proxy.rewrite = set()
    proxy.drop = True  # a UDP socket that never answers
    gw = await start_gateway(gateway_toml(addr))
    target = f"localhost:{origin.port}"
    t0 = time.monotonic()
    err = await dial_fails(gw, target)
    took = time.monotonic() - t0
    assert err.reason == "dns_unavailable", str(err)
    assert "DNS unavailable (dns_unavailable)" in str(err)
    assert f"{addr}: no answer within 0.5s" in str(err)
    assert took < 2.0, took  # dns.deadline, below discovery.timeout
    assert proxy.seen >= 1 and origin.accepted == 0
    # the error is not remembered as "nobody knows" (which would dial direct) nor at all:
    # the resolver answers again, and the very next dial uses it
    proxy.drop = False
    assert await dial_ok(gw, target) == b"ok\n"
    assert origin.accepted == 1


async def test_killed_server_dials_nothing(
    start_knot: StartKnot, start_gateway: StartGateway, origin: Origin,
) -> None:
    knot = await start_knot({"test.zone": ZONE})
    gw = await start_gateway(gateway_toml(knot.address))
    knot.stop()
    err = await dial_fails(gw, f"localhost:{origin.port}")
    assert err.reason == "dns_unavailable", str(err)
    assert f"127.0.0.1:{knot.port}" in str(err)
    assert origin.accepted == 0


async def test_name_outside_the_zones_still_goes_direct(
    start_knot: StartKnot, start_gateway: StartGateway, origin: Origin,
) -> None:
    """The rule is for names DNS is responsible for: others are not DNS's to refuse."""
    knot = await start_knot({"test.zone": ZONE})
    gw = await start_gateway(gateway_toml(knot.address).replace('search = ["test.zone"]',
                                                                'zones = ["test.zone"]'))
    knot.stop()
    assert await dial_ok(gw, f"localhost:{origin.port}") == b"ok\n"
    assert origin.accepted == 1


async def test_ugate_dial_says_why(
    start_knot: StartKnot, tamper: Any, origin: Origin, tmp_path: Path,
) -> None:
    """What a user of ``ugate dial`` reads: the reason and the record, and no connection."""
    knot = await start_knot({"test.zone": ZONE}, signed={"test.zone": "nsec"})
    ds = await knot.keymgr("test.zone", "ds")
    proxy, addr = await tamper(knot.address)
    proxy.rewrite = {dns.rdatatype.A}
    cfg = tmp_path / "ugate.toml"
    cfg.write_text(gateway_toml(addr, ds))
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ugate_core.cli", "--log-level", "error", "dial", "-c", str(cfg),
        "--state-dir", str(tmp_path / "state"), f"localhost:{origin.port}",
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(p.communicate(), 30)
    finally:
        if p.returncode is None:
            p.kill()
            await p.wait()
    text = err.decode()
    assert p.returncode == 1, text
    # "ugate: dial failed (dnssec_bogus): dns: localhost.test.zone: answer is DNSSEC-bogus
    # (dnssec_bogus): localhost.test.zone A: localhost.test.zone. A signature by test.zone.: ..."
    assert "dial failed (dnssec_bogus)" in text and "localhost.test.zone A" in text, text
    assert out == b"" and origin.accepted == 0
