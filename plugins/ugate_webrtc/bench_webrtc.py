#!/usr/bin/env python3
"""WebRTC data channels: ugate (aiortc) against node-datachannel ↔ node-datachannel.

node-datachannel offers in every row; the far side is either a node-datachannel answerer in
the same Node process (the anchor) or ugate's signaling, whose channels are relayed to a TCP
sink in a process of its own (the gateway runs in this one, on one asyncio loop)::

    node-datachannel ══ICE/DTLS/SCTP══► ugate ──TCP──► sink        (ugate rows)
    node-datachannel ══ICE/DTLS/SCTP══► node-datachannel           (anchor rows)

Rows: ``bulk1`` (one channel), ``bulk8`` (eight channels sharing the bytes), each in MiB/s, and
``open`` (a new data channel on a connected peer until its ``open`` event: median ms). Ratios
are ugate / anchor for bulk (goal ≥ 0.3x) and anchor / ugate for open (goal: ugate ≤ 2x).

    .venv/bin/python plugins/ugate_webrtc/bench_webrtc.py          # ~1 min
    .venv/bin/python plugins/ugate_webrtc/bench_webrtc.py --profile  # cProfile of ugate's bulk
    .venv/bin/python plugins/ugate_webrtc/bench_webrtc.py --open-gap-ms 5  # opens 5 ms apart
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MiB = 1 << 20


#: the TCP origin: reads to the end, answers "ok" and closes. It runs in a process of its own,
#: as an origin does: on the gateway's loop its accepts and closes would be charged to the
#: gateway's channel opens
SINK = """
import asyncio

async def sink(r, w):
    try:
        while await r.read(1 << 18):
            pass
        w.write(b"ok")
        w.write_eof()
        await w.drain()
    except ConnectionError:
        pass  # the open-latency rows close their channels at once
    finally:
        w.close()

async def main():
    srv = await asyncio.start_server(sink, "127.0.0.1", 0)
    print(srv.sockets[0].getsockname()[1], flush=True)
    await srv.serve_forever()

try:
    import uvloop
    uvloop.run(main())
except ImportError:
    asyncio.run(main())
