"""Deadlines: ``Deadline`` (asyncio.timeout's synchronous twin), and the dial deadline
(``connect_timeout``): a dialer that does not answer in time is a ``timeout`` DialError, the
next endpoint is tried, and a cancellation from outside stays one."""

from __future__ import annotations

import asyncio

import pytest

from ugate_core import Deadline, DialError, Gateway, loads
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


async def test_deadline_alone() -> None:
    with pytest.raises(TimeoutError), Deadline(0.01) as d:
        await asyncio.sleep(5)
    assert d.expired
    with Deadline(None) as d:  # no deadline
        await asyncio.sleep(0.01)
    assert not d.expired
    with Deadline(1) as d:
        pass
    assert not d.expired
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_deadline_inside_asyncio_timeout_leaves_the_outer_one_alone() -> None:
    # the outer timeout's cancellation passes through the inner Deadline untouched
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            with Deadline(5):
                await asyncio.sleep(5)
    # and the inner Deadline's own timeout is its own
    async with asyncio.timeout(5):
        with pytest.raises(TimeoutError), Deadline(0.01):
            await asyncio.sleep(5)


def test_deadline_outside_a_task() -> None:
    with pytest.raises(RuntimeError), Deadline(1):
        pass


async def test_deadlines_share_one_timer_and_an_earlier_one_still_fires_on_time() -> None:
    from ugate_core.deadline import _Clock

    loop = asyncio.get_running_loop()
    # a long deadline arms the loop's clock; a shorter one inside must not wait for it
    t0 = loop.time()
    with Deadline(30), pytest.raises(TimeoutError), Deadline(0.02):
        await asyncio.sleep(5)
    assert loop.time() - t0 < 1.0
    # many deadlines that end before they are due: one timer, and the heap is compacted
    for _ in range(1000):
        with Deadline(30) as d:
            pass
        assert not d.expired
    clock = _Clock._all[id(loop)]
    assert len(clock.heap) <= 200 and clock.handle is not None
    # a deadline after all those still fires, and the task was not cancelled by any other
    with pytest.raises(TimeoutError), Deadline(0.01) as d:
        await asyncio.sleep(5)
    assert d.expired
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_deadline_in_one_task_does_not_cancel_another() -> None:
    async def short() -> str:
        try:
            with Deadline(0.01):
                await asyncio.sleep(5)
        except TimeoutError:
            return "timeout"
        return "done"

    async def quick() -> str:
        with Deadline(0.005):
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)  # past its own deadline, outside the block
        return "done"

    assert await asyncio.gather(short(), quick(), short()) == ["timeout", "done", "timeout"]
