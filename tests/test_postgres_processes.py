"""Two bot processes on one PostgreSQL: the in-flight caps hold across both, and whichever has a
free slot sends the next queued job whoever accepted it; a job is followed by
one of them, and when that one stops renewing its leases the other takes it over and finishes it
exactly once."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from bot.jobs import Job, JobManager, JobState, Limits, UpdateKind
from bot.polling import Timing
from bot.services import Services
from tests.conftest import (
    FAST,
    FAST_RETRY,
    HANG_GUARD,
    OpenServices,
    RecordingDelivery,
    Watcher,
    make_settings,
    wait_for_state,
)
from tests.fakes import fake_runpod as fr
from tests.fakes.fake_runpod import FakeRunPod, Outcome

LEASED = dataclasses.replace(FAST, lease_ttl=30.0)


class SharedClock:
    """The wall clock both processes read, moved forward by the test to run a lease out."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest_asyncio.fixture
async def two_processes(
    tmp_path: Path, fake_runpod: FakeRunPod, open_services: OpenServices, postgres_dsn: str
) -> AsyncIterator[tuple[Services, Services]]:
    settings = make_settings(tmp_path, fake_runpod, DATABASE_URL=postgres_dsn)
    yield await open_services(settings), await open_services(settings)


def _manager(
    services: Services,
    clock: SharedClock,
    name: str,
    limits: Limits | None = None,
    *,
    timing: Timing = LEASED,
) -> JobManager:
    return JobManager(
        services.db,
        services.jobs.backends,
        accounting=services.quotas,
        timing=timing,
        limits=limits,
        durations=services.jobs.durations,
        clock=clock,
        process=name,
    )


async def sent_by(manager: JobManager, services: Services) -> tuple[Job, str]:
    """A job `manager` accepted and RunPod now has, and RunPod's id for it."""
    job = await manager.accept(services.prepare("a pony", user_id=1, guild_id=100, channel_id=5))
    await manager.attach_message(job.id, 5, 500)
    backend_id = (await wait_for_state(services, job.id, "submitted")).backend_id
    assert backend_id is not None
    return job, backend_id


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(HANG_GUARD):
        while not condition():
            await asyncio.sleep(0.005)


@pytest.mark.parametrize(
    ("limits", "second_member"),
    [
        (Limits(max_in_flight=1, member_max_in_flight=1, member_max_queued=4), 2),
        (Limits(max_in_flight=4, member_max_in_flight=1, member_max_queued=4), 1),
    ],
    ids=["global-cap", "member-cap"],
)
async def test_the_in_flight_caps_count_every_process_s_jobs(
    two_processes: tuple[Services, Services],
    fake_runpod: FakeRunPod,
    limits: Limits,
    second_member: int,
) -> None:
    first_services, second_services = two_processes
    clock = SharedClock()
    first = _manager(first_services, clock, "a", limits)
    second = _manager(second_services, clock, "b", limits)
    told = RecordingDelivery()  # either process may send and deliver the waiting job
    fake_runpod.script(Outcome(status="HANG"), Outcome())
    await first.start(told)
    await second.start(told)
    try:
        running = await first.accept(
            first_services.prepare("a pony", user_id=1, guild_id=100, channel_id=5)
        )
        await first.attach_message(running.id, 5, 500)
        backend_id = (await wait_for_state(first_services, running.id, "submitted")).backend_id
        assert backend_id is not None

        waiting = await second.accept(
            second_services.prepare("a fox", user_id=second_member, guild_id=100, channel_id=5)
        )
        await second.attach_message(waiting.id, 5, 501)
        tried = first.leases.empty_claims + second.leases.empty_claims
        await until(lambda: first.leases.empty_claims + second.leases.empty_claims >= tried + 2)
        assert (await second.get(waiting.id)).state is JobState.QUEUED
        assert len(fake_runpod.requests_for("run")) == 1, "the cap is full in the other process"

        fake_runpod.finish(backend_id, Outcome())
        await wait_for_state(first_services, running.id, "done")
        await told.wait(waiting.id)
        assert (await wait_for_state(second_services, waiting.id, "done")).state is JobState.DONE
        assert len(fake_runpod.requests_for("run")) == 2
        assert len(told.delivered[waiting.id]) == 1, "delivered once, by one process"
    finally:
        await first.stop()
        await second.stop()


