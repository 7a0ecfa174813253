"""The express lane of the HTTP/1.1 proxy: common requests answered from callbacks.

A session's task (:class:`~ugate_http.proxy._Session`) awaits an event reader for every step
of a request: the head, the upstream's answer, each body piece, the next request. Each await
is a future, a task wake-up and a timer; with the per-request objects of a round trip this
was ~200 µs of CPU per proxied request, where the leanest uvloop proxy needs ~30 (bench
``floor`` row). The express lane takes the common request off that path:

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
from typing import TYPE_CHECKING

from .client import UpstreamResponse, _Conn
from .h1 import (
    BodyReceived,
    Framing,
    HttpError,
    MessageEnded,
    Request,
    Response,
    ResponseReceived,
    encode_chunk,
    encode_head,
    encode_last_chunk,
)
from .rewrite import end_to_end, peer, response_head

if TYPE_CHECKING:
    from .proxy import _Session

log = logging.getLogger("ugate.http")

#: a response head is sent together with a first body piece up to this size
COALESCE = 64 * 1024


class Handoff:
    """Queued in front of the client reader's events: the task runs ``step()`` instead of
    reading a request head; it returns whether the connection stays open."""

    __slots__ = ("step",)

    def __init__(self, step: Callable[[], Awaitable[bool]]) -> None:
        self.step = step


class Exchange:
    """One request in the express lane, from the upstream's first byte to the pool."""

    __slots__ = ("address", "chunked", "conn", "deadline", "head", "keep", "pending",
                 "progress", "queued", "received", "req", "s", "t0", "target")

    def __init__(self, session: _Session, req: Request, conn: _Conn, address: str,
                 target: str, t0: float, queued: bool) -> None:
        self.s = session
        self.req = req
        #: the request's events are queued in the client reader (else it was taken whole)
        self.queued = queued
        self.conn = conn
        self.address = address
        self.target = target
        self.t0 = t0
        self.head: Response | None = None
        self.pending = b""  # the client's response head, sent with the first body piece
        self.chunked = False
        self.keep = False
        self.received = 0
        #: body bytes moved since the session's timer last looked (see ``tick``)
        self.progress = False
        #: event-loop time by which the answer must start (then: the body must move)
        self.deadline = t0 + session.pool.response_timeout
        conn.reader.hook = self.on_upstream
        conn.reader.whole = self.on_whole

    # ------------------------------------------------------------------ upstream events
    def on_whole(self, msg: Request | Response, body: bytes) -> bool:
        """The whole answer arrived in one piece (the upstream reader's ``whole`` hook)."""
        if type(msg) is not Response or self.head is not None:
            return False
        self._head(msg)
        if body:
            self._body(body, last=True)
        self._end()
        return True

    def on_upstream(self) -> bool:
        r = self.conn.reader
        client = self.s.stream
        while (ev := r.peek()) is not None:
            t = type(ev)
            if t is BodyReceived and client.write_paused:  # (a head is taken at once: the
                self._wait_for_client()  # upstream answered in time, whatever the client)
                return True
            r.next_event_nowait()
            if t is BodyReceived:
                self._body(ev.data)  # type: ignore[union-attr]
            elif t is MessageEnded:
                self._end()
                return True
            elif t is ResponseReceived:
                if not self._head(ev.response):  # type: ignore[union-attr]
                    return True
            else:
                self._failed(HttpError(f"upstream {self.address}: unexpected "
                                       f"{t.__name__}", "bad_response", 502))
                return True
        if r.error is not None:
            self._failed(r.error)
        elif r.eof:
            self._failed(None)
        return True

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
            s.express_handoff(lambda: s._answer(req, resp, self.address, self.target, None,
                                                None, self.t0))
            return False
        self.head = head
        self.pending, self.chunked, self.keep = response_head(req, head)
        s._count(head.status)
        idle = s.pool.idle_timeout
        self.deadline = s.loop.time() + idle if idle else float("inf")
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
        if client.write_paused and not last:  # (never pool a connection left paused)
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

    def _end(self) -> None:
        s = self.s
        data = self.pending
        if self.chunked:
            data += encode_last_chunk()
        if data:
            s.stream.write(data)
        self._unhook()
        head = self.head
        assert head is not None
        conn = self.conn
        if head.keep_alive and conn.usable():
            s.pool._put(conn)
        else:
            conn.close()
        s.state.add_bytes(s.lname, 0, self.received)
        if log.isEnabledFor(logging.DEBUG):
            meta = s.stream.meta
            log.debug("http_request listener=%s client=%s user=%s method=%s address=%s "
                      "target=%s status=%d up=0 down=%d reused=True ms=%.1f express=True",
                      s.ctx.name, peer(meta), meta.user or "-", self.req.method,
                      self.address, self.target[:200], head.status, self.received,
                      (s.loop.time() - self.t0) * 1000)
        s.express_done(self.keep)

    # ------------------------------------------------------------------ endings
    def _unhook(self) -> None:
        self.conn.reader.hook = None
        self.conn.reader.whole = None
        client = self.s.stream
        if client.on_resume_writing == self._client_resumed:
            client.on_resume_writing = None

    def _failed(self, e: HttpError | None) -> None:
        """The upstream closed or sent bad bytes (``e``)."""
        self._unhook()
        conn = self.conn
        s = self.s
        if self.head is None:
            stale = e is None or (e.reason == "incomplete" and conn.parser.buffered() == 0)
            conn.abort()
            if stale:  # the keep-alive race: the task retries, on a new connection if need be
                log.debug("upstream_retry address=%s reason=stale_keepalive", self.address)
                req = self.req
                s.express_handoff(lambda: s._handle(req))
            else:
                assert e is not None
                s.express_handoff(lambda: s._fail(e.status, e.reason, str(e)))
            return
        self._cut(str(e) if e is not None else "upstream closed in the middle of the body")

    def tick(self, now: float) -> None:
        """The session's timer found this exchange past its deadline (one timer per client
        connection, not one per request): no answer in time (the task's 504), or no body
        progress for ``idle_timeout`` (both connections cut)."""
        s = self.s
        if self.head is None:
            self._unhook()
            self.conn.abort()
            t = s.pool.response_timeout
            msg = f"upstream {self.address} did not answer within {t:g}s"
            s.express_handoff(lambda: s._fail(504, "upstream_timeout", msg))
            return
        idle = s.pool.idle_timeout
        if self.progress:
            self.progress = False
            self.deadline = now + idle
            return
        self._cut(f"upstream {self.address}: no body bytes for {idle:g}s"
                  if not s.stream.write_paused else f"client read nothing for {idle:g}s")

    def _cut(self, why: str) -> None:
        """The answer had started: both connections end, as in the task's ``_answer``."""
        self._unhook()
        s = self.s
        self.conn.abort()
        s.stream.abort()
        head = self.head
        log.info("http_response_cut listener=%s client=%s target=%s status=%d bytes=%d "
                 "error=%r", s.ctx.name, peer(s.stream.meta), self.address,
                 head.status if head else 0, self.received, why)
        s.express_done(False)

    def client_gone(self) -> None:
        """The client connection was lost in the middle: give up the upstream one too."""
        self._unhook()
        self.conn.abort()
        self.s.express_done(False, handoff=False)


async def close_step() -> bool:
    """A :class:`Handoff` step for an exchange that ends the connection."""
    return False
