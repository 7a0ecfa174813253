"""Fixtures for the MQTT tests: a real mosquitto broker, mosquitto_sub/mosquitto_pub as
processes, and gateway configs in front of the broker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ugate_core.testing import connect_when_listening, free_port, require_peer
from ugate_mqtt.codec import Connect, ConnectParser, encode_connack, encode_connect

VERSIONS = ("31", "311", "5")


@dataclass
class Broker:
    port: int
    proc: asyncio.subprocess.Process

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


async def start_mosquitto(tmp_path: Path, name: str = "mosquitto") -> Broker:
    exe = require_peer("mosquitto", apt="mosquitto")
    port = free_port()
    conf = tmp_path / f"{name}.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_connections -1\n")
    proc = await asyncio.create_subprocess_exec(
        exe, "-c", str(conf), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    _r, w = await connect_when_listening("127.0.0.1", port)
    w.close()
    return Broker(port, proc)


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[Broker]:
    b = await start_mosquitto(tmp_path)
    try:
        yield b
    finally:
        await stop(b.proc)


def gateway_config(broker: str, *, listener: str = "mqtt", protocols: str = '["mqtt"]',
                   listen: str = "127.0.0.1:0", extra: str = "", options: str = "") -> str:
    """A gateway whose listener sends MQTT clients to ``broker.test`` (= ``broker``)."""
    return f"""
[admin]
listen = ""
[gateway]
handshake_timeout = 3.0
[listeners.{listener}]
listen = "{listen}"
protocols = {protocols}
broker = "broker.test"
{options}
[hosts."broker.test"]
endpoints = ["{broker}"]
{extra}
"""


class Sub:
    """mosquitto_sub printing ``retain qos hex-payload`` per message; ready once subscribed."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def start(cls, port: int, topic: str, version: str, *args: str,
                    qos: int = 0) -> Sub:
        exe = require_peer("mosquitto_sub", apt="mosquitto-clients")
        # piped stdout is block-buffered: stdbuf makes each line arrive when printed
        proc = await asyncio.create_subprocess_exec(
            require_peer("stdbuf", apt="coreutils"), "-oL", exe, "-h", "127.0.0.1", "-p",
            str(port), "-V", version, "-t", topic, "-q", str(qos), "-d", "-F", "M %r %q %x",
            *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        s = cls(proc)
        await s.wait_for("SUBACK")
        return s

    async def wait_for(self, text: str, timeout: float = 10) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            for line in self.lines:
                if text in line:
                    return line
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"mosquitto_sub ended before {text!r}: {self.lines}")
                line = raw.decode(errors="replace").rstrip("\n")
                self.lines.append(line)
                if text in line:
                    return line

    async def messages(self, n: int, timeout: float = 10) -> list[tuple[bool, int, bytes]]:
        """The next ``n`` messages: (retained, qos, payload)."""
        out: list[tuple[bool, int, bytes]] = []
        seen = 0
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while len(out) < n:
                msgs = [ln for ln in self.lines if ln.startswith("M ")]
                while seen < len(msgs) and len(out) < n:
                    _m, r, q, *x = msgs[seen].split(" ")
                    out.append((r == "1", int(q), bytes.fromhex(x[0] if x else "")))
                    seen += 1
                if len(out) < n:
                    raw = await self.proc.stdout.readline()
                    if not raw:
                        raise AssertionError(f"mosquitto_sub ended: {self.lines}")
                    self.lines.append(raw.decode(errors="replace").rstrip("\n"))
        return out

    async def close(self) -> None:
        await stop(self.proc)


@pytest.fixture
async def subs() -> AsyncIterator[list[Sub]]:
    made: list[Sub] = []
    try:
        yield made
    finally:
        for s in made:
            await s.close()


async def pub(port: int, topic: str, version: str, payload_file: Path, *args: str,
              qos: int = 0) -> subprocess.CompletedProcess[bytes]:
    exe = require_peer("mosquitto_pub", apt="mosquitto-clients")
    p = await asyncio.create_subprocess_exec(
        exe, "-h", "127.0.0.1", "-p", str(port), "-V", version, "-t", topic, "-q", str(qos),
        "-f", str(payload_file), *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(p.communicate(), 20)
    return subprocess.CompletedProcess([exe], p.returncode or 0, out, err)


async def pub_and_receive(port: int, topic: str, payload: bytes, tmp_path: Path,
                          subs: list[Sub], *args: str, sub_version: str = "5",
                          pub_version: str = "311", qos: int = 1) -> None:
    """mosquitto_sub subscribes, mosquitto_pub publishes ``payload``, both through ``port``
    (``args`` for both, e.g. TLS options); the subscriber must get exactly that message."""
    s = await Sub.start(port, topic, sub_version, *args, qos=qos)
    subs.append(s)
    f = tmp_path / "payload"
    f.write_bytes(payload)
    res = await pub(port, topic, pub_version, f, *args, qos=qos)
    assert res.returncode == 0, res.stderr
    assert await s.messages(1) == [(False, qos, payload)]


def kill9(proc: asyncio.subprocess.Process) -> None:
    os.kill(proc.pid, signal.SIGKILL)


class FakeBroker:
    """Records each CONNECT it gets and accepts it (the bytes the gateway forwarded)."""

    def __init__(self) -> None:
        self.connects: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        p = ConnectParser()
        c = None
        while c is None:
            data = await r.read(4096)
            if not data:
                w.close()
                return
            c = p.receive_data(data)
        self.connects.append(c.raw)
        w.write(encode_connack(c.level, 0))
        await w.drain()
        await r.read()
        w.close()

    @property
    def client_ids(self) -> list[str]:
        out = []
        for raw in self.connects:
            c = ConnectParser().receive_data(raw)
            assert c is not None
            out.append(c.client_id)
        return out

    @property
    def address(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def fake_brokers() -> AsyncIterator[Callable[[], Awaitable[FakeBroker]]]:
    made: list[FakeBroker] = []

    async def make() -> FakeBroker:
        fb = FakeBroker()
        fb.server = await asyncio.start_server(fb.handle, "127.0.0.1", 0)
        made.append(fb)
        return fb

    try:
        yield make
    finally:
        for fb in made:
            assert fb.server is not None
            fb.server.close()


@pytest.fixture
async def fake_broker(fake_brokers: Callable[[], Awaitable[FakeBroker]]) -> FakeBroker:
    return await fake_brokers()


async def connack_for(port: int, c: Connect, ssl_ctx: ssl.SSLContext | None = None,
                      sni: str = "", linger: float = 1.0) -> tuple[bytes, bytes]:
    """Send ``c`` (inside TLS with ``ssl_ctx``, naming ``sni``); (the CONNACK, what followed
    until the gateway closed or ``linger`` seconds passed: ``<open>``)."""
    r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ssl_ctx,
                                         server_hostname=sni if ssl_ctx else None)
    w.write(encode_connect(c))
    try:
        head = await asyncio.wait_for(r.readexactly(2), 5)
        ack = head + await r.readexactly(head[1])
        try:
            rest = await asyncio.wait_for(r.read(100), linger)
        except TimeoutError:
            rest = b"<open>"
        return ack, rest
    finally:
        w.close()
