"""PostgreSQL's passing refusals (a dropped connection, a restart, a timeout, a deadlock) are
transient everywhere the job rooms ask, so a restart or failover never fails a member's job or
loses a credit; a mistake in a statement stays permanent. Every error here comes from a real
server, most of them provoked from a second connection the way an operator or a failover would
(`pg_terminate_backend` with a timeout returns once the connection's server process is gone)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from bot.db import TransientRetry, is_transient
from bot.jobs import JobState
from bot.postgres import CommitUncertain, ConnectionLost, PostgresDatabase
from bot.services import Services
from tests.conftest import (
    HANG_GUARD,
    OpenServices,
    RecordingDelivery,
    make_settings,
    wait_for_state,
)
from tests.fakes.fake_runpod import FakeRunPod, Outcome
from tests.postgres_server import PostgresServer

QUICK_RETRY = TransientRetry(attempts=3, base_delay=0.01, max_delay=0.05)


@pytest_asyncio.fixture
async def database(postgres_dsn: str) -> AsyncIterator[PostgresDatabase]:
    db = await PostgresDatabase.open(postgres_dsn)
    db.retry = TransientRetry(attempts=1)  # the refusal itself, not the engine's retries of it
    await db.write(lambda tx: tx.execute("CREATE TABLE probe (id INTEGER PRIMARY KEY)"))
    yield db
    await db.close()


@pytest_asyncio.fixture
async def operator(postgres_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of its own, as an operator's psql or a failover would act beside the bot."""
    conn = await asyncpg.connect(postgres_dsn)
    yield conn
    await conn.close()


async def _backend_waiting_on_a_lock(operator: asyncpg.Connection) -> int:
    """The pid of the bot's backend that is waiting for a lock the operator holds."""
    async with asyncio.timeout(HANG_GUARD):
        while True:
            pid = await operator.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND pid <> pg_backend_pid() AND datname = current_database() LIMIT 1"
            )
            if pid is not None:
                return int(pid)
            await asyncio.sleep(0.005)


async def _refusal(attempt: Awaitable[object]) -> BaseException:
    with pytest.raises(Exception) as raised:
        await attempt
    return raised.value


async def test_a_statement_s_own_mistakes_stay_permanent(database: PostgresDatabase) -> None:
    syntax = await _refusal(database.write(lambda tx: tx.execute("SELEC 1")))
    assert isinstance(syntax, asyncpg.PostgresSyntaxError) and not is_transient(syntax)
    await database.write(lambda tx: tx.execute("INSERT INTO probe VALUES (1)"))
    duplicate = await _refusal(
        database.write(lambda tx: tx.execute("INSERT INTO probe VALUES (1)"))
    )
    assert isinstance(duplicate, asyncpg.UniqueViolationError) and not is_transient(duplicate)
    missing = await _refusal(database.fetchone("SELECT * FROM no_such_table"))
    assert isinstance(missing, asyncpg.UndefinedTableError) and not is_transient(missing)


async def test_a_connection_terminated_mid_transaction_is_transient_and_nothing_commits(
    database: PostgresDatabase, operator: asyncpg.Connection
) -> None:
    async def body(tx) -> None:
        await tx.execute("INSERT INTO probe VALUES (7)")
        pid = await tx.fetchone("SELECT pg_backend_pid()")
        await operator.execute("SELECT pg_terminate_backend($1, 10000)", pid[0])
        await tx.execute("INSERT INTO probe VALUES (8)")

    lost = await _refusal(database.write(body))
    assert isinstance(lost, ConnectionLost | asyncpg.PostgresConnectionError), repr(lost)
    assert is_transient(lost)
    assert await database.fetchall("SELECT id FROM probe") == [], "rolled back by the server"


async def test_write_runs_a_body_whose_connection_was_terminated_again_and_it_commits_once(
    database: PostgresDatabase, operator: asyncpg.Connection
) -> None:
    database.retry = QUICK_RETRY
    runs = 0

    async def body(tx) -> None:
        nonlocal runs
        runs += 1
        await tx.execute("INSERT INTO probe VALUES ($1)", (runs,))
        if runs == 1:
            pid = await tx.fetchone("SELECT pg_backend_pid()")
            await operator.execute("SELECT pg_terminate_backend($1, 10000)", pid[0])
            await tx.execute("SELECT 1")

    await database.write(body)
    assert runs == 2
    assert [r["id"] for r in await database.fetchall("SELECT id FROM probe")] == [2]


