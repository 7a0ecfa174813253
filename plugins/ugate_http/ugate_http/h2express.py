"""The express lane of the HTTP/2 front: common requests answered from callbacks.

A stream of the HTTP/2 front (:class:`~ugate_http.lanes.H2Lane`) is normally answered by
a task: a coroutine per request, awaiting the upstream pool's exchange, each body piece and
the send windows. For the common request — no body, a listener without credentials, an
address this client connection was already allowed to reach, that speaks HTTP/1.1 and to
which the pool holds an idle connection — the request head is written upstream from the
HTTP/2 connection's callback, and the answer is passed on from the upstream reader's
callbacks (:class:`H2Express`): head, body within the client's windows (a stream that cannot
send pauses its upstream connection until ``on_writable``), END_STREAM or trailers, the
connection back to the pool. This is the HTTP/2 side of the HTTP/1.1 express lane
(``express.py``), with the same rules:

* anything unusual before the answer started hands the stream to a task that does exactly
  what it would have done had it taken the request: a stale pooled connection (the task's
  round trip, which may dial), an upstream error or timeout (the task's 502/504), an unasked
  ``101`` (502);
* after the answer started, an error cuts the stream (RST_STREAM), as the task does;
* the client resetting the stream (or the connection closing) aborts the upstream connection.

One timer per client connection guards every express stream on it (``response_timeout``
until the head, then ``gateway.idle_timeout`` without progress).
"""

from __future__ import annotations

import logging

from ugate_core import H2ErrorCode

from .client import PooledConn, UpstreamResponse
from .express import UpstreamLeg
from .h1 import Framing, Headers, MessageEnded, Request, Response
from .h2conn import H2Exchange, StreamResetError
from .h2msg import H2Request, response_headers, trailer_headers
from .lanes import H2Lane
from .raw import response_fields

log = logging.getLogger("ugate.http")


