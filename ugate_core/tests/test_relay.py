"""The relay: bytes, half-close, backpressure, splice and its fallbacks, timeouts, fds.

Harness: a relay between two kernel TCP sockets, and blocking peers.

The client and the upstream run in threads with blocking sockets (fast, and independent of the
loop under test); the loop runs only the relay. ``run_on(loop_name, coro)`` runs a scenario on
the stock asyncio loop or on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib
import logging
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ugate_core.relay import RelayStats, relay
from ugate_core.stream import TcpStream, stream_pair
from ugate_core.testing import pattern

# ``ugate_core.relay`` the attribute is the function; the module is reached by name
relay_mod = importlib.import_module("ugate_core.relay")
splice_mod = importlib.import_module("ugate_core.splice")

T = TypeVar("T")

try:
    import uvloop

    LOOPS = ["asyncio", "uvloop"]
except ImportError:  # pragma: no cover
    LOOPS = ["asyncio"]


def run_on(loop_name: str, coro: Coroutine[Any, Any, T]) -> T:
    factory = uvloop.new_event_loop if loop_name == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as r:
        return r.run(coro)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class _Accepted(TcpStream):
    def __init__(self, on_made: Callable[[TcpStream], None]) -> None:
        super().__init__()
        self._on_made = on_made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._on_made(self)


class RelayProxy:
    """Accepts on 127.0.0.1:0, dials ``upstream`` per connection and relays."""

    def __init__(self, upstream: tuple[str, int], **relay_kw: Any) -> None:
        self.upstream = upstream
        self.relay_kw = relay_kw
        self.results: list[RelayStats] = []
        self.live: list[RelayStats] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> RelayProxy:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _Accepted(self._spawn), "127.0.0.1", 0, backlog=1024)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    def _spawn(self, s: TcpStream) -> None:
        t = asyncio.get_running_loop().create_task(self._handle(s))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def _handle(self, s: TcpStream) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, up = await loop.create_connection(TcpStream, *self.upstream)
        except OSError:
            s.abort()
            return
        st = RelayStats()
        self.live.append(st)
        await relay(s, up, stats=st, **self.relay_kw)
        self.results.append(st)

    async def wait_results(self, n: int, timeout: float = 10) -> list[RelayStats]:
        for _ in range(int(timeout / 0.01)):
            if len(self.results) >= n:
                return self.results
            await asyncio.sleep(0.01)
        raise AssertionError(f"{len(self.results)} of {n} relays ended within {timeout}s")


class ThreadServer:
    """A blocking TCP server on 127.0.0.1:0; ``handler(conn)`` runs in a thread per client."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self.handler = handler
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self.errors: list[BaseException] = []
        self.conns: list[socket.socket] = []
        self._t = threading.Thread(target=self._accept, daemon=True)
        self._t.start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c: socket.socket) -> None:
        try:
            self.handler(c)
        except OSError:
            pass
        except BaseException as e:  # surfaced by the test
            self.errors.append(e)
        finally:
            c.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._t.join(5)
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()


def echo_handler(c: socket.socket) -> None:
    """Echo until EOF, then half-close (the client still reads everything)."""
    buf = bytearray(1 << 18)
    view = memoryview(buf)
    while True:
        n = c.recv_into(buf)
        if not n:
            break
        c.sendall(view[:n])
    c.shutdown(socket.SHUT_WR)


def send_all_then_eof(c: socket.socket, data: bytes, chunk: int = 1 << 18) -> None:
    view = memoryview(data)
    for i in range(0, len(data), chunk):
        c.sendall(view[i:i + chunk])
    c.shutdown(socket.SHUT_WR)


def recv_verify(c: socket.socket, expected: bytes) -> int:
    """Read to EOF; raise at the first byte that differs from ``expected``."""
    buf = bytearray(1 << 18)
    exp = memoryview(expected)
    got = 0
    while True:
        n = c.recv_into(buf)
        if not n:
            break
        if got + n > len(expected) or buf[:n] != exp[got:got + n]:
            raise AssertionError(f"bytes differ in the {n}-byte chunk at offset {got}")
        got += n
    return got


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    for _ in range(int(timeout / 0.01) + 1):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what}: not within {timeout}s")


Scenario = Callable[[], Awaitable[None]]


# ====================================================================== tests
MiB = 1 << 20
MODES = ["off", "always", "auto"]


