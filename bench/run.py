#!/usr/bin/env python3
"""``make bench``: ugate's relay against a direct loopback connection and against peers.

Every relay under test runs as its own process on 127.0.0.1 between a C load generator
(``bench/loadgen.c``, compiled here with gcc) and the generator's own sink/echo server:

    loadgen client ──► relay (ugate / HAProxy / socat / pproxy) ──► loadgen server
    loadgen client ───────────────────────────────────────────────► loadgen server   (direct)

Rounds are interleaved (each repetition runs every variant once, in turn), so slow drifts of a
shared machine hit all variants alike; the value shown is the median over repetitions.

    python bench/run.py                     # full run (~6-10 min), prints the table
    python bench/run.py --quick --json FILE # shorter run (~2 min), also writes FILE
    python bench/run.py --variants ugate-tcp,haproxy-splice --scenarios bulk1,connrate
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
LOADGEN = OUT / "loadgen"
PPROXY_VENV = OUT / "pproxy-venv"
GiB = 1 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class Profile:
    bulk_bytes: int
    bulk_reps: int
    many_bytes: int
    many_reps: int
    conn_seconds: float
    conn_reps: int
    ping_count: int
    ping_reps: int
    idle_conns: int
    big_idle: int  # 0: skip the 10k-idle scenario


QUICK = Profile(bulk_bytes=512 * MiB, bulk_reps=3, many_bytes=512 * MiB, many_reps=2,
                conn_seconds=0.5, conn_reps=3, ping_count=3000, ping_reps=2,
                idle_conns=2000, big_idle=0)
FULL = Profile(bulk_bytes=GiB, bulk_reps=5, many_bytes=GiB, many_reps=3,
               conn_seconds=1.0, conn_reps=5, ping_count=10000, ping_reps=3,
               idle_conns=2000, big_idle=10000)

SCENARIOS = ["bulk1", "bulk100", "connrate", "latency", "idle", "idle10k"]


# --------------------------------------------------------------------------- processes
def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        time.sleep(0.05)
    return False


def build_loadgen() -> None:
    src = BENCH / "loadgen.c"
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= src.stat().st_mtime:
        return
    gcc = shutil.which("gcc")
    if gcc is None:
        raise SystemExit("bench: gcc is needed to build bench/loadgen.c (apt-get install gcc)")
    LOADGEN.parent.mkdir(parents=True, exist_ok=True)  # (a plugin's bench may run first)
    subprocess.run([gcc, "-O2", "-Wall", "-o", str(LOADGEN), str(src)], check=True)


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (1 << 17, hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
            return max(want, soft)
    return soft


def proc_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (socat forks a child per connection)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st[st.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """User+system CPU of the tree, with reaped children's (socat's finished forks)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
        if p == pid:
            total += int(fields[13]) + int(fields[14])
    return total / tick


def pss_bytes(pid: int) -> int:
    total = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def loadgen(*args: str, timeout: float = 180) -> dict[str, Any]:
    p = subprocess.run([str(LOADGEN), *args], capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"loadgen {' '.join(args)}: exit {p.returncode}: "
                           f"{p.stderr.strip()[-300:]}")
    res: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return res


@contextlib.contextmanager
def hold(addr: str, via: str, n: int) -> Iterator[dict[str, Any]]:
    """``n`` idle connections through ``addr``, open while the block runs; all must live."""
    p = subprocess.Popen([str(LOADGEN), "hold", addr, via, str(n)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdin is not None and p.stdout is not None and p.stderr is not None
    try:
        line = p.stdout.readline()
        if not line:
            raise RuntimeError(f"hold {n} via {addr}: {p.stderr.read().strip()[-300:]}")
        info: dict[str, Any] = json.loads(line)
        yield info
        p.stdin.close()
        p.wait(120)
        out = p.stdout.read()
        err = p.stderr.read() if p.stderr else ""
        end = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        info["dead"] = end.get("dead", n)
        if p.returncode:
            raise RuntimeError(f"hold: {info['dead']} of {n} idle connections died: {err[-200:]}")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# --------------------------------------------------------------------------- variants
@dataclass
class Variant:
    key: str
    label: str
    via: str = "direct"  # how loadgen asks: direct, socks5, http
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # name → text, {port}/{target} filled
    skip: str = ""
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    relay: bool = True

    def addr(self, target_port: int) -> str:
        return f"127.0.0.1:{self.port if self.relay else target_port}"

    def via_arg(self, target_port: int) -> str:
        return "direct" if self.via == "direct" else f"{self.via}:127.0.0.1:{target_port}"

    def start(self, target_port: int) -> None:
        if self.skip or not self.relay:
            return
        for attempt in range(2):
            self.port = free_port()
            fill = {"port": str(self.port), "target": f"127.0.0.1:{target_port}",
                    "out": str(OUT), "key": self.key}
            for name, text in self.files.items():
                (OUT / name.format(**fill)).write_text(text.format(**fill))
            cmd = [c.format(**fill) for c in self.cmd]
            errlog = open(OUT / f"{self.key}.log", "wb")  # noqa: SIM115 (lives with proc)
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=errlog, stderr=errlog,
                                         env={**os.environ, **self.env},
                                         start_new_session=True)
            if wait_port(self.port, self.proc):
                return
            self.stop()
            if attempt:
                tail = (OUT / f"{self.key}.log").read_text(errors="replace")[-300:]
                self.skip = f"did not start: {tail.strip() or 'no output'}"

    def stop(self) -> None:
        p = self.proc
        if p is None:
            return
        self.proc = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)  # our own session: the process and its forks
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


