#!/usr/bin/env python3
"""The distributions as users install them: build, inspect, install alone, and run.

    scripts/dists.py build    python -m build: a wheel and sdist of core and each plugin in dist/
    scripts/dists.py check    every module, subpackage and data file of each package is in its
                              wheel and sdist; the metadata is complete enough to publish
    scripts/dists.py alone    core alone, and core + each plugin alone, each in a fresh
                              virtualenv outside the checkout with only the declared dependencies:
                              every module imports, `ugate plugins` loads the plugin
    scripts/dists.py smoke    every wheel in one fresh virtualenv outside the checkout: `ugate
                              plugins` lists them all with no failure, and `ugate run` on the
                              embedded default config answers a SOCKS5 (curl) and an h2c request
    scripts/dists.py pythons  all wheels on the newer CPythons the classifiers name (3.12, 3.13),
                              where the machine has them: they install, import, load
    scripts/dists.py all      all five, in that order

Installs are ordinary wheel installs (never ``-e``); dependencies come from the package index
(pip's cache makes repeated runs fast). Run with the dev virtualenv's Python: the h2c request
uses the ``h2`` library from requirements-dev.txt, an HTTP/2 implementation that is not ours.
"""

from __future__ import annotations

import contextlib
import email.parser
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tomllib
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
# the distribution folders: core first, so plugin installs find it
SOURCES = [ROOT / "ugate_core",
           *sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))]
# files a package must carry besides its modules
DATA = {"py.typed"}
DATA_SUFFIXES = {".toml"}
ORIGIN_BODY = b"hello from the origin behind the installed wheels\n"


def log(msg: str) -> None:
    print(f"dists: {msg}", flush=True)


