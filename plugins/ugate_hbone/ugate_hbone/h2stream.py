"""One HTTP/2 stream (a CONNECT tunnel) as a core :class:`~ugate_core.Stream`; the connection
it lives on (:class:`~ugate_hbone.session.H2Session`) does its framing and flow control."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ugate_core import H2Flow, Stream, StreamMeta

if TYPE_CHECKING:
    from .session import H2Session

Header = tuple[bytes, bytes]


class H2Stream(Stream, H2Flow):
    """One HTTP/2 stream (a CONNECT tunnel) as a core Stream; its send queue and receive
    credit are core's :class:`~ugate_core.H2Flow`."""

    def __init__(self, session: H2Session, sid: int, meta: StreamMeta) -> None:
        super().__init__(meta)
        self._flow_init(sid)
        self.session = session
        #: request headers (server side) or response headers (client side)
        self.headers: list[Header] = []
        #: client side: resolved with the response headers
        self.response: asyncio.Future[list[Header]] | None = None
        #: a 2xx was sent (server) or received (client): now a tunnel
        self.established = False
        self._close_queued = False
        #: server side: the task answering the request, cancelled if the client resets it
        self.task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<H2Stream {self.sid} of {self.session.name}>"

    @property
    def status(self) -> int | None:
        """The response status (client side, after the response)."""
        for k, v in self.headers:
            if k == b":status":  # the peer's bytes: three digits, or no status at all
                return int(v) if len(v) == 3 and v.isdigit() else None
        return None

    # ------------------------------------------------------------------ H2Flow hooks
    def _flow_data(self, data: bytes) -> bool:
        self._on_data(data)
        return not self._reading_paused  # a paused reader's credit is withheld

    def _tx_pause(self) -> None:
        self._pause_writing()

    def _tx_resume(self) -> None:
        self._resume_writing()

    # ------------------------------------------------------------------ Stream interface
    def _do_write(self, data: bytes | bytearray | memoryview) -> None:
        self.session.write(self, data)

    def _do_write_eof(self) -> None:
        self.session._write_eof(self)

    def _do_close(self) -> None:
        self.session._close_stream(self, graceful=True)

    def _do_abort(self) -> None:
        self.session._close_stream(self, graceful=False)

    def _do_pause_reading(self) -> None:
        pass  # stream-level WINDOW_UPDATEs wait while _reading_paused

    def _do_resume_reading(self) -> None:
        self.session._release(self)

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return self._pending_len

    # ------------------------------------------------------------------ server side
    def respond(self, status: int, headers: Sequence[Header] = (), body: bytes = b"",
                end: bool = False) -> None:
        """Send the response headers (and a short body); ``end`` half-closes after them."""
        self.session._respond(self, status, headers, body, end)
