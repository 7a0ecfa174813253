"""Every documented example runs as written (issue #24).

* Every ```toml block of ``README.md``, ``docs/*.md`` and ``plugins/*/README.md`` goes through
  ``ugate config check`` (in-process, the same ``main``). A block that is not a ugate config,
  or needs something first, says so in a marker on the line right above its fence:

  ``<!-- docs-test: not-config -->``  not a ugate config (a ``pyproject.toml``): skipped;
  ``<!-- docs-test: config file=NAME needs=PATH,... placeholders -->``  ``file``: the name a
  shell block of the same page uses for it; ``needs``: files the page's steps create first
  (the test creates them, 0600 with one comment line, in its directory and points the config
  there);
  ``placeholders``: every ``<...>`` is replaced by a real mesh ID (lower case where the
  placeholder says "lower case").

  HOME is a temporary directory.
* Every Python example file (``docs/examples/*.py``, ``plugins/*/examples/*.py``) runs, exits
  0 and prints no warning.
* A snippet marked ``<!-- docs-test: excerpt of=FILE -->`` is made only of FILE's lines.
* Shell blocks marked ``<!-- docs-test: shell ports=15008,15000,... -->`` run with bash, in a
  temporary directory holding the page's ``file=`` configs, ``.venv`` (a link to this
  checkout's) and ``default.toml`` (the embedded default). What the test changes, and only
  that: each listed port becomes a free port, in the script and in the configs (a test never
  binds a fixed port); each directory in ``dirs=`` becomes one inside the test's;
  ``make run`` becomes ``ugate run -c default.toml``; ``pip install`` and
  ``apt-get install`` lines are dropped (``scripts/setup.sh`` installed those). The script runs
  with ``set -euo pipefail`` and a ``.curlrc`` with ``--fail``, so an HTTP error or a failed
  command fails the test; background jobs are killed at the end. The examples themselves
  wait for what they start (``/readyz``, ``curl --retry-connrefused``), they do not sleep.
  ``tools=a,b`` on the marker names the programs it needs besides curl (a missing one fails
  in CI, see ``require_peer``). More changes a marker may ask for:

  ``continues``  the block goes on from the page's previous shell block (it uses what that one
  started): both run as one script, with both markers' ports, dirs and tools;
  ``sshd=PORT:KEYFILE``  an OpenSSH ``sshd`` (started as PEERS.md says: root, loopback) listens
  on a free port in place of PORT before the script starts, and lets in the keys of KEYFILE
  (a file the script makes, read at each login) as the user running the test;

  and, for every shell block: ``UGATE_CONFIG`` names ``default.toml``, so a bare ``ugate run``
  uses the embedded default on the rewritten ports; ``pip install ./docs/examples/NAME`` (a
  distribution .venv does not hold) installs a copy of that folder into ``./site``
  (``--target``, on ``PYTHONPATH``), so the checkout's environment is left as it was. On a
  failure the test prints the script, its output and every ``*.log`` it left.
* Every ``sh`` block is either marked ``shell`` or ``<!-- docs-test: no-run reason="..." -->``
  (it cannot run here: a second machine, minutes of benchmark, ...); the test reports each
  one it skips with that reason (``pytest -rs``).
* The ugate-ssh README's two-gateway configs (``file=mesh-a.toml``/``mesh-b.toml`` and
  ``upstream-a.toml``/``upstream-b.toml``) run live, A and B as two processes with a SOCKS
  request through them (``test_ssh_readme_mesh_of_two_gateways_runs`` says what it changes).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ugate_core.testing import free_port, require_peer, wait_port

REPO = Path(__file__).resolve().parents[1]
PAGES = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    *sorted((REPO / "docs/examples").glob("*/README.md")),
    *sorted((REPO / "plugins").glob("*/README.md")),
]
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<kind>[\w-]+)(?P<args>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")


@dataclass
class Block:
    page: Path
    line: int
    lang: str
    text: str
    kind: str = ""
    args: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def _args(s: str) -> dict[str, str]:
    out = {}
    for word in shlex.split(s):
        k, _, v = word.partition("=")
        out[k] = v
    return out


def blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").split("\n")
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m and m.group("lang"):
            indent = len(m.group("indent"))
            j = i + 1
            while not lines[j].strip().startswith("```"):
                j += 1
            b = Block(page, i + 1, m.group("lang"), "\n".join(x[indent:] for x in lines[i + 1:j])
                      + "\n")
            mm = MARKER.match(lines[i - 1]) if i else None
            if mm:
                b.kind, b.args = mm.group("kind"), _args(mm.group("args"))
            out.append(b)
            i = j
        i += 1
    return out


ALL = [b for p in PAGES for b in blocks(p)]
TOML = [b for b in ALL if b.lang == "toml"]
SHELL = [b for b in ALL if b.lang == "sh"]


def test_markers_are_known() -> None:
    """A typo'd marker must not turn a test off in silence."""
    for b in ALL:
        assert b.kind in ("", "not-config", "config", "shell", "no-run", "excerpt"), \
            f"{b.where}: {b.kind!r}"
        assert not (b.kind in ("shell", "no-run") and b.lang != "sh"), b.where
        assert not (b.kind == "no-run" and not b.args.get("reason")), \
            f"{b.where}: no-run without a reason"
    for p in PAGES:
        for n, ln in enumerate(p.read_text(encoding="utf-8").split("\n"), 1):
            if "docs-test:" in ln:
                assert MARKER.match(ln), f"{p}:{n}: malformed marker {ln!r}"
    assert len(TOML) >= 10 and len(SHELL) >= 4