def fail(msg: str) -> None:
    print(f"dists: FAILED: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def project(src: Path) -> dict[str, object]:
    with open(src / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]  # type: ignore[no-any-return]


def name_of(src: Path) -> str:
    return str(project(src)["name"])


def ugate_dependencies(src: Path) -> list[str]:
    """The other ugate plugins a distribution depends on (``ugate-ws`` needs ``ugate-http``)."""
    deps = project(src).get("dependencies", [])
    assert isinstance(deps, list)
    names = [str(d).split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip()
             for d in deps]
    return [n for n in names if n.startswith("ugate-") and n != "ugate-core"]


def package_dir(src: Path) -> Path:
    """The import package a distribution folder holds (``ugate_core/ugate_core``, ...)."""
    return src / src.name


def artifacts(src: Path) -> tuple[Path, Path]:
    stem = name_of(src).replace("-", "_")
    wheels = sorted(DIST.glob(f"{stem}-*.whl"))
    sdists = sorted(DIST.glob(f"{stem}-*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        fail(f"{name_of(src)}: expected one wheel and one sdist in {DIST}, found "
             f"{[p.name for p in wheels + sdists]} (run `scripts/dists.py build`)")
    return wheels[0], sdists[0]


def run(*cmd: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 600) -> str:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env,
                         cwd=cwd, timeout=timeout)
    if res.returncode != 0:
        fail(f"{' '.join(map(str, cmd))} exited {res.returncode}:\n{res.stdout[-3000:]}"
             f"{res.stderr[-3000:]}")
    return res.stdout


# ------------------------------------------------------------------------------------ build
def build() -> None:
    shutil.rmtree(DIST, ignore_errors=True)
    DIST.mkdir()
    for src in SOURCES:
        with tempfile.TemporaryDirectory(prefix="ugate-dists-src-") as tmp:
            # from a clean copy, as a fresh checkout has it: the *.egg-info an editable install
            # leaves behind lists every file, and setuptools then ships subpackages that the
            # configuration forgot (with a warning), hiding the very bug this guards against.
            # Symlinks (LICENSE) are copied as the files they point to.
            clean = Path(tmp) / src.name
            shutil.copytree(src, clean, ignore=shutil.ignore_patterns(
                "*.egg-info", "build", "__pycache__", ".pytest_cache", ".hypothesis"))
            # sdist first, then the wheel built from that sdist (python -m build's default): a
            # file the sdist forgets cannot reach the wheel either
            run(sys.executable, "-m", "build", "--outdir", DIST, clean)
        log(f"built {name_of(src)}")


# ------------------------------------------------------------------------------------ check
def expected_files(src: Path) -> set[str]:
    """Every module and data file under the import package, as paths inside a wheel."""
    pkg = package_dir(src)
    out = set()
    for p in pkg.rglob("*"):
        if not p.is_file() or "__pycache__" in p.parts:
            continue
        if p.suffix == ".py" or p.name in DATA or p.suffix in DATA_SUFFIXES:
            out.add(p.relative_to(src).as_posix())
    if not out:
        fail(f"{src}: no package files found")
    return out


def check_metadata(src: Path, meta_text: str) -> None:
    name = name_of(src)
    meta = email.parser.Parser().parsestr(meta_text)
    problems = []
    if meta.get("License-Expression") != "Apache-2.0":
        problems.append("License-Expression is not Apache-2.0")
    if not meta.get_all("License-File"):
        problems.append("no License-File")
    if not (meta.get("Requires-Python") or "").startswith(">=3.11"):
        problems.append("Requires-Python is not >=3.11")
    if meta.get("Description-Content-Type") != "text/markdown" or len(meta.get_payload()) < 200:
        problems.append("the README is not the long description")
    urls = meta.get_all("Project-URL") or []
    if not any(u.startswith("Source") for u in urls):
        problems.append("no Source project URL")
    classifiers = meta.get_all("Classifier") or []
    for want in ("Typing :: Typed", "Programming Language :: Python :: 3.11"):
        if want not in classifiers:
            problems.append(f"classifier {want!r} missing")
    if name != "ugate-core":
        core = [r for r in meta.get_all("Requires-Dist") or [] if r.startswith("ugate-core")]
        if not core or not re.search(r">=\d", core[0]) or "<" not in core[0]:
            problems.append(f"does not pin a compatible range of ugate-core: {core}")
    if problems:
        fail(f"{name} metadata: " + "; ".join(problems))


def check() -> None:
    for src in SOURCES:
        name = name_of(src)
        wheel, sdist = artifacts(src)
        want = expected_files(src)
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())
            meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
            meta_text = z.read(meta_name).decode()
            licenses = [n for n in names if ".dist-info/licenses/" in n]
            if not licenses or b"Apache License" not in z.read(licenses[0]):
                fail(f"{wheel.name}: no Apache license text in .dist-info/licenses/")
            eps = next((n for n in names if n.endswith(".dist-info/entry_points.txt")), None)
            ep_text = z.read(eps).decode() if eps else ""
        missing = want - names
        if missing:
            fail(f"{wheel.name} lacks {sorted(missing)}")
        if name != "ugate-core" and "[ugate]" not in ep_text:
            fail(f"{wheel.name}: no entry point in the 'ugate' group")
        check_metadata(src, meta_text)
        with tarfile.open(sdist) as t:
            top = sdist.name.removesuffix(".tar.gz")
            snames = {m.name.removeprefix(top + "/") for m in t.getmembers()}
        missing = (want | {"pyproject.toml", "README.md", "LICENSE"}) - snames
        if missing:
            fail(f"{sdist.name} lacks {sorted(missing)}")
        log(f"{name}: wheel and sdist hold all {len(want)} package files, metadata complete")


# ------------------------------------------------------------------------------------ venvs
@contextlib.contextmanager
def venv(label: str, python: str = sys.executable) -> Iterator[Path]:
    """A fresh virtualenv outside the checkout, removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix=f"ugate-dists-{label}-"))
    try:
        run(python, "-m", "venv", tmp / "venv")
        yield tmp / "venv"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def pip_install(env: Path, *reqs: str | Path) -> None:
    # --find-links dist: ugate-core comes from the wheel built here, never from the index
    run(env / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
        "--find-links", DIST, *reqs)


def clean_env(state: Path) -> dict[str, str]:
    """The environment for installed commands: no PYTHONPATH, a throwaway state dir."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "UGATE_PLUGINS", "UGATE_CONFIG")}
    env["UGATE_STATE_DIR"] = str(state)
    return env


# modules that need an optional extra, by the extra that brings what they import
NEEDS_EXTRA = {"ugate_core.testing": "testing", "ugate_webtransport.http_route": "http"}
# core's own extras, installed wherever every wheel is (a plugin's extra names one of our wheels)
CORE_EXTRAS = ",".join(["fast", *(e for m, e in NEEDS_EXTRA.items()
                                   if m.startswith("ugate_core."))])