UGATE_TOML = """\
[gateway]
idle_timeout = 3600.0
max_connections = 20000
[admin]
listen = ""
[listeners.bench]
listen = "127.0.0.1:{port}"
"""

HAPROXY_CFG = """\
global
  maxconn 8900
  maxpipes 512
  nbthread 1
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
{extra}
frontend f
  bind 127.0.0.1:{{port}} backlog 4096
  default_backend b
backend b
  server s1 {{target}}
"""


def plugin_missing(module: str, dist: str) -> str:
    if importlib.util.find_spec(module) is None:
        return f"plugin {dist} not installed (pip install -e plugins/{module})"
    return ""


def ensure_pproxy() -> str:
    exe = PPROXY_VENV / "bin" / "pproxy"
    if exe.exists():
        return ""
    log("installing pproxy into bench/out/pproxy-venv (no uvloop: pproxy 2.7 crashes with it)")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(PPROXY_VENV)], check=True,
                       timeout=120, capture_output=True)
        subprocess.run([str(PPROXY_VENV / "bin" / "pip"), "install", "-q", "pproxy"],
                       check=True, timeout=300, capture_output=True)
    except (subprocess.SubprocessError, OSError) as e:
        return f"pproxy could not be installed: {e}"
    return ""


def variants(full: bool) -> list[Variant]:
    ugate = [str(Path(sys.executable).parent / "ugate"), "--log-level", "warning", "run",
             "-c", "{out}/{key}.toml", "--state-dir", "{out}/ugate-state"]
    tcp = UGATE_TOML + 'protocols = ["tcp"]\ntarget = "{target}"\n'
    haproxy = shutil.which("haproxy")
    socat = shutil.which("socat")
    vs = [
        Variant("direct", "direct", relay=False),
        Variant("ugate-tcp", "ugate tcp forward", cmd=ugate,
                files={"{key}.toml": tcp}),
        Variant("ugate-tcp-copy", "ugate tcp, copy path only", cmd=ugate,
                env={"UGATE_SPLICE": "off"}, files={"{key}.toml": tcp}),
    ]
    if full:
        vs.append(Variant("ugate-tcp-splice", "ugate tcp, splice from byte 0", cmd=ugate,
                          env={"UGATE_SPLICE": "always"}, files={"{key}.toml": tcp}))
        vs.append(Variant("relay-floor", "floor: uvloop + start_relay() only",
                          cmd=[sys.executable, str(BENCH / "floor.py"), "{port}", "{target}"]))
        vs.append(Variant("bare-floor", "floor: bare uvloop Protocol pair",
                          cmd=[sys.executable, str(BENCH / "floor_bare.py"), "{port}",
                               "{target}"]))
    vs += [
        Variant("ugate-socks5", "ugate SOCKS5", via="socks5", cmd=ugate,
                files={"{key}.toml": UGATE_TOML + 'protocols = ["socks5"]\n'},
                skip=plugin_missing("ugate_socks", "ugate-socks")),
        Variant("ugate-http", "ugate HTTP CONNECT", via="http", cmd=ugate,
                files={"{key}.toml": UGATE_TOML + 'protocols = ["http"]\n'},
                skip=plugin_missing("ugate_http", "ugate-http")),
        Variant("haproxy", "HAProxy 1 thread", cmd=[haproxy or "haproxy", "-db", "-f",
                "{out}/{key}.cfg"],
                files={"{key}.cfg": HAPROXY_CFG.format(extra="")},
                skip="" if haproxy else "haproxy not installed (apt-get install haproxy)"),
        Variant("haproxy-splice", "HAProxy 1 thread, forced splice",
                cmd=[haproxy or "haproxy", "-db", "-f", "{out}/{key}.cfg"],
                files={"{key}.cfg": HAPROXY_CFG.format(
                    extra="  option splice-request\n  option splice-response")},
                skip="" if haproxy else "haproxy not installed (apt-get install haproxy)"),
        Variant("socat", "socat -b 262144 (fork)",
                cmd=[socat or "socat", "-b", "262144",
                     "TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,backlog=4096",
                     "TCP:{target}"],
                skip="" if socat else "socat not installed (apt-get install socat)"),
        Variant("pproxy", "pproxy tunnel", cmd=[str(PPROXY_VENV / "bin" / "pproxy"), "-l",
                "tunnel{{{target}}}://127.0.0.1:{port}"]),
    ]
    if full:
        vs.append(Variant("pproxy-socks5", "pproxy SOCKS5", via="socks5",
                          cmd=[str(PPROXY_VENV / "bin" / "pproxy"), "-l",
                               "socks5://127.0.0.1:{port}"]))
    return vs


