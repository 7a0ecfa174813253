"""Refusal logs at a bounded rate (ratelog.py): a flood of 10,000 refusals writes a stated
number of lines while ``ugate_rejections_total`` counts every one."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ugate_core.ratelog import RateLog
from ugate_core.testing import StartGateway, metric


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_burst_then_one_summary_per_window(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    rl = RateLog(logging.getLogger("t.ratelog"), burst=5, window=10.0, clock=clock)
    with caplog.at_level(logging.INFO, "t.ratelog"):
        for i in range(1000):
            rl.log("k", "rejected reason=x", logging.INFO, "rejected reason=x n=%d", i)
        assert len(caplog.records) == 5
        rl.log("other", "rejected reason=y", logging.INFO, "rejected reason=y")  # own budget
        assert len(caplog.records) == 6
        clock.t += 10.0  # the next window: the summary, then the event
        rl.log("k", "rejected reason=x", logging.INFO, "rejected reason=x n=%d", 1000)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[6] == "rejected reason=x ... and 995 more like this in the last 10 s"
    assert lines[7] == "rejected reason=x n=1000"
    assert rl.suppressed == 995


async def test_summary_written_when_the_flood_stops(caplog: pytest.LogCaptureFixture) -> None:
    rl = RateLog(logging.getLogger("t.ratelog"), burst=2, window=0.2)
    with caplog.at_level(logging.INFO, "t.ratelog"):
        for _ in range(50):
            rl.log("k", "rejected reason=x", logging.INFO, "rejected reason=x")
        await asyncio.sleep(0.4)
    assert caplog.records[-1].getMessage() == \
        "rejected reason=x ... and 48 more like this in the last 1 s"  # (spans round up to 1)
    assert len(caplog.records) == 3


FLOOD = 10_000
BURST = 10


async def test_flood_of_refusals_logs_a_bounded_number_of_lines(
        start_gateway: StartGateway, caplog: pytest.LogCaptureFixture) -> None:
    """10,000 refusals through the gateway's one refusal path: BURST lines and one summary
    per reason, an exact count on the metrics."""
    gw = await start_gateway(f"""
[admin]
listen = ""
[gateway]
reject_log_burst = {BURST}
reject_log_window = 60.0
""")
    with caplog.at_level(logging.INFO, "ugate"):
        caplog.clear()
        for i in range(FLOOD):
            gw.reject("ssh", "auth_failed", f"attempt {i}")
        gw.refusal_log.flush()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rejected")]
    assert len(lines) == BURST + 1
    assert lines[-1] == (f"rejected listener=ssh reason=auth_failed ... and "
                         f"{FLOOD - BURST:,} more like this in the last 1 s")
    assert metric(gw, "ugate_rejections_total", listener="ssh", reason="auth_failed") == FLOOD