@pytest.fixture
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    m: str = request.param
    monkeypatch.setattr(relay_mod.settings, "splice", m)
    monkeypatch.setattr(relay_mod.settings, "splice_after", MiB)
    monkeypatch.setattr(relay_mod.settings, "splice_chunk", 0)  # any chunk size switches
    return m


def expected_spliced(mode: str, carried: tuple[int, int]) -> int:
    if mode == "off" or not splice_mod.AVAILABLE:
        return 0
    if mode == "always":
        return 2
    return sum(1 for n in carried if n >= MiB)


async def echo_roundtrip(port: int, data: bytes) -> None:
    def client() -> int:
        with socket.create_connection(("127.0.0.1", port)) as c:
            t = threading.Thread(target=send_all_then_eof, args=(c, data))
            t.start()
            got = recv_verify(c, data)
            t.join()
            return got

    assert await in_thread(client) == len(data)


@pytest.mark.parametrize("mode", MODES, indirect=True)
@pytest.mark.parametrize("loop_name", LOOPS)
def test_100mib_both_ways_verified(loop_name: str, mode: str) -> None:
    """100 MiB each way through the relay, every byte compared; the client half-closes."""
    data = pattern(100 * MiB, seed=7)

    async def scenario() -> None:
        up = ThreadServer(echo_handler)
        try:
            async with RelayProxy(up.address) as px:
                await asyncio.wait_for(echo_roundtrip(px.port, data), 120)
                (st,) = await px.wait_results(1)
        finally:
            up.close()
        assert not up.errors
        assert (st.end, st.up, st.down) == ("done", len(data), len(data))
        assert st.spliced == expected_spliced(mode, (st.up, st.down))

    run_on(loop_name, scenario())


@pytest.mark.parametrize("mode", MODES, indirect=True)
@pytest.mark.parametrize("loop_name", LOOPS)
def test_half_close_reply_after_client_eof(loop_name: str, mode: str) -> None:
    """The upstream answers only after the client's FIN; the whole answer still arrives."""
    request = pattern(3 * MiB, seed=1)
    reply = pattern(5 * MiB, seed=2)

    def upstream(c: socket.socket) -> None:
        assert recv_verify(c, request) == len(request)
        send_all_then_eof(c, reply)

    def client(port: int) -> int:
        with socket.create_connection(("127.0.0.1", port)) as c:
            send_all_then_eof(c, request)
            return recv_verify(c, reply)

    async def scenario() -> None:
        up = ThreadServer(upstream)
        try:
            async with RelayProxy(up.address) as px:
                got = await asyncio.wait_for(in_thread(client, px.port), 60)
                (st,) = await px.wait_results(1)
        finally:
            up.close()
        assert not up.errors
        assert got == len(reply)
        assert (st.end, st.up, st.down) == ("done", len(request), len(reply))
        assert st.spliced == expected_spliced(mode, (st.up, st.down))

    run_on(loop_name, scenario())


@pytest.mark.parametrize(("loop_name", "mode", "direction"), [
    ("asyncio", "off", "up"), (LOOPS[-1], "off", "up"), (LOOPS[-1], "auto", "up"),
    (LOOPS[-1], "off", "down")], indirect=["mode"])
