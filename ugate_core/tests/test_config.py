"""Config validation: every error names the key path and the value, never a traceback."""

from __future__ import annotations

import pytest

from ugate_core import ConfigError, load_default, loads


def err(text: str) -> str:
    with pytest.raises(ConfigError) as ei:
        loads(text)
    return str(ei.value)


def test_default_config_is_valid() -> None:
    cfg = load_default()
    (main,) = cfg.listeners
    assert (main.name, main.host, main.port, main.protocols) == ("main", "127.0.0.1", 15008, ("*",))
    assert cfg.admin.listen == "127.0.0.1:15000"


def test_bad_port_names_path_and_value() -> None:
    assert err('[listeners.main]\nlisten = "127.0.0.1:99999"') == (
        "listeners.main.listen: '127.0.0.1:99999': port 99999 is not a port (0-65535)"
    )


def test_unknown_key_is_an_error() -> None:
    assert err("[gateway]\ndrain_timout = 3").startswith("gateway.drain_timout: unknown key")


def test_wrong_type() -> None:
    assert err("[gateway]\nconnect_timeout = 'x'") == "gateway.connect_timeout: 'x' is not a number"
    assert err("[routing]\ndirect = 1") == "routing.direct: 1 is not true or false"


def test_not_toml() -> None:
    assert "not valid TOML" in err("[gateway\n")


def test_duplicate_listen_address() -> None:
    msg = err('[listeners.a]\nlisten = "127.0.0.1:1"\n[listeners.b]\nlisten = "127.0.0.1:1"')
    assert msg == "listeners.b.listen: '127.0.0.1:1' is also used by listeners.a"


def test_ipv6_needs_brackets() -> None:
    assert "brackets" in err('[listeners.a]\nlisten = "::1:80"')
    cfg = loads('[listeners.a]\nlisten = "[::1]:0"')
    assert cfg.listeners[0].host == "::1"


def test_hosts_table() -> None:
    cfg = loads("""
[hosts."svc.example"]
endpoints = ["127.0.0.1:8080", "[::1]:8080", "10.0.0.1"]
protocol = "tcp"
identity = ["spki_sha256:abcd"]
labels = {app = "web"}
""")
    (h,) = cfg.hosts
    assert [str(e) for e in h.endpoints] == ["127.0.0.1:8080", "[::1]:8080", "10.0.0.1"]
    assert h.identities[0].kind == "spki_sha256"
    assert dict(h.labels) == {"app": "web"}
    assert "hosts.'svc.example'.identity[0]" in err(
        '[hosts."svc.example"]\nendpoints = ["a:1"]\nidentity = "nope"'
    )


def test_plugin_sections_pass_through() -> None:
    cfg = loads("[ssh]\nupstreams = ['x:22']\n")
    assert cfg.section("ssh") == {"upstreams": ["x:22"]}
    assert cfg.section("missing") == {}


async def test_listener_keys_checked_against_declared_option_keys() -> None:
    from ugate_core import Gateway

    gw = Gateway(loads('[listeners.f]\nlisten = "127.0.0.1:0"\nprotocols = ["tcp"]\n'
                       'target = "127.0.0.1:1"\ntargte = "x"\n'))
    with pytest.raises(ConfigError) as ei:
        gw.check()
    assert str(ei.value) == (
        "listeners.f.targte: unknown key (core knows: allow, default, listen, protocols, "
        "sniff_max, sniff_timeout, target; protocols tcp know: no options); did you mean "
        "'target'?")
    gw = Gateway(loads('[listeners.f]\nlisten = "127.0.0.1:0"\nprotocols = ["tcp"]\n'))
    with pytest.raises(ConfigError) as ei:
        gw.check()
    assert str(ei.value).startswith("listeners.f.target: missing")


def test_tune_malloc_setting_and_effect() -> None:
    import sys

    from ugate_core.malloc import tune_malloc

    assert loads("[gateway]\ntune_malloc = false\n").gateway.tune_malloc is False
    assert load_default().gateway.tune_malloc is True
    with pytest.raises(ConfigError) as ei:
        loads('[gateway]\ntune_malloc = "yes"\n')
    assert "gateway.tune_malloc" in str(ei.value)
    # once per process, and only where glibc's mallopt exists
    assert tune_malloc() is sys.platform.startswith("linux")
    assert tune_malloc() is sys.platform.startswith("linux")
