"""The dial deadline (``connect_timeout``): a dialer that does not answer in time is a
``timeout`` DialError, the next endpoint is tried, and a cancellation from outside stays one."""

from __future__ import annotations

import asyncio

import pytest

from ugate_core import DialError, Gateway, loads
from ugate_core.stream import Stream, stream_pair
from ugate_core.types import Destination, DialerType, DialRequest, Endpoint


def _gateway(dial: object) -> Gateway:
    gw = Gateway(loads("[admin]\nlisten = \"\"\n"))
    gw.load()
    gw.dialer_types["test"] = DialerType("test", dial)  # type: ignore[arg-type]
    return gw


async def test_deadline_times_out_then_next_endpoint_answers() -> None:
    asked: list[str] = []

    async def dial(req: DialRequest) -> Stream:
        asked.append(req.host)
        if req.host == "slow":
            await asyncio.sleep(30)
        return stream_pair()[0]

    gw = _gateway(dial)
    dest = Destination("svc", (Endpoint("slow"), Endpoint("fast")), protocol="test")
    s = await gw.dial_destination(dest, 80, timeout=0.05)
    assert asked == ["slow", "fast"] and s.meta.target == "svc:80"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the deadline's cancel was taken back

    only_slow = Destination("svc", (Endpoint("slow"),), protocol="test")
    with pytest.raises(DialError) as ei:
        await gw.dial_destination(only_slow, 80, timeout=0.05)
    assert ei.value.reason == "timeout" and "did not answer within 0.05s" in str(ei.value)


async def test_cancel_from_outside_is_not_a_timeout() -> None:
    started = asyncio.Event()

    async def dial(req: DialRequest) -> Stream:
        started.set()
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    gw = _gateway(dial)
    dest = Destination("svc", (Endpoint("a"),), protocol="test")
    t = asyncio.ensure_future(gw.dial_destination(dest, 80, timeout=5))
    await started.wait()
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t


async def test_a_dialer_that_ends_in_time_leaves_no_timer_behind() -> None:
    async def dial(req: DialRequest) -> Stream:
        return stream_pair()[0]

    gw = _gateway(dial)
    dest = Destination("svc", (Endpoint("a"),), protocol="test")
    await gw.dial_destination(dest, 80, timeout=0.02)
    await asyncio.sleep(0.05)  # past the deadline: nothing cancels this task now
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