# --------------------------------------------------------------------------- scenarios
@dataclass
class Row:
    scenario: str
    variant: str
    value: float | None
    unit: str
    better: str  # "higher" or "lower"
    note: str = ""
    x_direct: float | None = None
    samples: list[float] = field(default_factory=list)


class Bench:
    def __init__(self, prof: Profile, vs: list[Variant], target: int, nofile: int) -> None:
        self.p = prof
        self.vs = vs
        self.target = target
        self.nofile = nofile
        self.rows: list[Row] = []

    def live(self, relay_only: bool = False) -> list[Variant]:
        return [v for v in self.vs if not v.skip and (v.relay or not relay_only)]

    def add(self, scenario: str, v: Variant, samples: list[float], unit: str, better: str,
            note: str = "") -> None:
        val = statistics.median(samples) if samples else None
        self.rows.append(Row(scenario, v.key, val, unit, better, note, samples=samples))

    def rounds(self, reps: int, vs: list[Variant], fn: Callable[[Variant], None]) -> None:
        for _ in range(reps):
            for v in vs:
                if v.skip:
                    continue
                try:
                    fn(v)
                except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
                    log(f"{v.key}: {e}")
                    v.skip = f"failed: {str(e)[:200]}"

    def bulk(self, scenario: str, nbytes: int, streams: int, reps: int, cpu: bool) -> None:
        rates: dict[str, list[float]] = {}
        cpus: dict[str, list[float]] = {}

        def one(v: Variant) -> None:
            c0 = cpu_seconds(v.proc.pid) if v.proc else 0.0
            r = loadgen("bulk", v.addr(self.target), v.via_arg(self.target), str(nbytes),
                        str(streams))
            if not r["verified"]:
                raise RuntimeError("bulk: the sink saw different bytes")
            rates.setdefault(v.key, []).append(r["bytes"] * 8 / r["seconds"] / 1e9)
            if v.proc:
                time.sleep(0.1)  # socat reaps its child; let the CPU accounting settle
                cpus.setdefault(v.key, []).append((cpu_seconds(v.proc.pid) - c0) /
                                                  (r["bytes"] / GiB))

        self.rounds(reps, self.vs, one)
        for v in self.vs:
            self.add(scenario, v, rates.get(v.key, []), "Gbit/s", "higher", v.skip)
            if cpu and v.relay:
                self.add("relay CPU per GiB (bulk 1 stream)", v, cpus.get(v.key, []),
                         "CPU s/GiB", "lower", v.skip)

    def connrate(self) -> None:
        out: dict[str, list[float]] = {}

        def one(v: Variant) -> None:
            r = loadgen("connrate", v.addr(self.target), v.via_arg(self.target),
                        str(self.p.conn_seconds), "1000000")
            out.setdefault(v.key, []).append(r["per_second"])

        self.rounds(self.p.conn_reps, self.vs, one)
        for v in self.vs:
            self.add("sequential connections (1 B echo)", v, out.get(v.key, []), "conn/s",
                     "higher", v.skip)

    def latency(self) -> None:
        out: dict[tuple[str, int, str], list[float]] = {}

        def one(v: Variant) -> None:
            for size in (64, 4096):
                r = loadgen("pingpong", v.addr(self.target), v.via_arg(self.target),
                            str(size), str(self.p.ping_count))
                for q in ("p50", "p99"):
                    out.setdefault((v.key, size, q), []).append(r[f"{q}_us"])

        self.rounds(self.p.ping_reps, self.vs, one)
        for size, name in ((64, "64 B"), (4096, "4 KiB")):
            for q in ("p50", "p99"):
                for v in self.vs:
                    self.add(f"ping-pong {name} {q}", v, out.get((v.key, size, q), []), "µs",
                             "lower", v.skip)

    def fresh(self, v: Variant) -> None:
        """Restart ``v`` and warm it with 200 connections: memory is measured on a process
        that has not carried bulk transfers (their freed buffers would hide the growth)."""
        v.stop()
        v.start(self.target)
        if v.skip or v.proc is None:
            raise RuntimeError(f"restart failed: {v.skip}")
        loadgen("connrate", v.addr(self.target), v.via_arg(self.target), "0.5", "200")
        time.sleep(0.3)

    def idle(self) -> None:
        n = min(self.p.idle_conns, (self.nofile - 200) // 2)
        for v in self.live(relay_only=True):
            try:
                self.fresh(v)
                assert v.proc is not None
                base = pss_bytes(v.proc.pid)
                with hold(v.addr(self.target), v.via_arg(self.target), n):
                    time.sleep(0.5)
                    grown = pss_bytes(v.proc.pid) - base
                self.add(f"memory per idle relayed connection ({n})", v, [grown / n / 1024],
                         "KiB", "lower")
            except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
                self.add(f"memory per idle relayed connection ({n})", v, [], "KiB", "lower",
                         f"failed: {e}")

    def idle10k(self) -> None:
        want = self.p.big_idle
        n = min(want, (self.nofile - 400) // 2)
        note = "" if n == want else (f"RLIMIT_NOFILE {self.nofile} allows {n} relayed "
                                     f"connections, not {want}")
        keys = ("ugate-tcp", "haproxy-splice")
        vs = [v for v in self.live(relay_only=True) if v.key in keys]
        def live_runs(v: Variant) -> tuple[list[float], float]:
            rates = []
            for _ in range(3):
                r = loadgen("bulk", v.addr(self.target), v.via_arg(self.target),
                            str(self.p.bulk_bytes), "1")
                rates.append(r["bytes"] * 8 / r["seconds"] / 1e9)
            pp = loadgen("pingpong", v.addr(self.target), v.via_arg(self.target), "64",
                         str(self.p.ping_count))
            return rates, float(pp["p99_us"])

        for v in vs:
            m = min(n, 8800) if v.key.startswith("haproxy") else n
            vnote = f"held {m} (HAProxy maxconn 8900 fits RLIMIT_NOFILE)" if m != n else note
            try:
                self.fresh(v)
                assert v.proc is not None
                base = pss_bytes(v.proc.pid)
                with hold(v.addr(self.target), v.via_arg(self.target), m) as info:
                    time.sleep(0.5)
                    grown = pss_bytes(v.proc.pid) - base
                    rates, p99 = live_runs(v)
                before, p99_before = live_runs(v)  # same phase of the machine, none held
                self.add(f"memory per idle relayed connection ({n})", v,
                         [grown / m / 1024], "KiB", "lower",
                         f"opened in {info['seconds']:.1f}s, all alive after; {vnote}".strip())
                self.add(f"bulk 1 stream while {n} idle held", v, rates, "Gbit/s", "higher",
                         vnote)
                self.add(f"  same, right after, none held ({n})", v, before, "Gbit/s",
                         "higher")
                self.add(f"ping-pong 64 B p99 while {n} idle held", v, [p99], "µs",
                         "lower", vnote)
                self.add(f"  same, right after, none held ({n}) ", v, [p99_before], "µs",
                         "lower")
            except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
                self.add(f"bulk 1 stream while {n} idle held", v, [], "Gbit/s", "higher",
                         f"failed: {e}")

    def finish(self) -> None:
        """x direct: the median of per-round ratios (each round ran direct and the variant
        back to back, so a drift of the shared machine cancels), else the ratio of medians."""
        direct = {r.scenario: r for r in self.rows if r.variant == "direct" and r.value}
        for r in self.rows:
            d = direct.get(r.scenario)
            if d is None and "while" in r.scenario:
                d = direct.get("bulk 1 stream" if r.unit == "Gbit/s" else "ping-pong 64 B p99")
            if r.value is None or d is None or not d.value:
                continue
            x = pair_ratio(r, d) if r.scenario == d.scenario else r.value / d.value
            r.x_direct = round(x, 3) if x is not None else None


# --------------------------------------------------------------------------- report
PEERS = ["haproxy-splice", "haproxy", "socat", "pproxy"]


def pair_ratio(a: Row | None, b: Row | None) -> float | None:
    """``a / b``: the median of per-round ratios when both ran in the same rounds (a drift
    of the shared machine cancels), else the ratio of the medians."""
    if a is None or b is None or a.value is None or not b.value:
        return None
    if len(a.samples) == len(b.samples) > 1 and all(b.samples):
        return statistics.median(x / y for x, y in zip(a.samples, b.samples, strict=True))
    return a.value / b.value


def table(rows: list[Row], vs: list[Variant]) -> str:
    labels = {v.key: v.label for v in vs}
    by = {(r.scenario, r.variant): r for r in rows}
    head = ["scenario", "variant", "value", "x direct", *[f"vs {p}" for p in PEERS]]
    lines = [head]
    seen: list[str] = []
    for r in rows:
        if r.scenario not in seen:
            seen.append(r.scenario)
    for sc in seen:
        first = True
        for r in (x for x in rows if x.scenario == sc):
            if r.value is None:
                val = f"skipped: {r.note}" if r.note else "-"
            elif r.unit == "conn/s" or r.value >= 100:
                val = f"{r.value:,.0f} {r.unit}"
            else:
                val = f"{r.value:.2f} {r.unit}"
            cells = [sc if first else "", labels.get(r.variant, r.variant), val,
                     f"{r.x_direct:.2f}x" if r.x_direct else ""]
            for p in PEERS:
                x = pair_ratio(r, by.get((sc, p))) if r.variant.startswith("ugate") else None
                cells.append(f"{x:.2f}x" if x is not None else "")
            lines.append(cells)
            first = False
    width = [min(max(len(c[i]) for c in lines), 60) for i in range(len(head))]
    out = []
    for i, c in enumerate(lines):
        out.append("  ".join(x[:60].ljust(w) for x, w in zip(c, width, strict=True)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in width))
    return "\n".join(out)


def goals(rows: list[Row]) -> list[str]:
    rb = {(r.scenario, r.variant): r for r in rows}
    by = {k: r.value for k, r in rb.items()}

    def ratio(sc: str, a: str, b: str) -> float | None:
        return pair_ratio(rb.get((sc, a)), rb.get((sc, b)))

    out = []

    def check(what: str, got: float | None, want: float, higher: bool, fmt: str = "{:.2f}x"
              ) -> None:
        if got is None:
            out.append(f"  ?  {what}: not measured")
            return
        ok = got >= want if higher else got <= want
        out.append(f"  {'ok ' if ok else 'MISS'} {what}: {fmt.format(got)}")

    b1 = "bulk 1 stream"
    check("tcp forward bulk >= 0.85x direct", ratio(b1, "ugate-tcp", "direct"), 0.85, True)
    check("tcp forward bulk >= 1.0x HAProxy forced splice",
          ratio(b1, "ugate-tcp", "haproxy-splice"), 1.0, True)
    check("copy path bulk >= 0.6x direct", ratio(b1, "ugate-tcp-copy", "direct"), 0.6, True)
    check("sequential conn/s >= 0.8x HAProxy",
          ratio("sequential connections (1 B echo)", "ugate-tcp", "haproxy"), 0.8, True)
    for size in ("64 B", "4 KiB"):
        check(f"p99 latency {size} <= 1.2x HAProxy",
              ratio(f"ping-pong {size} p99", "ugate-tcp", "haproxy"), 1.2, False)
    mem = [r for r in rows if r.variant == "ugate-tcp" and r.scenario.startswith("memory")]
    for r in mem:
        check(f"<= 4 KiB per idle relayed connection ({r.scenario.split('(')[-1][:-1]})",
              r.value, 4.0, False, "{:.2f} KiB")
    for r in rows:
        if r.variant == "ugate-tcp" and r.scenario.startswith("bulk 1 stream while"):
            n = r.scenario.split()[4]
            base = by.get((f"  same, right after, none held ({n})", "ugate-tcp"))
            check(f"{r.scenario}: live stream unaffected (>= 0.9x of none held)",
                  r.value / base if r.value and base else None, 0.9, True)
    # what a Python relay can reach here at all, for the goals above that sit near it
    ctx = [(b1, "x direct", ratio(b1, "haproxy-splice", "direct"), "HAProxy forced splice"),
           ("sequential connections (1 B echo)", "x HAProxy",
            ratio("sequential connections (1 B echo)", "bare-floor", "haproxy"),
            "bare uvloop Protocol pair")]
    for sc, unit, got, who in ctx:
        if got is not None:
            out.append(f"  (context: {who}, {sc}: {got:.2f} {unit})")
    return out


def report(rows: list[Row], vs: list[Variant]) -> None:
    print(table(rows, vs))
    print("\nratios: value / reference (the median of per-round ratios where both ran in the "
          "same rounds); higher is better for Gbit/s and conn/s, lower for µs, KiB and "
          "CPU s/GiB.")
    print("goals (ugate tcp forward):")
    print("\n".join(goals(rows)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter run (~2 min)")
    ap.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    ap.add_argument("--variants", help="comma-separated variant keys (default: all)")
    ap.add_argument("--scenarios", help=f"comma-separated: {','.join(SCENARIOS)}")
    ap.add_argument("--table", metavar="FILE", help="print the table of an earlier --json "
                    "FILE and exit")
    args = ap.parse_args()
    if args.table:
        rows = [Row(d["scenario"], d["variant"], d["value"], d["unit"], d["better"],
                    d.get("note", ""), d["x_direct"], d.get("samples", []))
                for d in json.loads(Path(args.table).read_text())]
        report(rows, variants(full=True))
        return 0
    prof = QUICK if args.quick else FULL
    scen = args.scenarios.split(",") if args.scenarios else SCENARIOS
    OUT.mkdir(exist_ok=True)
    t0 = time.monotonic()
    load0 = " ".join(f"{x:.1f}" for x in os.getloadavg())
    build_loadgen()
    nofile = raise_nofile()
    vs = variants(full=not args.quick)
    if args.variants:
        keep = {"direct", *args.variants.split(",")}
        vs = [v for v in vs if v.key in keep]
    if any(v.key.startswith("pproxy") for v in vs):
        note = ensure_pproxy()
        for v in vs:
            if v.key.startswith("pproxy") and note:
                v.skip = note
    server = subprocess.Popen([str(LOADGEN), "server"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        target = int(server.stdout.readline())
        for v in vs:
            v.start(target)
        for v in vs:
            if v.skip:
                log(f"{v.key}: skipped: {v.skip}")
            elif v.relay and v.via != "direct":
                try:
                    loadgen("connrate", v.addr(target), v.via_arg(target), "0.2", "3")
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    v.skip = f"handshake failed: {e}"
        b = Bench(prof, vs, target, nofile)
        steps: list[tuple[str, Callable[[], None]]] = [
            ("bulk1", lambda: b.bulk("bulk 1 stream", prof.bulk_bytes, 1, prof.bulk_reps,
                                     True)),
            ("bulk100", lambda: b.bulk("bulk 100 streams", prof.many_bytes, 100,
                                       prof.many_reps, False)),
            ("connrate", b.connrate),
            ("latency", b.latency),
            ("idle", b.idle),
            ("idle10k", b.idle10k if prof.big_idle else lambda: None),
        ]
        for name, fn in steps:
            if name in scen:
                log(f"{name} ({time.monotonic() - t0:.0f}s)")
                fn()
        b.finish()
    finally:
        for v in vs:
            v.stop()
        server.kill()
        server.wait()
    report(b.rows, vs)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio (uvloop missing!)"
    print(f"\n{len(b.rows)} rows in {time.monotonic() - t0:.0f}s on {os.cpu_count()} CPUs "
          f"({'quick' if args.quick else 'full'} run); ugate loop: {loop}; load average "
          f"{load0} at start, {load} at the end")
    if args.json:
        data = [{"scenario": r.scenario, "variant": r.variant, "value": r.value,
                 "unit": r.unit, "x_direct": r.x_direct, "better": r.better,
                 **({"note": r.note} if r.note else {}),
                 "samples": [round(s, 3) for s in r.samples]} for r in b.rows]
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
