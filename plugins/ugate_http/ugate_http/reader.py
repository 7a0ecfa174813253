"""The asyncio side of the sans-IO parsers: events from a :class:`~ugate_core.Stream`.

The reader takes the stream in push mode (``set_receiver``): each chunk the transport
delivers goes straight into the parser, with no copy into the stream's pull buffer, and
parsed events queue up for ``next_event``. Reading pauses while more than
:data:`HIGH_WATER` body bytes wait to be taken, or while a paused parser (between messages)
holds more than that many unparsed bytes, so a fast sender cannot grow memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from ugate_core import Stream

from .h1 import (
    BodyReceived,
    Event,
    HttpError,
    MessageEnded,
    Request,
    RequestParser,
    RequestReceived,
    Response,
    ResponseParser,
    ResponseReceived,
)

#: bytes queued (parsed body or unparsed input) above which the source is paused
HIGH_WATER = 512 * 1024


class EventReader:
    """Feeds a parser from a stream and hands out its events one at a time.

    ``next_event(deadline)`` returns ``None`` at a clean end of the stream (between messages)
    and raises :class:`TimeoutError` at ``deadline`` (event-loop time), :class:`HttpError` on
    bad bytes or a message cut short. :meth:`detach` gives the stream back (for a tunnel).
    """

    def __init__(self, stream: Stream, parser: RequestParser | ResponseParser) -> None:
        self.stream = stream
        self.parser = parser
        self._events: deque[Event] = deque()
        self._queued = 0
        self._eof = False
        self._error: HttpError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._attached = True
        #: called once when the stream ends (the pool drops idle connections the peer closed)
        self.on_eof: Callable[[], None] | None = None
        #: called when events, an error or the end arrived, before the consumer is woken;
        #: True means the hook took care of it (see ``express.py``: requests answered from
        #: callbacks, with no task woken)
        self.hook: Callable[[], bool] | None = None
        #: offered each whole message that arrives in one piece while nothing waits before it
        #: (``parser.receive_whole``: no event objects); True: taken, the parser is paused
        #: after it; False: it is queued as events, as any other message
        self.whole: Callable[[Request | Response, bytes], bool] | None = None
        #: offered each chunk of bytes first while no event waits (the raw lane, ``raw.py``;
        #: it checks that the parser is at rest); True: taken whole, the hook paused the parser
        self.raw: Callable[[bytes], bool] | None = None
        #: the events belong to the hook's owner for now: the consumer task is not woken and
        #: does not take them until this is cleared
        self.held = False
        stream.set_receiver(self)

    # ------------------------------------------------------------------ Receiver (push)
    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return
        raw = self.raw
        if raw is not None and not self._events and raw(data):
            return
        whole = self.whole
        try:
            if whole is not None and not self._events \
                    and (w := self.parser.receive_whole(data)) is not None:
                if whole(*w):
                    return
                events = _events_of(*w)
            else:
                events = self.parser.receive_data(data)
        except HttpError as e:
            self._error = e
            self.stream.pause_reading()
        else:
            for ev in events:
                if type(ev) is BodyReceived:
                    self._queued += len(ev.data)
            self._events.extend(events)
            if self._queued > HIGH_WATER or self.parser.buffered() > HIGH_WATER:
                self.stream.pause_reading()
        self._notify()

    def eof_received(self, reset: bool = False) -> None:
        if self._eof:
            return
        self._eof = True
        if self._error is None:
            try:
                self._events.extend(self.parser.receive_eof(reset))
            except HttpError as e:
                self._error = e
        self._notify()
        cb, self.on_eof = self.on_eof, None
        if cb is not None:
            cb()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.eof_received(reset=exc is not None)

    def _notify(self) -> None:
        hook = self.hook
        if hook is None or not hook():
            self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not self.held:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    async def _wait(self, deadline: float | None) -> None:
        # a timer handle that fails the future, not asyncio.timeout_at: this runs about twice
        # per proxied request, and the context manager (current_task, reschedule, uncancel)
        # cost several times the handle
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._waiter = fut
        timer = None if deadline is None else loop.call_at(deadline, _expire, fut)
        try:
            await fut
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    # ------------------------------------------------------------------ consumer side
    @property
    def eof(self) -> bool:
        return self._eof

    @property
    def error(self) -> HttpError | None:
        """What the parser refused (raised by the next ``next_event``)."""
        return self._error

    def release(self) -> None:
        """Clear :attr:`held` and wake the consumer if something waits for it."""
        self.held = False
        if self._events or self._eof or self._error is not None or self.parser.buffered():
            self._wake()

    def quiet(self) -> bool:
        """Nothing arrived: no event, no unparsed byte, no end (an idle pooled connection
        that may carry the next request)."""
        return not (self._eof or self._events or self.parser.buffered())

    def pending(self) -> bool:
        """True if events or unparsed bytes are waiting (a pipelined request)."""
        return bool(self._events) or self.parser.buffered() > 0

    def push(self, events: list[Event]) -> None:
        self._events.extend(events)

    def push_front(self, ev: object) -> None:
        """Put ``ev`` before every queued event (the express lane hands an exchange back to
        the consumer task this way)."""
        self._events.appendleft(ev)  # type: ignore[arg-type]

    def _resume(self) -> None:
        if (self._error is None and self._queued <= HIGH_WATER // 2
                and self.parser.buffered() <= HIGH_WATER):
            self.stream.resume_reading()

    def _taken(self, ev: Event) -> Event:
        if type(ev) is BodyReceived:
            self._queued -= len(ev.data)
        self._resume()
        return ev

    async def next_event(self, deadline: float | None = None) -> Event | None:
        events = self._events
        while self.held or not events:
            if not self.held:
                if self._error is not None:
                    raise self._error
                if self._eof:
                    return None
            self._resume()
            await self._wait(deadline)
        return self._taken(events.popleft())

    def next_event_nowait(self) -> Event:
        return self._taken(self._events.popleft())

    def peek(self) -> Event | None:
        """The next event if one is already parsed (no I/O)."""
        return self._events[0] if self._events else None

    def next_message(self) -> None:
        """The current message is done with: drop what is left of it, parse the next."""
        events = self._events
        while events:
            if isinstance(self._taken(events.popleft()), MessageEnded):
                break
        self.resume_parser()

    def resume_parser(self) -> None:
        """Parse on after a message that was taken whole (``whole``): none of its events
        are queued."""
        try:
            self._events.extend(self.parser.next_message())
        except HttpError as e:
            self._error = e

    def push_whole(self, msg: Request | Response, body: bytes) -> None:
        """Queue, in front, the events of a message taken whole (given back to the consumer
        task, which reads it as if it had been queued)."""
        for ev in reversed(_events_of(msg, body)):
            self._events.appendleft(ev)

    async def wait_readable(self, deadline: float) -> bool:
        """Wait until bytes or EOF arrive (keep-alive idle); False at the deadline."""
        while self.held or not (self.pending() or self._eof or self._error is not None):
            self._resume()
            try:
                await self._wait(deadline)
            except TimeoutError:
                return False
        return True

    def detach(self) -> None:
        """Stop reading: the stream goes back to pull mode with the bytes the parser holds
        beyond the last message in front (a CONNECT or Upgrade tunnel starts with them)."""
        if not self._attached:
            return
        self._attached = False
        self.stream.set_receiver(None)
        self.stream.unread(self.parser.take_leftover())


def _events_of(msg: Request | Response, body: bytes) -> list[Event]:
    """The events ``receive_data`` gives for a whole message."""
    out: list[Event] = [RequestReceived(request=msg) if type(msg) is Request
                        else ResponseReceived(response=msg)]  # type: ignore[arg-type]
    if body:
        out.append(BodyReceived(data=body))
    out.append(MessageEnded())
    return out


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())
