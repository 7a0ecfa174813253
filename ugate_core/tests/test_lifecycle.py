"""Gateway start/stop ordering: a stop asked for while starting waits for the start."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ugate_core import Gateway, loads

CONFIG = """
[admin]
listen = "127.0.0.1:0"
[listeners.fwd]
listen = "127.0.0.1:0"
protocols = ["tcp"]
target = "127.0.0.1:9"
"""


async def test_stop_while_starting_stops_after_the_start(tmp_path: Path) -> None:
    gw = Gateway(loads(CONFIG), state_dir=tmp_path)
    task = asyncio.create_task(gw.serve(signals=False))
    await asyncio.sleep(0)  # serve() runs until start() awaits its first bind
    assert gw._started and not gw.ready
    gw.stop()
    await asyncio.wait_for(task, 10)
    assert gw._stopping and not gw.ready
    # every listener the start bound is closed again
    assert all(ln.server is not None and not ln.server.is_serving()
               for ln in gw.listeners.values())
