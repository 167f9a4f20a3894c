"""The PostgreSQL engine on a real server: migrations, concurrent starts, exact credits across pools.

Each `PostgresDatabase` here has its own connection pool, as a separate bot process would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import asyncpg
import pytest
import pytest_asyncio

from bot.db import Migration, bundled_migrations
from bot.estimates import DurationModel
from bot.postgres import PostgresDatabase, PostgresTransaction, postgresql_migrations
from bot.quotas import BudgetReached, QuotaConfig, QuotaExceeded, QuotaLedger
from tests.test_quotas_support import new_job

GUILD = 100
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC).timestamp()

OpenProcess = Callable[[], Awaitable[PostgresDatabase]]


@pytest_asyncio.fixture
async def open_process(postgres_dsn: str) -> AsyncIterator[OpenProcess]:
    """Opens the test database as one more bot process would (a pool of its own, migrations)."""
    async with AsyncExitStack() as stack:

        async def open_one() -> PostgresDatabase:
            db = await PostgresDatabase.open(postgres_dsn)
            stack.push_async_callback(db.close)
            return db

        yield open_one


def test_every_sqlite_migration_has_a_postgresql_twin() -> None:
    """The lead writes each new migration's twin at merge; a missing one fails here, not at start."""
    sqlite = [m.name for m in bundled_migrations()]
    assert [m.name for m in postgresql_migrations()] == sqlite


async def test_migrations_apply_from_empty_and_a_rerun_is_a_no_op(
    open_process: OpenProcess,
) -> None:
    db = await open_process()
    expected = len(postgresql_migrations())
    assert await db.schema_version() == expected
    assert await db.migrate(postgresql_migrations()) == expected
    rows = await db.fetchall("SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in rows] == list(range(1, expected + 1))


async def test_processes_starting_together_apply_each_migration_once(
    open_process: OpenProcess,
) -> None:
    databases = await asyncio.gather(*(open_process() for _ in range(4)))
    expected = len(postgresql_migrations())
    assert [await db.schema_version() for db in databases] == [expected] * 4
    rows = await databases[0].fetchall("SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in rows] == list(range(1, expected + 1))


async def test_a_failing_migration_changes_nothing_and_the_next_start_applies_it(
    postgres_dsn: str,
) -> None:
    good = postgresql_migrations()
    broken = [*good, Migration(len(good) + 1, "9999_broken.sql", "CREATE TABLE x (a INT); NOPE;")]
    with pytest.raises(asyncpg.PostgresSyntaxError):
        await PostgresDatabase.open(postgres_dsn, migrations=broken)
    fixed = [*good, Migration(len(good) + 1, "9999_fixed.sql", "CREATE TABLE x (a INT);")]
    db = await PostgresDatabase.open(postgres_dsn, migrations=fixed)
    try:
        assert await db.schema_version() == len(good) + 1
        assert await db.fetchall("SELECT * FROM x") == []
    finally:
        await db.close()


async def test_the_appended_only_tables_refuse_a_change(open_process: OpenProcess) -> None:
    db = await open_process()
    async with db.transaction() as tx:
        await tx.insert(
            "INSERT INTO audit_log (guild_id, moderator_id, action, detail, at)"
            " VALUES (1, 9, 'grant', '', 1) RETURNING id"
        )
    with pytest.raises(asyncpg.RaiseError, match="audit_log is append-only"):
        async with db.transaction() as tx:
            await tx.execute("DELETE FROM audit_log")
    assert len(await db.fetchall("SELECT * FROM audit_log")) == 1


async def _job(tx: PostgresTransaction, job_id: int, user: int) -> None:
    """A job row for the hold to belong to (until the job store has a PostgreSQL twin)."""
    await tx.execute(
        "INSERT INTO jobs (id, user_id, guild_id, state, template, request, workflow, created_at,"
        " updated_at) VALUES ($1, $2, $3, 'queued', 'pony-v6-xl', '{}', '{}', $4, $4)",
        (job_id, user, GUILD, NOW),
    )


async def _reserve_all(
    ledgers: list[QuotaLedger], users: list[int], cost: int
) -> list[BaseException | None]:
    """Reserve one job per entry of `users` at once, alternating between the processes' ledgers."""

    async def attempt(job_id: int, user: int) -> BaseException | None:
        ledger = ledgers[job_id % len(ledgers)]
        try:
            async with ledger.db.transaction() as tx:
                await _job(tx, job_id, user)
                await ledger.reserve(tx, job_id, new_job(user, cost, guild=GUILD))
        except (QuotaExceeded, BudgetReached) as refused:
            return refused
        return None

    return await asyncio.gather(*(attempt(n, user) for n, user in enumerate(users, start=1)))


async def test_reservations_from_two_processes_at_once_never_exceed_an_allowance(
    open_process: OpenProcess,
) -> None:
    config = QuotaConfig(daily_credits=7)
    dbs = [await open_process(), await open_process()]
    ledgers = [QuotaLedger(db, config, DurationModel(), clock=lambda: NOW) for db in dbs]
    results = await _reserve_all(ledgers, [1] * 12 + [2] * 12, cost=2)
    assert sum(r is None for r in results) == 2 * (7 // 2)
    assert all(isinstance(r, QuotaExceeded) for r in results if r is not None)
    for user in (1, 2):
        balance = await ledgers[0].balance(GUILD, user)
        assert (balance.held, balance.remaining) == (6, 1)


async def test_reservations_from_two_processes_at_once_never_pass_a_server_budget(
    open_process: OpenProcess,
) -> None:
    dbs = [await open_process(), await open_process()]
    ledgers = [QuotaLedger(db, QuotaConfig(), DurationModel(), clock=lambda: NOW) for db in dbs]
    estimate = ledgers[0].estimate_usd(new_job(1, 1).request)
    await ledgers[0].set_budget(GUILD, 9, daily_usd=estimate * 5.5)
    results = await _reserve_all(ledgers, list(range(1, 21)), cost=1)
    assert sum(r is None for r in results) == 5
    assert all(isinstance(r, BudgetReached) for r in results if r is not None)
    status = await ledgers[1].budget_status(GUILD)
    assert status.guild_spent_usd == pytest.approx(estimate * 5)


async def test_a_write_postgresql_ends_in_a_deadlock_is_run_again_and_commits(
    open_process: OpenProcess,
) -> None:
    """Two writes taking rows in opposite order: PostgreSQL ends one; rerun, both land."""
    db = await open_process()
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO quota_budgets (guild_id, daily_usd) VALUES (1, 1), (2, 1)")
    first_locked, second_locked = asyncio.Event(), asyncio.Event()
    runs = {1: 0, 2: 0}

    def body(mine: int, theirs: int, locked: asyncio.Event, other: asyncio.Event):
        async def run(tx: PostgresTransaction) -> None:
            runs[mine] += 1
            await tx.execute("SET LOCAL deadlock_timeout = '10ms'")
            await tx.execute(
                "UPDATE quota_budgets SET daily_usd = daily_usd + 1 WHERE guild_id = $1", (mine,)
            )
            locked.set()
            await other.wait()
            await tx.execute(
                "UPDATE quota_budgets SET daily_usd = daily_usd + 10 WHERE guild_id = $1",
                (theirs,),
            )

        return run

    await asyncio.gather(
        db.write(body(1, 2, first_locked, second_locked)),
        db.write(body(2, 1, second_locked, first_locked)),
    )
    assert sorted(runs.values()) == [1, 2]
    rows = await db.fetchall("SELECT daily_usd FROM quota_budgets ORDER BY guild_id")
    assert [r["daily_usd"] for r in rows] == [12, 12]
