"""Issue #24: what passed ``config check`` silently and must not: typo'd keys on shared ports,
typo'd top-level tables and plugin names, identities no dialer proves, a busy admin port."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ugate_core import (
    ConfigError,
    Destination,
    DialError,
    Endpoint,
    ExpectedIdentity,
    Gateway,
    ListenerContext,
    ListenerType,
    Sniff,
    Stream,
    hookimpl,
    loads,
)
from ugate_core.cli import main
from ugate_core.plugins import selected_names

SHARED = '[listeners.main]\nlisten = "127.0.0.1:0"\nprotocols = ["*"]\n'


@pytest.fixture
def core_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only core's built-in protocols (tls can share a port): no plugin decides the keys."""
    monkeypatch.setenv("UGATE_PLUGINS", "")


def check_error(text: str) -> str:
    with pytest.raises(ConfigError) as ei:
        Gateway(loads(text)).check()
    return str(ei.value)


@pytest.mark.parametrize(("key", "hint"), [
    ("alow", "; did you mean 'allow'?"),
    ("sniff_timout", "; did you mean 'sniff_timeout'?"),
    ("completely_bogus_key", ""),
])
def test_shared_port_rejects_unknown_keys(core_only: None, key: str, hint: str) -> None:
    msg = check_error(SHARED + f"{key} = 1\n")
    assert msg.startswith(f"listeners.main.{key}: unknown key (core knows: allow, default, "
                          "listen, protocols, sniff_max, sniff_timeout, target; protocols tls "
                          "know: ")
    assert msg.endswith(hint) if hint else "did you mean" not in msg


def test_shared_port_accepts_core_and_protocol_keys(core_only: None) -> None:
    Gateway(loads(SHARED + 'allow = ["*.test"]\nsniff_timeout = 1.0\n'
                  'passthrough = ["*.example"]\n')).check()


def test_dedicated_listener_error_lists_core_keys_too(core_only: None) -> None:
    msg = check_error('[listeners.f]\nlisten = "127.0.0.1:0"\nprotocols = ["tcp"]\n'
                      'target = "127.0.0.1:1"\nalow = ["x"]\n')
    assert msg == ("listeners.f.alow: unknown key (core knows: allow, default, listen, "
                   "protocols, sniff_max, sniff_timeout, target; protocols tcp know: no "
                   "options); did you mean 'allow'?")


def test_typoed_top_level_table_is_an_error(core_only: None) -> None:
    msg = check_error('[identty]\nkey_type = "ed25519"\n')
    assert msg.startswith("identty: unknown table (known: admin, discovery, gateway, hosts, "
                          "identity, listeners, plugins, routing, rules, tokens)")
    assert msg.endswith("; did you mean 'identity'?")
    Gateway(loads('[identity]\nkey_type = "ed25519"\n')).check()


def test_table_of_an_installed_but_filtered_plugin_is_only_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("ugate_core.plugins.installed_names", lambda: ["ssh"])
    monkeypatch.setenv("UGATE_PLUGINS", "")
    Gateway(loads('[ssh]\nuser = "x"\n')).check()
    assert "config_table_ignored table=ssh" in caplog.text


def test_plugin_names_are_checked_against_what_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("UGATE_PLUGINS", raising=False)
    have = ["dns", "http", "socks"]
    with pytest.raises(ConfigError) as ei:
        selected_names(have, enable=("sock",))
    assert str(ei.value) == ("plugins.enable[0]: 'sock' is not an installed plugin "
                             "(installed: dns, http, socks); did you mean 'socks'?")
    with pytest.raises(ConfigError) as ei:
        selected_names(have, disable=("http", "htp"))
    assert str(ei.value).startswith("plugins.disable[1]: 'htp' is not an installed plugin")
    monkeypatch.setenv("UGATE_PLUGINS", "sock")
    with pytest.raises(ConfigError) as ei:
        selected_names(have)
    assert str(ei.value).startswith("UGATE_PLUGINS: 'sock' is not an installed plugin")
    monkeypatch.setenv("UGATE_PLUGINS", "socks, http")
    assert selected_names(have, disable=("http",)) == ["socks"]


