"""The webrtc dialer against node-datachannel answering, and against another ugate."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ugate_core.testing import StartGateway, js_dir, metric, pattern

HERE = Path(__file__).parent


@pytest.fixture
async def ndc_answer() -> AsyncIterator[int]:
    root = js_dir()
    p = await asyncio.create_subprocess_exec(
        "node", str(HERE / "ndc_answer.cjs"), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "NODE_PATH": str(root / "node_modules")})
    try:
        assert p.stdout is not None
        line = await asyncio.wait_for(p.stdout.readline(), 15)
        yield int(json.loads(line)["port"])
    finally:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        await p.wait()


async def test_dialer_reaches_node_datachannel_and_reuses_the_peer(start_gateway: StartGateway,
        ndc_answer: int) -> None:
    gw = await start_gateway(f"""
[admin]
listen = "127.0.0.1:0"
[webrtc]
host_addresses = ["127.0.0.1"]
[hosts."far.test"]
endpoints = ["127.0.0.1:{ndc_answer}"]
protocol = "webrtc"
""")
    data = [pattern(200_000, seed=i) for i in range(3)]
    t0 = asyncio.get_running_loop().time()
    streams = [await gw.dial(f"far.test:{7000 + i}") for i in range(3)]
    assert asyncio.get_running_loop().time() - t0 < 10
    for s, d in zip(streams, data, strict=True):
        s.write(d)
        s.write_eof()
    for s, d in zip(streams, data, strict=True):
        got = bytearray()
        while len(got) < len(d):
            chunk = await asyncio.wait_for(s.read(65536), 10)
            assert chunk, "stream ended early"
            got += chunk
        assert bytes(got) == d
        assert await asyncio.wait_for(s.read(65536), 10) == b""  # the far FIN, echoed
        s.close()
    assert metric(gw, "ugate_dials_total", dialer="webrtc", result="ok") == 3
    from ugate_webrtc.dialer import POOL
    pool = gw.stash.get_or_create(POOL, lambda: None)
    assert pool is not None and len(pool.peers) == 1  # three channels on one peer connection


async def test_gateway_to_gateway(start_gateway: StartGateway,
        echo_server: tuple[str, int]) -> None:
    host, port = echo_server
    far = await start_gateway("""
[listeners.web]
listen = "127.0.0.1:0"
protocols = ["http"]
[admin]
listen = "127.0.0.1:0"
[webrtc]
host_addresses = ["127.0.0.1"]
[hosts."echo.far"]
endpoints = ["127.0.0.1"]
""")
    near = await start_gateway(f"""
[admin]
listen = "127.0.0.1:0"
[webrtc]
host_addresses = ["127.0.0.1"]
[hosts."echo.far"]
endpoints = ["127.0.0.1:{far.port('web')}"]
protocol = "webrtc"
""")
    s = await near.dial(f"echo.far:{port}")
    d = pattern(1 << 20)
    s.write(d)
    s.write_eof()
    got = bytearray()
    while chunk := await asyncio.wait_for(s.read(65536), 10):
        got += chunk
    assert bytes(got) == d
    assert metric(far, "ugate_webrtc_signaling_total", method="POST", code="201") == 1
    assert host == "127.0.0.1"
