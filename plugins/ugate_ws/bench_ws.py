#!/usr/bin/env python3
"""WebSocket bench: bulk through one WebSocket and new WebSockets per second, ugate against
websockify (the WebSocket→TCP bridge behind noVNC) with the same client and target in the same
run, and against ugate's plain TCP relay.

All on 127.0.0.1, each proxy its own process::

    node client ──ws──► ugate (ws listener)   ──TCP──► target (a second node process)
    node client ──ws──► websockify            ──TCP──► target
    node client ──TCP─► ugate (tcp listener)  ──TCP──► target

* ``bulk``: the client sends N bytes in 64 KiB binary messages (plain TCP: 64 KiB writes);
  the target answers one byte once it has them all; MiB/s from open to that byte.
* ``conn/s``: sequential: open, 1-byte echo, close, for a fixed time.

Rounds are interleaved; the median is shown with the ratios. Goals (issue #18): bulk ≥ 2.0x
websockify and ≥ 0.5x the TCP relay; conn/s ≥ 1.0x websockify.

    .venv/bin/python plugins/ugate_ws/bench_ws.py            # ~1 min
    .venv/bin/python plugins/ugate_ws/bench_ws.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from ugate_core.testing import free_port, wait_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MiB = 1 << 20

CLIENT = Path(__file__).resolve().parent / "bench_ws_client.cjs"


class Client:
    def __init__(self, tmp: Path, n: int) -> None:
        js = ROOT / "tests" / "js"
        script = CLIENT
        env = {**os.environ, "NODE_PATH": str(js / "node_modules")}
        self.t = subprocess.Popen(["node", str(script), "targets", "-", "-", str(n)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env,
                                  text=True)
        assert self.t.stdout is not None
        ports = json.loads(self.t.stdout.readline())
        self.sink, self.echo = int(ports["sink"]), int(ports["echo"])
        self.p = subprocess.Popen(["node", str(script), "client", "-", "-", str(n)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                  text=True)
        assert self.p.stdout is not None
        self.p.stdout.readline()

    def ask(self, **cmd: object) -> float:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        return float(json.loads(self.p.stdout.readline())["out"])

    def close(self) -> None:
        for p in (self.p, self.t):
            p.kill()
            p.wait()


def start(cmd: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log.open("wb"),
                         stderr=subprocess.STDOUT)
    wait_port(port)
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    a = ap.parse_args()
    rounds, n, ms = (2, 32 * MiB, 1000) if a.quick else (5, 128 * MiB, 2000)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="ugate-bench-ws-") as d:
        tmp = Path(d)
        client = Client(tmp, n)
        try:
            ws_port, tcp_port, tcp_echo_port = free_port(), free_port(), free_port()
            cfg = tmp / "ugate.toml"
            cfg.write_text(f"""
[admin]
listen = ""
[listeners.ws]
listen = "127.0.0.1:{ws_port}"
protocols = ["ws"]
[listeners.tcp]
listen = "127.0.0.1:{tcp_port}"
protocols = ["tcp"]
target = "127.0.0.1:{client.sink}"
[listeners.tcpecho]
listen = "127.0.0.1:{tcp_echo_port}"
protocols = ["tcp"]
target = "127.0.0.1:{client.echo}"
""")
            procs.append(start([str(BIN / "ugate"), "run", "-c", str(cfg), "--state-dir",
                                str(tmp / "state")], ws_port, tmp / "ugate.log"))
            wsk_sink, wsk_echo = free_port(), free_port()
            for port, target in ((wsk_sink, client.sink), (wsk_echo, client.echo)):
                procs.append(start([str(BIN / "websockify"), f"127.0.0.1:{port}",
                                    f"127.0.0.1:{target}"], port, tmp / f"wsk{port}.log"))
            path = "/.well-known/ugate/ws/127.0.0.1:"
            variants = {
                "ugate ws": (dict(url=f"ws://127.0.0.1:{ws_port}{path}{client.sink}"),
                             dict(url=f"ws://127.0.0.1:{ws_port}{path}{client.echo}")),
                "websockify": (dict(url=f"ws://127.0.0.1:{wsk_sink}/"),
                               dict(url=f"ws://127.0.0.1:{wsk_echo}/")),
                "ugate tcp relay": (dict(tcp=True, port=tcp_port),
                                    dict(tcp=True, port=tcp_echo_port)),
            }
            bulk: dict[str, list[float]] = {k: [] for k in variants}
            rate: dict[str, list[float]] = {k: [] for k in variants}
            client.ask(op="bulk", **variants["ugate ws"][0])  # warm up
            for _ in range(rounds):
                for k, (b, e) in variants.items():
                    bulk[k].append(n / MiB / client.ask(op="bulk", **b))
                    rate[k].append(client.ask(op="rate", ms=ms, **e))
        finally:
            client.close()
            for p in procs:
                p.terminate()
                p.wait(10)
    mb = {k: statistics.median(v) for k, v in bulk.items()}
    cr = {k: statistics.median(v) for k, v in rate.items()}
    print(f"\nWebSocket bench: {n // MiB} MiB bulk, {ms} ms of conn/s, median of {rounds}")
    print(f"{'variant':<18}{'bulk MiB/s':>12}{'conn/s':>10}")
    for k in variants:
        print(f"{k:<18}{mb[k]:>12.0f}{cr[k]:>10.0f}")
    ratios = {
        "bulk ugate/websockify": (mb["ugate ws"] / mb["websockify"], 2.0),
        "bulk ugate ws/tcp relay": (mb["ugate ws"] / mb["ugate tcp relay"], 0.5),
        "conn/s ugate/websockify": (cr["ugate ws"] / cr["websockify"], 1.0),
    }
    for name, (r, goal) in ratios.items():
        print(f"{name:<26}{r:>6.2f}x  (goal >= {goal}x: {'met' if r >= goal else 'NOT met'})")


if __name__ == "__main__":
    main()
