#!/usr/bin/env python3
"""MQTT through ugate vs straight to mosquitto vs HAProxy in TCP mode: the same clients, the
same broker, the same run.

    client ──► ugate (mqtt listener, ``ugate run``, one process) ──► mosquitto
    client ──► HAProxy 1 thread, mode tcp ─────────────────────────► mosquitto
    client ─────────────────────── direct ─────────────────────────► mosquitto

``ugate`` is the mqtt listener with its defaults; ``ugate-pre`` the same with ``predial = true``
(the broker connection is opened while the CONNECT arrives, as a TCP proxy does at accept);
``ugate-tcp``, for context, core's ``tcp`` forward listener to the same broker (no MQTT parsing,
no routing): what the MQTT layer costs on top of core's relay.

Scenarios (MQTT 3.1.1, clients on uvloop, written for this bench):

* ``publish qos0/qos1 <size>``: one subscriber and one publisher connected through the variant;
  the publisher sends N messages (QoS 1: at most 1,000 unacknowledged), the subscriber
  acknowledges QoS 1 deliveries; the time until the subscriber has all N: messages/s.
* ``connects``: 4 clients in a loop: TCP connect, CONNECT, wait for CONNACK, DISCONNECT,
  close: CONNECTs/s.

Rounds are interleaved (each round runs every variant once); the median is shown, and each
ratio is the median of the per-round ratios (a machine shared with other work drifts: both
sides of a ratio see the same drift). Goals (issue #20): publish ≥ 0.9x direct; CONNECTs/s ≥ 0.7x
HAProxy.

    .venv/bin/python plugins/ugate_mqtt/bench_mqtt.py           # about a minute
    .venv/bin/python plugins/ugate_mqtt/bench_mqtt.py --quick   # 1 round, fewer messages
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from ugate_core.testing import free_port, wait_port
from ugate_mqtt.codec import MQTT311, Connect, encode_connect, encode_varint

TOPIC = b"bench/t"


def connect_packet(client_id: str) -> bytes:
    return encode_connect(Connect(level=MQTT311, client_id=client_id))


def publish_packet(payload: bytes, qos: int, pid: int) -> bytes:
    var = struct.pack("!H", len(TOPIC)) + TOPIC + (struct.pack("!H", pid) if qos else b"")
    return bytes([0x30 | (qos << 1)]) + encode_varint(len(var) + len(payload)) + var + payload


async def open_client(port: int, client_id: str
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    w.write(connect_packet(client_id))
    ack = await r.readexactly(4)
    if ack != b"\x20\x02\x00\x00":
        raise RuntimeError(f"CONNACK {ack.hex()}")
    return r, w


async def subscribe(port: int, qos: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    r, w = await open_client(port, f"sub{os.getpid()}")
    body = b"\x00\x01" + struct.pack("!H", len(TOPIC)) + TOPIC + bytes([qos])
    w.write(b"\x82" + encode_varint(len(body)) + body)
    suback = await r.readexactly(5)
    if suback[0] != 0x90 or suback[4] != qos:
        raise RuntimeError(f"SUBACK {suback.hex()}")
    return r, w


class Sink(asyncio.BufferedProtocol):
    """A QoS 0 subscriber that counts what arrives in one reused buffer: with a StreamReader
    the client copies every byte twice more in Python and becomes the slowest part of the
    run, which then measures the client rather than what sits between it and the broker."""

    def __init__(self, want: int) -> None:
        loop = asyncio.get_running_loop()
        self.buf = bytearray(1 << 20)
        self.head = bytearray()  # CONNACK (4 bytes) and SUBACK (5 bytes)
        self.want, self.got = want, 0
        self.subscribed: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        data = memoryview(self.buf)[:nbytes]
        if not self.subscribed.done():
            need = 9 - len(self.head)
            self.head += data[:need]
            data = data[need:]
            if len(self.head) < 9:
                return
            if self.head[:4] != b"\x20\x02\x00\x00" or self.head[4] != 0x90:
                self.subscribed.set_exception(RuntimeError(f"CONNACK/SUBACK {self.head.hex()}"))
                return
            self.subscribed.set_result(None)
        self.got += len(data)
        if self.got >= self.want and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        for f in (self.subscribed, self.done):
            if not f.done():
                f.set_exception(RuntimeError("subscriber's connection closed"))


async def subscribe_qos0(port: int, want: int) -> tuple[asyncio.Transport, Sink]:
    tr, sink = await asyncio.get_running_loop().create_connection(
        lambda: Sink(want), "127.0.0.1", port)
    body = b"\x00\x01" + struct.pack("!H", len(TOPIC)) + TOPIC + b"\x00"
    tr.write(connect_packet(f"sub{os.getpid()}") + b"\x82" + encode_varint(len(body)) + body)
    await sink.subscribed
    return tr, sink


async def receive(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int, size: int,
                  qos: int) -> None:
    """Read ``n`` QoS 1 PUBLISH packets of ``size``-byte payloads and acknowledge them."""
    one = len(publish_packet(b"\x00" * size, qos, 1))
    for _ in range(n):
        pkt = await r.readexactly(one)
        at = one - size - 2
        w.write(b"\x40\x02" + pkt[at : at + 2])


async def publish(port: int, n: int, size: int, qos: int) -> float:
    """Messages per second from the publisher to the subscriber through ``port``."""
    payload = os.urandom(size)
    if qos == 0:
        pkt = publish_packet(payload, 0, 0)
        sub, sink = await subscribe_qos0(port, n * len(pkt))  # identical packets: their
        got: asyncio.Future[None] = sink.done                 # total length says it all
        sw: asyncio.WriteTransport | asyncio.StreamWriter = sub
    else:
        sr, sw = await subscribe(port, qos)
    pr, pw = await open_client(port, f"pub{os.getpid()}")
    t0 = time.perf_counter()
    if qos == 0:
        batch = max(1, (256 * 1024) // len(pkt))
        chunk = pkt * batch
        for i in range(0, n, batch):
            pw.write(chunk if n - i >= batch else pkt * (n - i))
            await pw.drain()
    else:
        got = asyncio.ensure_future(receive(sr, sw, n, size, qos))
        window, sent, acked, spare = 1000, 0, 0, 0
        while acked < n:
            while sent < n and sent - acked < window:
                sent += 1
                pw.write(publish_packet(payload, 1, sent % 65535 + 1))
            await pw.drain()
            data = await pr.read(65536)  # PUBACKs, 4 bytes each
            if not data:
                raise RuntimeError("publisher's connection closed")
            spare += len(data)
            acked += spare // 4
            spare %= 4
    await asyncio.wait_for(got, 60)
    dt = time.perf_counter() - t0
    for w in (pw, sw):
        w.write(b"\xe0\x00")
        w.close()
    return n / dt


async def connects(port: int, seconds: float, workers: int = 4) -> float:
    end = time.perf_counter() + seconds
    count = 0

    async def loop(k: int) -> None:
        nonlocal count
        pkt = connect_packet(f"c{k}")
        while time.perf_counter() < end:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(pkt)
            if await r.readexactly(4) != b"\x20\x02\x00\x00":
                raise RuntimeError("CONNECT refused")
            w.write(b"\xe0\x00")
            w.close()
            count += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(loop(k) for k in range(workers)))
    return count / (time.perf_counter() - t0)


def run(coro: Callable[[], Coroutine[Any, Any, float]]) -> float:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro())
    return uvloop.run(coro())


def start(cmd: list[str], log: Path, port: int) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log.open("wb"),
                         stderr=subprocess.STDOUT)
    wait_port(port, 20)
    return p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    mosq, haproxy = shutil.which("mosquitto"), shutil.which("haproxy")
    if not mosq:
        print("mosquitto not installed (apt-get install mosquitto): no MQTT bench")
        return 0
    rounds = 1 if args.quick else 4
    scale = 4 if args.quick else 1
    out = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        bport = free_port()
        (out / "mosquitto.conf").write_text(
            f"listener {bport} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_inflight_messages 0\nmax_queued_messages 0\nmax_connections -1\n")
        procs.append(start([mosq, "-c", str(out / "mosquitto.conf")], out / "mosquitto.log",
                           bport))
        ports = {"direct": bport}
        ugate = str(Path(sys.executable).parent / "ugate")

        def start_ugate(key: str, listener: str) -> None:
            port = free_port()
            (out / f"{key}.toml").write_text(f"""
