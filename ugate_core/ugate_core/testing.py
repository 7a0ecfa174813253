"""Shared pytest fixtures for core and plugin tests (loaded with ``-p ugate_core.testing``).

* ``require_peer("curl", apt="curl")``: the path of a real peer program; in CI (``CI=true``)
  a missing peer fails the test, locally it skips and says what to install.
* ``start_gateway(toml_text)``: start a :class:`Gateway` on the running loop with a temporary
  state dir; stopped at the end of the test.
* ``http_upstream``: a small HTTP/1.1 server on 127.0.0.1:0 that answers ``GET /bytes/N`` with
  N deterministic bytes, ``POST /echo`` with the body, anything else with ``hello <path>``.
* ``echo_server``: TCP echo on 127.0.0.1:0 that half-closes after echoing EOF.
* ``reset_server``: TCP on 127.0.0.1:0 that sends :data:`RESET_BYTES` bytes to each client,
  then resets the connection (SO_LINGER 0): an upstream dying mid-transfer.
* ``node_run(code, *args)``: a CommonJS script run by Node with the test peers of
  ``tests/js`` (``ws``, ``mqtt``, ``node-datachannel``, ``playwright-core``) on its path;
  ``browser_run(script, url=..., html=...)``: the body of an async function evaluated in a page
  of headless Chromium (Debian's ``/usr/bin/chromium``), its JSON result returned. Both fail in
  CI and skip locally (naming the install step) when Node, the npm packages or Chromium miss.
* ``rapid_reset(port, n, headers)``: the HTTP/2 rapid-reset attack (CVE-2023-44487) as a
  probe runs it, with the ``h2`` library; ``rss_mb()``: this process's resident memory.

With ``UGATE_EXPECT_INSTALLED=1`` (``UGATE_INSTALL=wheels make test``) the session refuses to
start unless every installed ``ugate-*`` distribution is a regular (not editable) install
imported from site-packages, so a suite meant to prove the wheels cannot test the checkout.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sysconfig
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .config import loads
from .gateway import Gateway

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def installed_from_checkout(root: Path) -> list[str]:
    """The ``ugate-*`` distributions that are editable installs, or whose packages import
    from under ``root`` other than from the environment's site-packages (which may itself
    lie in the checkout: ``.venv``)."""
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    bad = []
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] or ""
        if not name.startswith("ugate-") or name == "ugate-workspace":
            continue
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
        if direct.get("dir_info", {}).get("editable"):
            bad.append(f"{name}: editable install")
            continue
        for top in (dist.read_text("top_level.txt") or "").split():
            mod = importlib.import_module(top)
            where = Path(mod.__file__ or "").resolve()
            if where.is_relative_to(root.resolve()) and not where.is_relative_to(site):
                bad.append(f"{name}: {top} imported from {where}")
    return bad


_ROOT: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    _ROOT[:] = [config.rootpath]
    if os.environ.get("UGATE_EXPECT_INSTALLED") == "1":
        bad = installed_from_checkout(config.rootpath)
        found = [d for d in importlib.metadata.distributions()
                 if (d.metadata["Name"] or "").startswith("ugate-")]
        if bad or not found:
            raise pytest.UsageError("UGATE_EXPECT_INSTALLED=1 but the ugate packages are not "
                                    "installed wheels: " + ("; ".join(bad) or "none installed"))


def require_peer(name: str, apt: str | None = None, hint: str = "") -> str:
    """Path of program ``name``; fail in CI, skip locally (saying what to install)."""
    path = shutil.which(name) or (name if os.path.isabs(name) and os.path.exists(name) else None)
    if path:
        return path
    how = hint or f"apt-get install -y {apt or name}"
    msg = f"real peer {name!r} is not installed: {how}"
    if IN_CI:
        pytest.fail(msg + " (CI must install every peer: see .ci/run)")
    pytest.skip(msg)


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port free right now (for peers that need a port in their config file)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15, host: str = "127.0.0.1") -> None:
    """Block until something accepts on ``host:port`` (benchmarks start peers as processes);
    SystemExit naming the port after ``timeout`` seconds."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection((host, port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {host}:{port} after {timeout:g}s")


