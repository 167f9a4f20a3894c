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


class GatedBudget(RequestBudget):
    """A budget of one request, spent; it refills one second's worth when the test opens it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waiting = asyncio.Event()
        self._gate = asyncio.Event()
        super().__init__(1, burst=1, clock=lambda: self.now)
        self._sleep = self._sleep_until_open
        self._tokens = 0.0

    async def _sleep_until_open(self, seconds: float) -> None:
        self.waiting.set()
        await self._gate.wait()
        self.now += seconds

    def open(self) -> None:
        self._gate.set()


async def test_jobs_waiting_for_the_request_budget_are_sent_after_a_restart_not_failed(
    tmp_path: Path, fake_runpod: FakeRunPod, open_services: OpenServices
) -> None:
    settings = make_settings(tmp_path, fake_runpod)
    budget = GatedBudget()
    first = await open_services(settings, runpod=make_client(fake_runpod, budget=budget))
    await first.jobs.start(RecordingDelivery())
    jobs = []
    for member in (1, 2):
        job = await first.jobs.accept(
            first.prepare("a pony", user_id=member, guild_id=100, channel_id=5)
        )
        await first.jobs.attach_message(job.id, 5, 500 + member)
        jobs.append(job.id)
    await asyncio.wait_for(budget.waiting.wait(), HANG_GUARD)

    assert [(await first.jobs.get(j)).state for j in jobs] == [JobState.QUEUED] * 2
    first.jobs.timing = dataclasses.replace(first.jobs.timing, shutdown_grace=0.0)
    await first.jobs.stop()
    await first.close()
    assert fake_runpod.requests_for("run") == []

    second = await open_services(settings)
    told = RecordingDelivery()
    await second.jobs.start(told)
    for job_id in jobs:
        await told.wait(job_id)
        done = await wait_for_state(second, job_id, "done")
        assert done.state is JobState.DONE and len(told.delivered[job_id]) == 1
    assert len(fake_runpod.requests_for("run")) == 2
    await second.jobs.stop()


async def test_an_idle_process_on_a_shared_database_keeps_its_request_budget(
    tmp_path: Path, fake_runpod: FakeRunPod, open_services: OpenServices, postgres_dsn: str
) -> None:
    # A frozen clock never refills: a turn kept for each empty claim and never given back would
    # empty the bucket by the third claim, and the claims would stop.
    budget = RequestBudget(1, burst=2, clock=lambda: 0.0)
    services = await open_services(
        make_settings(tmp_path, fake_runpod, DATABASE_URL=postgres_dsn),
        runpod=make_client(fake_runpod, budget=budget),
    )
    await services.jobs.start(RecordingDelivery())
    try:
        async with asyncio.timeout(HANG_GUARD):
            while services.jobs.leases.empty_claims < 5:
                await asyncio.sleep(0.01)
        assert budget.ready()
    finally:
        await services.jobs.stop()


async def test_a_job_cancelled_while_waiting_for_the_budget_gives_its_turn_back(
    tmp_path: Path, fake_runpod: FakeRunPod, open_services: OpenServices
) -> None:
    budget = GatedBudget()
    services = await open_services(runpod=make_client(fake_runpod, budget=budget))
    await services.jobs.start(RecordingDelivery())
    try:
        job = await services.jobs.accept(
            services.prepare("a pony", user_id=1, guild_id=100, channel_id=5)
        )
        await services.jobs.attach_message(job.id, 5, 500)
        await asyncio.wait_for(budget.waiting.wait(), HANG_GUARD)
        cancelled = await services.jobs.cancel(job.id, by_user=1)
        assert cancelled.state is JobState.CANCELLED

        budget.open()  # the turn arrives for a job no longer there: it goes back
        async with asyncio.timeout(HANG_GUARD):
            while not budget.ready():
                await asyncio.sleep(0.005)
        assert fake_runpod.requests_for("run") == []
    finally:
        await services.jobs.stop()