async def test_a_job_is_taken_over_only_once_its_process_stops_renewing_and_ends_once(
    two_processes: tuple[Services, Services], fake_runpod: FakeRunPod
) -> None:
    first_services, second_services = two_processes
    clock = SharedClock()
    first, second = _manager(first_services, clock, "a"), _manager(second_services, clock, "b")
    first_told, second_told = RecordingDelivery(), RecordingDelivery()
    fake_runpod.script(Outcome(status="HANG"))
    await first.start(first_told)
    try:
        job, backend_id = await sent_by(first, first_services)
        # Started once the first has sent it: a queued job goes to whichever process claims it.
        await second.start(second_told)

        await second._reconcile()
        assert job.id not in second._tracked, "a living process's job is left alone"
        clock.offset += 20
        await first.leases.renew()
        clock.offset += 20
        await second._reconcile()
        assert job.id not in second._tracked, "renewed: still the first process's"
        assert first.leases.held == 1 and second.leases.last_claim is None

        await first.stop()  # it dies: no more renewals; its lease stays until it runs out
        clock.offset += 31
        await second._reconcile()
        assert job.id in second._tracked and second.leases.last_claim is not None

        fake_runpod.finish(backend_id, Outcome())
        await second_told.wait(job.id)
        done = await wait_for_state(second_services, job.id, "done")
        assert done.state is JobState.DONE and first_told.delivered == {}
        assert len(second_told.delivered[job.id]) == 1
        assert len(fake_runpod.requests_for("run")) == 1, "never sent twice"
        trail = [to for _, to, _ in await second.events(job.id)]
        assert trail.count("done") == 1
        holds = await second_services.db.fetchall(
            "SELECT state FROM quota_holds WHERE job_id = $1", (job.id,)
        )
        assert [h["state"] for h in holds] == ["captured"]
    finally:
        await first.stop()
        await second.stop()


async def test_a_process_that_stalled_past_its_lease_lets_the_job_go_when_it_wakes(
    two_processes: tuple[Services, Services], fake_runpod: FakeRunPod
) -> None:
    first_services, second_services = two_processes
    clock = SharedClock()
    first, second = _manager(first_services, clock, "a"), _manager(second_services, clock, "b")
    second_told = RecordingDelivery()
    fake_runpod.script(Outcome(status="HANG"))
    await first.start(RecordingDelivery())
    try:
        new = first_services.prepare("a pony", user_id=1, guild_id=100, channel_id=5)
        job = await first.accept(new)
        await first.attach_message(job.id, 5, 500)
        backend_id = (await wait_for_state(first_services, job.id, "submitted")).backend_id
        assert backend_id is not None
        await second.start(second_told)  # once the first has sent it (any process may claim it)
        clock.offset += 31  # the first process missed every renewal (a long pause, say)
        await second._reconcile()
        assert job.id in second._tracked

        await first.leases.renew()
        assert job.id not in first._tracked and first.leases.held == 0
        assert first.slots_in_use == 0, "its slot is free for its own jobs"
        fake_runpod.finish(backend_id, Outcome())
        await second_told.wait(job.id)
        assert (await wait_for_state(second_services, job.id, "done")).state is JobState.DONE
    finally:
        await first.stop()
        await second.stop()


async def test_either_process_reports_the_queue_positions_in_the_order_jobs_are_then_claimed(
    two_processes: tuple[Services, Services], fake_runpod: FakeRunPod
) -> None:
    """Each process accepted some of the waiting jobs; the places both report, and the "ahead of
    you" line of a progress message, are the shared table's rotation, not a local queue's."""
    first_services, second_services = two_processes
    clock = SharedClock()
    limits = Limits(max_in_flight=1, member_max_in_flight=4, member_max_queued=4)
    first = _manager(first_services, clock, "a", limits)
    second = _manager(second_services, clock, "b", limits)
    progress = Watcher(first)
    told = RecordingDelivery()
    fake_runpod.script(Outcome(status="HANG"))
    await first.start(told)
    await second.start(told)

    async def queue(manager: JobManager, services: Services, user_id: int) -> Job:
        job = await manager.accept(
            services.prepare("a pony", user_id=user_id, guild_id=100, channel_id=5)
        )
        await manager.attach_message(job.id, 5, 500 + job.id)
        return job

    try:
        _, backend_id = await sent_by(first, first_services)  # the one slot; member 1 had a turn
        members = [(first, 1), (first, 1), (second, 2), (second, 3), (first, 2)]
        jobs = [
            await queue(manager, first_services if manager is first else second_services, user)
            for manager, user in members
        ]
        one, two, three, four, five = (job.id for job in jobs)
        # Members 2 and 3 have not had a turn; then member 1; round two: members 2 and 1.
        rotation = [three, four, one, five, two]
        expected = {job_id: place for place, job_id in enumerate(rotation, 1)}
        for manager in (first, second):
            await until(lambda m=manager: all(m.position(job.id) for job in jobs))
            assert {job.id: manager.position(job.id) for job in jobs} == expected
        # The first process's own queue has member 1's job first; the member reads its real place,
        await progress.until(
            lambda u: u.job.id == one and u.kind is UpdateKind.QUEUED and u.position == 3
        )
        # and a start that counts the two jobs ahead of it that the other process accepted.
        alone = first.scheduler.expected_starts({one: 1})[one]
        behind = first.scheduler.expected_starts({three: 1, four: 2, one: 3})[one]
        assert behind - alone > first.durations.expect(jobs[0].request, jobs[0].endpoint).seconds
        # The second process holds no slot, yet its first waiting job starts only once the first
        # process's job (the one slot) ends: counted at half its length.
        await until(lambda: second.scheduler._shared_in_flight == 1)
        own = second.durations.expect(jobs[2].request, jobs[2].endpoint).seconds
        asked_at = clock()
        assert second.scheduler.expected_starts({three: 1})[three] - asked_at >= own / 2

        fake_runpod.finish(backend_id, Outcome())
        for job in jobs:
            await told.wait(job.id)
        claimed = await first_services.db.fetchall(
            "SELECT job_id FROM job_events WHERE to_state = 'submitting' AND job_id = ANY($1)"
            " ORDER BY id",
            ([job.id for job in jobs],),
        )
        assert [row["job_id"] for row in claimed] == rotation
    finally:
        await first.stop()
        await second.stop()