IMPORT_ALL = r"""
import importlib, pkgutil, sys
skip = set(sys.argv[2:])
n = 0
for top in sys.argv[1].split(","):
    pkg = importlib.import_module(top)
    assert "site-packages" in pkg.__file__, pkg.__file__
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if m.name not in skip:
            importlib.import_module(m.name)
            n += 1
print(n)
"""


def plugins_report(env: Path, state: Path, cwd: Path) -> dict[str, dict[str, object]]:
    out = run(env / "bin" / "ugate", "plugins", "--json", env=clean_env(state), cwd=cwd)
    return {str(p["name"]): p for p in json.loads(out)["plugins"]}


def alone() -> None:
    for src in SOURCES:
        name = name_of(src)
        wheel, _ = artifacts(src)
        with venv(name) as env:
            cwd = env.parent
            pip_install(env, wheel)  # pulls ugate-core (with the extras it declares) from dist/
            if src != SOURCES[0]:
                # the install brought exactly core, this plugin and the plugins it needs
                listed = json.loads(run(env / "bin" / "python", "-m", "pip", "list",
                                        "--format=json", "--disable-pip-version-check"))
                ours = sorted(d["name"].replace("_", "-") for d in listed
                              if d["name"].startswith("ugate"))
                if ours != sorted({"ugate-core", name, *ugate_dependencies(src)}):
                    fail(f"{name} alone installed {ours}")
            n = run(env / "bin" / "python", "-c", IMPORT_ALL, package_dir(src).name,
                    *NEEDS_EXTRA, cwd=cwd)
            report = plugins_report(env, cwd / "state", cwd)
            bad = {k: v["error"] for k, v in report.items() if not v["loaded"]}
            if bad:
                fail(f"{name} alone: plugins failed to load: {bad}")
            if src != SOURCES[0]:
                short = src.name.removeprefix("ugate_")
                if short not in report:
                    fail(f"{name} alone: `ugate plugins` does not list {short!r}: {list(report)}")
            log(f"{name} alone: installs with its declared dependencies, {n.strip()} modules "
                f"import, `ugate plugins` loads {sorted(report)}")


# ------------------------------------------------------------------------------------ smoke
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Origin(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(ORIGIN_BODY)))
        self.end_headers()
        self.wfile.write(ORIGIN_BODY)

    def log_message(self, *args: object) -> None:
        pass


def wait_port(port: int, proc: subprocess.Popen[bytes], deadline: float = 20) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            fail(f"ugate run exited {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    fail(f"ugate run did not listen on 127.0.0.1:{port} within {deadline} s")


def h2c_connect(port: int, target: str) -> bytes:
    """An HBONE-style h2c CONNECT (the `h2` library as client) carrying one HTTP/1.0 GET."""
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "CONNECT"), (":authority", target)])
    got = b""
    with socket.create_connection(("127.0.0.1", port), 10) as s:
        s.settimeout(10)
        s.sendall(conn.data_to_send())
        status = ""
        while True:
            data = s.recv(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    status = dict(ev.headers).get(b":status", b"").decode()
                    if status != "200":
                        fail(f"h2c CONNECT {target}: status {status}")
                    conn.send_data(sid, f"GET / HTTP/1.0\r\nHost: {target}\r\n\r\n".encode(),
                                   end_stream=True)
                elif isinstance(ev, h2.events.DataReceived):
                    got += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded | h2.events.StreamReset):
                    return got
            s.sendall(conn.data_to_send())
    return got


