"""Real peers over real HTTP signaling: node-datachannel (libdatachannel) as the offerer."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

from webrtc_testlib import CONFIG, Collector, client_offer, finish

from ugate_core.testing import (
    StartGateway,
    admin_get,
    browser_run,
    metric,
    node_run,
    require_peer,
    run,
)
from ugate_webrtc.options import PATH

HERE = Path(__file__).parent


def _page(name: str) -> str:
    """A test page's script, after the signaling helper it calls."""
    return (HERE / "page_signal.js").read_text() + (HERE / name).read_text()


def _node_pattern(n: int, seed: int) -> bytes:
    return bytes((i * 7 + seed * 13 + (i >> 8)) & 0xFF for i in range(n))


async def test_node_datachannel_offers_two_channels(start_gateway: StartGateway,
        echo_server: tuple[str, int]) -> None:
    require_peer("node", apt="nodejs")
    gw = await start_gateway(CONFIG)
    host, port = echo_server
    url = f"http://127.0.0.1:{gw.port('main')}{PATH}"
    size = 1 << 20
    labels = [f"{host}:{port}", f"localhost:{port}"]
    res = await node_run((HERE / "ndc_offer.cjs").read_text(), url, *labels,
                         env={"SIZE": str(size)}, timeout=60)
    out = json.loads(res.stdout.decode().strip().splitlines()[-1])
    assert "error" not in out, (out, res.stderr.decode()[-2000:])
    for k, label in enumerate(labels):
        want = hashlib.sha256(_node_pattern(size, k)).hexdigest()
        got = out["labels"][label]
        assert got["sent_sha256"] == want
        assert (got["len"], got["sha256"], got["fin"]) == (size, want, True)
    assert out["deleted"] == 200
    assert metric(gw, "ugate_webrtc_sessions") == 0
    for _ in range(50):
        if metric(gw, "ugate_webrtc_channels") == 0:
            break
        await asyncio.sleep(0.05)
    assert metric(gw, "ugate_webrtc_channels") == 0
    assert metric(gw, "ugate_webrtc_signaling_total", method="POST", code="201") == 1


async def test_chromium_two_channels_4mib_then_page_close_frees(start_gateway: StartGateway,
        echo_server: tuple[str, int]) -> None:
    gw = await start_gateway(CONFIG + 'allow_origins = ["*"]\nidle_timeout = 1\n')
    host, port = echo_server
    url = f"http://127.0.0.1:{gw.port('main')}{PATH}"
    size = 4 << 20
    labels = [f"{host}:{port}", f"localhost:{port}"]
    spec = json.dumps({"url": url, "labels": labels, "size": size})
    script = f"const SPEC = {spec};\n" + _page("page_echo.js")
    out = await browser_run(script, timeout=90)
    for k, label in enumerate(labels):
        want = hashlib.sha256(_node_pattern(size, k)).hexdigest()
        got = out["results"][label]
        assert got["sent"] == want
        assert (got["len"], got["sha256"]) == (size, want)
    assert out["location"].startswith(PATH + "/")
    # Chromium hid its host addresses behind mDNS names: dropped, met as peer-reflexive
    assert out["mdns"] >= 1
    # the page is gone (browser_run closed it): the session and its channels are freed
    for _ in range(100):
        if metric(gw, "ugate_webrtc_sessions") == 0 and metric(gw, "ugate_webrtc_channels") == 0:
            break
        await asyncio.sleep(0.1)
    status, body = await admin_get(gw, "/metrics")
    assert status == 200
    assert b"ugate_webrtc_sessions 0.0" in body, [ln for ln in body.split(b"\n") if b"webrtc" in ln]
    assert b"ugate_webrtc_channels 0.0" in body


async def test_chromium_closes_and_reopens_channels(start_gateway: StartGateway) -> None:
    """Chromium closes each channel and waits for its close event before opening the next: the
    gateway answers every reset with its own in one RE-CONFIG chunk, and every channel's origin
    connection is reset (a close before the empty message is a stream cut short)."""
    ends: list[bytes] = []

    async def origin(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        got = b""
        try:
            while data := await r.read(1024):
                got += data
                w.write(data)
        except ConnectionResetError:  # a close without the empty message first: cut short
            ends.append(got)
        w.close()

    srv = await asyncio.start_server(origin, "127.0.0.1", 0)
    try:
        gw = await start_gateway(CONFIG + 'allow_origins = ["*"]\n')
        label = f"127.0.0.1:{srv.sockets[0].getsockname()[1]}"
        n = 12
        spec = json.dumps({"url": f"http://127.0.0.1:{gw.port('main')}{PATH}", "label": label,
                           "n": n})
        script = f"const SPEC = {spec};\n" + _page("page_close_reopen.js")
        out = await browser_run(script, timeout=60)
        assert out["echoes"] == [f"ping {i}" for i in range(n)]
        # Chromium takes a stream id again only once both of its directions were reset
        assert len(out["ids"]) == n and out["state"] == "connected"
        for _ in range(50):
            if len(ends) == n:
                break
            await asyncio.sleep(0.05)
        assert sorted(ends) == sorted(f"ping {i}".encode() for i in range(n))
    finally:
        srv.close()


async def test_signaling_over_h2c_with_curl(start_gateway: StartGateway,
                                            echo_server: tuple[str, int],
                                            tmp_path: Path) -> None:
    curl = require_peer("curl")
    # h2c prior knowledge is served on a dedicated port in reverse or auto mode
    gw = await start_gateway(CONFIG.replace('protocols = ["http"]',
                                            'protocols = ["http"]\nmode = "auto"'))
    host, port = echo_server
    pc, (ch,), offer = await client_offer([f"{host}:{port}"])
    (tmp_path / "offer.sdp").write_text(offer)
    url = f"http://127.0.0.1:{gw.port('main')}{PATH}"
    res = await run(curl, "-sS", "--http2-prior-knowledge", "-D", str(tmp_path / "head"),
                    "-H", "content-type: application/sdp", "--data-binary",
                    f"@{tmp_path / 'offer.sdp'}", url, timeout=20)
    head = (tmp_path / "head").read_text().lower()
    assert res.returncode == 0, res.stderr
    assert head.startswith("http/2 201"), head
    assert f"location: {PATH}/" in head
    await finish(pc, res.stdout)
    col = Collector(ch)
    await asyncio.wait_for(col.opened.wait(), 10)
    ch.send(b"over h2c")
    ch.send(b"")
    await asyncio.wait_for(col.fin.wait(), 10)
    assert bytes(col.data) == b"over h2c"
    await pc.close()