def test_every_shell_block_runs_or_says_why_not() -> None:
    """A new ``sh`` example must be run by the test or say why it cannot be."""
    unmarked = [b.where for b in SHELL if b.kind not in ("shell", "no-run")]
    assert not unmarked, f"shell blocks with neither 'shell' nor 'no-run reason=...': {unmarked}"


def _mesh_id() -> str:
    from cryptography.hazmat.primitives.asymmetric import ec

    from ugate_core import id_of_public_key

    return id_of_public_key(ec.generate_private_key(ec.SECP256R1()).public_key())


def prepared(b: Block, where: Path) -> str:
    """The block's TOML as the page's steps leave it: needed files exist, IDs filled in."""
    text = b.text
    for need in filter(None, b.args.get("needs", "").split(",")):
        local = where / Path(need).name
        # a comment line: not empty (a token file must hold something), and a line every
        # file format here skips (users files, authorized_keys)
        local.write_text("# made by the docs test\n")
        local.chmod(0o600)
        text = text.replace(need, str(local))
    if "placeholders" in b.args:
        ident = _mesh_id()
        text = re.sub(r"<[^<>\n]*>", lambda m: ident.lower() if "lower case" in m.group(0)
                      else ident, text)
    return text


@pytest.mark.parametrize("block", TOML, ids=[b.where for b in TOML])
def test_toml_block_passes_config_check(
    block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if block.kind == "not-config":
        pytest.skip("marked: not a ugate config")
    from ugate_core.cli import main

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("UGATE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("UGATE_PLUGINS", raising=False)
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "block.toml"
    cfg.write_text(prepared(block, tmp_path))
    rc = main(["--log-level", "warning", "config", "check", str(cfg)])
    out = capsys.readouterr()
    assert rc == 0, f"{block.where}: {out.err}"
    assert "WARNING" not in out.err, f"{block.where}: {out.err}"


EXAMPLES = sorted([*(REPO / "docs/examples").glob("*.py"),
                   *(REPO / "plugins").glob("*/examples/*.py")])


@pytest.mark.parametrize("path", EXAMPLES, ids=[str(p.relative_to(REPO)) for p in EXAMPLES])
def test_python_example_runs(path: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "UGATE_STATE_DIR": str(tmp_path)}
    env.pop("PYTHONWARNINGS", None)
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                         timeout=60, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Warning" not in out.stderr, out.stderr


def _with_previous(b: Block) -> tuple[str, dict[str, str]]:
    """The block's text and marker arguments, after the previous shell block's if it
    ``continues`` it (ports, dirs and tools of both)."""
    if "continues" not in b.args:
        return b.text, b.args
    page = [o for o in blocks(b.page) if o.kind == "shell"]
    prev = page[[o.line for o in page].index(b.line) - 1]
    assert prev.line < b.line and "continues" not in prev.args, b.where
    args = {**prev.args, **b.args}
    for key in ("ports", "dirs", "tools"):
        args[key] = ",".join(filter(None, (prev.args.get(key, ""), b.args.get(key, ""))))
    return prev.text + b.text, args


LOCAL_PIP = re.compile(r"^\s*pip install (?P<path>\./docs/examples/[\w.-]+)\s*(#.*)?$")


def shell_script(b: Block, tmp: Path) -> tuple[str, dict[str, int]]:
    """The block as the test runs it (see the module docstring for every change), and the
    free port that replaces each listed one."""
    text, args = _with_previous(b)
    ports = {p: free_port() for p in args.get("ports", "").split(",") if p}
    if "sshd" in args:
        ports.setdefault(args["sshd"].split(":")[0], free_port())

    dirs = {d: str(tmp / Path(d).name) for d in args.get("dirs", "").split(",") if d}

    def sub(text: str) -> str:
        for old, new in ports.items():
            text = re.sub(rf"(?<!\d){old}(?!\d)", str(new), text)
        for old_dir, new_dir in dirs.items():
            text = text.replace(old_dir, new_dir)
        return text

    from ugate_core.config import default_text

    (tmp / "default.toml").write_text(sub(default_text()))
    for other in blocks(b.page):
        if other.lang == "toml" and "file" in other.args:
            (tmp / other.args["file"]).write_text(sub(other.text))
    (tmp / ".venv").symlink_to(REPO / ".venv")
    (tmp / ".curlrc").write_text("fail\nshow-error\nmax-time = 30\n")
    body = []
    for ln in text.split("\n"):
        m = LOCAL_PIP.match(ln)
        if m:  # a distribution .venv lacks: a copy of it, into ./site (not into .venv)
            src = REPO / m["path"]
            shutil.copytree(src, tmp / "src" / src.name)
            body.append(f"pip install -q --no-deps --no-build-isolation --target site "
                        f"src/{src.name}")
        elif not re.match(r"\s*(pip|apt-get) install\b", ln):
            body.append(ln)
    script = sub("\n".join(body)).replace("make run", "ugate run -c default.toml")
    return ("set -euo pipefail\n"
            "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
            f"export PATH={REPO / '.venv/bin'}:$PATH PYTHONPATH=$PWD/site\n"
            f"export UGATE_CONFIG=$PWD/default.toml\n" + script), ports


def start_sshd(tmp: Path, port: int, keys: Path) -> subprocess.Popen[bytes]:
    """OpenSSH's sshd on 127.0.0.1:port letting in ``keys`` (PEERS.md: root, a temp config)."""
    exe = require_peer("/usr/sbin/sshd", apt="openssh-server")
    if os.geteuid() != 0:
        pytest.skip("this example needs sshd, which runs as root on a high port (PEERS.md)")
    d = tmp / "sshd"
    d.mkdir()
    Path("/run/sshd").mkdir(exist_ok=True)
    subprocess.run([require_peer("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f",
                    str(d / "host_key")], check=True, timeout=30)
    (d / "sshd_config").write_text(f"""ListenAddress 127.0.0.1
Port {port}
HostKey {d / "host_key"}
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
PidFile {d / "pid"}
AuthorizedKeysFile {keys}
""")
    proc = subprocess.Popen([exe, "-D", "-f", str(d / "sshd_config"), "-E",
                             str(tmp / "sshd.log")], stdin=subprocess.DEVNULL)
    try:
        wait_port(port, timeout=10)
    except SystemExit as e:
        proc.kill()
        pytest.fail(f"sshd: {e}: {(tmp / 'sshd.log').read_text()}")
    return proc


@pytest.mark.parametrize("block", SHELL, ids=[b.where for b in SHELL])
def test_shell_example_runs(block: Block, tmp_path: Path) -> None:
    if block.kind != "shell":
        pytest.skip(f"{block.where} not run: {block.args.get('reason', 'unmarked')}")
    _, args = _with_previous(block)
    for tool in ("curl", "python3", *args.get("tools", "").split(",")):
        if tool:
            require_peer(tool)
    script, ports = shell_script(block, tmp_path)
    sshd = None
    if "sshd" in args:
        port, keys = args["sshd"].split(":")
        sshd = start_sshd(tmp_path, ports[port], tmp_path / keys)
    env = {**os.environ, "HOME": str(tmp_path), "UGATE_STATE_DIR": str(tmp_path / "state"),
           "CURL_HOME": str(tmp_path)}
    env.pop("UGATE_PLUGINS", None)
    proc = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)

    def logs() -> str:
        return "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')}"
                       for p in sorted(tmp_path.glob("*.log")))

    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{block.where}: still running after 60 s\n{script}\n{out}{logs()}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # whatever the script left behind
        except ProcessLookupError:
            pass
        if sshd is not None:
            sshd.terminate()
            sshd.wait(10)
    assert proc.returncode == 0, \
        f"{block.where}: exit {proc.returncode}\n{script}\n{out}{logs()}"


SSH_PAGE = REPO / "plugins/ugate_ssh/README.md"
MESHES = {"B with an inbound port": ("mesh-a.toml", "mesh-b.toml"),
          "B with no inbound port": ("upstream-a.toml", "upstream-b.toml")}


def _admin_ready(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    import time
    import urllib.request

    end = time.monotonic() + 15
    while time.monotonic() < end:
        assert proc.poll() is None, f"gateway exited {proc.returncode}: {log.read_text()}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"not ready after 15 s: {log.read_text()}")


@pytest.mark.parametrize("mesh", MESHES)
def test_ssh_readme_mesh_of_two_gateways_runs(mesh: str, tmp_path: Path) -> None:
    """The ugate-ssh README's two-gateway configs, live: A and B each run their block as the
    page has it, and a SOCKS request on A reaches the web server behind B. What the test
    changes: the placeholders become A's and B's real IDs (``ugate id``), ``a.example`` and
    ``b.example`` become 127.0.0.1, every listen or endpoint port a free one (``svc.b:8000``,
    the name curl asks for, stays), ``0.0.0.0`` becomes 127.0.0.1 (tests bind loopback only),
    and each gateway gets an admin port of its own (both would take the default 15000)."""
    import time

    curl = require_peer("curl")
    texts = {b.args["file"]: b.text for b in blocks(SSH_PAGE) if "file" in b.args}
    a_text, b_text = (texts[f] for f in MESHES[mesh])
    ugate = str(REPO / ".venv/bin/ugate")
    env = {**os.environ, "HOME": str(tmp_path)}
    for k in ("UGATE_PLUGINS", "UGATE_CONFIG", "UGATE_STATE_DIR"):
        env.pop(k, None)
    ids = {}
    for who in "AB":
        out = subprocess.run([ugate, "id", "--json", "--state-dir", str(tmp_path / who)],
                             capture_output=True, text=True, env=env, timeout=30, check=True)
        ids[who] = json.loads(out.stdout)["id"]
    ports: dict[str, int] = {}

    def port(m: re.Match[str]) -> str:
        return f"127.0.0.1:{ports.setdefault(m[2], free_port())}"

    def placeholder(m: re.Match[str]) -> str:
        ident = ids["A" if re.search(r"\b[Aa]'s\b", m[0]) else "B"]
        return ident.lower() if "lower case" in m[0] else ident

    def prepare(text: str, admin: int) -> str:
        text = re.sub(r"<[^<>\n]*>", placeholder, text)
        text = re.sub(r"(127\.0\.0\.1|0\.0\.0\.0|[ab]\.example):(\d+)", port, text)
        return f'[admin]\nlisten = "127.0.0.1:{admin}"\n' + text

    admins = {"A": free_port(), "B": free_port()}
    (tmp_path / "www").mkdir()
    (tmp_path / "www/hello.txt").write_text("hello from behind B\n")
    procs = [subprocess.Popen([sys.executable, "-m", "http.server", str(ports.setdefault(
        "8000", free_port())), "--bind", "127.0.0.1", "--directory", str(tmp_path / "www")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for who, text in (("A", a_text), ("B", b_text)):
            cfg = tmp_path / f"{who}.toml"
            cfg.write_text(prepare(text, admins[who]))
            log = tmp_path / f"{who}.log"
            procs.append(subprocess.Popen(
                [ugate, "run", "-c", str(cfg), "--state-dir", str(tmp_path / who)], env=env,
                stdout=subprocess.DEVNULL, stderr=log.open("w")))
            _admin_ready(admins[who], procs[-1], log)
        if "upstream" in MESHES[mesh][0]:  # B's reverse forward of port 22, registered on A
            end = time.monotonic() + 15
            while "ssh_forward " not in (tmp_path / "A.log").read_text():
                assert time.monotonic() < end, (tmp_path / "B.log").read_text()
                time.sleep(0.1)
        socks = ports["1080"]
        out = subprocess.run([curl, "-sS", "--fail", "--max-time", "20", "--socks5-hostname",
                              f"127.0.0.1:{socks}", "http://svc.b:8000/hello.txt"],
                             capture_output=True, text=True, timeout=30)
        logs = "".join(f"\n--- {w}\n" + (tmp_path / f"{w}.log").read_text() for w in "AB")
        assert out.stdout == "hello from behind B\n", out.stderr + logs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def test_embedding_snippets_are_excerpts_of_runnable_files() -> None:
    """A block marked ``excerpt of=FILE`` is made of lines of FILE (which runs, above), so a
    snippet on a page cannot drift from the program it is cut from."""
    found = 0
    for b in ALL:
        if b.kind == "excerpt":
            found += 1
            src = {ln.strip() for ln in (REPO / b.args["of"]).read_text().split("\n")}
            for ln in b.text.split("\n"):
                if ln.strip() and ln.strip() != "...":
                    assert ln.strip() in src, f"{b.where}: {ln!r} is not in {b.args['of']}"
    assert found >= 2
