"""An aiortc ``RTCDataChannel`` as core's :class:`~ugate_core.MessageTransport`.

Core's :class:`~ugate_core.MessageStream` does the stream semantics (empty message = FIN,
backpressure from ``buffered_amount``); this adapter only maps the calls:

* ``send`` → ``channel.send`` (binary; an empty message goes as SCTP PPID 57);
* ``buffered_amount`` → ``channel.bufferedAmount``: aiortc counts a message from ``send``
  until its SCTP transport takes it, and takes the next only once its outbound queue is empty,
  so what a stalled peer leaves in the gateway is this number plus one congestion window;
* ``bufferedamountlow`` (threshold = the stream's low water) → the drain callback.

aiortc delivers a channel's messages as SCTP hands them over and cannot pause one channel (nor
shrink its receive window): while the stream's reader is paused (its destination does not keep
up), the messages that still arrive are counted, and past ``paused_limit`` bytes (``[webrtc]
max_unread``, default :data:`PAUSED_LIMIT`) the channel is
closed as cut short (reason ``overrun`` in the log). So a peer that keeps sending to a stalled
destination holds at most that much in the gateway, per channel.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ugate_core import MessageStream, StreamMeta

#: bytes a channel may deliver while its stream's reader is paused, before it is closed
PAUSED_LIMIT = 4 * 1024 * 1024


class ChannelTransport:
    """One data channel (see the module docstring)."""

    __slots__ = ("_closed", "_error", "_on_close", "_paused", "channel", "overrun",
                 "paused_limit")

    def __init__(self, channel: Any, paused_limit: int = PAUSED_LIMIT) -> None:
        self.channel = channel
        self.paused_limit = paused_limit
        self._closed = False
        self._error: str | None = None
        #: bytes received while paused (``None``: reading)
        self._paused: int | None = None
        self.overrun = False
        self._on_close: Callable[[BaseException | None], None] = lambda _e: None

    def send(self, message: bytes) -> None:
        if self.channel.readyState == "open":
            self.channel.send(message)

    @property
    def buffered_amount(self) -> int:
        return int(self.channel.bufferedAmount)

    def close(self, error: str | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self._error = error
        # a data channel has no reset: a close before the FIN message is how a peer learns
        # the stream was cut short
        if self.channel.readyState in ("connecting", "open"):
            self.channel.close()
        if self.channel.readyState == "closed":
            self._report()

    def _report_soon(self) -> None:
        try:
            asyncio.get_running_loop().call_soon(self._report)
        except RuntimeError:  # no loop running (aiortc closing outside one): at once
            self._report()

    def _report(self) -> None:
        cb, self._on_close = self._on_close, lambda _e: None
        cb(None if self._error is None else ConnectionResetError(self._error))

    def set_handlers(self, on_message: Callable[[bytes], None],
                     on_close: Callable[[BaseException | None], None],
                     on_drain: Callable[[], None], low_water: int) -> None:
        ch = self.channel
        self._on_close = on_close

        def message(m: bytes | str) -> None:
            b = m.encode() if isinstance(m, str) else m
            if self._paused is not None:
                self._paused += len(b)
                if self._paused > self.paused_limit and not self._closed:
                    self.overrun = True
                    self.close(f"overrun: over {self.paused_limit} bytes while the destination "
                               "was not reading")
                    return
            on_message(b)

        ch.on("message", message)
        # the stream's end (relay teardown, closing its destination) runs after the packets
        # read with the close: a channel opened in the same batch gets its DCEP ACK first
        ch.on("close", self._report_soon)
        ch.bufferedAmountLowThreshold = low_water
        ch.on("bufferedamountlow", on_drain)

    def pause_reading(self) -> None:
        if self._paused is None:
            self._paused = 0

    def resume_reading(self) -> None:
        self._paused = None


def channel_stream(channel: Any, meta: StreamMeta, max_message: int,
                   paused_limit: int = PAUSED_LIMIT) -> MessageStream:
    """A :class:`MessageStream` over ``channel``; high water 256 KiB, low water 64 KiB."""
    return MessageStream(ChannelTransport(channel, paused_limit), meta, max_message=max_message)
