"""The database: migrations in order, WAL and foreign keys, serialised transactions."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.db import (
    Database,
    Migration,
    Transaction,
    TransientRetry,
    bundled_migrations,
    split_statements,
)


async def test_migrations_apply_from_empty_and_rerun_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    db = await Database.open(path)
    expected = len(bundled_migrations())
    assert await db.schema_version() == expected
    tables = {
        r["name"] for r in await db.fetchall("SELECT name FROM sqlite_master WHERE type='table'")
    }
    assert {"jobs", "job_events", "job_inputs", "job_outputs"} <= tables
    await db.close()

    again = await Database.open(path)
    assert await again.schema_version() == expected
    assert await again.migrate(bundled_migrations()) == expected
    await again.close()


async def test_wal_foreign_keys_and_busy_timeout_are_on(db: Database) -> None:
    assert (await db.fetchone("PRAGMA journal_mode"))[0] == "wal"
    assert (await db.fetchone("PRAGMA foreign_keys"))[0] == 1
    assert (await db.fetchone("PRAGMA busy_timeout"))[0] >= 1000
    with pytest.raises(sqlite3.IntegrityError):
        async with db.transaction() as tx:
            await tx.execute(
                "INSERT INTO job_events (job_id, at, to_state) VALUES (999, 0, 'queued')"
            )


async def test_job_events_are_append_only(db: Database) -> None:
    async with db.transaction() as tx:
        job_id = await tx.insert(
            "INSERT INTO jobs (user_id, state, template, request, workflow, created_at, updated_at) "
            "VALUES (1, 'queued', 't', '{}', '{}', 0, 0)"
        )
        await tx.insert(
            "INSERT INTO job_events (job_id, at, to_state) VALUES (?, 0, 'queued')", (job_id,)
        )
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        async with db.transaction() as tx:
            await tx.execute("UPDATE job_events SET to_state = 'done'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        async with db.transaction() as tx:
            await tx.execute("DELETE FROM job_events")


async def test_concurrent_transactions_never_interleave(db: Database) -> None:
    async with db.transaction() as tx:
        await tx.execute("CREATE TABLE counter (n INTEGER)")
        await tx.execute("INSERT INTO counter VALUES (0)")

    async def increment() -> None:
        async with db.transaction() as tx:
            row = await tx.fetchone("SELECT n FROM counter")
            await asyncio.sleep(0)  # give every other coroutine the chance to interleave
            await tx.execute("UPDATE counter SET n = ?", (row["n"] + 1,))

    await asyncio.gather(*(increment() for _ in range(200)))
    assert (await db.fetchone("SELECT n FROM counter"))["n"] == 200


async def test_a_failed_transaction_leaves_nothing_behind(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await tx.insert(
                "INSERT INTO jobs (user_id, state, template, request, workflow, created_at, updated_at) "
                "VALUES (1, 'queued', 't', '{}', '{}', 0, 0)"
            )
            raise RuntimeError("boom")
    assert (await db.fetchone("SELECT COUNT(*) FROM jobs"))[0] == 0


async def test_a_broken_migration_is_rolled_back_whole(tmp_path: Path) -> None:
    broken = [
        *bundled_migrations(),
        Migration(
            99, "0099_broken.sql", "CREATE TABLE half (x INTEGER);\nINSERT INTO nowhere VALUES (1);"
        ),
    ]
    with pytest.raises(sqlite3.OperationalError):
        await Database.open(tmp_path / "broken.db", migrations=broken)
    db = await Database.open(tmp_path / "broken.db")
    assert await db.schema_version() == len(bundled_migrations())
    assert await db.fetchone("SELECT name FROM sqlite_master WHERE name = 'half'") is None
    await db.close()


def test_statement_splitter_keeps_triggers_whole() -> None:
    script = "CREATE TABLE a (x);\nCREATE TRIGGER t BEFORE DELETE ON a\nBEGIN\n  SELECT 1;\n  SELECT 2;\nEND;\n-- done\n"
    statements = split_statements(script)
    assert len(statements) == 2
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")


# ----- transient refusals: another process's lock, a full disk ---------------------------------


class _OtherConnection:
    """A second real connection to the same file, in a thread, holding the write lock."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    async def lock(self) -> None:
        await asyncio.to_thread(self._conn.execute, "BEGIN IMMEDIATE")

    async def unlock(self) -> None:
        await asyncio.to_thread(self._conn.execute, "ROLLBACK")
        self._conn.close()


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.005)


async def _one_job(tx: Transaction) -> int:
    return await tx.insert(
        "INSERT INTO jobs (user_id, state, template, request, workflow, created_at, updated_at) "
        "VALUES (1, 'queued', 't', '{}', '{}', 0, 0)"
    )


async def test_a_write_waits_out_another_process_holding_the_lock_and_lands_once(
    db: Database,
) -> None:
    db.retry = TransientRetry(attempts=1000, base_delay=0.001, max_delay=0.01)
    await db.set_busy_timeout(10)
    other = _OtherConnection(db.path)
    await other.lock()
    write = asyncio.ensure_future(db.write(_one_job))
    await _until(lambda: db.transient_errors >= 3)
    assert not write.done()
    await other.unlock()
    assert await write == 1
    assert (await db.fetchone("SELECT COUNT(*) FROM jobs"))[0] == 1


async def test_a_full_disk_leaves_nothing_half_written_and_the_database_usable_after(
    db: Database,
) -> None:
    db.retry = TransientRetry(attempts=3, base_delay=0.001, max_delay=0.001)

    async def job_with_a_big_input(tx: Transaction) -> None:
        job_id = await _one_job(tx)
        await tx.execute(
            "INSERT INTO job_inputs (job_id, name, data) VALUES (?, 'a.png', ?)",
            (job_id, b"\x00" * 200_000),
        )

    usual = (await db.fetchone("PRAGMA max_page_count"))[0]
    pages = (await db.fetchone("PRAGMA page_count"))[0]
    await db.fetchone(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(sqlite3.OperationalError, match="full"):
        await db.write(job_with_a_big_input)
    assert db.transient_errors == 3, "tried three times, as the policy says"
    assert (await db.fetchone("SELECT COUNT(*) FROM jobs"))[0] == 0, "no job without its input"
    await db.fetchone(f"PRAGMA max_page_count = {usual}")
    await db.write(job_with_a_big_input)
    assert (await db.fetchone("SELECT COUNT(*) FROM job_inputs"))[0] == 1


async def test_a_mistake_is_not_retried(db: Database) -> None:
    async def broken(tx: Transaction) -> None:
        await tx.execute("INSERT INTO job_events (job_id, at, to_state) VALUES (999, 0, 'queued')")

    with pytest.raises(sqlite3.IntegrityError):
        await db.write(broken)
    assert db.transient_errors == 0


async def test_a_write_cancelled_while_waiting_for_the_lock_leaves_no_transaction_open(
    db: Database,
) -> None:
    # What a supervisor restarting a stuck loop does: cancel a write that waits inside BEGIN.
    await db.set_busy_timeout(10_000)
    other = _OtherConnection(db.path)
    await other.lock()
    waiting = asyncio.ensure_future(db.write(_one_job))
    await asyncio.sleep(0)  # it has sent BEGIN and waits for SQLite's answer
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await other.unlock()
    assert await db.write(_one_job) == 1
    assert (await db.fetchone("SELECT COUNT(*) FROM jobs"))[0] == 1
