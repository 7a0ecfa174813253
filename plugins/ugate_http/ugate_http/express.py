"""The express lane of the HTTP/1.1 proxy: common requests answered from callbacks.

A session's task (the HTTP/1.1 front, :class:`~ugate_http.lanes.H1Lane`) awaits an event
reader for every step of a request: the head, the upstream's answer, each body piece, the next
request. Each await is a future, a task wake-up and a timer; with the per-request objects of a
round trip this was ~200 µs of CPU per proxied request, where the leanest uvloop proxy needs
~30 (bench ``floor`` row). The express lane takes the common request off that path:

* a request with no body, no ``Upgrade``/``Expect``, on a listener without credentials,
  to an address this client connection was already allowed to reach, that speaks HTTP/1.1,
  and to which the pool holds an idle connection, is sent from the client reader's callback;
* the answer is passed on from the upstream reader's callback (head re-written as the task
  would, body streamed with backpressure through ``on_resume_writing``), the connection goes
  back to the pool, and a pipelined next request is taken the same way;
* anything unusual hands the exchange back to the task, which does exactly what it would
  have done had it taken the request itself: a stale pooled connection (retried by the task,
  which may dial), an error or timeout before the answer started (the task's 502/504), a
  tunnel answer, a connection to close. An error after the answer started cuts both
  connections, as the task does.

No task, future or coroutine runs per express request; one timer guards the exchange. The
lane produces the same bytes, counters and log lines as the task (tests run both:
``express = false`` turns it off).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from .client import PooledConn, UpstreamPool, UpstreamResponse
from .forwarding import response_head
from .h1 import (
    BodyReceived,
    Framing,
    Headers,
    HttpError,
    MessageEnded,
    Request,
    RequestParser,
    Response,
    ResponseReceived,
    encode_chunk,
    encode_head,
    encode_last_chunk,
)
from .lanes import H1Lane
from .raw import response_head as raw_response_head
from .reader import EventReader
from .rewrite import end_to_end, peer

log = logging.getLogger("ugate.http")

#: a response head is sent together with a first body piece up to this size
COALESCE = 64 * 1024


class Handoff:
    """Queued in front of the client reader's events: the task runs ``step()`` instead of
    reading a request head; it returns whether the connection stays open."""

    __slots__ = ("step",)

    def __init__(self, step: Callable[[], Awaitable[bool]]) -> None:
        self.step = step


class UpstreamLeg:
    """The upstream side of an express exchange, shared by the HTTP/1.1 lane
    (:class:`Exchange`) and the HTTP/2 one (:class:`~ugate_http.h2express.H2Express`): the
    upstream reader's hooks, the deadline (``response_timeout`` until the head, then
    ``gateway.idle_timeout`` without progress, both checked by the front's one timer through
    :meth:`tick`), and what an upstream failure means — before the head the request goes
    back to a task (:meth:`_retry` after a stale keep-alive connection, else
    :meth:`_refuse` with the task's 502/504); after it, :meth:`_cut`. A lane provides those
    three, :meth:`_on_upstream` and :meth:`on_whole` (the reader's hooks), and
    :meth:`_client_blocked`."""

    __slots__ = ("address", "conn", "deadline", "head", "pool", "progress", "received", "t0")

    def __init__(self, pool: UpstreamPool, conn: PooledConn, address: str, t0: float) -> None:
        self.pool = pool
        self.conn = conn
        self.address = address
        self.t0 = t0
        self.head: Response | None = None
        self.received = 0
        #: body bytes moved since the front's timer last looked (see ``tick``)
        self.progress = False
        #: event-loop time by which the answer must start (then: the body must move)
        self.deadline = t0 + pool.response_timeout
        r = conn.reader
        r.hook = self.on_upstream
        r.whole = self.on_whole

    def on_upstream(self) -> bool:
        """The upstream reader's hook: events, an error or the end arrived."""
        try:
            self._on_upstream()
        except Exception as e:
            self._bug(e)
        return True

    def _on_upstream(self) -> None:
        """Take what the upstream reader holds, in order, until the lane must wait."""
        r = self.conn.reader
        while (ev := r.peek()) is not None:
            t = type(ev)
            if self._hold(t):
                return
            r.next_event_nowait()
            if t is BodyReceived:
                nxt = r.peek()  # the last piece, with no trailers after it
                self._body(ev.data, type(nxt) is MessageEnded and not nxt.trailers)  # type: ignore[union-attr]
            elif t is MessageEnded:
                self._end(ev.trailers)  # type: ignore[union-attr]
                return
            elif t is ResponseReceived:
                if not self._head(ev.response):  # type: ignore[union-attr]
                    return
            else:
                self._unexpected(t)
                return
        self._drained(r)

    def on_raw(self, data: bytes) -> bool:
        """The upstream reader's ``raw`` hook (set by a lane for answers it may take so):
        the whole answer in one piece, in the form ``raw.py`` takes, passed on with no head
        object made."""
        p = self.conn.parser
        if self.head is not None or not p.at_rest():
            return False
        r = self._raw_parse(data, p.max_header_bytes, p.max_fields)
        if r is None:
            return False
        p.took_whole(Framing.LENGTH)
        self._unhook()
        self.received = len(data) - r[2]
        try:
            self._raw_answer(r[0], r[1], data, r[2])
        except Exception as e:
            self._bug(e)
        return True

    # ------------------------------------------------------------------ a lane's part
    #: raw.py's function for this lane: (status, the head as the lane sends it, where the
    #: body starts) or None
    _raw_parse: Callable[[bytes, int, int], tuple[int, Any, int] | None]

    def _raw_answer(self, status: int, head: Any, data: bytes, start: int
                    ) -> None:  # pragma: no cover - abstract
        """Send a whole answer ``on_raw`` took (the reader unhooked, ``received`` set) and
        give the upstream connection back (:meth:`_give_back`)."""
        raise NotImplementedError

    def _hold(self, t: type) -> bool:  # pragma: no cover - abstract
        """The next event is of type ``t``: True to stop taking events for now (the lane
        has arranged to be resumed)."""
        raise NotImplementedError

    def _head(self, head: Response) -> bool:  # pragma: no cover - abstract
        """The answer's head: False if the request went to a task."""
        raise NotImplementedError

    def _body(self, data: bytes, last: bool = False) -> None:  # pragma: no cover - abstract
        """A piece of the body; ``last``: the end follows with no trailers."""
        raise NotImplementedError

    def _end(self, trailers: Headers = ()) -> None:  # pragma: no cover - abstract
        """The whole answer came."""
        raise NotImplementedError

    def on_whole(self, msg: Request | Response, body: bytes) -> bool:  # pragma: no cover
        raise NotImplementedError

    def _retry(self) -> None:  # pragma: no cover - abstract
        """Hand the request to a task that sends it again (it may dial)."""
        raise NotImplementedError

    def _refuse(self, status: int, reason: str, message: str) -> None:  # pragma: no cover
        """Hand the request to a task that answers ``status`` as it would have."""
        raise NotImplementedError

    def _cut(self, why: str) -> None:  # pragma: no cover - abstract
        """The answer had started: end it (and drop the upstream connection)."""
        raise NotImplementedError

    def _client_blocked(self) -> bool:  # pragma: no cover - abstract
        """The client takes no more now (its buffers or windows are full)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    def _took_head(self, head: Response, now: float) -> None:
        self.head = head
        idle = self.pool.idle_timeout
        self.deadline = now + idle if idle else float("inf")

    def _unhook(self) -> None:
        r = self.conn.reader
        r.hook = None
        r.whole = None
        r.raw = None

    def _give_back(self, keep: bool) -> None:
        """The answer is over: the upstream connection goes back to the pool if ``keep``
        and nothing more came on it, else it is closed."""
        conn = self.conn
        if keep and conn.usable():
            self.pool._put(conn)
        else:
            conn.close()

    def _bug(self, e: Exception) -> None:
        """An error of ours in a callback: never leave both connections hanging."""
        log.error("http_express_error address=%s error=%r", self.address, e, exc_info=e)
        self._cut(f"internal error: {e!r}")

    def _unexpected(self, t: type) -> None:
        self._failed(HttpError(f"upstream {self.address}: unexpected {t.__name__}",
                               "bad_response", 502))

    def _drained(self, r: EventReader) -> None:
        """Every event taken: what the reader holds besides (an error, the end) decides."""
        if r.error is not None:
            self._failed(r.error)
        elif r.eof:
            self._failed(None)

    def _failed(self, e: HttpError | None) -> None:
        """The upstream closed (``e`` None) or sent bad bytes."""
        self._unhook()
        conn = self.conn
        if self.head is None:
            stale = e is None or (e.reason == "incomplete" and conn.parser.buffered() == 0)
            conn.abort()
            if stale:  # the keep-alive race: a task retries, on a new connection if need be
                self._retry()
            else:
                assert e is not None
                self._refuse(e.status, e.reason, str(e))
            return
        self._cut(str(e) if e is not None else "upstream closed in the middle of the body")

    def tick(self, now: float) -> None:
        """The front's timer found this exchange past its deadline: no answer in time (the
        task's 504), or no progress either way for ``idle_timeout`` (cut)."""
        if self.head is None:
            self._unhook()
            self.conn.abort()
            t = self.pool.response_timeout
            self._refuse(504, "upstream_timeout",
                         f"upstream {self.address} did not answer within {t:g}s")
            return
        idle = self.pool.idle_timeout
        if self.progress:
            self.progress = False
            self.deadline = now + idle if idle else float("inf")
            return
        self._cut(f"client read nothing for {idle:g}s" if self._client_blocked()
                  else f"upstream {self.address}: no body bytes for {idle:g}s")


class Exchange(UpstreamLeg):
    """One request in the HTTP/1.1 express lane, from the upstream's first byte to the
    pool."""

    __slots__ = ("_req", "body", "chunked", "keep", "pending", "queued", "raw", "s", "target")

    _raw_parse = staticmethod(raw_response_head)

    def __init__(self, session: H1Lane, req: Request | None, conn: PooledConn, address: str,
                 target: str, t0: float, queued: bool, raw: bytes = b"", body: bytes = b""
                 ) -> None:
        super().__init__(session.pool, conn, address, t0)
        self.s = session
        self._req = req
        #: the request body, sent whole with the head (a Content-Length body that arrived
        #: with it): given back to the task with the request, never sent twice
        self.body = body
        #: the request head as the client sent it, when the raw lane took it (``req`` is
        #: parsed from it only if needed: a handoff, an answer the raw lane does not take)
        self.raw = raw
        #: the request's events are queued in the client reader (else it was taken whole)
        self.queued = queued
        self.target = target
        self.pending = b""  # the client's response head, sent with the first body piece
        self.chunked = False
        self.keep = False
        # the raw lane takes answers framed as for a GET on a kept-alive client connection
        if (req.keep_alive and req.method != "HEAD") if req is not None \
                else not raw.startswith(b"HEAD "):
            conn.reader.raw = self.on_raw

    @property
    def req(self) -> Request:
        req = self._req
        if req is None:  # (the client reader's parser is a RequestParser)
            parser = cast(RequestParser, self.s.reader.parser)
            req = self._req = parser.parse_head(self.raw[:-3])
        return req

    # ------------------------------------------------------------------ upstream events
    def on_whole(self, msg: Request | Response, body: bytes) -> bool:
        """The whole answer arrived in one piece (the upstream reader's ``whole`` hook)."""
        if type(msg) is not Response or self.head is not None:
            return False
        try:
            self._head(msg)
            if body:
                self._body(body, last=True)
            self._end()
        except Exception as e:
            self._bug(e)
        return True

    def _raw_answer(self, status: int, head: bytes, data: bytes, start: int) -> None:
        s = self.s
        s.count(status)
        s.state.raw_answers += 1
        n = self.received
        client = s.stream
        if n <= COALESCE:
            client.write(head + data[start:] if n else head)
        else:
            client.write(head)
            client.write(memoryview(data)[start:])
        self._give_back(True)
        s.state.add_bytes(s.lname, len(self.body), n)
        if log.isEnabledFor(logging.DEBUG):
            self._log_done(status)
        s.express_done(True)

    def _log_done(self, status: int) -> None:
        s = self.s
        meta = s.stream.meta
        log.debug("http_request listener=%s client=%s user=%s method=%s address=%s "
                  "target=%s status=%d up=%d down=%d reused=True ms=%.1f express=True",
                  s.ctx.name, peer(meta), meta.user or "-", self.req.method,
                  self.address, self.target[:200], status, len(self.body), self.received,
                  (s.loop.time() - self.t0) * 1000)

    def _hold(self, t: type) -> bool:
        if t is BodyReceived and self.s.stream.write_paused:  # (a head is taken at once:
            self._wait_for_client()  # the upstream answered in time, whatever the client)
            return True
        return False

    def _head(self, head: Response) -> bool:
        s = self.s
        req = self.req
        if head.interim:
            if head.status != 100 and req.version == "1.1":
                s.stream.write(encode_head(f"HTTP/1.1 {head.status} {head.reason}",
                                           end_to_end(head.headers)))
            return True
        if head.framing is Framing.TUNNEL:  # unasked: the task answers 502
            self._unhook()
            resp = UpstreamResponse(s.pool, self.conn, head, None, True)
            s.express_handoff(lambda: s.answer(req, resp, self.address, self.target, None,
                                               None, self.t0))
            return False
        self._took_head(head, s.loop.time())
        self.pending, self.chunked, self.keep = response_head(req, head)
        s.count(head.status)
        return True

    def _body(self, data: bytes, last: bool = False) -> None:
        self.received += len(data)
        self.progress = True
        if self.chunked:
            data = encode_chunk(data)
        if self.pending:
            if len(data) <= COALESCE:
                data = self.pending + data
            else:
                self.s.stream.write(self.pending)
            self.pending = b""
        client = self.s.stream
        client.write(data)
        if client.write_paused and not last:
            self._wait_for_client()

    def _wait_for_client(self) -> None:
        """The client's buffers are full: stop reading the upstream until it drains them."""
        self.conn.stream.pause_reading()
        self.s.stream.on_resume_writing = self._client_resumed

    def _client_resumed(self) -> None:
        self.s.stream.on_resume_writing = None
        if self.s.express is self:
            self.conn.stream.resume_reading()
            self.on_upstream()

    def _end(self, trailers: Headers = ()) -> None:
        s = self.s  # (trailers are dropped: README)
        data = self.pending
        if self.chunked:
            data += encode_last_chunk()
        if data:
            s.stream.write(data)
        self._unhook()
        head = self.head
        assert head is not None
        conn = self.conn
        conn.stream.resume_reading()  # if the last piece paused it (never pooled paused)
        self._give_back(head.keep_alive)
        s.state.add_bytes(s.lname, len(self.body), self.received)
        if log.isEnabledFor(logging.DEBUG):
            self._log_done(head.status)
        s.express_done(self.keep)

    # ------------------------------------------------------------------ endings
    def _unhook(self) -> None:
        super()._unhook()
        client = self.s.stream
        if client.on_resume_writing == self._client_resumed:
            client.on_resume_writing = None

    def _retry(self) -> None:
        if self.body:  # sent once already: never again (the pool does not retry it either)
            self._refuse(502, "upstream_closed", f"upstream {self.address} closed the "
                         "connection without answering")
            return
        log.debug("upstream_retry address=%s reason=stale_keepalive", self.address)
        s, req = self.s, self.req
        s.express_handoff(lambda: s.handle(req))

    def _refuse(self, status: int, reason: str, message: str) -> None:
        s = self.s
        s.express_handoff(lambda: s.fail(status, reason, message))

    def _client_blocked(self) -> bool:
        return self.s.stream.write_paused

    def _cut(self, why: str) -> None:
        """The answer had started: both connections end, as in the task's ``answer``."""
        self._unhook()
        s = self.s
        self.conn.abort()
        s.stream.reset()  # as the task's answer: a cut answer must not look complete
        head = self.head
        log.info("http_response_cut listener=%s client=%s target=%s status=%d bytes=%d "
                 "error=%r", s.ctx.name, peer(s.stream.meta), self.address,
                 head.status if head else 0, self.received, why)
        if s.express is self:  # (not if a bug struck after the session moved on)
            s.express_done(False)

    def client_gone(self) -> None:
        """The client connection was lost in the middle: give up the upstream one too."""
        self._unhook()
        self.conn.abort()
        self.s.express_done(False, handoff=False)


async def close_step() -> bool:
    """A :class:`Handoff` step for an exchange that ends the connection."""
    return False
