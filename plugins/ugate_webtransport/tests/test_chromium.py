"""Headless Chromium opens WebTransport sessions to ugate (aioquic HTTP/3) with
``serverCertificateHashes``; each bidi stream is a mesh stream to a TCP echo origin."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ugate_core.testing import StartGateway, browser_run
from ugate_quic.certs import browser_certs
from ugate_webtransport.session import hashes_json

MiB = 1 << 20


def config(echo: tuple[str, int], extra: str = "") -> str:
    return f"""
[admin]
listen = ""
[listeners.quic]
listen = "127.0.0.1:0"
protocols = ["quic"]
[hosts."echo.test"]
endpoints = ["{echo[0]}:{echo[1]}"]
{extra}
"""


def wt_pattern(n: int, seed: int) -> bytes:
    """The page's pattern (JS ``pat``): byte j = (j * 31 + seed * 7 + (j >> 13)) & 255."""
    return bytes((j * 31 + seed * 7 + (j >> 13)) & 255 for j in range(n))


#: JS helpers (wt_page.js): the preamble frame, the pattern, one echo stream
JS = (Path(__file__).parent / "wt_page.js").read_text()


async def test_chromium_streams_echo_8mib_each_and_see_a_refusal(
        start_gateway: StartGateway, echo_server: tuple[str, int]) -> None:
    gw = await start_gateway(config(echo_server))
    url = f"https://127.0.0.1:{gw.port('quic')}/.well-known/ugate/wt"
    script = JS + f"""
    // the current and next hashes, as /.well-known/ugate/wt-hashes publishes them; both pinned
    const doc = {hashes_json(gw).decode()};
    const pins = doc.hashes.map(h => ({{algorithm: doc.algorithm,
        value: new Uint8Array(h.match(/../g).map(x => parseInt(x, 16)))}}));
    const wt = new WebTransport({json.dumps(url)}, {{serverCertificateHashes: pins}});
    await wt.ready;
    const res = await Promise.all([1, 2, 3].map(i => echo(wt, 'echo.test:7', {8 * MiB}, i)));
    res.push(await echo(wt, '127.0.0.1:1', 10, 0));
    wt.close();
    return res;
    """
    res = await browser_run(script, timeout=90)
    for i, r in enumerate(res[:3], 1):
        assert r["status"] == "200", r
        assert r["bytes"] == 8 * MiB and r["first_mismatch"] == -1, r
        assert r["sha256"] == hashlib.sha256(wt_pattern(8 * MiB, i)).hexdigest()
    assert res[3] == {"status": "502 refused"}
    certs = browser_certs(gw)
    assert certs is not None and len(set(certs.hashes())) == 2
