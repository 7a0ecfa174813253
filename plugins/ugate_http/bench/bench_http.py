"""Reverse-proxy benchmark: wrk, h2load and curl through ugate and through HAProxy, as ratios.

Starts, each as its own process on loopback: a streaming origin (asyncio, this file), ugate
with an ``http`` listener in reverse mode, ``floor_h1.py`` (the leanest uvloop proxy: what
Python can do here, HTTP/1.1 rows only) and HAProxy with one thread (``mode http``,
``http-reuse always``) when installed. Prints requests/s (wrk, keep-alive, 1 and 16
connections), the proxy's CPU per request, p50/p99 at a fixed 1,000 requests/s, requests/s
of POSTs with a small JSON body (16 connections), and MiB/s for
a download (Content-Length and chunked) and an upload, direct and through each proxy; then
the same over HTTP/2 cleartext to the proxies (h2c in front, HTTP/1.1 to the origin): h2load
with 100 concurrent streams on one connection and with 4 connections x 25 streams, and curl
``--http2-prior-knowledge`` transfers; last, TLS passthrough by SNI against socat.

    python plugins/ugate_http/bench/bench_http.py [--quick]

Every run is bounded (wrk -d, curl --max-time); all processes are stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ugate_core.testing import free_port, wait_port

BLOCK = os.urandom(1 << 20)


async def _origin_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            target = lines[0].split(" ")[1]
            hdrs = {k.strip().lower(): v.strip() for k, _, v in
                    (ln.partition(":") for ln in lines[1:] if ":" in ln)}
            n = int(hdrs.get("content-length", "0"))
            while n:
                n -= len(await r.read(min(n, 1 << 18)))
            if target.startswith("/bytes/"):
                size = int(target.split("/")[2].split("?")[0])
                chunked = target.endswith("?chunked")
                w.write(b"HTTP/1.1 200 OK\r\n" + (b"Transfer-Encoding: chunked\r\n\r\n" if chunked
                        else b"Content-Length: %d\r\n\r\n" % size))
                while size:
                    piece = BLOCK[: min(size, len(BLOCK))]
                    w.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
                    size -= len(piece)
                    await w.drain()
                if chunked:
                    w.write(b"0\r\n\r\n")
            else:
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n")
            await w.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        w.close()


def origin_main(port: int) -> None:
    async def main() -> None:
        await asyncio.start_server(_origin_conn, "127.0.0.1", port)
        await asyncio.sleep(3600)

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def cpu_seconds(pid: int | None) -> float:
    """user+system CPU of a process so far (Linux /proc); 0 for None."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _paced(port: int, rate: float, seconds: float, conns: int) -> list[float]:
    """``conns`` keep-alive connections sending GET /w at ``rate`` requests/s in all; the
    latency of each is counted from its send (the event loop's timers wake up to a
    millisecond late, which would otherwise be measured for every variant alike)."""
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    interval = conns / rate
    n = int(seconds / interval)
    req = b"GET /w HTTP/1.1\r\nHost: svc.test\r\n\r\n"

    async def one(k: int, start: float) -> None:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in range(n):
                due = start + k * interval / conns + i * interval
                if (delay := due - loop.time()) > 0:
                    await asyncio.sleep(delay)
                sent = loop.time()
                w.write(req)
                head = await r.readuntil(b"\r\n\r\n")
                m = re.search(rb"(?i)content-length:\s*(\d+)", head)
                await r.readexactly(int(m.group(1)) if m else 0)
                lat.append(loop.time() - sent)
        finally:
            w.close()

    start = loop.time() + 0.05
    await asyncio.gather(*(one(k, start) for k in range(conns)))
    return lat


