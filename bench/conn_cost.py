"""What one connection costs the gateway: a bounded, repeatable measurement.

Starts ``ugate run`` (uvloop, log level warning, the bench's config) as a subprocess in front of
an echo server of this process, then makes ``N`` sequential short connections through it
(connect, 1 byte there and back, close) and reports the gateway's cost per connection:

* ``cpu``: user+system CPU time of the gateway process per connection (µs; noisy under load);
* ``callgrind``: the gateway runs under ``valgrind --tool=callgrind`` with collection off; it is
  switched on after the warm-up and the counts are dumped after the ``N`` measured connections:
  instructions per connection, repeatable on a loaded machine. ``--keep DIR`` keeps the dump
  for ``callgrind_annotate``;
* ``cprofile``: the gateway runs under cProfile; the profile of the whole run (warm-up too) is
  written to ``--keep DIR``/cprofile.out and its top entries printed.

::

    python bench/conn_cost.py                       # tcp forward, CPU µs per connection
    python bench/conn_cost.py --via socks5,http --mode callgrind -n 500
    python bench/conn_cost.py --mode cprofile -n 5000 --keep out/prof

``--via``: ``tcp`` (the ``tcp`` forward listener), ``socks5``, ``http`` (HTTP CONNECT),
``mqtt`` (CONNECT, CONNACK, DISCONNECT to a mosquitto started here); each needs its plugin.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pstats
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BIN = Path(sys.executable).parent

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import UGATE_TOML as CONFIG  # noqa: E402  # the config bench/run.py runs ugate with

PROTOCOLS = {
    "tcp": 'protocols = ["tcp"]\ntarget = "127.0.0.1:{target}"\n',
    "socks5": 'protocols = ["socks5"]\n',
    "http": 'protocols = ["http"]\n',
    "mqtt": 'protocols = ["mqtt"]\nbroker = "broker.bench"\n'
            '[hosts."broker.bench"]\nendpoints = ["127.0.0.1:{target}"]\n',
}
#: MQTT 3.1.1 CONNECT (clean session, keep-alive 60 s, client id "cc") and DISCONNECT
MQTT_CONNECT = b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02cc"
MQTT_DISCONNECT = b"\xe0\x00"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def echo_server() -> int:
    """A thread that echoes every connection, one after the other (the client is sequential)."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(128)

    def run() -> None:
        while True:
            c, _ = ls.accept()
            with c:
                while data := c.recv(65536):
                    c.sendall(data)

    threading.Thread(target=run, daemon=True).start()
    return int(ls.getsockname()[1])


def recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            raise ConnectionError(f"closed after {buf!r}")
        buf += d
    return buf


def recv_until(s: socket.socket, end: bytes) -> bytes:
    buf = b""
    while not buf.endswith(end):
        d = s.recv(4096)
        if not d:
            raise ConnectionError(f"closed after {buf!r}")
        buf += d
    return buf