class H2Express(UpstreamLeg):
    """One request of the HTTP/2 front in the express lane, from the upstream's first byte
    to the end of the client's stream."""

    __slots__ = ("done", "ex", "front", "req", "trailers")

    _raw_parse = staticmethod(response_fields)

    def __init__(self, front: H2Lane, ex: H2Exchange, req: H2Request, conn: PooledConn,
                 address: str, t0: float) -> None:
        super().__init__(front.pool, conn, address, t0)
        self.front = front
        self.ex = ex
        self.req = req
        #: the upstream's trailers, sent once the stream's queue drained
        self.trailers: list[tuple[bytes, bytes]] | None = None
        #: the upstream part is over (the connection went back to the pool, or was dropped)
        self.done = False
        ex.on_fail = self.client_gone
        ex.on_writable = self._writable
        ex.on_finish = self._finished
        if req.method != "HEAD":  # the raw lane takes answers framed as for a GET
            conn.reader.raw = self.on_raw

    # ------------------------------------------------------------------ upstream events
    def on_whole(self, msg: Request | Response, body: bytes) -> bool:
        """The whole answer arrived in one piece (the upstream reader's ``whole`` hook)."""
        if type(msg) is not Response or self.head is not None:
            return False
        try:
            if self._head(msg):
                if body:
                    self._body(body, True)
                self._end(())
        except Exception as e:
            self._bug(e)
        return True

    def _raw_answer(self, status: int, headers: list[tuple[bytes, bytes]], data: bytes,
                    start: int) -> None:
        self.done = True
        front = self.front
        front.count(status)
        front.state.raw_answers += 1
        n = self.received
        ex = self.ex
        ex.send_headers(headers, end=not n)
        if n:
            ex.write(memoryview(data)[start:] if n > 4096 else data[start:], True)
        self._give_back(True)
        front.state.add_bytes(front.ctx.name, 0, n)
        if log.isEnabledFor(logging.DEBUG):
            self._log_done(status)

    def _hold(self, t: type) -> bool:
        # only the end (with no DATA left to send) passes a blocked stream
        return self.done or (self.ex._tx_blocked and t is not MessageEnded)  # _writable resumes

    def _head(self, head: Response) -> bool:
        """The upstream's response head: False if the stream went to a task."""
        ex = self.ex
        front = self.front
        if head.interim:
            if head.status != 100 and not ex.local_ended:
                ex.send_headers([h for h in response_headers(head, "GET")
                                 if h[0] != b"content-length"])
            return True
        if head.framing is Framing.TUNNEL:  # unasked: the task answers 502
            self._unhook()
            resp = UpstreamResponse(front.pool, self.conn, head, None, True)
            front.express_handoff(self.ex, front.answer(ex, self.req, resp, self.address,
                                                     None, self.t0))
            return False
        self._took_head(head, front.loop.time())
        front.count(head.status)
        ex.send_headers(response_headers(head, self.req.method),
                        end=head.framing is Framing.NONE)
        return True

    def _body(self, data: bytes, last: bool = False) -> None:
        self.received += len(data)
        self.progress = True
        ex = self.ex  # (the last piece carries END_STREAM)
        if not ex.ending and not ex.write(data, last):
            self.conn.stream.pause_reading()  # resumed by _writable

    def _writable(self) -> None:
        """The stream's queue drained: pass on what the upstream sent meanwhile."""
        self.progress = True
        ex = self.ex
        if self.trailers is not None and not ex.local_ended:
            ex.send_headers(self.trailers, end=True)
            self.trailers = None
        if not self.done:
            self.conn.stream.resume_reading()
            self.on_upstream()

    def _end(self, trailers: Headers = ()) -> None:
        """The whole answer came: the stream ends (now or when its queue drained), the
        upstream connection goes back to the pool."""
        ex = self.ex
        if not ex.ending:
            if trailers:
                tr = trailer_headers(trailers)
                if ex._tx_blocked:
                    self.trailers = tr
                else:
                    ex.send_headers(tr, end=True)
            else:
                ex.write(b"", end=True)
        self._unhook()
        self.done = True
        head = self.head
        assert head is not None
        front = self.front
        self.conn.stream.resume_reading()  # if _body paused it
        self._give_back(head.keep_alive)
        front.state.add_bytes(front.ctx.name, 0, self.received)
        if log.isEnabledFor(logging.DEBUG):
            self._log_done(head.status)

    def _log_done(self, status: int) -> None:
        front = self.front
        log.debug("http_request listener=%s client=%s user=%s version=2 method=%s "
                  "address=%s target=%s status=%d up=0 down=%d reused=True ms=%.1f "
                  "express=True", front.ctx.name, front.peer, front.stream.meta.user or "-",
                  self.req.method, self.address, self.req.path[:200], status,
                  self.received, (front.loop.time() - self.t0) * 1000)

    def _finished(self) -> None:
        """The stream ended (its last frame went out, or it failed): the front's timer
        forgets it. (The upstream part, if left, ends in this same callback chain.)"""
        self.front.express_forget(self.ex)

    # ------------------------------------------------------------------ endings
    def _retry(self) -> None:
        log.debug("upstream_retry address=%s reason=stale_keepalive", self.address)
        self.front.express_handoff(self.ex, self.front.proxy(self.ex, self.req))

    def _refuse(self, status: int, reason: str, message: str) -> None:
        self.front.express_handoff(self.ex, self.front.fail(self.ex, status, reason, message))

    def _client_blocked(self) -> bool:
        return self.ex.blocked

    def _cut(self, why: str) -> None:
        """The answer had started: the stream is reset, the upstream connection dropped."""
        if not self.done:
            self._unhook()
            self.done = True
            self.conn.abort()
        front = self.front
        head = self.head
        log.info("http_response_cut listener=%s client=%s target=%s status=%d bytes=%d "
                 "error=%r", front.ctx.name, front.peer, self.address,
                 head.status if head else 0, self.received, why)
        self.ex.on_fail = None
        front.express_forget(self.ex)
        if not self.ex.local_ended:
            self.ex.reset(H2ErrorCode.INTERNAL_ERROR)

    def client_gone(self, exc: StreamResetError) -> None:
        """The client reset the stream or the connection closed: drop the upstream one."""
        if not self.done:
            self._unhook()
            self.done = True
            self.conn.abort()
        self.ex.on_writable = None
        self.front.express_forget(self.ex)
