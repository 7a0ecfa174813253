"""/config with accounts loaded (SOCKS5 and HTTP proxy ``users``): curl sees the config's
shape and the user names, never a password, while those accounts work."""

from __future__ import annotations

import json

from ugate_core.testing import StartGateway, Upstream, require_peer, run


async def test_config_shows_no_passwords(
    start_gateway: StartGateway, http_upstream: Upstream
) -> None:
    curl = require_peer("curl")
    gw = await start_gateway(f"""
[admin]
listen = "127.0.0.1:0"
[listeners.socks]
listen = "127.0.0.1:0"
protocols = ["socks5"]
users = {{ alice = "alice-pw-9f3k", bob = "bob-pw-77zz" }}
[listeners.web]
listen = "127.0.0.1:0"
protocols = ["http"]
users = {{ carol = "carol-pw-c4r0l" }}
[hosts."web.test"]
endpoints = ["{http_upstream.address}"]
""")
    url = f"http://web.test:{http_upstream.port}/x"
    ok = await run(curl, "-sS", "--socks5-hostname", f"alice:alice-pw-9f3k@127.0.0.1:"
                   f"{gw.port('socks')}", url)
    assert ok.stdout == b"hello /x\n", ok.stderr
    res = await run(curl, "-sS", "--fail", f"http://127.0.0.1:{gw.port('admin')}/config",
                    check=True)
    text = res.stdout.decode()
    for secret in ("alice-pw-9f3k", "bob-pw-77zz", "carol-pw-c4r0l"):
        assert secret not in text
    cfg = json.loads(text)["config"]
    assert cfg["listeners"]["socks"]["users"] == {"alice": "<redacted>", "bob": "<redacted>"}
    assert cfg["listeners"]["web"]["users"] == {"carol": "<redacted>"}
    assert cfg["listeners"]["web"]["protocols"] == ["http"]
    assert cfg["hosts"]["web.test"]["endpoints"] == [http_upstream.address]
