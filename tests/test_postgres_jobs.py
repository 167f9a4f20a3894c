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


async def _stored_job(db: PostgresDatabase, endpoint: str = "default", *, user_id: int = 1) -> Job:
    store = PostgresJobStore(db)
    async with db.transaction() as tx:
        job = await store.add(tx, _new_job(user_id, 100, endpoint=endpoint), at=1.0)
        changed = await store.change_state(
            tx, job.id, {JobState.ACCEPTED}, JobState.QUEUED, fields={}, at=2.0, detail=None
        )
    assert changed is not None
    return changed[1]


async def _claim(
    db: PostgresDatabase,
    owner: str,
    *,
    caps: dict[str, int] | None = None,
    per_member: int = 9,
    skip: tuple[int, ...] = (),
) -> int | None:
    """Claim the next job as the scheduler does: chosen, leased and moved in one transaction."""
    async with db.transaction() as tx:
        job_id = await PostgresLeaseStore(db).claim_next(
            tx,
            owner,
            caps=caps or {"default": 9},
            per_member=per_member,
            skip=skip,
            now=3,
            until=63,
        )
        if job_id is not None:
            await PostgresJobStore(db).change_state(
                tx, job_id, {JobState.QUEUED}, JobState.SUBMITTING, fields={}, at=3, detail=None
            )
        return job_id


async def test_processes_claiming_at_once_send_no_more_than_the_cap_and_each_job_once(
    processes: list[PostgresDatabase],
) -> None:
    """Every racer has counted nothing in flight before any of them claims: the claim decides."""
    for member in range(RACERS):
        await _stored_job(processes[0], user_id=member)
    all_inside = asyncio.Barrier(RACERS)

    async def race(db: PostgresDatabase, n: int) -> int | None:
        await db.fetchone("SELECT COUNT(*) FROM jobs WHERE state = 'submitting'")
        await all_inside.wait()
        return await _claim(db, f"p{n}", caps={"default": 2})

    claimed = await asyncio.gather(*(race(db, n) for n, db in enumerate(processes)))
    sent = [job_id for job_id in claimed if job_id is not None]
    assert len(sent) == 2 and len(set(sent)) == 2


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
    await _stored_job(first, "flux", user_id=2)
    pony = await _stored_job(first, user_id=2)
    caps = {"flux": 1, "default": 1}
    assert await _claim(second, "b", caps=caps) == pony.id, "Flux's one slot is taken"
    assert await _claim(second, "b", caps=caps) is None


async def test_the_claim_follows_member_rotation_across_the_processes_that_accepted_the_jobs(
    processes: list[PostgresDatabase],
) -> None:
    """Alice's batch of four, accepted first by one process, and Bob's and Carol's jobs accepted
    by others: each member gets a turn before anyone gets a second, whoever claims."""
    first, second, third = processes[:3]
    alice = [(await _stored_job(first, user_id=1)).id for _ in range(4)]
    bob = [(await _stored_job(second, user_id=2)).id for _ in range(2)]
    carol = (await _stored_job(third, user_id=3)).id
    order = [await _claim(db, f"p{n % 3}") for n, db in enumerate(processes[:3] * 3)]
    assert order[:3] == [alice[0], bob[0], carol]
    assert order[3:5] == [alice[1], bob[1]]
    assert order[5:] == [alice[2], alice[3], None, None]
    owners = await first.fetchall("SELECT job_id, owner FROM job_leases ORDER BY job_id")
    assert {r["job_id"]: r["owner"] for r in owners}[carol] == "p2", "leased to its sender"


async def test_a_member_at_their_cap_lets_the_next_member_go_and_skipped_jobs_wait(
    processes: list[PostgresDatabase],
) -> None:
    db = processes[0]
    alice = [(await _stored_job(db, user_id=1)).id for _ in range(2)]
    bob = [(await _stored_job(db, user_id=2)).id for _ in range(2)]
    assert await _claim(db, "a", per_member=1) == alice[0]
    assert await _claim(db, "a", per_member=1, skip=(bob[0],)) == bob[1]
    assert await _claim(db, "a", per_member=1) is None, "both members are at their cap"


async def test_the_queue_order_is_the_order_the_claims_then_follow(
    processes: list[PostgresDatabase],
) -> None:
    """Positions come from `queue_order`; read before any claim, it must be the claims' order."""
    first, second = processes[:2]
    await _stored_job(first, user_id=9)
    assert await _claim(first, "a") is not None  # member 9 has had a turn
    alice = [(await _stored_job(first, user_id=1)).id for _ in range(3)]
    bob = [(await _stored_job(second, user_id=2)).id for _ in range(2)]
    late = (await _stored_job(second, user_id=9)).id
    carol = (await _stored_job(first, user_id=3)).id
    order = await PostgresLeaseStore(second).queue_order()
    assert order == [alice[0], bob[0], carol, late, alice[1], bob[1], alice[2]]
    assert [await _claim(db, "p") for db in [first, second] * 4] == [*order, None]


async def test_a_job_stored_to_wait_is_not_claimed_before_its_time(
    processes: list[PostgresDatabase],
) -> None:
    """A job RunPod refused for a passing reason waits out its backoff whichever process asks."""
    db = processes[0]
    waiting, ready = (await _stored_job(db, user_id=1)).id, (await _stored_job(db, user_id=2)).id
    async with db.transaction() as tx:
        await PostgresJobStore(db).change_state(
            tx, waiting, {JobState.QUEUED}, JobState.QUEUED, fields={"not_before": 10.0},
            at=2.5, detail=None,
        )  # fmt: skip
    assert await _claim(processes[1], "b") == ready, "claimed at 3, before 10"
    assert await _claim(processes[1], "b") is None
    async with db.transaction() as tx:
        job_id = await PostgresLeaseStore(db).claim_next(
            tx, "b", caps={"default": 9}, per_member=9, skip=(), now=10.0, until=70.0
        )
    assert job_id == waiting
