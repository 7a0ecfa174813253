#!/usr/bin/env python3
"""``make soak``: a long, bounded, loopback-only soak of one ugate process (issue #16).

One ``ugate run`` subprocess (shared port with every protocol, a dedicated h2c reverse port,
admin on a free port) in front of origins this script serves itself (an HTTP/1.1 origin that
answers ``GET /bytes/N`` with a deterministic pattern, a TCP echo). Mixed clients run at
bounded, modest rates, each checking every byte it gets back:

* ``socks5``      small asyncio SOCKS5 client → echo, 64 KiB pattern echoed and compared
* ``socks5-long`` SOCKS5 streams trickling 4 KiB every 50 ms for ~8 s (upstream kills cut them)
* ``http``        HTTP/1.1 forward proxy (absolute URI), keep-alive, ``/bytes/N`` compared
* ``h2c``         ``h2`` library, prior knowledge, reverse proxy by ``:authority``, N streams/conn
* ``hbonec``      ``h2`` library CONNECT on the shared port → echo, 64 KiB echoed and compared
* ``ssh``         OpenSSH ``ssh -W echo.test:PORT`` with a key in ``authorized_keys``

Every few minutes: floods (half-open connections, malformed handshakes, HTTP/2 rapid reset on
both HTTP/2 ports, an SSH banner flood), each from its own loopback source address
(127.0.0.2-5) so the per-source limits they trip do not touch the real clients on 127.0.0.1;
and upstream kills (the echo origin aborts every connection with RST, stops listening for 3 s,
comes back on the same port). A failed stream whose lifetime overlaps a kill window and that
went to the echo origin is "cut by design"; any other failure is unexpected.

Every minute: the gateway's RSS and open fds (/proc) and a few /metrics counters. Exit status
non-zero when a stream that should complete failed, the gateway died, RSS grew more than
--rss-bound MiB (mean of the last third vs the first third of the samples), or the fd count
after the run (floods over, clients gone) is more than --fd-bound above the first sample.

    python bench/soak.py               # 30 minutes
    python bench/soak.py --quick       # ~1 minute smoke check
    python bench/soak.py --minutes 5 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)

from ugate_core.testing import pattern, rapid_reset

ROOT = Path(__file__).resolve().parent.parent
ECHO_BYTES = 64 * 1024
HTTP_BYTES = 32 * 1024
PATTERN = pattern(ECHO_BYTES, seed=16)
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- bookkeeping
@dataclass
class Stat:
    attempted: int = 0
    completed: int = 0
    unexpected: int = 0
    cut: int = 0
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class Book:
    def __init__(self) -> None:
        self.stats: dict[str, Stat] = defaultdict(Stat)
        self.kills: list[list[float]] = []  # [start, end] (end inf while down)
        self.failures: list[str] = []

    def in_kill(self, t0: float, t1: float) -> bool:
        return any(t0 <= k1 + 0.5 and t1 >= k0 for k0, k1 in self.kills)

    def record(self, proto: str, t0: float, ok: bool, err: str = "", cuttable: bool = True,
               n: int = 1) -> None:
        st = self.stats[proto]
        st.attempted += n
        if ok:
            st.completed += n
            return
        t1 = time.monotonic()
        if cuttable and self.in_kill(t0, t1):
            st.cut += n
            return
        st.unexpected += n
        st.errors[err[:80]] += n
        if len(self.failures) < 50:
            self.failures.append(f"{time.monotonic() - T0:.1f}s {proto}: {err[:200]}")
            log(f"UNEXPECTED {proto}: {err[:200]}")


BOOK = Book()


# --------------------------------------------------------------------------- origins
class Echo:
    """TCP echo (half-closes after echoing EOF); ``kill()`` resets every connection."""

    def __init__(self) -> None:
        self.port = 0
        self.server: asyncio.Server | None = None
        self.conns: set[asyncio.StreamWriter] = set()

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.conns.add(w)
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
            w.write_eof()
            await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.conns.discard(w)
            w.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", self.port,
                                                 reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]

    async def kill(self, down: float) -> int:
        assert self.server is not None
        self.server.close()
        n = len(self.conns)
        for w in list(self.conns):
            sock = w.get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            w.transport.abort()
        await asyncio.sleep(down)
        for attempt in range(20):
            try:
                await self.start()
                break
            except OSError:
                await asyncio.sleep(0.2 * (attempt + 1))
        return n


async def http_origin(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    try:
        while True:
            try:
                head = await r.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            target = head.split(b" ", 2)[1].decode("latin-1")
            m = re.fullmatch(r"/bytes/(\d+)", target)
            body = pattern(int(m.group(1)), seed=16) if m else b"hello\n"
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            await w.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        w.close()


# --------------------------------------------------------------------------- clients
async def socks5_open(port: int, host: str, dport: int
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"\x05\x01\x00")
    if await r.readexactly(2) != b"\x05\x00":
        raise RuntimeError("socks5: method refused")
    hb = host.encode()
    w.write(b"\x05\x01\x00\x03" + bytes([len(hb)]) + hb + struct.pack("!H", dport))
    rep = await r.readexactly(4)
    if rep[1] != 0:
        w.close()
        raise RuntimeError(f"socks5: reply {rep[1]}")
    alen = {1: 4, 4: 16}.get(rep[3]) or (await r.readexactly(1))[0]
    await r.readexactly(alen + 2)
    return r, w


async def echo_through(r: asyncio.StreamReader, w: asyncio.StreamWriter, data: bytes,
                       chunk: int, pause: float) -> None:
    async def send() -> None:
        for i in range(0, len(data), chunk):
            w.write(data[i:i + chunk])
            await w.drain()
            if pause:
                await asyncio.sleep(pause)
        w.write_eof()

    sender = asyncio.ensure_future(send())
    try:
        got = bytearray()
        while chunk_in := await r.read(65536):
            got += chunk_in
        await sender
        if bytes(got) != data:
            raise RuntimeError(f"echo mismatch: {len(got)} of {len(data)} bytes"
                               f"{' (content differs)' if len(got) == len(data) else ''}")
    finally:
        sender.cancel()
        w.close()


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.quick = args.quick
        self.tmp = Path(tempfile.mkdtemp(prefix="ugate-soak-"))
        self.echo = Echo()
        self.gw: subprocess.Popen[bytes] | None = None
        self.port = self.web = self.admin = self.http = 0
        self.stop = asyncio.Event()
        self.samples: list[dict[str, Any]] = []
        self.floods: list[str] = []
        self.key = self.tmp / "client_key"

    # ---------------------------------------------------------------- setup / teardown
    async def start(self) -> None:
        await self.echo.start()
        srv = await asyncio.start_server(http_origin, "127.0.0.1", 0, limit=1 << 20)
        self.http_server = srv
        self.http = srv.sockets[0].getsockname()[1]
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",  # noqa: ASYNC221
                        str(self.key)], check=True)
        ugate = str(Path(sys.executable).parent / "ugate")
        for _attempt in range(2):
            self.port, self.web, self.admin = free_port(), free_port(), free_port()
            cfg = self.tmp / "soak.toml"
            cfg.write_text(f"""\