def test_backpressure_stalled_reader_bounds_memory(loop_name: str, mode: str,
                                                   direction: str) -> None:
    """512 MiB pushed at a reader that stalls 4 s: the relay's RSS grows by < 32 MiB.
    ``up``: the client pushes, the upstream stalls; ``down``: the other way round."""
    total = 512 * MiB
    stall = 4.0
    block = pattern(MiB, seed=3)
    pushed: list[int] = []

    def staller(c: socket.socket) -> int:
        time.sleep(stall)
        buf = bytearray(1 << 18)
        n = 0
        while k := c.recv_into(buf):
            n += k
        c.sendall(struct.pack("!Q", n))
        c.shutdown(socket.SHUT_WR)
        return n

    def pusher(c: socket.socket) -> None:
        for _ in range(total // MiB):
            c.sendall(block)
        c.shutdown(socket.SHUT_WR)
        got = b""
        while len(got) < 8 and (k := c.recv(8 - len(got))):
            got += k
        pushed.append(int(struct.unpack("!Q", got)[0]))

    def upstream(c: socket.socket) -> None:
        if direction == "up":
            staller(c)
        else:
            pusher(c)

    def client(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as c:
            if direction == "up":
                pusher(c)
            else:
                staller(c)

    async def scenario() -> None:
        up = ThreadServer(upstream)
        try:
            async with RelayProxy(up.address) as px:
                base = rss_bytes()
                fut = asyncio.ensure_future(in_thread(client, px.port))
                peak = base
                t0 = time.monotonic()
                while time.monotonic() - t0 < stall - 0.3:
                    peak = max(peak, rss_bytes())
                    await asyncio.sleep(0.05)
                await asyncio.wait_for(fut, 120)
                (st,) = await px.wait_results(1)
        finally:
            up.close()
        assert not up.errors
        assert pushed == [total]  # the stalled side counted every byte
        assert st.end == "done", (st.end, st.up, st.down)
        assert (st.up if direction == "up" else st.down) == total, (st.up, st.down)
        assert peak - base < 32 * MiB, f"RSS grew {(peak - base) / MiB:.1f} MiB while stalled"

    run_on(loop_name, scenario())


@pytest.mark.parametrize("loop_name", LOOPS)
def test_auto_keeps_chatty_flows_on_copy_path(loop_name: str) -> None:
    """``auto`` splices bulk flows only: 3 MiB as 4 KiB request/answer rounds stay on copy."""
    msg = pattern(4096, seed=10)
    rounds = 3 * MiB // len(msg)

    def client(port: int) -> int:
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(rounds):
                c.sendall(msg)
                got = b""
                while len(got) < len(msg):
                    got += c.recv(len(msg) - len(got))
                assert got == msg
            c.shutdown(socket.SHUT_WR)
            return len(c.recv(1))

    def bulk(port: int) -> None:
        data = pattern(3 * MiB, seed=11)
        with socket.create_connection(("127.0.0.1", port)) as c:
            t = threading.Thread(target=send_all_then_eof, args=(c, data))
            t.start()
            assert recv_verify(c, data) == len(data)
            t.join()

    async def scenario() -> None:
        assert relay_mod.settings.splice == "auto"
        up = ThreadServer(echo_handler)
        try:
            async with RelayProxy(up.address) as px:
                assert await asyncio.wait_for(in_thread(client, px.port), 60) == 0
                await asyncio.wait_for(in_thread(bulk, px.port), 60)
                chatty, big = await px.wait_results(2)
        finally:
            up.close()
        assert chatty.up == chatty.down == rounds * len(msg)
        assert chatty.spliced == 0
        assert big.spliced == (2 if splice_mod.AVAILABLE else 0)

    run_on(loop_name, scenario())


@pytest.mark.parametrize("loop_name", LOOPS)
def test_fallback_when_splice_unavailable(loop_name: str, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    """No splice(2) (not Linux), or no pipe to be had: the copy path carries the bytes."""
    monkeypatch.setattr(relay_mod.settings, "splice", "always")
    data = pattern(8 * MiB, seed=4)

    def no_pipe() -> tuple[int, int, int]:
        raise OSError(24, "Too many open files")

    async def one(expect_spliced: int) -> None:
        up = ThreadServer(echo_handler)
        try:
            async with RelayProxy(up.address) as px:
                await asyncio.wait_for(echo_roundtrip(px.port, data), 60)
                (st,) = await px.wait_results(1)
        finally:
            up.close()
        assert (st.end, st.up, st.down, st.spliced) == ("done", len(data), len(data),
                                                         expect_spliced)

    async def scenario() -> None:
        await one(expected_spliced("always", (0, 0)))  # warm-up: the loop's executor, ...
        base = fd_count()
        await one(expected_spliced("always", (0, 0)))
        monkeypatch.setattr(splice_mod, "_open_pipe", no_pipe)
        await one(0)
        monkeypatch.setattr(splice_mod, "AVAILABLE", False)
        await one(0)
        await asyncio.sleep(0.05)
        assert fd_count() == base

    run_on(loop_name, scenario())


async def test_memory_stream_never_spliced(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Stream that is not a plain kernel socket (here in-memory) takes the copy path."""
    monkeypatch.setattr(relay_mod.settings, "splice", "always")
    a, client = stream_pair()
    b, server = stream_pair()
    task = asyncio.ensure_future(relay_mod.relay(a, b))
    client.write(b"x" * 100_000)
    client.write_eof()
    assert await server.readexactly(100_000) == b"x" * 100_000
    server.write(b"reply")
    server.write_eof()
    assert await client.readexactly(5) == b"reply"
    st = await asyncio.wait_for(task, 5)
    assert (st.end, st.up, st.down, st.spliced) == ("done", 100_000, 5, 0)


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cp, kp = tmp / "c.pem", tmp / "k.pem"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return cp, kp


@pytest.mark.parametrize("loop_name", LOOPS)
def test_tls_stream_takes_copy_path(loop_name: str, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A TcpStream under asyncio TLS has a raw socket underneath: it must not be spliced."""
    monkeypatch.setattr(relay_mod.settings, "splice", "always")
    cp, kp = _self_signed(tmp_path)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cp, kp)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    data = pattern(2 * MiB, seed=5)

    def client(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                cctx.wrap_socket(raw) as c:
            c.sendall(data)
            out = bytearray()
            while len(out) < len(data):
                k = c.recv(1 << 16)
                if not k:
                    break
                out += k
            return bytes(out)

    async def scenario() -> None:
        up = ThreadServer(echo_handler)
        results: list[RelayStats] = []
        tasks: list[asyncio.Task[None]] = []

        async def handle(s: TcpStream) -> None:
            assert s.raw_fd() is None
            loop = asyncio.get_running_loop()
            _, b = await loop.create_connection(TcpStream, *up.address)
            assert b.raw_fd() is not None
            results.append(await relay(s, b, total_timeout=30))

        def made(s: TcpStream) -> None:
            tasks.append(loop.create_task(handle(s)))

        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Accepted(made), "127.0.0.1", 0, ssl=sctx)
        try:
            port = server.sockets[0].getsockname()[1]
            got = await asyncio.wait_for(in_thread(client, port), 60)
            await wait_for(lambda: bool(results), 10, "relay end")
        finally:
            server.close()
            up.close()
        assert got == data
        assert results[0].spliced == 0 and results[0].up == len(data)

    run_on(loop_name, scenario())


@pytest.mark.parametrize("mode", ["off", "always"], indirect=True)
@pytest.mark.parametrize("loop_name", LOOPS)
def test_idle_and_total_timeouts(loop_name: str, mode: str) -> None:
    """Silence ends a relay after idle_timeout; a trickle keeps it; total_timeout caps it."""
    first = pattern(2 * MiB, seed=6)

    def client_then_silent(port: int) -> tuple[int, float]:
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(first)
            n = 0
            while n < len(first):
                n += len(c.recv(1 << 18))
            t0 = time.monotonic()
            c.settimeout(10)
            try:
                while c.recv(1 << 16):
                    pass
            except ConnectionResetError:
                pass
            return n, time.monotonic() - t0

    def trickle(port: int) -> int:
        with socket.create_connection(("127.0.0.1", port)) as c:
            for _ in range(10):
                c.sendall(b"x")
                assert c.recv(1) == b"x"
                time.sleep(0.1)
            c.shutdown(socket.SHUT_WR)
            return len(c.recv(10))

    async def scenario() -> None:
        up = ThreadServer(echo_handler)
        try:
            async with RelayProxy(up.address, idle_timeout=0.3) as px:
                n, quiet = await asyncio.wait_for(in_thread(client_then_silent, px.port), 20)
                assert n == len(first)
                assert 0.2 < quiet < 2.0, quiet
                assert await asyncio.wait_for(in_thread(trickle, px.port), 20) == 0
                idle, kept = await px.wait_results(2)
                assert idle.end == "idle" and kept.end == "done"
                assert kept.up == kept.down == 10
            async with RelayProxy(up.address, total_timeout=0.5) as px:
                t0 = time.monotonic()
                await asyncio.wait_for(in_thread(client_then_silent, px.port), 20)
                (st,) = await px.wait_results(1)
                assert st.end == "timeout" and 0.4 < time.monotonic() - t0 < 3
        finally:
            up.close()

    run_on(loop_name, scenario())


@pytest.mark.parametrize("mode", ["off", "always"], indirect=True)
@pytest.mark.parametrize("loop_name", LOOPS)
def test_reset_and_live_counters(loop_name: str, mode: str) -> None:
    """Counters move while bytes flow; an upstream RST ends the relay as ``reset``, and the
    client sees a reset too (SO_LINGER 0 on its socket), never a clean EOF."""
    part = pattern(4 * MiB, seed=8)
    go = threading.Event()

    def upstream(c: socket.socket) -> None:
        buf = bytearray(1 << 18)
        n = 0
        while n < len(part):
            n += c.recv_into(buf)
        go.wait(10)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def client(port: int) -> str:
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(part)
            c.settimeout(10)
            try:
                return "eof" if c.recv(10) == b"" else "data"
            except ConnectionResetError:
                return "reset"

    async def scenario() -> None:
        up = ThreadServer(upstream)
        try:
            async with RelayProxy(up.address) as px:
                fut = asyncio.ensure_future(in_thread(client, px.port))
                await wait_for(lambda: bool(px.live) and px.live[0].up == len(part), 10,
                               "live byte count")
                assert px.live[0].end == ""
                go.set()
                assert await asyncio.wait_for(fut, 20) == "reset"
                (st,) = await px.wait_results(1)
        finally:
            up.close()
        assert st.end == "reset"
        assert st.up == len(part)

    run_on(loop_name, scenario())


@pytest.mark.parametrize("loop_name", LOOPS)
def test_fd_hygiene(loop_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """After relays on both paths end (done, idle, reset), /proc/self/fd is back to baseline."""
    data = pattern(3 * MiB, seed=9)

    def silent(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(data)
            c.settimeout(10)
            n = 0
            try:
                while k := c.recv(1 << 18):
                    n += len(k)
            except ConnectionResetError:
                pass

    async def scenario() -> None:
        up = ThreadServer(echo_handler)
        try:
            async with RelayProxy(up.address, idle_timeout=0.3) as px:
                await echo_roundtrip(px.port, b"warm-up")
                await px.wait_results(1)
                await asyncio.sleep(0.05)
                base = fd_count()
                n = 1
                monkeypatch.setattr(relay_mod.settings, "splice_chunk", 0)
                for m in ("off", "always", "auto"):
                    monkeypatch.setattr(relay_mod.settings, "splice", m)
                    await asyncio.gather(*(echo_roundtrip(px.port, data) for _ in range(4)))
                    await asyncio.gather(*(in_thread(silent, px.port) for _ in range(2)))
                    n += 6
                    await px.wait_results(n)
                ends = sorted(r.end for r in px.results[1:])
                assert ends == ["done"] * 12 + ["idle"] * 6
                assert sum(r.spliced for r in px.results) >= 12 if splice_mod.AVAILABLE \
                    else True
                await wait_for(lambda: fd_count() == base, 5, f"fds back to {base} "
                               f"(now {fd_count()})")
        finally:
            up.close()

    run_on(loop_name, scenario())


async def test_start_relay_reports_once_and_cancel_ends_it(
        caplog: pytest.LogCaptureFixture) -> None:
    from ugate_core import start_relay

    # a relay that ends by itself: both sides half-close
    c1, a = stream_pair()
    b, c2 = stream_pair()
    done: list[RelayStats] = []
    r = start_relay(a, b, on_done=done.append)
    assert a.relayed_by is r and b.relayed_by is r
    c1.write(b"up")
    c2.write(b"down!")
    assert await c2.readexactly(2) == b"up"
    assert await c1.readexactly(5) == b"down!"
    c1.write_eof()
    c2.write_eof()
    for _ in range(100):
        if done:
            break
        await asyncio.sleep(0.01)
    assert [(s.end, s.up, s.down) for s in done] == [("done", 2, 5)]
    assert a.relayed_by is None and b.relayed_by is None
    r.cancel()  # after the end: nothing happens, no second report
    await asyncio.sleep(0.01)
    assert len(done) == 1

    # cancel() ends a live relay; a failing on_done is logged, not raised into the loop
    c1, a = stream_pair()
    b, c2 = stream_pair()

    def boom(_st: RelayStats) -> None:
        raise RuntimeError("callback bug")

    r = start_relay(a, b, on_done=boom)
    with caplog.at_level(logging.ERROR, "ugate.relay"):
        r.cancel()
    assert r.stats.end == "cancelled"
    assert "relay on_done callback failed" in caplog.text
    assert await asyncio.wait_for(c1.read(), 5) == b""
    assert await asyncio.wait_for(c2.read(), 5) == b""
