#!/usr/bin/env python3
"""HTTP/2 work per HBONE tunnel in memory, both ends: ``ugate_core.h2`` against the ``h2``
library (when installed), configured as the HBONE session used it.

One tunnel: CONNECT, 200, one byte each way, END_STREAM both ways, on one long-lived
connection (so HPACK's dynamic table is warm, as in a pooled HBONE connection).

    .venv/bin/python bench/h2codec.py [tunnels]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from ugate_core import H2Codec, H2Handler, H2Setting

CONNECT = [(b":method", b"CONNECT"), (b":authority", b"svc.test:80")]
OK = [(b":status", b"200")]
SETTINGS = {H2Setting.INITIAL_WINDOW_SIZE: 4 << 20, H2Setting.MAX_FRAME_SIZE: 1 << 20,
            H2Setting.MAX_CONCURRENT_STREAMS: 1000}


class _Echo(H2Handler):
    def __init__(self, client: bool) -> None:
        self.client = client
        self.c = H2Codec(self, client=client, settings=SETTINGS)

    def on_headers(self, sid: int, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        if not self.client:
            self.c.send_headers(sid, OK)

    def on_data(self, sid: int, data: bytes, flow_len: int, end_stream: bool) -> None:
        if not self.client:
            if data:
                self.c.send_data(sid, data)
            if end_stream:
                self.c.end_stream(sid)


def codec(n: int) -> float:
    ch, sh = _Echo(True), _Echo(False)
    c, s = ch.c, sh.c
    c.initiate_connection()
    s.initiate_connection()
    s.receive_data(bytes(c.data_to_send()))
    c.receive_data(bytes(s.data_to_send()))
    s.receive_data(bytes(c.data_to_send()))
    t0 = time.perf_counter()
    for _ in range(n):
        sid = c.next_stream_id()
        c.send_headers(sid, CONNECT)
        for step in (None, b"x", b""):
            if step:
                c.send_data(sid, step)
            elif step is not None:
                c.end_stream(sid)
            s.receive_data(bytes(c.data_to_send()))
            c.receive_data(bytes(s.data_to_send()))
    return (time.perf_counter() - t0) / n


def h2lib(n: int) -> float:
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.events import DataReceived, RequestReceived, StreamEnded
    from h2.settings import SettingCodes, Settings

    def make(client: bool) -> Any:
        h = H2Connection(H2Configuration(
            client_side=client, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=True,
            normalize_inbound_headers=False))
        h.local_settings = Settings(client=client, initial_values={
            SettingCodes.INITIAL_WINDOW_SIZE: 4 << 20, SettingCodes.MAX_FRAME_SIZE: 1 << 20})
        h.max_inbound_frame_size = 1 << 20
        h.initiate_connection()
        return h

    c, s = make(True), make(False)
    s.receive_data(c.data_to_send())
    c.receive_data(s.data_to_send())
    s.receive_data(c.data_to_send())

    def exchange() -> None:
        for ev in s.receive_data(c.data_to_send()):
            if type(ev) is RequestReceived:
                s.send_headers(ev.stream_id, OK)
            elif type(ev) is DataReceived and ev.data:
                s.send_data(ev.stream_id, ev.data)
            elif type(ev) is StreamEnded:
                s.end_stream(ev.stream_id)
        c.receive_data(s.data_to_send())

    t0 = time.perf_counter()
    for _ in range(n):
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, CONNECT)
        exchange()
        c.send_data(sid, b"x")
        exchange()
        c.end_stream(sid)
        exchange()
    return (time.perf_counter() - t0) / n


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    runs: list[tuple[str, Callable[[int], float]]] = [("ugate_core.h2", codec)]
    try:
        import h2  # noqa: F401
        runs.insert(0, ("h2 (python-hyper)", h2lib))
    except ImportError:
        print("h2 is not installed: only ugate_core.h2")
    for _ in range(2):  # the second round is the warm one
        results = [(name, f(n)) for name, f in runs]
    for name, t in results:
        print(f"{name:20} {t * 1e6:6.0f} µs per tunnel (both ends, in memory)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
