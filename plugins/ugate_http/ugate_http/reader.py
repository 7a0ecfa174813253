"""The asyncio side of the sans-IO parsers: pull events from a :class:`~ugate_core.Stream`."""

from __future__ import annotations

import asyncio
from collections import deque

from ugate_core import Stream

from .h1 import Event, HttpError, MessageEnded, RequestParser, ResponseParser

READ_SIZE = 256 * 1024


class EventReader:
    """Feeds a parser from a stream and hands out its events one at a time.

    ``next_event(deadline)`` returns ``None`` at a clean end of the stream (between messages)
    and raises :class:`TimeoutError` at ``deadline`` (event-loop time), :class:`HttpError` on
    bad bytes or a message cut short.
    """

    def __init__(self, stream: Stream, parser: RequestParser | ResponseParser) -> None:
        self.stream = stream
        self.parser = parser
        self._events: deque[Event] = deque()
        self._eof = False
        self._error: HttpError | None = None

    @property
    def eof(self) -> bool:
        return self._eof

    def pending(self) -> bool:
        """True if events or unparsed bytes are waiting (a pipelined request)."""
        return bool(self._events) or self.parser.buffered() > 0

    def push(self, events: list[Event]) -> None:
        self._events.extend(events)

    def next_message(self) -> None:
        """The current message is done with: drop what is left of it, parse the next."""
        events = self._events
        while events:
            if isinstance(events.popleft(), MessageEnded):
                break
        events.extend(self.parser.next_message())

    async def next_event(self, deadline: float | None = None) -> Event | None:
        events = self._events
        while not events:
            if self._error is not None:
                raise self._error
            if self._eof:
                return None
            if deadline is None:
                data = await self.stream.read(READ_SIZE)
            else:
                async with asyncio.timeout_at(deadline):
                    data = await self.stream.read(READ_SIZE)
            if data:
                events.extend(self.parser.receive_data(data))
            else:
                self._eof = True
                events.extend(self.parser.receive_eof())
        return events.popleft()

    async def wait_readable(self, deadline: float) -> bool:
        """Wait until bytes or EOF arrive (keep-alive idle); False at the deadline."""
        if self.pending() or self._eof:
            return True
        try:
            async with asyncio.timeout_at(deadline):
                data = await self.stream.read(READ_SIZE)
        except TimeoutError:
            return False
        try:
            if data:
                self._events.extend(self.parser.receive_data(data))
            else:
                self._eof = True
                self._events.extend(self.parser.receive_eof())
        except HttpError as e:
            self._error = e  # raised by the next next_event(), where errors are answered
        return True

    def next_event_nowait(self) -> Event:
        return self._events.popleft()

    def peek(self) -> Event | None:
        """The next event if one is already parsed (no I/O)."""
        return self._events[0] if self._events else None

    def take_leftover(self) -> bytes:
        """Bytes the parser holds beyond the last message (for a tunnel)."""
        return self.parser.take_leftover()