def paced_latency(port: int, rate: float, seconds: float, conns: int = 4) -> tuple[float, float]:
    """p50 and p99 in µs at a fixed request rate (the same load for every variant)."""
    lat = sorted(asyncio.run(_paced(port, rate, seconds, conns)))
    lat = lat[len(lat) // 10:] or lat  # the first tenth warms connections and pools
    lat.sort()
    return (lat[len(lat) // 2] * 1e6, lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6)


#: wrk script for the POST row: a small JSON body, as an API call or a device report sends
POST_LUA = """wrk.method = "POST"
wrk.body = '{"device":"sensor-17","value":21.5,"ts":1700000000,"tags":["a","b"]}'
wrk.headers["Content-Type"] = "application/json"
"""


def wrk(port: int, conns: int, seconds: int, script: Path | None = None) -> float:
    extra = ["-s", str(script)] if script is not None else []
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", *extra,
                          "-H", "Host: svc.test", f"http://127.0.0.1:{port}/w"],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        print(out)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(m.group(1)) if m else 0.0


def curl_rate(port: int, path: str, size: int, upload: Path | None = None,
              version: str = "--http1.1") -> float:
    """MiB/s of one curl transfer; ``version`` ``--http2-prior-knowledge`` for h2c."""
    args = ["curl", "-sS", version, "--max-time", "120", "-o", "/dev/null",
            "-H", "Host: svc.test"]
    if upload is not None:
        args += ["-X", "POST", "-T", str(upload)]
    t0 = time.monotonic()
    subprocess.run([*args, f"http://127.0.0.1:{port}{path}"], check=True, timeout=130)
    return size / (time.monotonic() - t0) / (1 << 20)


def h2load(port: int, n: int, conns: int, streams: int) -> float:
    out = subprocess.run(["h2load", f"-n{n}", f"-c{conns}", f"-m{streams}",
                          "-H", ":authority: svc.test", f"http://127.0.0.1:{port}/w"],
                         capture_output=True, text=True, timeout=300).stdout
    m = re.search(r"(\d+) succeeded", out)
    if m is None or int(m.group(1)) != n:
        print(out)
    m = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    return float(m.group(1)) if m else 0.0


TLS_SINK = r"""
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(16); print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    try:
        t = ctx.wrap_socket(c, server_side=True)
        n, want, buf = 0, int(sys.argv[3]), bytearray(1 << 20)
        while n < want and (k := t.recv_into(buf)):
            n += k
        t.sendall(str(n).encode())
        t.close()
    except OSError:
        c.close()
"""


def tls_upload(port: int, nbytes: int, cafile: Path) -> float:
    """One TLS connection with SNI backend.test: upload, the sink answers the count."""
    import ssl

    ctx = ssl.create_default_context(cafile=str(cafile))
    buf = memoryview(b"\0" * (1 << 20))
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), 10) as raw, \
            ctx.wrap_socket(raw, server_hostname="backend.test") as t:
        t.settimeout(120)
        left = nbytes
        while left > 0:
            left -= t.send(buf[: min(left, len(buf))])
        got = t.recv(64)
    dt = time.monotonic() - t0
    if got != str(nbytes).encode():
        raise SystemExit(f"tls passthrough: the backend counted {got!r}, not {nbytes}")
    return nbytes / dt / (1 << 20)


def tls_passthrough(tmp: Path, procs: list[subprocess.Popen[bytes]], size: int,
                    runs: int) -> dict[str, float]:
    """TLS bulk through ugate's SNI passthrough (the shared port's TLS front, no termination)
    vs through socat (a plain TCP forward) vs direct, to a Python TLS sink; interleaved."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj",
                    "/CN=backend.test", "-addext", "subjectAltName=DNS:backend.test",
                    "-keyout", str(tmp / "be.key"), "-out", str(tmp / "be.crt")],
                   check=True, capture_output=True, timeout=60)
    sink = subprocess.Popen([sys.executable, "-c", TLS_SINK, str(tmp / "be.crt"),
                             str(tmp / "be.key"), str(size)], stdout=subprocess.PIPE)
    procs.append(sink)
    assert sink.stdout is not None
    bport = int(sink.stdout.readline())
    gp = free_port()
    (tmp / "tls.toml").write_text(f"""
[admin]
listen = ""
[listeners.front]
listen = "127.0.0.1:{gp}"
protocols = ["*"]
passthrough = ["backend.test"]
passthrough_port = {bport}
[hosts."backend.test"]
endpoints = ["127.0.0.1"]
""")
    ugate = shutil.which("ugate") or str(Path(sys.executable).with_name("ugate"))
    procs.append(subprocess.Popen([ugate, "--log-level", "warning", "run", "-c",
                                   str(tmp / "tls.toml"), "--state-dir", str(tmp / "st2")]))
    ports = {"direct": bport, "ugate": gp}
    if shutil.which("socat"):
        sp = free_port()
        procs.append(subprocess.Popen(["socat", "-b", "262144",
                                       f"TCP-LISTEN:{sp},bind=127.0.0.1,reuseaddr,fork",
                                       f"TCP:127.0.0.1:{bport}"]))
        ports["socat"] = sp
    for port in ports.values():
        wait_port(port)
    best = dict.fromkeys(ports, 0.0)
    for _ in range(runs):  # interleaved: drift hits all alike
        for name, port in ports.items():
            best[name] = max(best[name], tls_upload(port, size, tmp / "be.crt"))
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--origin", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.origin:
        origin_main(a.origin)
        return
    size = (128 if a.quick else 1024) << 20
    seconds = 2 if a.quick else 4
    tmp = Path(tempfile.mkdtemp(prefix="ugate-http-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        up = free_port()
        procs.append(subprocess.Popen([sys.executable, __file__, "--origin", str(up)]))
        gp = free_port()
        (tmp / "ugate.toml").write_text(f"""