def one(port: int, via: str, target: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if via == "socks5":  # as bench/loadgen.c asks: greeting, its answer, then CONNECT
            s.sendall(b"\x05\x01\x00")
            if recv_exactly(s, 2) != b"\x05\x00":
                raise ConnectionError("socks5: method refused")
            s.sendall(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + target.to_bytes(2, "big"))
            got = recv_exactly(s, 10)
            if got[:2] != b"\x05\x00":
                raise ConnectionError(f"socks5: {got!r}")
        elif via == "http":
            s.sendall(f"CONNECT 127.0.0.1:{target} HTTP/1.1\r\nHost: 127.0.0.1:{target}\r\n\r\n"
                      .encode())
            head = recv_until(s, b"\r\n\r\n")
            if b" 200" not in head.split(b"\r\n", 1)[0]:
                raise ConnectionError(f"http: {head!r}")
        if via == "mqtt":  # as plugins/ugate_mqtt/bench_mqtt.py's connects: CONNECT, CONNACK
            s.sendall(MQTT_CONNECT)
            ack = recv_exactly(s, 4)
            if ack[0] != 0x20 or ack[3] != 0:
                raise ConnectionError(f"mqtt: CONNACK {ack.hex()}")
            s.sendall(MQTT_DISCONNECT)
        else:
            s.sendall(b"x")
            if s.recv(1) != b"x":
                raise ConnectionError("no echo")
        s.shutdown(socket.SHUT_WR)
        s.recv(1)  # the gateway's close


def cpu_us(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1e6 / os.sysconf("SC_CLK_TCK")


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"gateway exited: {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise SystemExit("gateway did not start")


def callgrind_total(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {path}")


def measure(via: str, mode: str, n: int, warm: int, keep: Path | None,
            relay: str = "ugate") -> float:
    work = Path(tempfile.mkdtemp(prefix="conn_cost-"))
    broker: subprocess.Popen[bytes] | None = None
    if via == "mqtt":  # a mosquitto broker behind the gateway
        target = free_port()
        (work / "mosquitto.conf").write_text(
            f"listener {target} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        broker = subprocess.Popen(["mosquitto", "-c", str(work / "mosquitto.conf")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(target, broker, 10)
    else:
        target = echo_server()
    port = free_port()
    cfg = work / "ugate.toml"
    cfg.write_text(CONFIG.format(port=port) + PROTOCOLS[via].format(target=target))
    ugate = [str(BIN / "ugate"), "--log-level", "warning", "run", "-c", str(cfg),
             "--state-dir", str(work / "state")]
    if relay != "ugate":  # bench/floor.py or floor_bare.py: what is left without the gateway
        ugate = [str(Path(__file__).parent / f"{relay}.py"), str(port), f"127.0.0.1:{target}"]
    out = keep or work
    out.mkdir(parents=True, exist_ok=True)
    if mode == "callgrind":
        cg = out / f"callgrind.{via}.out"
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={cg}",
               sys.executable, *ugate]
    elif mode == "cprofile":
        prof = out / f"cprofile.{via}.out"
        cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), *ugate]
    else:
        cmd = [sys.executable, *ugate]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(work / "gateway.log", "wb"),  # noqa: SIM115
                            start_new_session=True)
    try:
        wait_port(port, proc, 300 if mode == "callgrind" else 30)
        for _ in range(warm):
            one(port, via, target)
        time.sleep(0.2)  # the warm-up's last relays end
        if mode == "callgrind":
            subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True,
                           capture_output=True)
        c0 = cpu_us(proc.pid)
        t0 = time.monotonic()
        for _ in range(n):
            one(port, via, target)
        time.sleep(0.2)
        wall = time.monotonic() - t0 - 0.2
        c1 = cpu_us(proc.pid)
        if mode == "callgrind":
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True,
                           capture_output=True)
            dumps = sorted(out.glob(f"callgrind.{via}.out*"), key=lambda p: p.stat().st_mtime)
            total = callgrind_total(dumps[-1])
            per = total / n
            print(f"{via}: {per:,.0f} instructions per connection ({n} connections, "
                  f"dump {dumps[-1]})")
            return per
        per = (c1 - c0) / n
        print(f"{via}: {per:.1f} µs gateway CPU per connection ({n} connections, "
              f"{n / wall:,.0f} conn/s from one sequential client)")
        return per
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if mode == "cprofile":
            st = pstats.Stats(str(prof))
            st.sort_stats("tottime").print_stats(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--via", default="tcp", help="comma-separated: tcp, socks5, http, mqtt")
    ap.add_argument("--mode", default="cpu", choices=["cpu", "callgrind", "cprofile"])
    ap.add_argument("-n", type=int, default=None, help="measured connections (default: "
                    "5000; callgrind 500)")
    ap.add_argument("--warm", type=int, default=None, help="warm-up connections (default: "
                    "200; callgrind 50)")
    ap.add_argument("--relay", default="ugate", choices=["ugate", "floor", "floor_bare"],
                    help="what runs as the gateway: ugate, or bench/floor.py (accept, dial, "
                    "start_relay) or bench/floor_bare.py (a bare uvloop Protocol pair), tcp only")
    ap.add_argument("--keep", type=Path, help="keep the callgrind dump / cProfile output here")
    args = ap.parse_args()
    cg = args.mode == "callgrind"
    n = args.n or (500 if cg else 5000)
    warm = args.warm if args.warm is not None else (50 if cg else 200)
    for via in args.via.split(","):
        measure(via, args.mode, n, warm, args.keep, args.relay)
    return 0


if __name__ == "__main__":
    sys.exit(main())
