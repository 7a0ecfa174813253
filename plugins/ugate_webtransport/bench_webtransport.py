#!/usr/bin/env python3
"""WebTransport with headless Chromium as the client: ugate vs a bare echo server on the same
QUIC library (aioquic), and vs the same page over ugate-ws, same run.

    page ══WebTransport══► ugate (preamble → TCP echo origin)          ugate row
    page ══WebTransport══► bare aioquic WebTransport echo server        library floor
    page ══WebSocket═════► ugate-ws, same gateway (→ same TCP origin)   ugate-ws row

Scenarios (in the page, timed there): ``bulk`` (one stream, N MiB echoed: MiB/s each way),
``4 streams`` (four at once, aggregate MiB/s), ``streams/s`` (sequential streams, 1-byte echo
each). Rounds are interleaved; the median and the ratios ugate / bare (goal: bulk >= 0.8x)
and WebTransport / WebSocket through the same gateway are printed.

    .venv/bin/python plugins/ugate_webtransport/bench_webtransport.py   # ~1.5 min, 16 MiB
    .venv/bin/python plugins/ugate_webtransport/bench_webtransport.py --quick
    .venv/bin/python plugins/ugate_webtransport/bench_webtransport.py --bare-server
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import ipaddress
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MiB = 1 << 20
UGATE = [sys.executable, "-m", "ugate_core.cli"]

PAGE = (Path(__file__).resolve().parent / "bench_webtransport.js").read_text()


# ------------------------------------------------------------------ the bare echo server
def bare_server() -> None:
    """A WebTransport echo server on aioquic, nothing else: prints ``port hash`` and serves."""
    from aioquic.asyncio import QuicConnectionProtocol, serve
    from aioquic.h3.connection import H3Connection
    from aioquic.h3.events import HeadersReceived, WebTransportStreamDataReceived
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.events import HandshakeCompleted, QuicEvent
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bare")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=12))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))

    class Echo(QuicConnectionProtocol):
        h3: H3Connection | None = None

        def quic_event_received(self, event: QuicEvent) -> None:
            if isinstance(event, HandshakeCompleted):
                self.h3 = H3Connection(self._quic, enable_webtransport=True)
            if self.h3 is None:
                return
            for ev in self.h3.handle_event(event):
                if isinstance(ev, HeadersReceived):
                    self.h3.send_headers(ev.stream_id, [(b":status", b"200"), (
                        b"sec-webtransport-http3-draft", b"draft02")])
                elif isinstance(ev, WebTransportStreamDataReceived):
                    self._quic.send_stream_data(ev.stream_id, ev.data, ev.stream_ended)
            self.transmit()

    async def main() -> None:
        cfg = QuicConfiguration(is_client=False, alpn_protocols=["h3"],
                                max_datagram_frame_size=65536)
        cfg.certificate, cfg.private_key = cert, key
        srv = await serve("127.0.0.1", 0, configuration=cfg, create_protocol=Echo)
        port = srv._transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
        der = cert.public_bytes(serialization.Encoding.DER)
        print(port, hashlib.sha256(der).hexdigest(), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# ------------------------------------------------------------------ ugate and its origin
class EchoOrigin(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.port = 0
        self.ready = threading.Event()

    def run(self) -> None:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while d := await r.read(1 << 18):
                    w.write(d)
                    await w.drain()
                w.write_eof()
            except ConnectionError:
                pass
            finally:
                w.close()

        async def main() -> None:
            srv = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.port = srv.sockets[0].getsockname()[1]
            self.ready.set()
            await asyncio.Event().wait()

        asyncio.run(main())


def start_ugate(tmp: Path, origin: int) -> tuple[subprocess.Popen[bytes], int, int, str]:
    """ugate with a ``webtransport`` listener (UDP) and a shared port (TCP: ugate-ws)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        tcp = s.getsockname()[1]
    (tmp / "wt.toml").write_text(f"""
[admin]
listen = ""
[quic]
shared_port = false
[listeners.quic]
listen = "127.0.0.1:{port}"
protocols = ["webtransport"]
[listeners.main]
listen = "127.0.0.1:{tcp}"
protocols = ["*"]
[ws]
origins = ["*"]     # the bench page's origin is a random port
[hosts."echo.test"]
endpoints = ["127.0.0.1:{origin}"]
""")
    log = (tmp / "ugate.log").open("wb")
    p = subprocess.Popen([*UGATE, "run", "-c", str(tmp / "wt.toml"), "--state-dir",
                          str(tmp / "state")], stdout=log, stderr=subprocess.STDOUT)
    for _ in range(400):
        if "listening listener=quic" in (tmp / "ugate.log").read_text():
            break
        if p.poll() is not None:
            raise SystemExit((tmp / "ugate.log").read_text()[-2000:])
        time.sleep(0.05)
    # the hashes the running gateway publishes, fetched over HTTP/3 (ngtcp2's client)
    got = subprocess.run(["gtlsclient", "-q", "--exit-on-all-streams-close",
                          f"--download={tmp}", "127.0.0.1", str(port),
                          f"https://127.0.0.1:{port}/.well-known/ugate/wt-hashes"],
                         capture_output=True, timeout=30)
    if got.returncode != 0:
        raise SystemExit(f"gtlsclient: {got.stderr.decode()[-500:]}")
    doc = json.loads((tmp / "wt-hashes").read_text())
    return p, port, tcp, str(doc["hashes"][0])