def smoke() -> None:
    wheels = [artifacts(src)[0] for src in SOURCES]
    with venv("all") as env:
        cwd = env.parent
        pip_install(env, f"{wheels[0]}[{CORE_EXTRAS}]", *wheels[1:])
        n = run(env / "bin" / "python", "-c", IMPORT_ALL,
                ",".join(package_dir(src).name for src in SOURCES), cwd=cwd)
        log(f"all wheels with core's extras: all {n.strip()} modules import")
        report = plugins_report(env, cwd / "state", cwd)
        want = {"core", *(src.name.removeprefix("ugate_") for src in SOURCES[1:])}
        bad = {k: v["error"] for k, v in report.items() if not v["loaded"]}
        if bad or not want <= set(report):
            fail(f"`ugate plugins`: want {sorted(want)} all loaded, got {report}")
        log(f"all wheels: `ugate plugins` lists {sorted(report)}, no load failure")

        # the embedded default config as `ugate run` uses it, with free ports for this run
        default = run(env / "bin" / "ugate", "config", "default", env=clean_env(cwd / "state"),
                      cwd=cwd)
        shared, admin = free_port(), free_port()
        cfg = default.replace("127.0.0.1:15008", f"127.0.0.1:{shared}").replace(
            "127.0.0.1:15000", f"127.0.0.1:{admin}")
        if cfg == default:
            fail("the embedded default no longer names 127.0.0.1:15008 / :15000")
        (cwd / "ugate.toml").write_text(cfg)
        origin = ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
        threading.Thread(target=origin.serve_forever, daemon=True).start()
        target = f"127.0.0.1:{origin.server_address[1]}"
        log_path = cwd / "ugate.log"
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen([str(env / "bin" / "ugate"), "run", "-c", "ugate.toml"],
                                    cwd=cwd, env=clean_env(cwd / "state"), stdout=logf,
                                    stderr=subprocess.STDOUT)
        try:
            wait_port(shared, proc)
            body = run("curl", "-sS", "--max-time", "10", "--socks5-hostname",
                       f"127.0.0.1:{shared}", f"http://{target}/")
            if body.encode() != ORIGIN_BODY:
                fail(f"SOCKS5 through the shared port returned {body!r}")
            log("ugate run (installed wheels, embedded default): SOCKS5 request answered")
            reply = h2c_connect(shared, target)
            if not reply.startswith(b"HTTP/1.0 200") or not reply.endswith(ORIGIN_BODY):
                fail(f"h2c CONNECT through the shared port returned {reply[:300]!r}")
            log("ugate run (installed wheels, embedded default): h2c request answered")
            proc.send_signal(signal.SIGTERM)
            if proc.wait(30) != 0:
                fail(f"ugate run exited {proc.returncode} on SIGTERM")
        except BaseException:
            print(log_path.read_text(errors="replace")[-4000:], file=sys.stderr)
            raise
        finally:
            if proc.poll() is None:
                proc.kill()
            origin.shutdown()


def newer_pythons() -> list[str]:
    """The newer CPythons the classifiers name, where this machine has them (pyenv or PATH)."""
    found = []
    for minor in ("3.12", "3.13"):
        # pyenv's versions first: its shim on PATH may exist and still refuse to run
        cands = [*sorted(str(p) for p in Path.home().glob(f".pyenv/versions/{minor}.*/bin/python")),
                 shutil.which(f"python{minor}")]
        path = next((c for c in cands if c and subprocess.run(
            [c, "-c", ""], capture_output=True).returncode == 0), None)
        if path:
            found.append(path)
        else:
            log(f"python{minor} not found: the wheels are not checked on it "
                f"(pyenv install {minor})")
    return found


def pythons() -> None:
    wheels = [artifacts(src)[0] for src in SOURCES]
    for python in newer_pythons():
        version = run(python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])").strip()
        with venv(f"py{version}", python) as env:
            cwd = env.parent
            pip_install(env, f"{wheels[0]}[{CORE_EXTRAS}]",
                        *wheels[1:])
            n = run(env / "bin" / "python", "-c", IMPORT_ALL,
                    ",".join(package_dir(src).name for src in SOURCES), cwd=cwd)
            report = plugins_report(env, cwd / "state", cwd)
            bad = {k: v["error"] for k, v in report.items() if not v["loaded"]}
            if bad or len(report) != len(SOURCES):
                fail(f"Python {version}: `ugate plugins` gave {report}")
            log(f"Python {version}: all wheels install, {n.strip()} modules import, "
                f"`ugate plugins` loads {sorted(report)}")


def main(argv: list[str]) -> int:
    steps = {"build": build, "check": check, "alone": alone, "smoke": smoke, "pythons": pythons}
    what = argv[1:] or ["all"]
    for w in what:
        if w == "all":
            for step in steps.values():
                step()
        elif w in steps:
            steps[w]()
        else:
            print(__doc__, file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
