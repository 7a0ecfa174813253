"""Plugin loading: entry points, allow-list, broken plugins, the out-of-tree example plugin."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ugate_core.testing import connect_when_listening, free_port

REPO = Path(__file__).resolve().parents[2]
UGATE = [sys.executable, "-m", "ugate_core.cli"]


def fake_dist(root: Path, name: str, module_src: str, entry: str | None = None) -> None:
    """A minimal installed distribution on a path entry: module + dist-info with entry points."""
    (root / f"{name}_plugin.py").write_text(module_src)
    di = root / f"{name}-0.0.1.dist-info"
    di.mkdir()
    (di / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
    (di / "entry_points.txt").write_text(f"[ugate]\n{entry or name} = {name}_plugin\n")


def env_with(path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def plugins_json(env: dict[str, str]) -> dict[str, object]:
    out = subprocess.run([*UGATE, "plugins", "--json"], env=env, capture_output=True,
                         timeout=60, check=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def echo_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The out-of-tree example plugin, installed with pip into its own target folder."""
    target = tmp_path_factory.mktemp("echo-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(REPO / "docs/examples/ugate-echo")],
        check=True, timeout=300, capture_output=True,
    )
    return target


def test_example_plugin_is_found_through_its_entry_point(echo_site: Path) -> None:
    data = plugins_json(env_with(echo_site))
    names = {p["name"]: p for p in data["plugins"]}  # type: ignore[index,union-attr]
    assert names["echo"]["loaded"] is True
    assert names["echo"]["distribution"] == "ugate-echo"
    assert names["echo"]["version"] == "0.1.0"
    assert data["listener_types"]["echo"] == "echo"  # type: ignore[index]


def test_allow_list_excludes_plugins(echo_site: Path) -> None:
    data = plugins_json(env_with(echo_site, UGATE_PLUGINS="socks"))
    assert "echo" not in {p["name"] for p in data["plugins"]}  # type: ignore[index,union-attr]
    assert "echo" not in data["listener_types"]  # type: ignore[operator]


async def test_example_plugin_serves_on_the_shared_port(echo_site: Path, tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[admin]\nlisten = "127.0.0.1:{admin}"\n'
                   f'[listeners.main]\nlisten = "127.0.0.1:{port}"\nprotocols = ["*"]\n')
    proc = await asyncio.create_subprocess_exec(
        *UGATE, "run", "-c", str(cfg), env=env_with(echo_site, UGATE_STATE_DIR=str(tmp_path)),
        stderr=subprocess.PIPE,
    )
    try:
        r, w = await connect_when_listening("127.0.0.1", port)
        w.write(b"ECHO\nhello plugin")
        w.write_eof()
        got = await asyncio.wait_for(r.read(-1), 10)
        assert got == b"OK 127.0.0.1\nhello plugin"
        w.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


BROKEN = "raise RuntimeError('this plugin is broken on purpose')\n"
TYPO = """
from ugate_core import hookimpl
@hookimpl
def ugate_listner_types(gateway):
    return []
"""

OPTIONAL = """
from ugate_core import hookimpl
@hookimpl(optionalhook=True)
def ugate_absent_plugin_hook(gateway):
    return []
"""


def test_broken_plugin_is_reported_and_skipped(tmp_path: Path) -> None:
    fake_dist(tmp_path, "broken", BROKEN)
    fake_dist(tmp_path, "typo", TYPO)
    fake_dist(tmp_path, "optional", OPTIONAL)
    env = env_with(tmp_path)
    data = plugins_json(env)
    p = {x["name"]: x for x in data["plugins"]}  # type: ignore[index,union-attr]
    assert p["broken"]["loaded"] is False
    assert p["broken"]["error"] == "RuntimeError: this plugin is broken on purpose"
    assert p["typo"]["loaded"] is False
    assert "ugate_listner_types" in p["typo"]["error"]
    # an implementation of another (absent) plugin's hook, marked optional, is no typo
    assert p["optional"]["loaded"] is True, p["optional"]
    out = subprocess.run([*UGATE, "plugins"], env=env, capture_output=True, text=True,
                         timeout=60, check=True)
    assert "broken" in out.stdout and "FAILED: RuntimeError" in out.stdout
    assert "plugin_load_failed plugin=broken" in out.stderr


