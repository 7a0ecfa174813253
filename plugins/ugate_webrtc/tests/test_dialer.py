"""The webrtc dialer against node-datachannel answering, and against another ugate."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ugate_core import DialError, Gateway
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


def _far(echo_port: int, allowed_id: str) -> str:
    # an allow list makes the loopback listener a policy-checked one (not the local proxy)
    return f"""
[admin]
listen = "127.0.0.1:0"
[listeners.web]
listen = "127.0.0.1:0"
protocols = ["tls", "http"]
allow = ["status.test:9"]
[webrtc]
host_addresses = ["127.0.0.1"]
[hosts."echo.far"]
endpoints = ["127.0.0.1"]
[[rules]]
clients = ["id:{allowed_id}"]
to = ["echo.far:{echo_port}"]
"""


def _near(far: Gateway, expect: str, url: str = "") -> str:
    label = f'labels = {{ webrtc_url = "{url}" }}' if url else ""
    return f"""
[admin]
listen = ""
[webrtc]
host_addresses = ["127.0.0.1"]
[hosts."echo.far"]
endpoints = ["127.0.0.1:{far.port('web')}"]
protocol = "webrtc"
identity = ["id:{expect}"]
{label}
"""


async def test_gateway_to_gateway_signals_over_verified_tls(start_gateway: StartGateway,
        echo_server: tuple[str, int]) -> None:
    """The offer goes over https through the tls dialer: the far gateway proves the ID the
    destination names, the near one presents its own, and the far side's rule names it; a
    fresh key no rule names is refused, an impostor never sees the offer, and http:// is
    never used where an identity is expected."""
    _, port = echo_server
    ident = await start_gateway('[admin]\nlisten = ""')  # the near gateway's key, its ID
    far = await start_gateway(_far(port, ident.identity.id))
    near = await start_gateway(_near(far, far.identity.id), state_dir=ident.state_dir)
    s = await near.dial(f"echo.far:{port}")
    d = pattern(1 << 20)
    s.write(d)
    s.write_eof()
    got = bytearray()
    while chunk := await asyncio.wait_for(s.read(65536), 10):
        got += chunk
    assert bytes(got) == d
    assert metric(far, "ugate_webrtc_signaling_total", method="POST", code="201") == 1
    assert metric(near, "ugate_dials_total", dialer="webrtc", result="ok") == 1

    # a fresh key: the far side answers its offer (a verified peer may signal) but its rule
    # names another ID, so the channel is closed without data (DCEP has no status)
    stranger = await start_gateway(_near(far, far.identity.id))
    s = await stranger.dial(f"echo.far:{port}")
    s.write(b"ping")
    assert await asyncio.wait_for(s.read(65536), 10) == b""
    s.close()
    assert metric(far, "ugate_dials_total", dialer="tcp", result="ok") == 1  # the first only
    assert metric(far, "ugate_dial_errors_total", reason="denied") == 1

    # an impostor: the destination expects an ID the far gateway cannot prove
    impostor = await start_gateway('[admin]\nlisten = ""')
    wrong = await start_gateway(_near(far, impostor.identity.id))
    posts = metric(far, "ugate_webrtc_signaling_total", method="POST", code="201")
    with pytest.raises(DialError) as e:
        await wrong.dial(f"echo.far:{port}")
    assert e.value.reason == "identity", e.value
    assert metric(far, "ugate_webrtc_signaling_total", method="POST", code="201") == posts

    # http:// where an identity is expected: refused before anything is sent
    plain = await start_gateway(_near(
        far, far.identity.id, f"http://127.0.0.1:{far.port('web')}/.well-known/ugate/webrtc"),
        state_dir=ident.state_dir)
    with pytest.raises(DialError) as e:
        await plain.dial(f"echo.far:{port}")
    assert e.value.reason == "identity"
    assert "http:// signaling proves none" in str(e.value)