async def test_a_cancelled_statement_and_a_lock_timeout_are_transient(
    database: PostgresDatabase, operator: asyncpg.Connection
) -> None:
    await database.write(lambda tx: tx.execute("INSERT INTO probe VALUES (1)"))
    async with operator.transaction():
        await operator.execute("SELECT * FROM probe FOR UPDATE")

        async def wait_for_row(tx) -> None:
            await tx.execute("SET LOCAL lock_timeout = '10ms'")
            await tx.execute("UPDATE probe SET id = 2")

        timed_out = await _refusal(database.write(wait_for_row))
        assert isinstance(timed_out, asyncpg.LockNotAvailableError) and is_transient(timed_out)

        waiting = asyncio.ensure_future(
            database.write(lambda tx: tx.execute("UPDATE probe SET id = 3"))
        )
        pid = await _backend_waiting_on_a_lock(operator)
        await operator.execute("SELECT pg_cancel_backend($1)", pid)
        cancelled = await _refusal(waiting)
    assert isinstance(cancelled, asyncpg.QueryCanceledError) and is_transient(cancelled)
    assert [r["id"] for r in await database.fetchall("SELECT id FROM probe")] == [1]


async def _lose_a_deadlock(
    database: PostgresDatabase, operator: asyncpg.Connection
) -> tuple[asyncio.Future[None], list[int]]:
    """The bot takes row 1 then row 2 while the operator takes row 2 then row 1; the bot's side
    checks for deadlocks sooner, so it is the one PostgreSQL ends. Returns its write and runs."""
    runs: list[int] = []
    bot_has_row_1 = asyncio.Event()

    async def one_then_two(tx) -> None:
        runs.append(len(runs) + 1)
        await tx.execute("SET LOCAL deadlock_timeout = '10ms'")
        await tx.execute("UPDATE probe SET id = id WHERE id = 1")
        bot_has_row_1.set()
        await tx.execute("UPDATE probe SET id = id WHERE id = 2")

    async with operator.transaction():
        await operator.execute("UPDATE probe SET id = id WHERE id = 2")
        bot_write = asyncio.ensure_future(database.write(one_then_two))
        await asyncio.wait_for(bot_has_row_1.wait(), HANG_GUARD)
        await operator.execute("UPDATE probe SET id = id WHERE id = 1")
    await asyncio.wait([bot_write], timeout=HANG_GUARD)
    return bot_write, runs


async def test_a_deadlock_is_transient_and_write_runs_the_loser_again(
    database: PostgresDatabase, operator: asyncpg.Connection
) -> None:
    await database.write(lambda tx: tx.execute("INSERT INTO probe VALUES (1), (2)"))
    ended, runs = await _lose_a_deadlock(database, operator)
    deadlock = ended.exception()
    assert isinstance(deadlock, asyncpg.DeadlockDetectedError) and is_transient(deadlock)
    assert runs == [1]

    database.retry = QUICK_RETRY
    rerun, runs = await _lose_a_deadlock(database, operator)
    assert rerun.exception() is None and runs == [1, 2]


async def test_a_server_that_cannot_be_reached_or_refuses_more_connections_is_transient(
    postgres_dsn: str, operator: asyncpg.Connection, unused_tcp_port: int
) -> None:
    pool = await asyncpg.create_pool(
        f"postgresql://postgres@127.0.0.1:{unused_tcp_port}/postgres", min_size=0
    )
    unreachable = PostgresDatabase(pool, TransientRetry(attempts=2, base_delay=0.001))
    try:
        refused = await _refusal(unreachable.fetchone("SELECT 1"))
    finally:
        await pool.close()
    assert isinstance(refused, ConnectionLost) and is_transient(refused)
    assert "password" not in str(refused)

    await operator.execute("CREATE ROLE limited LOGIN CONNECTION LIMIT 1")
    limited_dsn = postgres_dsn.replace("postgres@", "limited@", 1)
    held = await asyncpg.connect(limited_dsn)
    try:
        full = await _refusal(asyncpg.connect(limited_dsn))
    finally:
        await held.close()
    assert isinstance(full, asyncpg.TooManyConnectionsError) and is_transient(full)


async def test_a_connection_lost_while_committing_is_transient_and_never_committed_twice(
    database: PostgresDatabase, operator: asyncpg.Connection
) -> None:
    """A deferred trigger holds the COMMIT open while the operator ends the connection: whether
    it committed is unknown to the bot, so `write` must not run the body again."""
    await operator.execute(
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN PERFORM pg_sleep(30); RETURN NULL; END $$;"
        " CREATE CONSTRAINT TRIGGER at_commit AFTER INSERT ON probe"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()"
    )
    database.retry = QUICK_RETRY
    runs = 0

    async def add_a_row(tx) -> None:
        nonlocal runs
        runs += 1
        await tx.execute("INSERT INTO probe VALUES ($1)", (runs,))

    committing = asyncio.ensure_future(database.write(add_a_row))
    async with asyncio.timeout(HANG_GUARD):
        while (
            pid := await operator.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
                " AND datname = current_database()"
            )
        ) is None:
            await asyncio.sleep(0.005)
    await operator.execute("SELECT pg_terminate_backend($1, 10000)", pid)
    uncertain = await _refusal(committing)
    assert isinstance(uncertain, CommitUncertain) and is_transient(uncertain)
    assert runs == 1, "a body whose COMMIT may have landed is never run again"