[admin]
listen = "127.0.0.1:{self.admin}"

[listeners.main]
listen = "127.0.0.1:{self.port}"
protocols = ["*"]
authorized_keys = "{self.key}.pub"

[listeners.web]
listen = "127.0.0.1:{self.web}"
protocols = ["http"]
mode = "reverse"

[hosts."echo.test"]
endpoints = ["127.0.0.1:{self.echo.port}"]

[hosts."web.test"]
endpoints = ["127.0.0.1:{self.http}"]
""")
            glog = open(self.tmp / "ugate.log", "ab")  # noqa: SIM115, ASYNC230 (lives with gw)
            self.gw = subprocess.Popen(  # noqa: ASYNC220
                [ugate, "--log-level", "warning", "run", "-c", str(cfg), "--state-dir",
                 str(self.tmp / "state")], stdin=subprocess.DEVNULL, stdout=glog, stderr=glog,
                start_new_session=True)
            if await self.wait_ready():
                log(f"gateway pid {self.gw.pid}: shared 127.0.0.1:{self.port}, h2c "
                    f"127.0.0.1:{self.web}, admin 127.0.0.1:{self.admin}; echo "
                    f"{self.echo.port}, http {self.http}; logs {self.tmp}/ugate.log")
                return
            self.kill_gateway()
        raise SystemExit(f"soak: gateway did not start: {self.log_tail()}")

    def log_tail(self, n: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return (self.tmp / "ugate.log").read_text(errors="replace")[-n:]
        return ""

    async def wait_ready(self) -> bool:
        for _ in range(200):
            if self.gw is None or self.gw.poll() is not None:
                return False
            with contextlib.suppress(OSError, RuntimeError, asyncio.TimeoutError):
                st, _ = await self.admin_get("/readyz")
                if st == 200:
                    return True
            await asyncio.sleep(0.1)
        return False

    def kill_gateway(self) -> None:
        p, self.gw = self.gw, None
        if p is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)

    async def admin_get(self, path: str) -> tuple[int, bytes]:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.admin), 5)
        try:
            w.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.admin}\r\n"
                    "Connection: close\r\n\r\n".encode())
            data = await asyncio.wait_for(r.read(-1), 10)
        finally:
            w.close()
        head, _, body = data.partition(b"\r\n\r\n")
        if not head:
            raise RuntimeError("admin: empty answer")
        return int(head.split()[1]), body

    # ---------------------------------------------------------------- loops
    def running(self, deadline: float) -> bool:
        return not self.stop.is_set() and time.monotonic() < deadline

    async def pace(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def loop_socks5(self, deadline: float, max_n: int) -> None:
        n = 0
        while self.running(deadline) and n < max_n:
            n += 1
            t0 = time.monotonic()
            try:
                async with asyncio.timeout(30):
                    r, w = await socks5_open(self.port, "echo.test", self.echo.port)
                    await echo_through(r, w, PATTERN, 16384, 0.002)
                BOOK.record("socks5", t0, True)
            except Exception as e:
                BOOK.record("socks5", t0, False, f"{type(e).__name__}: {e}")
            await self.pace(0.1)

    async def loop_socks5_long(self, deadline: float, max_n: int) -> None:
        n = 0
        data = pattern(4096 * 160, seed=7)  # 160 x 4 KiB, one per 50 ms: ~8 s
        while self.running(deadline) and n < max_n:
            n += 1
            t0 = time.monotonic()
            try:
                async with asyncio.timeout(60):
                    r, w = await socks5_open(self.port, "echo.test", self.echo.port)
                    await echo_through(r, w, data, 4096, 0.05)
                BOOK.record("socks5-long", t0, True)
            except Exception as e:
                BOOK.record("socks5-long", t0, False, f"{type(e).__name__}: {e}")
            await self.pace(0.2)

    async def loop_http(self, deadline: float, max_n: int) -> None:
        n = 0
        want = pattern(HTTP_BYTES, seed=16)
        while self.running(deadline) and n < max_n:
            t0 = time.monotonic()
            done = 0
            try:
                async with asyncio.timeout(30):
                    r, w = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
                    try:
                        for _ in range(5):  # 5 requests per keep-alive connection
                            n += 1
                            w.write(f"GET http://web.test:{self.http}/bytes/{HTTP_BYTES} "
                                    f"HTTP/1.1\r\nHost: web.test:{self.http}\r\n\r\n".encode())
                            head = await r.readuntil(b"\r\n\r\n")
                            if not head.startswith(b"HTTP/1.1 200"):
                                raise RuntimeError(f"status {head[:40]!r}")
                            m = re.search(rb"(?i)content-length:\s*(\d+)", head)
                            body = await r.readexactly(int(m.group(1)) if m else 0)
                            if body != want:
                                raise RuntimeError(f"body mismatch ({len(body)} bytes)")
                            done += 1
                            BOOK.record("http", t0, True, cuttable=False)
                            await self.pace(0.05)
                    finally:
                        w.close()
            except Exception as e:
                BOOK.record("http", t0, False, f"{type(e).__name__}: {e}", cuttable=False)
            await self.pace(0.05)

    async def loop_h2c(self, deadline: float, max_n: int) -> None:
        n = 0
        want = pattern(HTTP_BYTES, seed=16)
        while self.running(deadline) and n < max_n:
            t0 = time.monotonic()
            try:
                async with asyncio.timeout(30):
                    c = await H2Client.open(self.web)
                    try:
                        for _ in range(4):  # 4 rounds of 5 concurrent streams per connection
                            n += 5
                            hdrs = [(":method", "GET"), (":scheme", "http"),
                                    (":authority", f"web.test:{self.http}"),
                                    (":path", f"/bytes/{HTTP_BYTES}")]
                            res = await asyncio.gather(*(c.request(hdrs, None)
                                                         for _ in range(5)),
                                                       return_exceptions=True)
                            for x in res:
                                t = time.monotonic()
                                if isinstance(x, BaseException):
                                    BOOK.record("h2c", t0, False, f"{type(x).__name__}: {x}",
                                                cuttable=False)
                                elif x[0] != "200" or x[1] != want:
                                    BOOK.record("h2c", t0, False,
                                                f"status {x[0]} / {len(x[1])} bytes",
                                                cuttable=False)
                                else:
                                    BOOK.record("h2c", t, True)
                            await self.pace(0.2)
                    finally:
                        c.close()
            except Exception as e:
                BOOK.record("h2c", t0, False, f"conn {type(e).__name__}: {e}", cuttable=False)
            await self.pace(0.1)

    async def loop_hbonec(self, deadline: float, max_n: int) -> None:
        n = 0
        while self.running(deadline) and n < max_n:
            t0 = time.monotonic()
            try:
                async with asyncio.timeout(40):
                    c = await H2Client.open(self.port)
                    try:
                        for _ in range(4):  # 4 rounds of 4 concurrent tunnels
                            n += 4
                            t1 = time.monotonic()
                            hdrs = [(":method", "CONNECT"),
                                    (":authority", f"echo.test:{self.echo.port}")]
                            res = await asyncio.gather(*(c.request(hdrs, PATTERN)
                                                         for _ in range(4)),
                                                       return_exceptions=True)
                            for x in res:
                                if isinstance(x, BaseException):
                                    BOOK.record("hbonec", t1, False, f"{type(x).__name__}: {x}")
                                elif x[0] != "200" or x[1] != PATTERN:
                                    BOOK.record("hbonec", t1, False,
                                                f"status {x[0]} / {len(x[1])} bytes")
                                else:
                                    BOOK.record("hbonec", t1, True)
                            await self.pace(0.2)
                    finally:
                        c.close()
            except Exception as e:
                BOOK.record("hbonec", t0, False, f"conn {type(e).__name__}: {e}")
            await self.pace(0.1)

    async def loop_ssh(self, deadline: float, max_n: int) -> None:
        n = 0
        cmd = ["ssh", "-F", "/dev/null", "-p", str(self.port), "-i", str(self.key),
               "-o", "IdentitiesOnly=yes", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "StrictHostKeyChecking=no", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
               "-o", "ConnectTimeout=20", "-W", f"echo.test:{self.echo.port}",
               "soak@127.0.0.1"]
        while self.running(deadline) and n < max_n:
            n += 1
            t0 = time.monotonic()
            cmd[-2] = f"echo.test:{self.echo.port}"
            p = await asyncio.create_subprocess_exec(
                *cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True)
            try:
                out, err = await asyncio.wait_for(p.communicate(PATTERN), 40)
                if p.returncode == 0 and out == PATTERN:
                    BOOK.record("ssh", t0, True)
                else:
                    BOOK.record("ssh", t0, False, f"exit {p.returncode}, {len(out)} bytes: "
                                f"{err.decode(errors='replace').strip()[-150:]}")
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                await p.wait()
                BOOK.record("ssh", t0, False, "ssh timed out after 40 s")
            await self.pace(1.5)

    # ---------------------------------------------------------------- floods and kills
    async def flood(self, i: int) -> None:
        t0 = time.monotonic()
        res = await asyncio.gather(self.half_open(), self.malformed(), self.banner_flood(),
                                   self.rapid(), return_exceptions=True)
        line = f"flood {i}: " + "; ".join(
            f"{type(x).__name__}: {x}" if isinstance(x, BaseException) else str(x) for x in res)
        self.floods.append(line + f" ({time.monotonic() - t0:.1f}s)")
        log(line)

    async def _conn_from(self, src: str, port: int) -> tuple[asyncio.StreamReader,
                                                             asyncio.StreamWriter]:
        return await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", port, local_addr=(src, 0)), 5)

    async def _until_closed(self, r: asyncio.StreamReader, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                while await r.read(4096):
                    pass
            return True
        except (ConnectionError, OSError):
            return True
        except TimeoutError:
            return False

    async def half_open(self, n: int = 150) -> str:
        """n connections that send nothing or a partial first line: the gateway must close
        each at sniff_timeout / handshake_timeout."""
        starts = [b"", b"\x05", b"GET / HT", b"SSH-2.", b"PRI * HTTP/2.0\r\n"]
        conns = []
        for k in range(n):
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                r, w = await self._conn_from("127.0.0.2", self.port)
                if starts[k % len(starts)]:
                    w.write(starts[k % len(starts)])
                conns.append((r, w))
        closed = await asyncio.gather(*(self._until_closed(r, 25) for r, _ in conns))
        for _, w in conns:
            w.close()
        return f"half-open {sum(closed)}/{len(conns)} closed by gateway"

    async def malformed(self, n: int = 100) -> str:
        bad = [b"\x05\x00", b"\x05\x01\x00\x05\x01\x00\x09" + b"x" * 40,
               b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00", b"GET http://[::1 HTTP/1.1\r\n\r\n",
               b"CONNECT :99999 HTTP/1.1\r\n\r\n", b"SSH-2.0-x\r\n" + os.urandom(64),
               b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + os.urandom(64), os.urandom(200),
               b"\x16\x03\x01\x00\x05hello", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"]
        closed = 0
        sem = asyncio.Semaphore(20)

        async def one(k: int) -> bool:
            async with sem:
                try:
                    r, w = await self._conn_from("127.0.0.3", self.port)
                except (TimeoutError, OSError):
                    return False
                try:
                    w.write(bad[k % len(bad)])
                    return await self._until_closed(r, 15)
                finally:
                    w.close()

        closed = sum(await asyncio.gather(*(one(k) for k in range(n))))
        return f"malformed {closed}/{n} closed"

    async def banner_flood(self, n: int = 40) -> str:
        conns = []
        for _ in range(n):
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                r, w = await self._conn_from("127.0.0.4", self.port)
                w.write(b"SSH-2.0-flood_1.0\r\n")
                conns.append((r, w))
        closed = await asyncio.gather(*(self._until_closed(r, 25) for r, _ in conns))
        for _, w in conns:
            w.close()
        return f"ssh banner {sum(closed)}/{len(conns)} closed"

    async def rapid(self) -> str:
        a = await rapid_reset(self.web, 3000, [
            (b":method", b"GET"), (b":scheme", b"http"),
            (b":authority", f"web.test:{self.http}".encode()), (b":path", b"/bytes/10")],
            timeout=20)
        b = await rapid_reset(self.port, 3000, [
            (b":method", b"CONNECT"), (b":authority", f"echo.test:{self.echo.port}".encode())],
            timeout=20)
        return (f"rapid reset h2c sent {a.sent} goaway {a.goaway}, hbonec sent {b.sent} "
                f"goaway {b.goaway}")

    async def kill_upstream(self, i: int) -> None:
        k = [time.monotonic(), float("inf")]
        BOOK.kills.append(k)
        n = await self.echo.kill(3.0)
        k[1] = time.monotonic()
        log(f"upstream kill {i}: echo origin reset {n} connections, down {k[1] - k[0]:.1f}s")

    async def chaos(self, deadline: float) -> None:
        flood_every, kill_every = (20, 25) if self.quick else (180, 240)
        next_flood = time.monotonic() + (10 if self.quick else 60)
        next_kill = time.monotonic() + (15 if self.quick else 120)
        i = j = 0
        while self.running(deadline - (10 if self.quick else 45)):
            now = time.monotonic()
            if now >= next_flood:
                i += 1
                await self.flood(i)
                next_flood = time.monotonic() + flood_every
            elif now >= next_kill:
                j += 1
                await self.kill_upstream(j)
                next_kill = time.monotonic() + kill_every
            await self.pace(1)

    # ---------------------------------------------------------------- sampling
    def proc_sample(self) -> tuple[float, int]:
        assert self.gw is not None
        rss = 0.0
        with open(f"/proc/{self.gw.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
        return rss, len(os.listdir(f"/proc/{self.gw.pid}/fd"))

    async def metrics(self) -> dict[str, float]:
        want = ("ugate_connections_total", "ugate_streams_total", "ugate_streams_active",
                "ugate_rejections_total", "ugate_dial_errors_total", "ugate_relay_bytes_total")
        out: dict[str, float] = defaultdict(float)
        st, body = await self.admin_get("/metrics")
        if st != 200:
            raise RuntimeError(f"/metrics {st}")
        for line in body.decode(errors="replace").splitlines():
            if line.startswith("#"):
                continue
            name = re.split(r"[{ ]", line, maxsplit=1)[0]
            if name in want:
                with contextlib.suppress(ValueError):
                    out[name.removeprefix("ugate_").removesuffix("_total")] += float(
                        line.rsplit(" ", 1)[1])
        return dict(out)

    async def sample(self, tag: str = "") -> None:
        if self.gw is None or self.gw.poll() is not None:
            return
        rss, fds = self.proc_sample()
        try:
            m = await self.metrics()
        except Exception as e:
            m = {"error": str(e)}  # type: ignore[dict-item]
        s = {"t": round(time.monotonic() - T0, 1), "rss_mb": round(rss, 1), "fds": fds,
             "tag": tag, **m}
        self.samples.append(s)
        done = {p: (st.completed, st.unexpected, st.cut) for p, st in sorted(BOOK.stats.items())}
        log(f"sample{(' ' + tag) if tag else ''}: rss {rss:.1f} MiB, fds {fds}, "
            f"metrics {m}; ok/unexpected/cut {done}")

    async def sampler(self, deadline: float) -> None:
        every = 10 if self.quick else 60
        while self.running(deadline):
            await self.pace(every)
            if self.running(deadline):
                await self.sample()

    # ---------------------------------------------------------------- run
    async def run(self) -> int:
        await self.start()
        await asyncio.sleep(1)
        await self.sample("start")
        dur = 60.0 if self.quick else self.a.minutes * 60
        deadline = time.monotonic() + dur
        cap = int(dur * 40) + 100  # per-loop count bounds (rates are well below them)
        loops = [
            self.loop_socks5(deadline, cap), self.loop_socks5(deadline, cap),
            self.loop_socks5_long(deadline, cap), self.loop_socks5_long(deadline, cap),
            self.loop_http(deadline, cap * 5), self.loop_h2c(deadline, cap * 5),
            self.loop_hbonec(deadline, cap * 4), self.loop_ssh(deadline, cap),
            self.chaos(deadline), self.sampler(deadline), self.watch_gateway(deadline),
        ]
        tasks = [asyncio.ensure_future(x) for x in loops]
        try:
            async with asyncio.timeout(dur + 240):
                await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(5)  # floods and streams gone: what stays is a leak
        await self.sample("end")
        rc = self.summary(dur)
        # stop the gateway first, so the origins' handlers end on EOF, not by cancellation
        await asyncio.get_running_loop().run_in_executor(None, self.kill_gateway)
        self.http_server.close()
        if self.echo.server is not None:
            self.echo.server.close()
        await asyncio.sleep(0.5)
        return rc

    async def watch_gateway(self, deadline: float) -> None:
        while self.running(deadline):
            if self.gw is None or self.gw.poll() is not None:
                rc = None if self.gw is None else self.gw.returncode
                BOOK.failures.append(f"gateway exited ({rc}): {self.log_tail(800)}")
                log(f"GATEWAY DIED (exit {rc}): {self.log_tail(800)}")
                self.stop.set()
                return
            await self.pace(1)

    def summary(self, dur: float) -> int:
        bad: list[str] = []
        print("\n== soak summary ==")
        alive = self.gw is not None and self.gw.poll() is None
        print(f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
              f"duration {dur / 60:.1f} min, gateway alive: {alive}")
        print(f"{'protocol':<12} {'attempted':>9} {'completed':>9} {'unexpected':>10} "
              f"{'cut':>5}")
        for p, st in sorted(BOOK.stats.items()):
            print(f"{p:<12} {st.attempted:>9} {st.completed:>9} {st.unexpected:>10} "
                  f"{st.cut:>5}")
            if st.unexpected:
                bad.append(f"{p}: {st.unexpected} unexpected failures: {dict(st.errors)}")
        print(f"upstream kills {len(BOOK.kills)}, floods {len(self.floods)}")
        for f in self.floods:
            print("  " + f)
        rss = [s["rss_mb"] for s in self.samples]
        fds = [s["fds"] for s in self.samples]
        if rss:
            third = max(1, len(rss) // 3)
            first, last = sum(rss[:third]) / third, sum(rss[-third:]) / third
            print(f"RSS MiB min {min(rss)} max {max(rss)} last {rss[-1]}; mean first third "
                  f"{first:.1f} → last third {last:.1f} ({last - first:+.1f})")
            print(f"fds min {min(fds)} max {max(fds)} first {fds[0]} last {fds[-1]}")
            print("samples (t s: rss MiB / fds): " + ", ".join(
                f"{s['t']:.0f}: {s['rss_mb']}/{s['fds']}" for s in self.samples))
            if last - first > self.a.rss_bound:
                bad.append(f"RSS grew {last - first:.1f} MiB > {self.a.rss_bound}")
            if fds[-1] > fds[0] + self.a.fd_bound:
                bad.append(f"fds {fds[0]} → {fds[-1]} (> +{self.a.fd_bound})")
        if self.gw is None or self.gw.poll() is not None:
            bad.append("the gateway is not running at the end")
        glog = self.log_tail(1 << 24)
        tb = glog.count("Traceback")
        errs = sum(1 for ln in glog.splitlines() if " ERROR " in ln or "CRITICAL" in ln)
        print(f"gateway log (level warning): {len(glog.splitlines())} lines, {errs} error lines, "
              f"{tb} tracebacks")
        if tb:
            bad.append(f"{tb} tracebacks in the gateway log ({self.tmp}/ugate.log)")
            self.a.keep = True
        bad += [f for f in BOOK.failures if f.startswith("gateway exited")]
        if BOOK.failures:
            print("first unexpected failures:")
            for f in BOOK.failures[:20]:
                print("  " + f)
        print("RESULT: " + ("FAIL: " + "; ".join(bad) if bad else "PASS"))
        if self.a.json:
            Path(self.a.json).write_text(json.dumps({
                "duration_s": dur, "stats": {p: {k: v for k, v in vars(st).items()}
                                             for p, st in BOOK.stats.items()},
                "samples": self.samples, "floods": self.floods,
                "kills": len(BOOK.kills), "failures": BOOK.failures, "bad": bad}, indent=1))
        return 1 if bad else 0

    def cleanup(self) -> None:
        self.kill_gateway()
        if not self.a.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)


class H2Client:
    """One h2c connection (prior knowledge) with concurrent request streams."""

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w
        self.c = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.streams: dict[int, dict[str, Any]] = {}
        self.window = asyncio.Event()
        self.dead: str = ""
        self.reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, port: int) -> H2Client:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        self = cls(r, w)
        self.c.initiate_connection()
        self.c.increment_flow_control_window(1 << 24)
        self.flush()
        self.reader = asyncio.ensure_future(self.read())
        return self

    def flush(self) -> None:
        if data := self.c.data_to_send():
            self.w.write(data)

    async def read(self) -> None:
        try:
            while data := await self.r.read(65536):
                for ev in self.c.receive_data(data):
                    sid = getattr(ev, "stream_id", 0)
                    st = self.streams.get(sid)
                    if isinstance(ev, ResponseReceived) and st:
                        st["status"] = dict(ev.headers).get(":status", "")
                    elif isinstance(ev, DataReceived):
                        self.c.acknowledge_received_data(ev.flow_controlled_length, sid)
                        if st:
                            st["body"] += ev.data
                    elif isinstance(ev, StreamEnded) and st:
                        st["done"].set()
                    elif isinstance(ev, StreamReset) and st:
                        st["err"] = f"stream reset {ev.error_code!r}"
                        st["done"].set()
                    elif isinstance(ev, WindowUpdated):
                        self.window.set()
                    elif isinstance(ev, ConnectionTerminated):
                        self.dead = f"GOAWAY {ev.error_code!r}"
                self.flush()
                self.window.set()
            self.dead = self.dead or "connection closed"
        except Exception as e:
            self.dead = f"{type(e).__name__}: {e}"
        finally:
            self.dead = self.dead or "connection closed"
            for st in self.streams.values():
                st["done"].set()
            self.window.set()

    async def request(self, headers: list[tuple[str, str]], body: bytes | None
                      ) -> tuple[str, bytes]:
        if self.dead:
            raise RuntimeError(self.dead)
        sid = self.c.get_next_available_stream_id()
        st: dict[str, Any] = {"status": "", "body": bytearray(), "done": asyncio.Event(),
                              "err": ""}
        self.streams[sid] = st
        try:
            self.c.send_headers(sid, headers, end_stream=body is None)
            self.flush()
            if body is not None:
                off = 0
                while off < len(body):
                    if self.dead or st["done"].is_set():
                        break
                    room = min(self.c.local_flow_control_window(sid),
                               self.c.max_outbound_frame_size, len(body) - off)
                    if room <= 0:
                        self.window.clear()
                        await self.window.wait()
                        continue
                    self.c.send_data(sid, body[off:off + room])
                    off += room
                    self.flush()
                    await self.w.drain()
                if not self.dead and not st["done"].is_set():
                    self.c.end_stream(sid)
                    self.flush()
            await st["done"].wait()
            if st["err"]:
                raise RuntimeError(st["err"])
            if self.dead and not st["done"].is_set():
                raise RuntimeError(self.dead)
            return st["status"], bytes(st["body"])
        finally:
            self.streams.pop(sid, None)

    def close(self) -> None:
        if self.reader:
            self.reader.cancel()
        with contextlib.suppress(Exception):
            self.c.close_connection()
            self.flush()
        self.w.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--quick", action="store_true", help="~1 minute smoke check")
    ap.add_argument("--rss-bound", type=float, default=100.0,
                    help="MiB the last third's mean RSS may exceed the first third's")
    ap.add_argument("--fd-bound", type=int, default=30,
                    help="fds the final count may exceed the first sample")
    ap.add_argument("--json", default="", help="also write the results to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (gateway log)")
    args = ap.parse_args()
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            raise SystemExit(f"soak: {tool} is needed (apt-get install -y openssh-client)")
    soak = Soak(args)

    async def go() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, soak.stop.set)
        return await soak.run()

    try:
        return asyncio.run(go())
    finally:
        soak.cleanup()


if __name__ == "__main__":
    sys.exit(main())