async def test_a_job_runpod_refused_waits_out_its_backoff_whichever_process_would_claim_it(
    two_processes: tuple[Services, Services], fake_runpod: FakeRunPod
) -> None:
    """The delay before sending a refused job again is stored with it: the process that did not
    send it, which knows nothing of the refusal, leaves it queued until the delay has passed."""
    first_services, second_services = two_processes
    clock = SharedClock()
    backoff = 1000.0
    timing = dataclasses.replace(LEASED, submit_retry_delay=backoff)
    first = _manager(first_services, clock, "a", timing=timing)
    second = _manager(second_services, clock, "b", timing=timing)
    told = RecordingDelivery()
    fake_runpod.inject("run", *[fr.http(503)] * FAST_RETRY.attempts)  # provably not created
    await first.start(told)
    await second.start(told)
    try:
        job = await first.accept(
            first_services.prepare("a pony", user_id=1, guild_id=100, channel_id=5)
        )
        await first.attach_message(job.id, 5, 500)
        async with asyncio.timeout(HANG_GUARD):
            while ("submitting", "queued") not in [e[:2] for e in await first.events(job.id)]:
                await asyncio.sleep(0.005)
        tried = (first.leases.empty_claims, second.leases.empty_claims)
        await until(
            lambda: (
                first.leases.empty_claims > tried[0] + 1
                and second.leases.empty_claims > tried[1] + 1
            )
        )
        assert (await first.get(job.id)).state is JobState.QUEUED, "no process sent it early"
        assert len(fake_runpod.requests_for("run")) == FAST_RETRY.attempts

        clock.offset += backoff
        await told.wait(job.id)
        assert (await wait_for_state(first_services, job.id, "done")).state is JobState.DONE
        assert len(fake_runpod.requests_for("run")) == FAST_RETRY.attempts + 1
        assert len(told.delivered[job.id]) == 1
    finally:
        await first.stop()
        await second.stop()


async def test_processes_on_one_database_split_the_runpod_request_budget_between_them(
    tmp_path: Path, fake_runpod: FakeRunPod, open_services: OpenServices, postgres_dsn: str
) -> None:
    """The budget is per RunPod endpoint, not per process: each takes an equal share of the
    processes connected now, and a process gone gives its share back at the next renewal."""
    settings = make_settings(
        tmp_path, fake_runpod, DATABASE_URL=postgres_dsn, RUNPOD_REQUESTS_PER_SECOND="30"
    )
    processes = [await open_services(settings, runpod=None) for _ in range(2)]
    leaving = await Services.open(settings, timing=FAST)
    try:
        for services in [*processes, leaving]:
            await services.jobs.leases.share_budgets()
        budgets = [services.runpod.budget for services in [*processes, leaving]]
        assert [b.per_second for b in budgets if b is not None] == [10.0, 10.0, 10.0]
    finally:
        await leaving.close()
    await processes[0].jobs.leases.share_budgets()
    assert processes[0].runpod.budget is not None
    assert processes[0].runpod.budget.per_second == 15.0