async def connect_when_listening(
    host: str, port: int, timeout: float = 10.0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to a server a subprocess is still starting (bounded by ``timeout``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await asyncio.open_connection(host, port)
        except OSError:
            if loop.time() > deadline:
                raise AssertionError(f"nothing listens on {host}:{port} after {timeout}s") from None
            await asyncio.sleep(0.05)


def pattern(n: int, seed: int = 0) -> bytes:
    """N deterministic pseudo-random bytes (a shifted, dropped or repeated chunk shows)."""
    return random.Random(seed).randbytes(n)


@dataclass
class Upstream:
    host: str
    port: int
    requests: list[tuple[str, str, dict[str, str]]]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


async def read_request_head(
    r: asyncio.StreamReader,
) -> tuple[str, str, dict[str, str]] | None:
    """A test origin's request head: (method, target, lower-cased fields); None at EOF."""
    try:
        head = await r.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return method, target, headers


async def _http_handler(
    up: Upstream, r: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    try:
        while True:
            got = await read_request_head(r)
            if got is None:
                return
            method, target, headers = got
            up.requests.append((method, target, headers))
            body = b""
            if "content-length" in headers:
                body = await r.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    size = int((await r.readuntil(b"\r\n")).split(b";")[0], 16)
                    chunk = await r.readexactly(size + 2)
                    body += chunk[:-2]
                    if size == 0:
                        break
            if target.startswith("/bytes/"):
                payload = pattern(int(target.split("/")[2]))
            elif target == "/echo":
                payload = body
            else:
                payload = f"hello {target}\n".encode()
            w.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n"
            )
            if method != "HEAD":
                w.write(payload)
            await w.drain()
            if headers.get("connection", "").lower() == "close":
                return
    finally:
        w.close()


@pytest.fixture
async def http_upstream() -> AsyncIterator[Upstream]:
    up = Upstream("127.0.0.1", 0, [])
    server = await asyncio.start_server(
        lambda r, w: _http_handler(up, r, w), "127.0.0.1", 0, limit=1 << 20
    )
    up.port = server.sockets[0].getsockname()[1]
    try:
        yield up
    finally:
        server.close()


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, int]]:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
            w.write_eof()
            await w.drain()
        except ConnectionError:
            pass
        finally:
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield "127.0.0.1", server.sockets[0].getsockname()[1]
    finally:
        server.close()


#: what ``reset_server`` sends before its reset
RESET_BYTES = 64 * 1024


@pytest.fixture
async def reset_server() -> AsyncIterator[tuple[str, int]]:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            w.write(pattern(RESET_BYTES))
            await w.drain()
            await asyncio.sleep(0.1)  # the bytes leave before the reset
            sock = w.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except ConnectionError:
            pass
        finally:
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield "127.0.0.1", server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def read_to_end(r: asyncio.StreamReader, timeout: float = 10.0) -> tuple[bytes, str]:
    """Read until the stream ends: (bytes, ``"eof"`` for a clean end or ``"reset"`` for
    ECONNRESET)."""
    got = bytearray()
    async with asyncio.timeout(timeout):
        while True:
            try:
                data = await r.read(65536)
            except ConnectionResetError:
                return bytes(got), "reset"
            if not data:
                return bytes(got), "eof"
            got += data


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway(tmp_path: Path) -> AsyncIterator[StartGateway]:
    gws: list[Gateway] = []

    async def start(text: str, **kw: Any) -> Gateway:
        n = len(gws)
        cfg = loads(text, f"<test config {n}>")
        kw.setdefault("state_dir", tmp_path / f"state{n}")
        gw = Gateway(cfg, **kw)
        gws.append(gw)
        await gw.start()
        return gw

    try:
        yield start
    finally:
        for gw in gws:
            await gw.shutdown(0.5)


