"""The Node and Chromium peers the plugin tests drive (tests/js): installed and able to do
what the tests need (a secure-context page with WebTransport and WebRTC; ws, mqtt.js and
node-datachannel load)."""

from __future__ import annotations

import pytest

from ugate_core.testing import browser_run, node_run


async def test_chromium_page_is_a_secure_context_with_webtransport_and_webrtc() -> None:
    got = await browser_run("return [location.protocol, window.isSecureContext, "
                            "typeof WebTransport, typeof RTCPeerConnection];")
    assert got == ["http:", True, "function", "function"]


async def test_a_page_error_is_raised_with_its_message() -> None:
    with pytest.raises(AssertionError, match="boom"):
        await browser_run("throw new Error('boom');")


async def test_node_loads_the_peer_packages() -> None:
    r = await node_run("const ws = require('ws'); const m = require('mqtt');"
                       "const n = require('node-datachannel');"
                       "console.log(typeof ws.WebSocket, typeof m.connect,"
                       " typeof n.PeerConnection)")
    assert r.stdout.decode().split() == ["function"] * 3, r.stderr
