"""glibc malloc tuning for bulk copies (``[gateway] tune_malloc``, on by default).

Protocol libraries copy every payload several times — h2 copies each DATA frame into a frame
buffer, a body slice and ``tobytes``, and on the send side serializes, joins and hands over
``data_to_send`` — each copy a new object of up to a frame's size. glibc
serves allocations above ``M_MMAP_THRESHOLD`` (128 KiB at start, raised dynamically later) with
a fresh ``mmap`` and gives freed heap tops back to the kernel above ``M_TRIM_THRESHOLD``, so
those copies page-fault on every frame. Measured with two :class:`~ugate_hbone.session.H2Session`
objects in memory (1 GiB through one stream, 256 KiB frames): 3.1 CPU s/GiB with glibc's
defaults, 0.43 s/GiB with the values below. Heap memory the process keeps after a burst is
bounded by the trim threshold (32 MiB).

This is process-wide (it helps the relay's copy path, TLS and every plugin), so the gateway
does it once at start, on Linux with glibc only, and logs it.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger("ugate")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 32 << 20

_done = False


def tune_malloc() -> bool:
    """Set glibc's mmap and trim thresholds once; False where that is not possible."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        # the running process's own symbols (no find_library: it runs ldconfig, slowly)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        try:
            mallopt = ctypes.CDLL("libc.so.6").mallopt
        except (OSError, AttributeError):
            return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    _done = ok
    if ok:
        log.info("malloc_tuned mmap_threshold=%d trim_threshold=%d", MMAP_THRESHOLD,
                 TRIM_THRESHOLD)
    return ok
