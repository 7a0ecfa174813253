"""The plugin contract types: ``GatewayAPI`` (implemented by ``Gateway``) and ``Stash``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ugate_core import Gateway, GatewayAPI, Stash, StashKey, loads, stream_pair
from ugate_core.api import GatewayAPI as ApiModuleGatewayAPI


def test_gateway_implements_gateway_api(tmp_path: Path) -> None:
    gw = Gateway(loads(""), state_dir=tmp_path)
    api: GatewayAPI = gw  # checked statically as well: gateway.py's _implements_api
    assert isinstance(api, GatewayAPI)
    assert ApiModuleGatewayAPI is GatewayAPI


def test_a_partial_object_is_not_a_gateway_api() -> None:
    class Half:
        config = None

    assert not isinstance(Half(), GatewayAPI)


def test_stash_is_typed_per_key_and_per_gateway(tmp_path: Path) -> None:
    n = StashKey[int]("n")
    names = StashKey[list[str]]("names")
    a, b = Gateway(loads(""), state_dir=tmp_path), Gateway(loads(""), state_dir=tmp_path)
    a.stash[n] = 1
    assert a.stash[n] == 1 and n in a.stash and n not in b.stash
    assert b.stash.get(n, None) is None
    assert a.stash.get_or_create(names, list) is a.stash.get_or_create(names, list)
    assert a.stash.setdefault(n, 5) == 1
    assert a.stash.pop(n, None) == 1 and a.stash.pop(n, None) is None
    with pytest.raises(KeyError):
        a.stash[n]
    s = Stash()
    s[n] = 2
    del s[n]
    assert len(s) == 0 and repr(n) == "StashKey('n')"


async def test_drained_returns_at_once_without_streams(tmp_path: Path) -> None:
    gw = Gateway(loads(""), state_dir=tmp_path)
    async with asyncio.timeout(1):
        await gw.drained()


async def test_drained_waits_for_the_last_relayed_stream(tmp_path: Path) -> None:
    gw = Gateway(loads(""), state_dir=tmp_path)
    c1, client = stream_pair()
    upstream, u1 = stream_pair()
    gw.start_relay(client, upstream)
    waiter = asyncio.get_running_loop().create_task(gw.drained())
    await asyncio.sleep(0.05)
    assert not waiter.done() and gw.streams
    for s in (c1, u1):
        s.write_eof()
    async with asyncio.timeout(2):
        await waiter
    assert not gw.streams


def test_every_gateway_api_member_is_used_by_a_plugin() -> None:
    """GatewayAPI is what plugins use, nothing more: every member appears in a plugin or in
    one of core's own plugin modules (the built-in tcp/tls protocols, the identity source,
    ListenerContext)."""
    import re

    root = Path(__file__).resolve().parents[2]
    core = root / "ugate_core" / "ugate_core"
    files = [p for p in root.glob("plugins/*/ugate_*/*.py")]
    files += [core / n for n in ("_builtin.py", "tls.py", "tls_front.py", "identity.py",
                                 "types.py")]
    text = "\n".join(p.read_text(encoding="utf-8") for p in files)
    members = [m for m in vars(GatewayAPI) if not m.startswith("_")]
    assert len(members) > 15, members
    unused = [m for m in members if not re.search(rf"\.{m}\b", text)]
    assert unused == [], f"GatewayAPI members no plugin uses: {unused}"
