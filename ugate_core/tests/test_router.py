"""FQDN routing through discovery: exact names, wildcards, direct fallback, caching."""

from __future__ import annotations

import asyncio

import pytest

from ugate_core import DialError, Gateway, loads, match_name, split_address


def test_match_name() -> None:
    assert match_name("*.example", "a.b.example")
    assert not match_name("*.example", "example")
    assert match_name("svc.example", "svc.example")
    assert match_name("*", "anything")


def test_split_address() -> None:
    assert split_address("Svc.Example.:80") == ("svc.example", 80)
    assert split_address("[::1]:443") == ("::1", 443)
    with pytest.raises(DialError) as ei:
        split_address("svc:0")
    assert ei.value.reason == "bad_address"
    with pytest.raises(DialError):
        split_address("svc")


async def test_local_discovery_exact_wildcard_and_direct(tmp_path: object) -> None:
    gw = Gateway(loads("""
[hosts."svc.example"]
endpoints = ["127.0.0.1:1"]
[hosts."*.mesh.example"]
endpoints = ["127.0.0.2"]
protocol = "tcp"
[hosts."*.b.mesh.example"]
endpoints = ["127.0.0.3"]
"""))
    d, port = await gw.resolve("SVC.example:80")
    assert (d.source, [str(e) for e in d.endpoints], port) == ("local", ["127.0.0.1:1"], 80)
    d, _ = await gw.resolve("x.a.mesh.example:80")
    assert [str(e) for e in d.endpoints] == ["127.0.0.2"]
    d, _ = await gw.resolve("x.b.mesh.example:80")  # longest suffix wins
    assert [str(e) for e in d.endpoints] == ["127.0.0.3"]
    d, _ = await gw.resolve("elsewhere.example:80")
    assert d.source == "direct"


async def test_no_route_when_direct_is_off() -> None:
    gw = Gateway(loads("[routing]\ndirect = false\n"))
    with pytest.raises(DialError) as ei:
        await gw.dial("nowhere.example:80")
    assert ei.value.reason == "no_route"
    assert "no route to 'nowhere.example'" in str(ei.value)


async def test_slow_discovery_is_skipped_at_its_deadline() -> None:
    from ugate_core import Destination, Endpoint, hookimpl
    from ugate_core.plugins import create_manager, load_plugins

    class Slow:
        name = "slow"

        async def resolve(self, fqdn: str, port: int) -> Destination | None:
            await asyncio.sleep(10)
            return Destination(fqdn, (Endpoint("127.0.0.9"),))

    class P:
        @hookimpl
        def ugate_discovery(self) -> list[object]:
            return [Slow()]

    pm = create_manager()
    load_plugins(pm)
    pm.register(P(), name="slowplugin")
    gw = Gateway(loads("[discovery]\ntimeout = 0.2\norder = ['slow', 'local']\n"
                       "[hosts.a]\nendpoints=['127.0.0.5:1']"), pm=pm)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    d, _ = await gw.resolve("a:80")
    assert d.source == "local"
    assert loop.time() - t0 < 2
    assert gw.metrics.registry.get_sample_value(
        "ugate_discovery_lookups_total", {"discovery": "slow", "result": "timeout"}) == 1


async def test_discovery_dial_error_fails_closed_and_cache_is_per_port() -> None:
    from ugate_core import Destination, Endpoint, hookimpl
    from ugate_core.plugins import create_manager, load_plugins

    calls: list[int] = []

    class Strict:
        name = "strict"

        async def resolve(self, fqdn: str, port: int) -> Destination | None:
            calls.append(port)
            if fqdn == "bogus.example":
                raise DialError("identity", "bogus.example: DNSSEC validation failed")
            if fqdn == "svc.example":
                return Destination(fqdn, (Endpoint(f"127.0.0.{port % 250}"),), ttl=60)
            return None

    class P:
        @hookimpl
        def ugate_discovery(self) -> list[object]:
            return [Strict()]

    pm = create_manager()
    load_plugins(pm)
    pm.register(P(), name="strictplugin")
    gw = Gateway(loads("[discovery]\norder = ['strict', 'local']\n"), pm=pm)
    with pytest.raises(DialError) as ei:
        await gw.dial("bogus.example:443")  # not routed around via 'direct'
    assert ei.value.reason == "identity"
    a, _ = await gw.resolve("svc.example:1")
    b, _ = await gw.resolve("svc.example:2")
    a2, _ = await gw.resolve("svc.example:1")
    assert (str(a.endpoints[0]), str(b.endpoints[0])) == ("127.0.0.1", "127.0.0.2")
    assert a2 is a and calls.count(1) == 1


async def test_discovery_error_is_final_never_direct_and_not_cached() -> None:
    """A DiscoveryError ends the lookup even with routing.direct on, reaches the caller as
    raised, is counted by reason, and the next dial asks the discovery again."""
    from ugate_core import Destination, DiscoveryError, Endpoint, hookimpl
    from ugate_core.plugins import create_manager, load_plugins

    answers: list[Destination | DiscoveryError] = [
        DiscoveryError("dns_unavailable", "dns: svc.example: no answer within 0.5s"),
        Destination("svc.example", (Endpoint("127.0.0.9"),), ttl=60),
    ]
    asked: list[str] = []

    class Flaky:
        name = "flaky"

        async def resolve(self, fqdn: str, port: int) -> Destination | None:
            asked.append(fqdn)
            a = answers.pop(0)
            if isinstance(a, DiscoveryError):
                raise a
            return a

    class P:
        @hookimpl
        def ugate_discovery(self) -> list[object]:
            return [Flaky()]

    pm = create_manager()
    load_plugins(pm)
    pm.register(P(), name="flakyplugin")
    gw = Gateway(loads("[routing]\ndirect = true\n[discovery]\norder = ['flaky']\n"), pm=pm)
    with pytest.raises(DiscoveryError) as ei:
        await gw.resolve("svc.example:443")
    assert ei.value.reason == "dns_unavailable"
    assert "no answer within 0.5s" in str(ei.value)
    assert gw.metrics.registry.get_sample_value(
        "ugate_discovery_lookups_total", {"discovery": "flaky", "result": "dns_unavailable"}) == 1
    d, _ = await gw.resolve("svc.example:443")  # asked again at once: the error was not cached
    assert d.source != "direct" and str(d.endpoints[0]) == "127.0.0.9"
    assert asked == ["svc.example", "svc.example"]
