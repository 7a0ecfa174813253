"""A second WebTransport client: Debian's Firefox ESR, headless, on a loopback page that posts
its result back (no driver: Firefox runs the page's script on its own). Streams at once, each
echoed byte for byte through ugate, and a refused destination's status."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from ugate_core.testing import StartGateway, require_peer
from ugate_webtransport.session import hashes_json

from .test_chromium import JS, config, wt_pattern

MiB = 1 << 20
PREFS = """user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("toolkit.telemetry.reportingpolicy.firstRun", false);
user_pref("browser.aboutwelcome.enabled", false);
user_pref("app.update.enabled", false);
"""


def _page(script: str) -> bytes:
    """HTML whose script runs ``script`` (an async function body) and POSTs
    ``{ok, result|error}`` to ``/result`` on its own origin."""
    return ("<!doctype html><meta charset=utf-8><script>(async () => { let out; try { out = "
            "{ok: true, result: await (async () => {" + script + "\n})()}; } catch (e) { out = "
            "{ok: false, error: String(e)}; } await fetch('/result', {method: 'POST', body: "
            "JSON.stringify(out)}); })();</script>").encode()


def _profile(d: Path) -> None:
    d.mkdir()
    (d / "user.js").write_text(PREFS)


async def firefox_run(script: str, profile: Path, timeout: float = 60) -> Any:
    """Run ``script`` in a page of headless Firefox ESR served from http://127.0.0.1:PORT/
    (a secure context) and return its result."""
    exe = require_peer("firefox-esr", apt="firefox-esr")
    page = _page(script)
    got: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def http(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            head = (await r.readuntil(b"\r\n\r\n")).decode("latin-1")
            if head.startswith("POST /result"):
                n = next(int(ln.split(":", 1)[1]) for ln in head.split("\r\n")
                         if ln.lower().startswith("content-length:"))
                if not got.done():
                    got.set_result(json.loads(await r.readexactly(n)))
                w.write(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
            else:
                w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: %d\r\n"
                        b"connection: close\r\n\r\n%s" % (len(page), page))
            await w.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    srv = await asyncio.start_server(http, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}/"
    await asyncio.to_thread(_profile, profile)
    env = {**os.environ, "HOME": str(profile), "MOZ_HEADLESS": "1"}
    proc = await asyncio.create_subprocess_exec(
        exe, "--headless", "--no-remote", "--profile", str(profile), url, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        res = await asyncio.wait_for(got, timeout)
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        srv.close()
    assert res.get("ok"), res.get("error")
    return res["result"]


async def test_firefox_streams_echo_byte_for_byte_and_see_a_refusal(
        start_gateway: StartGateway, echo_server: tuple[str, int], tmp_path: Path) -> None:
    gw = await start_gateway(config(echo_server))
    url = f"https://127.0.0.1:{gw.port('quic')}/.well-known/ugate/wt"
    script = JS + f"""
    const doc = {hashes_json(gw).decode()};
    const pins = doc.hashes.map(h => ({{algorithm: doc.algorithm,
        value: new Uint8Array(h.match(/../g).map(x => parseInt(x, 16)))}}));
    const wt = new WebTransport({json.dumps(url)}, {{serverCertificateHashes: pins}});
    await wt.ready;
    const res = await Promise.all([1, 2].map(i => echo(wt, 'echo.test:7', {2 * MiB}, i)));
    res.push(await echo(wt, '127.0.0.1:1', 10, 0));
    wt.close();
    return res;
    """
    res = await firefox_run(script, tmp_path / "firefox")
    for i, r in enumerate(res[:2], 1):
        assert r["status"] == "200", r
        assert r["bytes"] == 2 * MiB and r["first_mismatch"] == -1, r
        assert r["sha256"] == hashlib.sha256(wt_pattern(2 * MiB, i)).hexdigest()
    assert res[2] == {"status": "502 refused"}