async def page(url: str, hsh: str, pre: str, n: int, opens: int) -> dict[str, float]:
    from ugate_core.testing import browser_run

    script = PAGE + f"return await bench({json.dumps(url)}, {json.dumps(hsh)}, " \
                    f"{json.dumps(pre)}, {n}, 4, {opens});"
    res: dict[str, float] = await browser_run(script, timeout=120)
    return res


async def ws_page(base: str, pre: str, n: int, opens: int) -> dict[str, float]:
    from ugate_core.testing import browser_run

    script = PAGE + f"return await benchWs({json.dumps(base)}, {json.dumps(pre)}, {n}, 4, " \
                    f"{opens});"
    res: dict[str, float] = await browser_run(script, timeout=120)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--bare-server", action="store_true")
    args = ap.parse_args()
    if args.bare_server:
        bare_server()
        return
    origin = EchoOrigin()
    origin.start()
    origin.ready.wait(10)
    n = (8 if args.quick else 16) * MiB
    opens = 20 if args.quick else 100
    with tempfile.TemporaryDirectory(prefix="bench-wt-") as d:
        tmp = Path(d)
        bare = subprocess.Popen([sys.executable, __file__, "--bare-server"],
                                stdout=subprocess.PIPE)
        assert bare.stdout is not None
        bport, bhash = bare.stdout.readline().decode().split()
        ug, uport, tport, uhash = start_ugate(tmp, origin.port)
        rows: dict[str, list[dict[str, float]]] = {"ugate": [], "bare aioquic": [],
                                                   "ugate-ws": []}
        try:
            for _ in range(1 if args.quick else 3):
                rows["ugate"].append(asyncio.run(page(
                    f"https://127.0.0.1:{uport}/.well-known/ugate/wt", uhash, "echo.test:7",
                    n, opens)))
                rows["bare aioquic"].append(asyncio.run(page(
                    f"https://127.0.0.1:{bport}/", bhash, "", n, opens)))
                rows["ugate-ws"].append(asyncio.run(ws_page(
                    f"ws://127.0.0.1:{tport}", "echo.test:7", n, opens)))
        finally:
            for p in (ug, bare):
                p.terminate()
                p.wait(20)
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("bulk", "multi", "rate")}
           for k, v in rows.items()}
    print(f"headless Chromium client, {n // MiB} MiB echoed per scenario; ugate and bare: "
          "WebTransport, ugate-ws: the same page over a WebSocket per stream")
    print(f"{'server':<14} {'bulk MiB/s':>11} {'4 streams MiB/s':>16} {'streams/s':>10}")
    for k, m in med.items():
        print(f"{k:<14} {m['bulk']:>11.1f} {m['multi']:>16.1f} {m['rate']:>10.1f}")
    u, b = med["ugate"], med["bare aioquic"]
    print(f"ratio ugate/bare: bulk {u['bulk'] / b['bulk']:.2f}x (goal >= 0.8x), 4 streams "
          f"{u['multi'] / b['multi']:.2f}x, streams/s {u['rate'] / b['rate']:.2f}x")
    w = med["ugate-ws"]
    print(f"ratio WebTransport/WebSocket (both ugate): bulk {u['bulk'] / w['bulk']:.2f}x, "
          f"4 streams {u['multi'] / w['multi']:.2f}x, streams/s {u['rate'] / w['rate']:.2f}x")


if __name__ == "__main__":
    main()
