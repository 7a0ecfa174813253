"""Gateway.guard: every listener maps what a protocol raises the same way."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from ugate_core import AuthError, DialError, Gateway, ProtocolError, StreamMeta, loads
from ugate_core.stream import StreamClosedError
from ugate_core.testing import metric


@pytest.mark.parametrize(("exc", "reason"), [
    (ProtocolError("bad version byte 0x04", "bad_version"), "bad_version"),
    (AuthError("wrong password", "auth_failed"), "auth_failed"),
    (TimeoutError(), "handshake_timeout"),
    (ConnectionResetError("peer reset"), "client_closed"),
    (StreamClosedError("ended after 3 of 8 bytes"), "client_closed"),
    (ValueError("a bug"), "internal"),
])
def test_guard_counts_each_refusal(exc: Exception, reason: str, tmp_path: Path,
                                   caplog: pytest.LogCaptureFixture) -> None:
    gw = Gateway(loads('[admin]\nlisten = ""\n'), state_dir=tmp_path)
    meta = StreamMeta(remote=("127.0.0.1", 4242))
    with caplog.at_level(logging.INFO, "ugate"), gw.guard("l1", meta):
        raise exc
    assert metric(gw, "ugate_rejections_total", listener="l1", reason=reason) == 1
    assert "127.0.0.1:4242" in caplog.text
    if reason == "internal":
        assert "ValueError: a bug" in caplog.text  # the traceback is logged


def test_guard_logs_dial_errors_and_passes_cancellation(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gw = Gateway(loads('[admin]\nlisten = ""\n'), state_dir=tmp_path)
    meta = StreamMeta(remote=("127.0.0.1", 1), target="svc.test:80")
    with caplog.at_level(logging.INFO, "ugate"), gw.guard("l1", meta):
        raise DialError("refused", "svc.test: 127.0.0.1:80: Connection refused")
    assert "dial_failed listener=l1 client=127.0.0.1:1 target=svc.test:80 reason=refused" \
        in caplog.text
    with pytest.raises(asyncio.CancelledError), gw.guard("l1", meta):
        raise asyncio.CancelledError