[admin]
listen = ""
[listeners.web]
listen = "127.0.0.1:{gp}"
protocols = ["http"]
mode = "reverse"
pool_max_idle = 128
[hosts."svc.test"]
endpoints = ["127.0.0.1:{up}"]
""")
        ugate = shutil.which("ugate") or str(Path(sys.executable).with_name("ugate"))
        procs.append(subprocess.Popen([ugate, "--log-level", "warning", "run", "-c",
                                       str(tmp / "ugate.toml"), "--state-dir", str(tmp / "st")]))
        pids: dict[str, int | None] = {"direct": None, "ugate": procs[-1].pid}
        fp = free_port()  # the floor: the leanest uvloop proxy (HTTP/1.1 rows only)
        procs.append(subprocess.Popen([sys.executable, str(Path(__file__).with_name(
            "floor_h1.py")), str(fp), str(up)]))
        pids["floor"] = procs[-1].pid
        targets = [("direct", up), ("ugate", gp), ("floor", fp)]
        h2ports = {"ugate": gp}  # the same listener takes h2c prior knowledge
        if shutil.which("haproxy"):
            hp = free_port()
            hp2 = free_port()
            (tmp / "haproxy.cfg").write_text(f"""
global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend f
  bind 127.0.0.1:{hp}
  default_backend b
frontend f2
  bind 127.0.0.1:{hp2} proto h2
  default_backend b
backend b
  http-reuse always
  server s1 127.0.0.1:{up}
""")
            procs.append(subprocess.Popen(["haproxy", "-f", str(tmp / "haproxy.cfg"), "-db"],
                                          stderr=subprocess.DEVNULL))
            pids["haproxy"] = procs[-1].pid
            targets.append(("haproxy", hp))
            h2ports["haproxy"] = hp2
        for port in [p for _, p in targets] + list(h2ports.values()):
            wait_port(port)
        post_lua = tmp / "post.lua"
        post_lua.write_text(POST_LUA)
        big = tmp / "upload"
        with big.open("wb") as f:
            for _ in range(size >> 20):
                f.write(BLOCK)
        res: dict[str, dict[str, float]] = {}
        for name, port in targets:
            r = res[name] = {}
            r["req/s c=1"] = wrk(port, 1, seconds)
            c0 = cpu_seconds(pids[name])
            r["req/s c=16"] = wrk(port, 16, seconds)
            n16 = r["req/s c=16"] * seconds
            r["CPU us/req c=16"] = (cpu_seconds(pids[name]) - c0) / n16 * 1e6 \
                if pids[name] and n16 else 0.0
            r["p50 us @1k req/s"], r["p99 us @1k req/s"] = paced_latency(
                port, 1000, 2 if a.quick else 4)
            if name == "floor":  # no chunked bodies, uploads or h2c: not a proxy
                continue
            r["POST req/s c=16"] = wrk(port, 16, seconds, post_lua)
            r["download MiB/s"] = curl_rate(port, f"/bytes/{size}", size)
            r["chunked MiB/s"] = curl_rate(port, f"/bytes/{size}?chunked", size)
            r["upload MiB/s"] = curl_rate(port, "/up", size, big)
            h2p = h2ports.get(name)
            n = 20000  # (~0.5 s each: fewer requests made the quick run a matter of hiccups)
            r["h2c req/s 1x100"] = h2load(h2p, n, 1, 100) if h2p else 0.0
            r["h2c req/s 4x25"] = h2load(h2p, n, 4, 25) if h2p else 0.0
            h2 = "--http2-prior-knowledge"
            r["h2c down MiB/s"] = curl_rate(h2p, f"/bytes/{size}", size, None, h2) if h2p else 0.0
            r["h2c up MiB/s"] = curl_rate(h2p, "/up", size, big, h2) if h2p else 0.0
        tls = tls_passthrough(tmp, procs, size, 2 if a.quick else 3)
        for key in res["direct"]:
            line = f"{key:17s}" + "".join(f"{n} {r[key]:8.0f}   " if r.get(key) else
                                          f"{n} {'-':>8s}   " for n, r in res.items())
            if "haproxy" in res and res["haproxy"][key]:
                line += f"ugate/haproxy {res['ugate'][key] / res['haproxy'][key]:.2f}x"
            print(line)
        line = "tls pass MiB/s   " + "".join(f"{n} {v:8.0f}   " for n, v in tls.items())
        if tls.get("socat"):
            line += f"ugate/socat {tls['ugate'] / tls['socat']:.2f}x"
        print(line + "  (SNI passthrough, no termination; socat: plain TCP forward)")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