[gateway]
idle_timeout = 3600.0
max_connections = 20000
[admin]
listen = ""
[listeners.bench]
listen = "127.0.0.1:{port}"
{listener}
[hosts."broker.bench"]
endpoints = ["127.0.0.1:{bport}"]
""")
            procs.append(start([ugate, "--log-level", "warning", "run", "-c",
                                str(out / f"{key}.toml"), "--state-dir", str(out / key)],
                               out / f"{key}.log", port))
            ports[key] = port

        start_ugate("ugate", 'protocols = ["mqtt"]\nbroker = "broker.bench"')
        start_ugate("ugate-pre", 'protocols = ["mqtt"]\nbroker = "broker.bench"\n'
                    "predial = true")
        # context: core's tcp forward to the same broker (no MQTT parsing, no routing)
        start_ugate("ugate-tcp", 'protocols = ["tcp"]\ntarget = "broker.bench:1883"')
        if haproxy:
            hport = free_port()
            (out / "haproxy.cfg").write_text(
                "global\n  maxconn 8900\n  nbthread 1\ndefaults\n  mode tcp\n"
                "  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n"
                f"frontend f\n  bind 127.0.0.1:{hport} backlog 4096\n  default_backend b\n"
                f"backend b\n  server s1 127.0.0.1:{bport}\n")
            procs.append(start([haproxy, "-db", "-f", str(out / "haproxy.cfg")],
                               out / "haproxy.log", hport))
            ports["haproxy"] = hport
        else:
            print("haproxy not installed (apt-get install haproxy): no HAProxy column")
        scenarios: list[tuple[str, str, Callable[[int], float]]] = [
            ("publish qos0 16 B", "msg/s",
             lambda p: run(lambda: publish(p, 120000 // scale, 16, 0))),
            ("publish qos1 16 B", "msg/s",
             lambda p: run(lambda: publish(p, 6000 // scale, 16, 1))),
            ("publish qos0 64 KiB", "msg/s",
             lambda p: run(lambda: publish(p, 8000 // scale, 65536, 0))),
            ("publish qos1 64 KiB", "msg/s",
             lambda p: run(lambda: publish(p, 400 // scale, 65536, 1))),
            ("CONNECTs (4 clients)", "conn/s",
             lambda p: run(lambda: connects(p, 1.5 if not args.quick else 0.5))),
        ]
        results: dict[tuple[str, str], list[float]] = {}
        for _ in range(rounds):
            for name, _unit, fn in scenarios:
                for v, port in ports.items():
                    results.setdefault((name, v), []).append(fn(port))
        print(f"{'scenario':<24} {'variant':<9} {'value':>16}  {'x direct':>8}  "
              f"{'vs haproxy':>10}")
        def ratio(name: str, a: str, b: str) -> float:
            return statistics.median(x / y for x, y in zip(results[(name, a)],
                                                           results[(name, b)], strict=True))

        for name, unit, _fn in scenarios:
            med = {v: statistics.median(results[(name, v)]) for v in ports}
            for v in ports:
                xd = f"{ratio(name, v, 'direct'):.2f}x"
                vh = f"{ratio(name, v, 'haproxy'):.2f}x" if "haproxy" in med else "-"
                print(f"{name if v == 'direct' else '':<24} {v:<9} "
                      f"{med[v]:>10,.0f} {unit:<6}  {xd:>8}  {vh:>10}")
        print()
        for name, _unit, _fn in scenarios:
            for v in ("ugate", "ugate-pre"):
                if name.startswith("publish"):
                    r = ratio(name, v, "direct")
                    print(f"goal {name}: {v} {r:.2f}x direct (>= 0.9x): "
                          f"{'met' if r >= 0.9 else 'NOT met'}")
                elif "haproxy" in ports:
                    r = ratio(name, v, "haproxy")
                    print(f"goal {name}: {v} {r:.2f}x HAProxy (>= 0.7x): "
                          f"{'met' if r >= 0.7 else 'NOT met'}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