async def run(*cmd: str, timeout: float = 60, input: bytes | None = None,
              check: bool = False) -> subprocess.CompletedProcess[bytes]:
    """Run a peer program without blocking the loop; kill it at ``timeout``."""
    p = await asyncio.create_subprocess_exec(
        *cmd, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(p.communicate(input), timeout)
    except TimeoutError:
        p.kill()
        await p.wait()
        raise AssertionError(f"{cmd[0]} did not finish within {timeout}s") from None
    res = subprocess.CompletedProcess(list(cmd), p.returncode or 0, out, err)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {res.returncode}: {err.decode()[-2000:]}")
    return res


async def admin_get(gw: Gateway, path: str) -> tuple[int, bytes]:
    """GET ``path`` from the gateway's admin endpoint: (status, body)."""
    port = gw.port("admin")
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    data = await asyncio.wait_for(r.read(-1), 5)
    w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def rss_mb() -> float:
    """This process's resident set size in MiB (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@dataclass
class Attack:
    """What :func:`rapid_reset` saw: pairs sent, and the GOAWAY code it got (None: none)."""

    sent: int
    goaway: int | None


async def rapid_reset(port: int, n: int, headers: list[tuple[bytes, bytes]],
                      batch: int = 100, timeout: float = 30.0) -> Attack:
    """Open ``n`` streams on one h2c connection to 127.0.0.1:``port``, each a HEADERS with
    ``headers`` followed at once by RST_STREAM(CANCEL), ``batch`` pairs per write, until the
    server sends GOAWAY or closes, or ``timeout`` seconds pass."""
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.events import ConnectionTerminated
    from h2.exceptions import ProtocolError

    r, w = await asyncio.open_connection("127.0.0.1", port)
    c = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    c.initiate_connection()
    w.write(c.data_to_send())
    res = Attack(0, None)
    done = asyncio.Event()

    async def read() -> None:
        try:
            while data := await r.read(65536):
                for ev in c.receive_data(data):
                    if isinstance(ev, ConnectionTerminated):
                        res.goaway = -1 if ev.error_code is None else int(ev.error_code)
                        done.set()
        except (ConnectionError, ProtocolError):
            pass
        finally:
            done.set()

    reader = asyncio.get_running_loop().create_task(read())
    try:
        async with asyncio.timeout(timeout):
            while res.sent < n and not done.is_set():
                for _ in range(min(batch, n - res.sent)):
                    sid = c.get_next_available_stream_id()
                    c.send_headers(sid, headers)
                    c.reset_stream(sid)
                    res.sent += 1
                w.write(c.data_to_send())
                await w.drain()
                await asyncio.sleep(0)  # (let the reader see a GOAWAY)
            await done.wait()
    except (ConnectionError, ProtocolError):
        pass
    finally:
        reader.cancel()
        w.close()
    return res


def metric(gw: Gateway, name: str, **labels: str) -> float:
    """Current value of a metric sample (0 if absent)."""
    v = gw.metrics.registry.get_sample_value(name, labels)
    return 0.0 if v is None else float(v)


# ---------------------------------------------------------------------------- fuzz targets
def mutate_bytes(rng: random.Random, data: bytes, max_len: int = 1024,
                 length_fields: bool = False) -> bytes:
    """A few random edits of ``data``: overwrite, insert random bytes, delete a run; with
    ``length_fields`` also nudge a 16-bit big-endian field (where length-prefixed parsers
    break). For grammar-aware mutations a target writes its own."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4 if length_fields else 3)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(i, len(b) - 1)] = rng.randrange(256)
        elif op == 1:
            b[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 2 and b:
            del b[i : i + rng.randint(1, 8)]
        elif op == 3 and len(b) >= 2:
            j = min(i, len(b) - 2)
            v = (b[j] << 8 | b[j + 1]) + rng.choice([-1, 1, 255, -255, 4096])
            b[j : j + 2] = (v & 0xFFFF).to_bytes(2, "big")
    return bytes(b[:max_len])


def run_fuzz_target(name: str, one_input: Callable[[bytes], None],
                    random_case: Callable[[random.Random], None],
                    argv: list[str] | None = None, seed: int = 0) -> int:
    """The driver of every ``tests/fuzz_*.py``: libFuzzer through atheris when it is installed
    (``one_input`` gets each input; argv are libFuzzer flags), else ``random_case(rng)`` in a
    loop for ``argv[1]`` seconds (default 10), printing ``<name>: N inputs, no failure``."""
    import sys
    import time

    argv = sys.argv if argv is None else argv
    try:
        import atheris  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        seconds = float(argv[1]) if len(argv) > 1 else 10.0
        rng = random.Random(seed)
        end, n = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            random_case(rng)
            n += 1
        print(f"{name}: {n} inputs, no failure")
        return 0
    atheris.Setup(argv, one_input)
    atheris.Fuzz()
    return 0


# ------------------------------------------------------------------------- Node and Chromium


def js_dir() -> Path:
    """``tests/js`` of the checkout under test, with its npm packages installed (``UGATE_JS_DIR``
    overrides); fails in CI, skips locally when they are missing."""
    env = os.environ.get("UGATE_JS_DIR")
    root = Path(env) if env else (_ROOT[0] if _ROOT else Path.cwd()) / "tests" / "js"
    require_peer("node", apt="nodejs")
    if not (root / "node_modules" / "playwright-core").is_dir():
        msg = f"the Node test peers are not installed: cd {root} && npm ci"
        if IN_CI:
            pytest.fail(msg + " (scripts/setup.sh does it)")
        pytest.skip(msg)
    return root


async def node_run(code: str, *args: str, timeout: float = 60,
                   env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run CommonJS ``code`` with Node, ``tests/js/node_modules`` on its ``require`` path."""
    root = js_dir()
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".cjs", delete=False) as f:
        f.write(code)
    try:
        full = {**os.environ, "NODE_PATH": str(root / "node_modules"), **(env or {})}
        p = await asyncio.create_subprocess_exec(
            "node", f.name, *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=full)
        try:
            out, err = await asyncio.wait_for(p.communicate(), timeout)
        except TimeoutError:
            p.kill()
            await p.wait()
            raise AssertionError(f"node script did not finish within {timeout}s") from None
        return subprocess.CompletedProcess(["node", f.name, *args], p.returncode or 0, out, err)
    finally:
        os.unlink(f.name)


_BLANK = b"<!doctype html><meta charset=utf-8><title>ugate test</title><body>ugate test</body>"


async def browser_run(script: str, *, url: str | None = None, html: bytes | None = None,
                      flags: tuple[str, ...] = (), timeout: float = 60) -> Any:
    """Evaluate ``script`` (the body of an async function) in a page of headless Chromium and
    return its JSON result; a script error or timeout raises ``AssertionError`` with the
    message the page gave. Without ``url`` the page is ``html`` (default: an empty page) served
    from ``http://127.0.0.1:<free port>/`` — a secure context, as WebTransport needs."""
    require_peer(os.environ.get("UGATE_CHROMIUM", "/usr/bin/chromium"), apt="chromium")
    root = js_dir()
    server = None
    if url is None:
        page = html or _BLANK

        async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                await r.readuntil(b"\r\n\r\n")
                w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n"
                        b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                        % (len(page), page))
                await w.drain()
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                pass
            finally:
                w.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"url": url, "script": script, "flags": list(flags),
                   "timeout_ms": int(timeout * 1000)}, f)
    try:
        full = {**os.environ, "NODE_PATH": str(root / "node_modules")}
        p = await asyncio.create_subprocess_exec(
            "node", str(root / "page.cjs"), f.name, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full)
        try:
            out, err = await asyncio.wait_for(p.communicate(), timeout + 45)
        except TimeoutError:
            p.kill()
            await p.wait()
            raise AssertionError(f"Chromium did not finish within {timeout + 45}s") from None
    finally:
        os.unlink(f.name)
        if server is not None:
            server.close()
    lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("{")]
    if not lines:
        raise AssertionError(f"page.cjs printed no result (exit {p.returncode}): "
                             f"{err.decode(errors='replace')[-3000:]}")
    res = json.loads(lines[-1])
    if not res.get("ok"):
        raise AssertionError(f"page script failed: {res.get('error')}\n"
                             f"{err.decode(errors='replace')[-3000:]}")
    return res.get("result")
