"""The job store on a real PostgreSQL, where several processes change the same jobs at once.

Each `PostgresDatabase` here has its own connection pool, as a separate bot process would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest_asyncio

from bot.jobs import JobState
from bot.postgres import PostgresDatabase
from bot.store.postgresql.jobs import PostgresJobStore
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
