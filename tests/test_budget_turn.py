"""A job waiting for its turn under the RunPod request budget has not been sent: it stays queued,
so a bot stopped (or killed) meanwhile sends it after the restart instead of failing it as
"maybe sent"."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from bot.jobs import JobState
from bot.runpod import RequestBudget
from tests.conftest import (
    HANG_GUARD,
    OpenServices,
    RecordingDelivery,
    make_client,
    make_settings,
    wait_for_state,
)
from tests.fakes.fake_runpod import FakeRunPod


class HeldBudget(RequestBudget):
    """A budget of one request, spent, and never refilled: whoever waits on it waits for good."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waiting = asyncio.Event()
        super().__init__(1, burst=1, clock=lambda: self.now)
        self._sleep = self._wait_forever
        self._tokens = 0.0

    async def _wait_forever(self, seconds: float) -> None:
        self.waiting.set()
        await asyncio.Event().wait()


async def test_a_job_waiting_for_the_request_budget_is_sent_after_a_restart_not_failed(
    tmp_path: Path, fake_runpod: FakeRunPod, open_services: OpenServices
) -> None:
    settings = make_settings(tmp_path, fake_runpod)
    budget = HeldBudget()
    first = await open_services(settings, runpod=make_client(fake_runpod, budget=budget))
    await first.jobs.start(RecordingDelivery())
    job = await first.jobs.accept(first.prepare("a pony", user_id=1, guild_id=100, channel_id=5))
    await first.jobs.attach_message(job.id, 5, 500)
    await asyncio.wait_for(budget.waiting.wait(), HANG_GUARD)

    assert (await first.jobs.get(job.id)).state is JobState.QUEUED
    first.jobs.timing = dataclasses.replace(first.jobs.timing, shutdown_grace=0.0)
    await first.jobs.stop()
    await first.close()
    assert fake_runpod.requests_for("run") == []

    second = await open_services(settings)
    told = RecordingDelivery()
    await second.jobs.start(told)
    await told.wait(job.id)
    done = await wait_for_state(second, job.id, "done")
    assert done.state is JobState.DONE and len(told.delivered[job.id]) == 1
    assert len(fake_runpod.requests_for("run")) == 1
    await second.jobs.stop()