"""


#: ms the node client idles between channel opens (``--open-gap-ms``)
OPEN_GAP_MS = 0


async def node(mode: str, url: str, target: str, total: int, chans: int,
               opens: int) -> dict[str, Any]:
    env = {**os.environ, "NODE_PATH": str(ROOT / "tests" / "js" / "node_modules"),
           "OPEN_GAP_MS": str(OPEN_GAP_MS)}
    p = await asyncio.create_subprocess_exec(
        "node", str(HERE / "bench_webrtc.cjs"), mode, url, target, str(total), str(chans),
        str(opens), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        out, err = await asyncio.wait_for(p.communicate(), 30)
    except TimeoutError:
        p.kill()
        await p.wait()
        return {"stalled": True}
    res: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    if "error" in res:
        raise SystemExit(f"bench_webrtc.cjs {mode}: {res['error']}\n{err.decode()[-2000:]}")
    return res


async def chromium(mode: str, url: str, target: str, total: int, chans: int,
                   opens: int) -> dict[str, Any]:
    from ugate_core.testing import browser_run

    spec = json.dumps({"mode": mode, "url": url, "target": target, "total": total,
                       "chans": chans, "opens": opens})
    try:
        res: dict[str, Any] = await browser_run(
            f"const SPEC = {spec};\n" + (HERE / "bench_page.js").read_text(), timeout=30)
    except AssertionError as e:
        print(f"  chromium {mode} x{chans}: {str(e)[:200]}", file=sys.stderr)
        return {"stalled": True}
    return res


async def main(args: argparse.Namespace) -> None:
    srv = await asyncio.create_subprocess_exec(sys.executable, "-c", SINK,
                                               stdout=asyncio.subprocess.PIPE)
    assert srv.stdout is not None
    try:
        target = f"127.0.0.1:{int(await asyncio.wait_for(srv.stdout.readline(), 20))}"
        await bench(args, target)
    finally:
        srv.kill()
        await srv.wait()


async def bench(args: argparse.Namespace, target: str) -> None:
    from ugate_core import Gateway, loads

    with tempfile.TemporaryDirectory() as tmp:
        gw = Gateway(loads('[admin]\nlisten = ""\n[listeners.web]\nlisten = "127.0.0.1:0"\n'
                           'protocols = ["http"]\n[webrtc]\nhost_addresses = ["127.0.0.1"]\n'
                           'allow_origins = ["*"]\n',
                           "<bench>"), state_dir=Path(tmp))
        await gw.start()
        url = f"http://127.0.0.1:{gw.port('web')}/.well-known/ugate/webrtc"
        # node-datachannel between two peers in one process stalls now and then on one
        # channel past a few MiB: its rows send 4 MiB
        size = {"ugate": args.mib * MiB, "anchor": 4 * MiB}
        rows: dict[str, dict[str, list[float]]] = {}
        prof = cProfile.Profile() if args.profile else None
        stalls: dict[str, int] = {}
        clients = ["node"] + ([] if args.no_chromium else ["chromium"])
        for _ in range(args.rounds):
            for client, mode in ((c, m) for c in clients for m in ("anchor", "ugate")):
                for chans in (1, 8):
                    if prof is not None and mode == "ugate":
                        prof.enable()
                    run = node if client == "node" else chromium
                    r = await run(mode, url, target, size[mode], chans, args.opens)
                    mode_name = mode if client == "node" else f"chromium-{mode}"
                    if prof is not None:
                        prof.disable()
                    if r.get("stalled"):
                        print(f"  {mode_name} x{chans}: stalled (no end within 30 s), left "
                              "out", file=sys.stderr)
                        stalls[mode_name] = stalls.get(mode_name, 0) + 1
                        continue
                    rate = r["bytes"] / MiB / r["bulk_s"]
                    print(f"  {mode_name} x{chans}: {rate:.1f} MiB/s, open "
                          f"{statistics.median(r['open_ms']):.2f} ms", file=sys.stderr)
                    d = rows.setdefault(mode_name, {})
                    d.setdefault(f"bulk{chans}", []).append(r["bytes"] / MiB / r["bulk_s"])
                    d.setdefault("open", []).extend(r["open_ms"])
        await gw.shutdown(1.0)
    med = {m: {k: statistics.median(v) for k, v in d.items()} for m, d in rows.items()}
    print(f"{'row':8} {'ugate':>12} {'node-dc':>12} {'ratio':>8}  goal")
    for k in ("bulk1", "bulk8"):
        u, a = med["ugate"].get(k, float("nan")), med["anchor"].get(k, float("nan"))
        print(f"{k:8} {u:9.1f} MiB/s {a:9.1f} MiB/s {u / a:7.2f}x  >= 0.3x")
    u, a = med["ugate"]["open"], med["anchor"]["open"]
    print(f"{'open':8} {u:9.2f} ms    {a:9.2f} ms    {u / a:7.2f}x  <= 2x (ugate/node-dc latency)")
    if "chromium-anchor" in med:
        cu, ca = med.get("chromium-ugate", {}), med["chromium-anchor"]
        print("Chromium as the client (second anchor: Chromium <-> Chromium in one page)")
        for k in ("bulk1", "bulk8"):
            u, a = cu.get(k, float("nan")), ca.get(k, float("nan"))
            print(f"{k:8} {u:9.1f} MiB/s {a:9.1f} MiB/s {u / a:7.2f}x")
        u, a = cu.get("open", float("nan")), ca.get("open", float("nan"))
        print(f"{'open':8} {u:9.2f} ms    {a:9.2f} ms    {u / a:7.2f}x")
    if stalls:
        print(f"stalled runs (left out): {stalls}")
    if prof is not None:
        st = pstats.Stats(prof, stream=sys.stdout)
        st.sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=8, help="MiB per bulk run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--opens", type=int, default=20)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--open-gap-ms", type=int, default=0,
                    help="node rows: idle this long between channel opens, so an open does "
                    "not queue behind the gateway's dial and close of the channel before it")
    ap.add_argument("--no-chromium", action="store_true", help="node-datachannel rows only")
    a = ap.parse_args()
    OPEN_GAP_MS = a.open_gap_ms
    a.no_chromium = a.no_chromium or not os.path.exists(
        os.environ.get("UGATE_CHROMIUM", "/usr/bin/chromium"))
    try:  # the loop `ugate run` uses with ugate-core[fast]
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(a))
