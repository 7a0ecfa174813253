#!/usr/bin/env python3
"""quic mesh streams vs HBONE, same run: ugate processes between a client and a sink.

    client ──TCP──► A (tcp listener) ══ quic (ugate/1) or hbone (mTLS h2) ══► B ──TCP──► sink

B serves two ``quic`` listeners (``max_datagram_size = 1200``, and the default: automatic, 16384
for a mesh peer on loopback) and one ``hbone``; A1 (``[quic] max_datagram_size = 1200``) dials
the first, A2 (defaults) the second and HBONE. B's key is pinned by ID. Scenarios,
interleaved rounds, median shown:

* ``bulk``: one stream uploading N MiB; the sink answers one byte after EOF (MiB/s);
* ``streams/s``: sequential streams: connect, 1-byte echo, close.

Then a cProfile of the quic bulk with both gateways in this process: where the time goes.

    .venv/bin/python plugins/ugate_quic/bench_quic.py            # ~1 min
    .venv/bin/python plugins/ugate_quic/bench_quic.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MiB = 1 << 20
BIG = 16384
UGATE = [sys.executable, "-m", "ugate_core.cli"]


def b_config(sink: int) -> str:
    return """
[admin]
listen = ""
[listeners.quic]
listen = "127.0.0.1:0"
protocols = ["quic"]
max_datagram_size = 1200
[listeners.quicbig]
listen = "127.0.0.1:0"
protocols = ["quic"]
[listeners.hbone]
listen = "127.0.0.1:0"
protocols = ["hbone"]
""" + "".join(f'[hosts."{n}.test"]\nendpoints = ["127.0.0.1:{sink}"]\n'
              for n in ("q", "qbig", "h"))


def a_config(b_id: str, via: dict[str, tuple[int, str]], big: bool) -> str:
    """A ``tcp`` listener per entry of ``via`` (listener port → (B's port, protocol))."""
    out = ['[admin]\nlisten = ""' + ("" if big else "\n[quic]\nmax_datagram_size = 1200")]
    for name, (port, (bport, proto)) in via.items():
        out.append(f'[listeners.{name}]\nlisten = "127.0.0.1:{port}"\nprotocols = ["tcp"]\n'
                   f'target = "{name}.test:1"\n[hosts."{name}.test"]\n'
                   f'endpoints = ["127.0.0.1:{bport}"]\nprotocol = "{proto}"\n'
                   f'identity = ["id:{b_id}"]')
    return "\n".join(out) + "\n"


async def sink(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """Counts what arrives; a 1-byte message is echoed (stream-open rate), EOF is answered."""
    n = 0
    try:
        while True:
            d = await r.read(1 << 20)
            if not d:
                break
            n += len(d)
            if n == 1:
                w.write(d)
        w.write(b"k")
        await w.drain()
    except ConnectionError:
        pass
    finally:
        w.close()


class SinkThread(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.port = 0
        self.ready = threading.Event()

    def run(self) -> None:
        async def main() -> None:
            srv = await asyncio.start_server(sink, "127.0.0.1", 0)
            self.port = srv.sockets[0].getsockname()[1]
            self.ready.set()
            await asyncio.Event().wait()

        asyncio.run(main())


async def bulk(port: int, nbytes: int) -> float:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    chunk = b"x" * (1 << 16)
    t0 = time.perf_counter()
    for _ in range(nbytes // len(chunk)):
        w.write(chunk)
        await w.drain()
    w.write_eof()
    assert await asyncio.wait_for(r.read(), 120) == b"k"
    dt = time.perf_counter() - t0
    w.close()
    return nbytes / MiB / dt


async def stream_rate(port: int, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"1")
        assert await asyncio.wait_for(r.readexactly(1), 10) == b"1"
        w.close()
    return n / (time.perf_counter() - t0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(log: Path, names: tuple[str, ...], proc: subprocess.Popen[bytes]) -> dict[str, int]:
    """Wait (bounded) for ugate's ``listening listener=X address=H:P`` lines; the ports."""
    for _ in range(400):
        out: dict[str, int] = {}
        for line in log.read_text().splitlines():
            for n in names:
                if f"listening listener={n} " in line:
                    out[n] = int(line.split("address=")[1].split()[0].rsplit(":", 1)[1])
        if len(out) == len(names):
            return out
        if proc.poll() is not None:
            raise SystemExit(f"ugate exited {proc.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    raise SystemExit(f"ugate did not listen: {log.read_text()[-2000:]}")


def start(tmp: Path, name: str, cfg: str) -> subprocess.Popen[bytes]:
    (tmp / f"{name}.toml").write_text(cfg)
    with (tmp / f"{name}.log").open("wb") as log:
        return subprocess.Popen([*UGATE, "run", "-c", str(tmp / f"{name}.toml"),
                                 "--state-dir", str(tmp / name)], stdout=log,
                                stderr=subprocess.STDOUT)


def measure(tmp: Path, sink_port: int, quick: bool) -> dict[str, list[float]]:
    b_id = json.loads(subprocess.run([*UGATE, "id", "--state-dir", str(tmp / "b"), "--json"],
                                     capture_output=True, check=True).stdout)["id"]
    procs = [start(tmp, "b", b_config(sink_port))]
    try:
        bp = listening(tmp / "b.log", ("quic", "quicbig", "hbone"), procs[0])
        p1, p2, p3 = free_port(), free_port(), free_port()
        procs.append(start(tmp, "a1", a_config(b_id, {"q": (p1, (bp["quic"], "quic"))}, False)))
        procs.append(start(tmp, "a2", a_config(b_id, {"qbig": (p2, (bp["quicbig"], "quic")),
                                                      "h": (p3, (bp["hbone"], "hbone"))}, True)))
        listening(tmp / "a1.log", ("q",), procs[1])
        listening(tmp / "a2.log", ("qbig", "h"), procs[2])
        rows = {"quic 1200": p1, "quic auto": p2, "hbone": p3}
        return asyncio.run(rounds(rows, quick))
    finally:
        for p in reversed(procs):  # the As first: then B has no client left to drain
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def rounds(rows: dict[str, int], quick: bool) -> dict[str, list[float]]:
    size = (16 if quick else 48) * MiB
    res: dict[str, list[float]] = {}
    for port in rows.values():
        await bulk(port, MiB)  # warm: connections made, pools filled
    for _ in range(1 if quick else 3):
        for name, port in rows.items():
            res.setdefault(f"{name} bulk", []).append(await bulk(port, size))
        for name, port in rows.items():
            res.setdefault(f"{name} streams/s", []).append(
                await stream_rate(port, 50 if quick else 200))
    return res


async def profiled(tmp: Path, nbytes: int, mds: int) -> str:
    """Client, both gateways and the sink on this process's one loop, the quic bulk under
    cProfile: top functions by own time."""
    from ugate_core import Gateway, loads

    srv = await asyncio.start_server(sink, "127.0.0.1", 0)
    b = Gateway(loads(b_config(srv.sockets[0].getsockname()[1]), "b"), state_dir=tmp / "pb")
    await b.start()
    port = free_port()
    listener = "quicbig" if mds == BIG else "quic"
    a = Gateway(loads(a_config(b.identity.id, {"q": (port, (b.port(listener), "quic"))},
                               mds == BIG), "a"), state_dir=tmp / "pa")
    await a.start()
    await bulk(port, MiB)
    prof = cProfile.Profile()
    prof.enable()
    rate = await bulk(port, nbytes)
    prof.disable()
    await a.shutdown(0.5)
    await b.shutdown(0.5)
    srv.close()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
    lines = [ln for ln in out.getvalue().splitlines() if ln.strip()][3:]
    return (f"profile: quic bulk, max_datagram_size {mds}, A and B on one loop: "
            f"{rate:.1f} MiB/s\n" + "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    sk = SinkThread()
    sk.start()
    sk.ready.wait(10)
    with tempfile.TemporaryDirectory(prefix="bench-quic-") as d:
        tmp = Path(d)
        res = measure(tmp, sk.port, args.quick)
        med = {k: statistics.median(v) for k, v in res.items()}
        print(f"{'scenario':<24} {'median':>9}        samples")
        for k, v in res.items():
            unit = "MiB/s" if "bulk" in k else "/s"
            print(f"{k:<24} {med[k]:>9.1f} {unit:<6} {', '.join(f'{x:.1f}' for x in v)}")
        for q in ("quic 1200", "quic auto"):
            print(f"ratio {q}/hbone: bulk {med[f'{q} bulk'] / med['hbone bulk']:.3f}x "
                  f"(goal >= 0.25x), streams/s "
                  f"{med[f'{q} streams/s'] / med['hbone streams/s']:.3f}x")
        for mds in (1200, BIG):
            print(asyncio.run(profiled(tmp, (8 if args.quick else 24) * MiB, mds)))


if __name__ == "__main__":
    main()
