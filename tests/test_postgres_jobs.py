"""The job store on a real PostgreSQL, where several processes change the same jobs at once.

Each `PostgresDatabase` here has its own connection pool, as a separate bot process would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest_asyncio

from bot.jobs import Job, JobState
from bot.jobs.model import TERMINAL
from bot.postgres import PostgresDatabase
from bot.store.postgresql.jobs import PostgresJobStore
from bot.store.postgresql.leases import PostgresLeaseStore
from tests.test_store_contract import _new_job

RACERS = 6


@pytest_asyncio.fixture
async def processes(postgres_dsn: str) -> AsyncIterator[list[PostgresDatabase]]:
    """Six bot processes' databases: a pool each on one PostgreSQL database."""
    async with AsyncExitStack() as stack:
        opened = []
        for _ in range(RACERS):
            db = await PostgresDatabase.open(postgres_dsn)
            stack.push_async_callback(db.close)
            opened.append(db)
        yield opened


async def test_processes_racing_to_submit_one_job_move_it_once_with_one_event(
    processes: list[PostgresDatabase],
) -> None:
    """Every racer has read the job as queued in its open transaction before any of them writes."""
    first = processes[0]
    store = PostgresJobStore(first)
    async with first.transaction() as tx:
        job = await store.add(tx, _new_job(1, 100), at=1.0)
        await store.change_state(
            tx, job.id, {JobState.ACCEPTED}, JobState.QUEUED, fields={}, at=2.0, detail=None
        )
    all_inside = asyncio.Barrier(RACERS)

    async def race(db: PostgresDatabase, n: int) -> bool:
        async with db.transaction() as tx:
            await tx.fetchone("SELECT state FROM jobs WHERE id = $1", (job.id,))
            await all_inside.wait()
            changed = await PostgresJobStore(db).change_state(
                tx,
                job.id,
                {JobState.QUEUED},
                JobState.SUBMITTING,
                fields={"backend_id": f"run-{n}"},
                at=3.0,
                detail=None,
            )
            return changed is not None

    won = await asyncio.gather(*(race(db, n) for n, db in enumerate(processes)))
    assert won.count(True) == 1
    stored = await store.get(job.id)
    assert stored is not None and stored.backend_id == f"run-{won.index(True)}"
    events = [e for e in await store.events(job.id) if e[1] == JobState.SUBMITTING]
    assert events == [(JobState.QUEUED, JobState.SUBMITTING, None)]


async def test_a_lease_stays_with_its_process_until_it_runs_out_then_one_other_takes_it(
    processes: list[PostgresDatabase],
) -> None:
    first, second = (PostgresLeaseStore(db) for db in processes[:2])
    job = await _stored_job(processes[0])

    async def take(store: PostgresLeaseStore, owner: str, now: float) -> bool:
        async with store.db.transaction() as tx:
            return await store.take(tx, owner, job.id, now=now, until=now + 60)

    assert await take(first, "a", now=0)
    assert not await take(second, "b", now=59), "still a's"
    assert await first.renew("a", until=120, finished=()) == [job.id]
    assert not await take(second, "b", now=119), "renewed"
    assert await take(second, "b", now=120), "ran out: taken over"
    assert await first.renew("a", until=200, finished=()) == [], "a learns it has lost it"
    assert (await first.held("a"), await second.held("b")) == (0, 1)


async def test_of_processes_racing_to_take_over_one_lease_exactly_one_gets_it(
    processes: list[PostgresDatabase],
) -> None:
    job = await _stored_job(processes[0])
    async with processes[0].transaction() as tx:
        await PostgresLeaseStore(processes[0]).take(tx, "dead", job.id, now=0, until=10)
    all_inside = asyncio.Barrier(RACERS)

    async def race(db: PostgresDatabase, n: int) -> bool:
        async with db.transaction() as tx:
            await tx.fetchone("SELECT owner FROM job_leases WHERE job_id = $1", (job.id,))
            await all_inside.wait()
            return await PostgresLeaseStore(db).take(tx, f"p{n}", job.id, now=11, until=71)

    won = await asyncio.gather(*(race(db, n) for n, db in enumerate(processes)))
    assert won.count(True) == 1


async def test_the_lease_of_a_job_ended_and_told_is_let_go_on_renewal(
    processes: list[PostgresDatabase],
) -> None:
    db = processes[0]
    leases, jobs = PostgresLeaseStore(db), PostgresJobStore(db)
    ended, told, running = [await _stored_job(db) for _ in range(3)]
    async with db.transaction() as tx:
        for job in (ended, told, running):
            await leases.take(tx, "a", job.id, now=0, until=60)
        for job in (ended, told):
            await jobs.change_state(
                tx, job.id, {JobState.QUEUED}, JobState.FAILED, fields={}, at=1, detail=None
            )
        await jobs.mark_notified(tx, told.id, at=2)
    finished = [state.value for state in TERMINAL]
    assert await leases.renew("a", until=90, finished=finished) == [ended.id, running.id]
    assert await leases.held("a") == 2


async def _stored_job(db: PostgresDatabase, endpoint: str = "default") -> Job:
    store = PostgresJobStore(db)
    async with db.transaction() as tx:
        job = await store.add(tx, _new_job(1, 100, endpoint=endpoint), at=1.0)
        changed = await store.change_state(
            tx, job.id, {JobState.ACCEPTED}, JobState.QUEUED, fields={}, at=2.0, detail=None
        )
    assert changed is not None
    return changed[1]


async def test_processes_claiming_at_once_send_no_more_than_the_cap(
    processes: list[PostgresDatabase],
) -> None:
    """Every racer has counted nothing in flight before any of them claims: the claim decides."""
    queued = [await _stored_job(processes[0]) for _ in processes]
    all_inside = asyncio.Barrier(RACERS)

    async def race(db: PostgresDatabase, job: Job) -> bool:
        async with db.transaction() as tx:
            await tx.fetchone("SELECT COUNT(*) FROM jobs WHERE state = 'submitting'")
            await all_inside.wait()
            if not await PostgresLeaseStore(db).claim(
                tx, job.id, job.user_id, endpoint=job.endpoint, total=2, per_member=RACERS
            ):
                return False
            await PostgresJobStore(db).change_state(
                tx, job.id, {JobState.QUEUED}, JobState.SUBMITTING, fields={}, at=3, detail=None
            )
            return True

    claimed = await asyncio.gather(
        *(race(db, job) for db, job in zip(processes, queued, strict=True))
    )
    assert claimed.count(True) == 2


async def test_a_full_endpoint_does_not_hold_back_another_endpoints_claim(
    processes: list[PostgresDatabase],
) -> None:
    """Each endpoint has its own cap across processes: Flux's jobs in flight leave Pony's free."""
    first, second = processes[:2]
    flux = await _stored_job(first, "flux")
    async with first.transaction() as tx:
        await PostgresJobStore(first).change_state(
            tx, flux.id, {JobState.QUEUED}, JobState.SUBMITTED, fields={}, at=3, detail=None
        )
    waiting_flux = await _stored_job(first, "flux")
    pony = await _stored_job(first)
    leases = PostgresLeaseStore(second)
    async with second.transaction() as tx:
        assert not await leases.claim(
            tx, waiting_flux.id, 2, endpoint="flux", total=1, per_member=9
        ), "Flux's one slot is taken"
        assert await leases.claim(tx, pony.id, 2, endpoint="default", total=1, per_member=9)