def test_filtered_out_plugins_are_named_not_called_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("ugate_core.plugins.installed_names", lambda: ["socks"])
    monkeypatch.setenv("UGATE_PLUGINS", "")
    gw = Gateway(loads(""))
    gw.load()
    why = gw._why_no_protocols()
    assert why == "installed but not selected (UGATE_PLUGINS=''): socks"
    assert "pip install" not in why


def test_identity_on_a_protocol_that_cannot_prove_it_is_a_config_error(core_only: None) -> None:
    msg = check_error('[hosts."svc.test"]\nendpoints = ["127.0.0.1:1"]\nprotocol = "tcp"\n'
                      'identity = ["id:AAAA"]\n')
    assert msg.startswith("hosts.'svc.test'.identity[0]: 'id:...' cannot be checked by "
                          "protocol 'tcp' (it proves no identity at all)")
    Gateway(loads('[hosts."svc.test"]\nendpoints = ["127.0.0.1:1"]\nprotocol = "tls"\n'
                  'identity = ["id:AAAA"]\n')).check()


async def test_dial_that_cannot_verify_an_expected_identity_never_succeeds(
    core_only: None,
) -> None:
    """Discovery (DNS TLSA, say) may give identities with protocol tcp: the dial is refused
    before any connection, not made unchecked."""
    srv = socket.create_server(("127.0.0.1", 0))
    try:
        port = srv.getsockname()[1]
        gw = Gateway(loads(""))
        gw.load()
        dest = Destination("svc.test", (Endpoint("127.0.0.1", port),), protocol="tcp",
                           identities=(ExpectedIdentity("id", "AAAA"),))
        with pytest.raises(DialError) as ei:
            await gw.dial_destination(dest, port)
        assert ei.value.reason == "identity"
        assert "cannot prove the expected identity (id)" in str(ei.value)
        srv.settimeout(0.05)
        with pytest.raises(TimeoutError):
            srv.accept()  # nothing connected
    finally:
        srv.close()


def test_busy_admin_port_is_one_line_naming_the_key(
    core_only: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    busy = socket.create_server(("127.0.0.1", 0))
    try:
        port = busy.getsockname()[1]
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[admin]\nlisten = "127.0.0.1:{port}"\n')
        assert main(["--log-level", "error", "run", "-c", str(cfg), "--state-dir",
                     str(tmp_path)]) == 2
    finally:
        busy.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"ugate: config error: admin.listen: cannot listen on "
                             f"'127.0.0.1:{port}': Address already in use (")
    assert "[admin] listen" in err[0]


class _ThirdParty:
    """A plugin's listener types as an out-of-tree plugin writes them."""

    def __init__(self, option_keys: frozenset[str] | None) -> None:
        self.option_keys = option_keys

    @hookimpl
    def ugate_listener_types(self) -> list[ListenerType]:
        async def serve(stream: Stream, ctx: ListenerContext) -> None:
            stream.close()

        kw = {} if self.option_keys == frozenset() else {"option_keys": self.option_keys}
        return [ListenerType("echo", serve=serve, sniff=lambda b: Sniff.NO, relays=False,
                             **kw)]  # type: ignore[arg-type]


def _with(plugin: _ThirdParty, text: str) -> Gateway:
    from ugate_core import _builtin
    from ugate_core.plugins import create_manager

    pm = create_manager()
    pm.register(_builtin, name="core")
    pm.register(plugin, name="echo")
    return Gateway(loads(text), pm=pm)


def test_a_protocol_that_declares_nothing_reads_no_keys() -> None:
    """The default: no keys of its own, so a bogus key on its shared port is refused."""
    with pytest.raises(ConfigError, match=r"^listeners\.main\.bogus: unknown key .*protocols "
                       r"echo, tls know: "):
        _with(_ThirdParty(frozenset()), SHARED + "bogus = 1\n").check()


def test_a_protocol_that_judges_its_own_keys_still_gets_core_near_misses() -> None:
    gw = _with(_ThirdParty(None), SHARED + "its_own = 1\n")
    gw.check()  # left to the plugin's check_options
    with pytest.raises(ConfigError, match=r"did you mean 'allow'\?$"):
        _with(_ThirdParty(None), SHARED + "alow = 1\n").check()
