"""Bot processes on one PostgreSQL recount each other every `budget_interval`, not only at lease
renewal, so a process joining halves the others' share of the RunPod request budget at once
(the fleet would otherwise send up to twice the budget until the next renewal) and a process
leaving gives its share back."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path

from bot.services import Services
from tests.conftest import FAST, HANG_GUARD, OpenServices, RecordingDelivery, make_settings
from tests.fakes.fake_runpod import FakeRunPod

# Renewal (a third of the lease) far beyond the test's guard: only the recount can move a share.
RECOUNTED = dataclasses.replace(FAST, lease_ttl=3 * 10 * HANG_GUARD, budget_interval=0.02)
WHOLE_BUDGET = 30.0


def _share(services: Services) -> float:
    budget = services.runpod.budget
    assert budget is not None
    return budget.per_second


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(HANG_GUARD):
        while not condition():
            await asyncio.sleep(0.005)


async def test_a_process_joining_halves_the_other_s_budget_and_leaving_gives_it_back(
    tmp_path: Path, fake_runpod: FakeRunPod, open_services: OpenServices, postgres_dsn: str
) -> None:
    settings = make_settings(
        tmp_path,
        fake_runpod,
        DATABASE_URL=postgres_dsn,
        RUNPOD_REQUESTS_PER_SECOND=str(int(WHOLE_BUDGET)),
    )
    first = await open_services(settings, runpod=None, timing=RECOUNTED)
    await first.jobs.start(RecordingDelivery())
    assert _share(first) == WHOLE_BUDGET, "alone, it has the whole budget"

    second = await Services.open(settings, timing=RECOUNTED)
    try:
        await second.jobs.start(RecordingDelivery())
        assert _share(second) == WHOLE_BUDGET / 2, "a process starting counts the others at once"
        await _until(lambda: _share(first) == WHOLE_BUDGET / 2)
        await second.jobs.stop()
    finally:
        await second.close()
    await _until(lambda: _share(first) == WHOLE_BUDGET)
    await first.jobs.stop()
