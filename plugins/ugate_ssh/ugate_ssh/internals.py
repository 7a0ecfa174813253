"""What the short receive and send paths (``recv.py``, ``send.py``) check of asyncssh's
internals, and the one log line each gives when it cannot be taken."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import asyncssh

log = logging.getLogger("ugate.ssh")


def params(f: Any) -> list[str]:
    """The parameter names of method ``f`` after ``self`` ([] when it has none or is not one)."""
    try:
        return list(inspect.signature(f).parameters)[1:]
    except (TypeError, ValueError):
        return []


def logger_problem() -> str:
    """Both paths read asyncssh's debug level to step aside when it logs per packet."""
    try:
        from asyncssh.logging import SSHLogger
    except ImportError as e:
        return f"import: {e}"
    if not isinstance(getattr(SSHLogger, "_debug_level", None), int):
        return "SSHLogger._debug_level"
    return ""


def missing(problem: str, conn: object, names: tuple[str, ...]) -> str:
    """Why a path cannot run on ``conn``: the module-wide ``problem`` with asyncssh's
    classes, else which of ``names`` the connection lacks ("" when neither)."""
    if problem:
        return problem
    gone = [a for a in names if not hasattr(conn, a)]
    return f"connection has no {', '.join(gone)}" if gone else ""


def off_once(event: str, why: str, said: list[str]) -> None:
    """Log ``event`` with the reason the first time only (``said`` remembers)."""
    if not said:
        said.append(why)
        log.warning("%s asyncssh=%s reason=%r", event, asyncssh.__version__, why)
