"""Two job manager processes on one PostgreSQL; one is SIGKILLed with its jobs at RunPod, and the
other, running beside it all along, takes them over once their leases run out and finishes each
exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import asyncpg

from tests.fakes.fake_runpod import FakeRunPod, Outcome
from tests.test_crash import _kill, _spawn

JOBS = 10
# Real seconds (these are separate processes): long enough that a busy machine renews in time.
LEASE = ["--timing=lease_ttl=3", "--timing=reconcile_interval=0.2"]


async def _states(dsn: str, table: str = "jobs") -> Counter[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return Counter(row["state"] for row in await conn.fetch(f"SELECT state FROM {table}"))
    finally:
        await conn.close()


async def _lease_owners(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return {row["owner"] for row in await conn.fetch("SELECT owner FROM job_leases")}
    finally:
        await conn.close()


async def test_a_killed_process_s_jobs_are_finished_once_by_the_one_still_running(
    tmp_path: Path, fake_runpod: FakeRunPod, postgres_dsn: str
) -> None:
    outcomes = tmp_path / "outcomes.log"
    fake_runpod.default_outcome = Outcome(status="STUCK")
    on_postgresql = f"--setting=DATABASE_URL={postgres_dsn}"
    first = await _spawn(
        fake_runpod, tmp_path / "first.db", outcomes, "--submit", str(JOBS), on_postgresql, *LEASE
    )
    async with asyncio.timeout(30):  # killed only once every job is at RunPod
        while (at := await _states(postgres_dsn))["submitted"] + at["running"] < JOBS:
            await asyncio.sleep(0.02)
    [first_owner] = await _lease_owners(postgres_dsn)

    # Started beside the first, it finds every job leased to a living process and takes none.
    second = await _spawn(
        fake_runpod, tmp_path / "second.db", outcomes, "--exit-when-done", on_postgresql, *LEASE
    )
    assert await _lease_owners(postgres_dsn) == {first_owner}

    await _kill(first)
    for runpod_id in fake_runpod.jobs:
        fake_runpod.finish(runpod_id)
    assert await asyncio.wait_for(second.wait(), 60) == 0
    assert await _states(postgres_dsn) == Counter({"done": JOBS})
    delivered = Counter(
        line.split()[1] for line in outcomes.read_text().splitlines() if line.startswith("deliver")
    )
    assert len(delivered) == JOBS and set(delivered.values()) == {1}, delivered
    assert len(fake_runpod.requests_for("run")) == JOBS, "nothing sent twice"
    assert await _states(postgres_dsn, "quota_holds") == Counter({"captured": JOBS})