async def test_gateway_serves_despite_broken_plugin(tmp_path: Path) -> None:
    fake_dist(tmp_path, "broken", BROKEN)
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        importlib.invalidate_caches()
        from ugate_core import loads
        from ugate_core.gateway import Gateway

        gw = Gateway(loads('[admin]\nlisten = "127.0.0.1:0"\n'), state_dir=tmp_path)
        await gw.start()
        try:
            from ugate_core.testing import metric

            assert metric(gw, "ugate_plugin_load_failures_total", plugin="broken") == 1
            body = gw.metrics.render().decode()
            assert 'ugate_plugin_load_failures_total{plugin="broken"} 1.0' in body
        finally:
            await gw.shutdown(0)
    finally:
        sys.path.remove(str(tmp_path))


async def test_core_alone_runs_and_says_it_has_no_protocols(tmp_path: Path) -> None:
    """What `pip install ./ugate_core` alone gives: a gateway that starts, says so, and
    forwards with the built-in tcp listener."""
    env = {**os.environ, "UGATE_PLUGINS": "", "UGATE_STATE_DIR": str(tmp_path)}
    data = plugins_json(env)
    assert [p["name"] for p in data["plugins"]] == ["core"]  # type: ignore[index,union-attr]
    assert set(data["listener_types"]) == {"tcp", "tls"}  # type: ignore[arg-type]
    port = free_port()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[admin]\nlisten = ""\n[listeners.main]\nlisten = "127.0.0.1:{port}"\n')
    proc = await asyncio.create_subprocess_exec(*UGATE, "run", "-c", str(cfg), env=env,
                                                stderr=subprocess.PIPE)
    try:
        _, w = await connect_when_listening("127.0.0.1", port)
        w.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        assert proc.stderr is not None
        log = (await proc.stderr.read()).decode()
        # the plugins are installed here, only filtered out: the log says so, not "install"
        assert "only the built-in tcp and tls protocols work: installed but not selected " \
               "(UGATE_PLUGINS='')" in log
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


DEFINES = """
import types
from ugate_core import hookimpl, hookspec
specs = types.SimpleNamespace()
@hookspec
def ugate_zdef_greetings(gateway, who):
    '''Extension point of the zdef plugin.'''
specs.ugate_zdef_greetings = ugate_zdef_greetings
@hookimpl
def ugate_hookspecs():
    return [specs]
"""
EXTENDS = """
from ugate_core import hookimpl
@hookimpl
def ugate_zdef_greetings(gateway, who):
    return f"hello {who} from {type(gateway).__name__}"
"""
MISSPELLS = """
from ugate_core import hookimpl
@hookimpl
def ugate_zdef_greeting(who):
    return who
"""


def test_a_plugin_defines_hook_specs_that_another_implements(tmp_path: Path) -> None:
    # "aext" loads before "zdef" (load order is by name): the order must not matter
    fake_dist(tmp_path, "zdef", DEFINES)
    fake_dist(tmp_path, "aext", EXTENDS)
    fake_dist(tmp_path, "amiss", MISSPELLS)
    code = (
        "from ugate_core import loads\nfrom ugate_core.gateway import Gateway\n"
        "import tempfile, pathlib\n"
        "gw = Gateway(loads(''), state_dir=pathlib.Path(tempfile.mkdtemp()))\n"
        "gw.load()\n"
        "print(gw.call_hook('ugate_zdef_greetings', who='you'))\n"
        "print({p.name: (p.loaded, p.error) for p in gw.plugins if p.name in ('aext', 'amiss')})\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env_with(tmp_path),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "['hello you from Gateway']"
    got = eval(lines[1])
    assert got["aext"] == (True, "")
    assert got["amiss"][0] is False and "ugate_zdef_greeting" in got["amiss"][1]
