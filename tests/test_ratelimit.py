"""The one token bucket behind RunPod's request budget and Discord's per-channel pacing."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from bot.ratelimit import TokenBucket
from bot.runpod import RequestBudget
from cogs.common.delivery import ChannelPacer


class FakeTime:
    """A clock that moves only when a waiter sleeps, so no test waits real seconds."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_a_burst_goes_out_at_once_and_the_rest_at_the_rate() -> None:
    time = FakeTime()
    bucket = TokenBucket(per_second=10, burst=3, clock=time.clock, sleep=time.sleep)
    sent: list[float] = []
    for _ in range(8):
        await bucket.acquire()
        sent.append(time.now)
    assert sent[:3] == [1000.0] * 3
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent[2:])]
    assert gaps == pytest.approx([0.1] * 5)


async def test_no_second_carries_more_than_rate_plus_burst_calls() -> None:
    time = FakeTime()
    bucket = TokenBucket(per_second=20, burst=5, clock=time.clock, sleep=time.sleep)
    sent: list[float] = []

    async def call() -> None:
        await bucket.acquire()
        sent.append(time.now)

    await asyncio.gather(*(call() for _ in range(100)))
    assert len(sent) == 100
    for start in sent:
        in_window = [t for t in sent if start <= t < start + 1.0]
        assert len(in_window) <= 20 + 5


async def test_waiters_are_served_in_the_order_they_came() -> None:
    time = FakeTime()
    bucket = TokenBucket(per_second=1, burst=1, clock=time.clock, sleep=time.sleep)
    order: list[int] = []

    async def call(n: int) -> None:
        await bucket.acquire()
        order.append(n)

    await asyncio.gather(*(call(n) for n in range(6)))
    assert order == list(range(6))


async def test_ready_says_whether_a_call_would_go_out_now() -> None:
    time = FakeTime()
    bucket = TokenBucket(per_second=2, burst=1, clock=time.clock, sleep=time.sleep)
    assert bucket.ready()
    await bucket.acquire()
    assert not bucket.ready()
    time.now += 0.5
    assert bucket.ready()


def test_a_bucket_that_could_never_refill_is_refused() -> None:
    with pytest.raises(ValueError, match="per_second > 0"):
        TokenBucket(per_second=0, burst=1)
    with pytest.raises(ValueError, match="burst >= 1"):
        TokenBucket(per_second=1, burst=0)


def test_runpods_budget_keeps_its_small_default_burst() -> None:
    assert RequestBudget(50).burst == 5
    assert RequestBudget(5).burst == 1
    assert RequestBudget(50, burst=2).burst == 2


async def test_each_channel_has_its_own_bucket() -> None:
    pacer = ChannelPacer(burst=1, per_second=0.001)
    await pacer.acquire(1)
    assert not pacer.ready(1)
    assert pacer.ready(2)
    await pacer.acquire(2)
    assert not pacer.ready(2)


async def test_a_budget_shared_by_three_processes_lets_each_send_a_third_of_the_rate() -> None:
    time = FakeTime()
    bucket = TokenBucket(per_second=30, burst=3, clock=time.clock, sleep=time.sleep)
    bucket.share(3)
    sent: list[float] = []
    for _ in range(6):
        await bucket.acquire()
        sent.append(time.now)
    assert sent[:1] == [1000.0], "a third of the burst"
    gaps = [later - earlier for earlier, later in itertools.pairwise(sent)]
    assert gaps == pytest.approx([0.1] * 5), "a third of 30 per second"
    bucket.share(1)  # the others have gone: the whole budget again
    assert (bucket.per_second, bucket.burst) == (30, 3)
