"""The hashes a page pins, on ugate-http's listeners (``GET /.well-known/ugate/wt-hashes``,
CORS ``*``), when ugate-http is installed."""

from __future__ import annotations

import json

# ugate-http serves this route when it is installed (as in this repository's test set-up)
import ugate_http  # noqa: F401
from ugate_core.testing import StartGateway, require_peer, run
from ugate_webtransport.session import hashes_json


async def test_http_listener_publishes_current_and_next_hashes(
        start_gateway: StartGateway) -> None:
    gw = await start_gateway("""
[admin]
listen = ""
[listeners.web]
listen = "127.0.0.1:0"
protocols = ["http"]
""")
    curl = require_peer("curl")
    res = await run(curl, "-si", f"http://127.0.0.1:{gw.port('web')}/.well-known/ugate/wt-hashes")
    head, _, body = res.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"access-control-allow-origin: *" in head.lower()
    doc = json.loads(body)
    assert doc == json.loads(hashes_json(gw)) and len(doc["hashes"]) == 2