# ----- a job through a connection lost under it --------------------------------------------


@pytest_asyncio.fixture
async def on_postgresql(
    tmp_path: Path, fake_runpod: FakeRunPod, open_services: OpenServices, postgres_dsn: str
) -> Services:
    return await open_services(make_settings(tmp_path, fake_runpod, DATABASE_URL=postgres_dsn))


@pytest.mark.parametrize(
    "retry",
    [QUICK_RETRY, TransientRetry(attempts=1)],
    ids=["the-write-runs-again", "the-room-tries-again-after-write-gives-up"],
)
async def test_a_job_whose_connection_is_terminated_while_it_completes_is_delivered_once(
    on_postgresql: Services,
    fake_runpod: FakeRunPod,
    operator: asyncpg.Connection,
    retry: TransientRetry,
) -> None:
    """The operator holds the job's row while RunPod finishes it, so the bot's transaction waits;
    then the operator ends that connection (as a restart or failover would) and lets go."""
    services = on_postgresql
    services.db.retry = retry
    told = RecordingDelivery()
    fake_runpod.script(Outcome(status="HANG"))
    await services.jobs.start(told)
    try:
        job = await services.jobs.accept(
            services.prepare("a pony", user_id=1, guild_id=100, channel_id=5)
        )
        await services.jobs.attach_message(job.id, 5, 500)
        backend_id = (await wait_for_state(services, job.id, "submitted")).backend_id
        assert backend_id is not None
        async with operator.transaction():
            await operator.execute("SELECT id FROM jobs WHERE id = $1 FOR UPDATE", job.id)
            fake_runpod.finish(backend_id, Outcome())
            pid = await _backend_waiting_on_a_lock(operator)
            await operator.execute("SELECT pg_terminate_backend($1, 10000)", pid)
        await told.wait(job.id)
        done = await wait_for_state(services, job.id, "done", "failed")
    finally:
        await services.jobs.stop()
    assert done.state is JobState.DONE, done.failure
    assert len(told.delivered[job.id]) == 1 and told.notified == {}
    assert len(fake_runpod.requests_for("run")) == 1
    trail = [to for _, to, _ in await services.jobs.events(job.id)]
    assert trail.count("delivering") == 1 and trail.count("done") == 1
    holds = await services.db.fetchall("SELECT state FROM quota_holds WHERE job_id = $1", (job.id,))
    assert [h["state"] for h in holds] == ["captured"]


async def test_jobs_finishing_while_postgresql_restarts_are_each_delivered_and_charged_once(
    on_postgresql: Services, fake_runpod: FakeRunPod, postgres_server: PostgresServer
) -> None:
    """The operator restarts PostgreSQL as RunPod finishes the jobs: every session ends, the
    server refuses connections for a moment, then starts up; the bot rides it out."""
    services = on_postgresql
    assert postgres_server.restart is not None
    told = RecordingDelivery()
    jobs_count = 4
    fake_runpod.script(*[Outcome(status="HANG")] * jobs_count)
    await services.jobs.start(told)
    try:
        jobs = []
        for member in range(1, jobs_count + 1):
            new = services.prepare("a pony", user_id=member, guild_id=100, channel_id=5)
            job = await services.jobs.accept(new)
            await services.jobs.attach_message(job.id, 5, 500 + job.id)
            jobs.append(job)
        backend_ids = [(await wait_for_state(services, j.id, "submitted")).backend_id for j in jobs]
        restarting = asyncio.ensure_future(asyncio.to_thread(postgres_server.restart))
        for backend_id in backend_ids:
            assert backend_id is not None
            fake_runpod.finish(backend_id, Outcome())
        await restarting
        for job in jobs:
            await told.wait(job.id)
        ended = [await wait_for_state(services, j.id, "done", "failed") for j in jobs]
    finally:
        await services.jobs.stop()
    assert [job.state for job in ended] == [JobState.DONE] * jobs_count, [j.failure for j in ended]
    assert all(len(told.delivered[job.id]) == 1 for job in jobs) and told.notified == {}
    assert len(fake_runpod.requests_for("run")) == jobs_count
    holds = await services.db.fetchall("SELECT state FROM quota_holds ORDER BY job_id")
    assert [h["state"] for h in holds] == ["captured"] * jobs_count


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(HANG_GUARD):
        while not condition():
            await asyncio.sleep(0.005)
