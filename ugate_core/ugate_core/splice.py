"""Linux ``splice(2)`` fast path: move one relay direction between two kernel sockets.

Bytes go socket → pipe → socket inside the kernel, never through Python. Readiness comes from
the event loop (``add_reader`` / ``add_writer``) on a duplicate of each socket's fd: asyncio and
uvloop refuse to watch an fd a transport owns, and the duplicate also keeps the socket alive
(and its number unique) until the relay lets go, whatever the transport does meanwhile. The
transport itself is paused for reading and no longer written to while a direction is spliced;
the relay closes it as usual at the end.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
from collections.abc import Callable

#: splice(2) exists on Linux (Python ≥ 3.10 wraps it)
AVAILABLE: bool = sys.platform.startswith("linux") and hasattr(os, "splice")

#: pipe capacity per spliced direction (Linux caps it at /proc/sys/fs/pipe-max-size)
PIPE_SIZE = 1 << 20

#: splice calls per readiness callback before yielding to the loop (fairness)
_ROUNDS = 4

_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)


def _open_pipe() -> tuple[int, int, int]:
    """A non-blocking pipe sized up to :data:`PIPE_SIZE`: (read fd, write fd, capacity)."""
    import fcntl  # not on Windows, where this module is never used (AVAILABLE is False)

    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        try:
            size = fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
        except OSError:  # over the per-user pipe budget, or a smaller pipe-max-size
            size = fcntl.fcntl(w, getattr(fcntl, "F_GETPIPE_SZ", 1032))
    except BaseException:
        os.close(r)
        os.close(w)
        raise
    return r, w, int(size)


def dup_socket(fd: int) -> socket.socket:
    """A second fd for the same kernel socket (shares its non-blocking flag)."""
    return socket.socket(fileno=os.dup(fd))


class SpliceDirection:
    """Moves bytes ``src`` → ``dst`` with splice until ``src`` ends, then half-closes ``dst``.

    ``on_eof()`` runs once everything read was delivered and ``dst`` got its FIN;
    ``on_error(exc)`` runs on a reset or any other socket error. ``count`` is live.
    """

    __slots__ = (
        "_cap", "_dst", "_fill", "_loop", "_on_eof", "_on_error", "_pr", "_pw", "_reading",
        "_src", "_src_eof", "_stopped", "_writing", "count",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        src: socket.socket,
        dst: socket.socket,
        on_eof: Callable[[], None],
        on_error: Callable[[OSError], None],
    ) -> None:
        self._loop = loop
        self._src = src
        self._dst = dst
        self._on_eof = on_eof
        self._on_error = on_error
        self._pr, self._pw, self._cap = _open_pipe()
        self._fill = 0
        self._src_eof = False
        self._reading = False
        self._writing = False
        self._stopped = False
        self.count = 0

    def start(self) -> None:
        self._pump()

    def _pump(self) -> None:
        if self._stopped:
            return
        src, dst, pr, pw = self._src.fileno(), self._dst.fileno(), self._pr, self._pw
        try:
            for _ in range(_ROUNDS):
                want = self._cap - self._fill
                n = -1
                if not self._src_eof and want:
                    try:
                        n = os.splice(src, pw, want, flags=_FLAGS)
                    except BlockingIOError:
                        pass
                    else:
                        if n == 0:
                            self._src_eof = True
                        else:
                            self._fill += n
                if self._fill:
                    try:
                        m = os.splice(pr, dst, self._fill, flags=_FLAGS)
                    except BlockingIOError:
                        m = 0
                    self._fill -= m
                    self.count += m
                # go round again only if the source filled the pipe (more may be waiting)
                # and the destination took it all; else the loop's readiness tells us
                if n != want or self._fill:
                    break
            if self._src_eof and not self._fill:
                self._finish()
                try:
                    self._dst.shutdown(socket.SHUT_WR)
                except OSError as e:
                    if e.errno != errno.ENOTCONN:
                        raise
                self._on_eof()
                return
        except OSError as e:
            self._finish()
            self._on_error(e)
            return
        self._watch(not self._src_eof and self._fill < self._cap, self._fill > 0)

    def _watch(self, read: bool, write: bool) -> None:
        loop = self._loop
        if read != self._reading:
            self._reading = read
            if read:
                loop.add_reader(self._src.fileno(), self._pump)
            else:
                loop.remove_reader(self._src.fileno())
        if write != self._writing:
            self._writing = write
            if write:
                loop.add_writer(self._dst.fileno(), self._pump)
            else:
                loop.remove_writer(self._dst.fileno())

    def _finish(self) -> None:
        """Stop watching and free the pipe (idempotent); the sockets belong to the caller."""
        if self._stopped:
            return
        self._stopped = True
        self._watch(False, False)
        os.close(self._pr)
        os.close(self._pw)

    def stop(self) -> None:
        self._finish()
