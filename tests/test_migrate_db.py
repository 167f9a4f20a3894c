"""`migrate-db`: a SQLite database copied into an empty PostgreSQL one reads back the same."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot import audit
from bot.db import Database
from bot.estimates import DurationModel
from bot.guild_settings import GuildSettingsStore
from bot.postgres import PostgresDatabase
from bot.quotas import QuotaConfig, QuotaLedger
from bot.store import stores_for
from bot.store.postgresql.copy import CopyRefused, copy_sqlite_to_postgresql
from tests.conftest import ROOT, run_cli
from tests.test_quotas_support import new_job

GUILD, MEMBER, MODERATOR = 100, 1, 9
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC).timestamp()
IMAGE = bytes(range(256)) * 40


async def _add_job(db: Database, job_id: int, ledger: QuotaLedger, *, cost: int = 2) -> None:
    """A job as the job manager leaves it: its row, its events, its images, its hold."""
    async with db.transaction() as tx:
        await tx.insert(
            "INSERT INTO jobs (id, user_id, guild_id, state, template, request, workflow, cost,"
            " created_at, updated_at, role_ids) VALUES (?, ?, ?, 'done', 'pony-v6-xl', '{}', '{}',"
            " ?, ?, ?, '[501]')",
            (job_id, MEMBER, GUILD, cost, NOW, NOW),
        )
        await tx.executemany(
            "INSERT INTO job_events (job_id, at, from_state, to_state) VALUES (?, ?, ?, ?)",
            [(job_id, NOW, None, "queued"), (job_id, NOW + 1, "queued", "done")],
        )
        await tx.insert("INSERT INTO job_inputs VALUES (?, 'in.png', ?)", (job_id, IMAGE))
        await tx.insert(
            "INSERT INTO job_outputs VALUES (?, 0, 'out.png', 'image/png', ?)", (job_id, IMAGE)
        )
        await ledger.reserve(tx, job_id, new_job(MEMBER, cost, guild=GUILD))


async def _populated_sqlite(path: Path) -> None:
    """Every kind of row the bot writes, through the bot's own code where it has a store."""
    db = await Database.open(path)
    try:
        ledger = QuotaLedger(db, QuotaConfig(), DurationModel(), clock=lambda: NOW)
        await ledger.set_limit(GUILD, MODERATOR, scope="member", target_id=MEMBER, credits=20)
        await ledger.grant(GUILD, MODERATOR, MEMBER, 5, "contest")
        await ledger.set_budget(GUILD, MODERATOR, 3.5)
        await ledger.block(GUILD, MODERATOR, 2, "spam", duration=3600)
        for job_id in (1, 2, 3):
            await _add_job(db, job_id, ledger)
        store = stores_for(db).ledger
        async with db.transaction() as tx:
            await store.capture(tx, 1, at=NOW + 2, gpu_seconds=12.5, usd=0.004)
            await store.refund(tx, 2, at=NOW + 2)
        await GuildSettingsStore(db).update(GUILD, MODERATOR, max_steps=30, default_cfg=6.5)
    finally:
        await db.close()


async def _what_a_moderator_sees(db: Database | PostgresDatabase) -> tuple:
    ledger = QuotaLedger(db, QuotaConfig(), DurationModel(), clock=lambda: NOW)
    return (
        await ledger.balance(GUILD, MEMBER),
        await ledger.balance(GUILD, 2),
        await ledger.budget_status(GUILD),
        await ledger.top(GUILD, since=0),
        await audit.entries(db, GUILD),
        await GuildSettingsStore(db).get(GUILD),
    )


async def test_a_copied_database_shows_the_same_balances_budgets_trail_and_settings(
    tmp_path: Path, postgres_dsn: str
) -> None:
    path = tmp_path / "stablehand.db"
    await _populated_sqlite(path)
    report = await copy_sqlite_to_postgresql(path, postgres_dsn)

    source = await Database.open(path)
    target = await PostgresDatabase.open(postgres_dsn)
    try:
        tables = await source.fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
        for table in [t["name"] for t in tables]:
            [count] = await source.fetchone(f"SELECT COUNT(*) FROM {table}")
            assert report.rows[table] == count, table
        assert report.rows["job_outputs"] == 3 and report.rows["audit_log"] == 6
        assert report.ledger.granted_credits == 5
        assert await _what_a_moderator_sees(target) == await _what_a_moderator_sees(source)
        [stored] = await target.fetchall("SELECT data FROM job_outputs WHERE job_id = 3")
        assert stored["data"] == IMAGE

        # New rows continue after the copied ids instead of colliding with them.
        pg_ledger = QuotaLedger(target, QuotaConfig(), DurationModel(), clock=lambda: NOW)
        await pg_ledger.grant(GUILD, MODERATOR, MEMBER, 1, "after the move")
        assert (await pg_ledger.balance(GUILD, MEMBER)).bonus == 6
        assert len(await audit.entries(target, GUILD, limit=50)) == 7
    finally:
        await source.close()
        await target.close()


async def test_a_database_with_data_is_refused_and_left_as_it_was(
    tmp_path: Path, postgres_dsn: str
) -> None:
    path = tmp_path / "stablehand.db"
    await _populated_sqlite(path)
    target = await PostgresDatabase.open(postgres_dsn)
    try:
        await GuildSettingsStore(target).update(GUILD, MODERATOR, max_steps=12)
        with pytest.raises(CopyRefused, match="already has data"):
            await copy_sqlite_to_postgresql(path, postgres_dsn)
        assert (await GuildSettingsStore(target).get(GUILD)).max_steps == 12
        assert await target.fetchall("SELECT * FROM jobs") == []
    finally:
        await target.close()


async def test_a_row_postgresql_refuses_rolls_the_whole_copy_back_and_a_rerun_can_finish(
    tmp_path: Path, postgres_dsn: str
) -> None:
    """SQLite stores text in an INTEGER column; PostgreSQL does not, so nothing is kept."""
    path = tmp_path / "stablehand.db"
    await _populated_sqlite(path)
    db = await Database.open(path)
    async with db.transaction() as tx:
        await tx.execute("UPDATE jobs SET cost = 'lots' WHERE id = 2")
    with pytest.raises(CopyRefused, match="refused a row of jobs"):
        await copy_sqlite_to_postgresql(path, postgres_dsn)
    target = await PostgresDatabase.open(postgres_dsn)
    try:
        for table in ("jobs", "quota_holds", "audit_log", "guild_settings"):
            assert await target.fetchall(f"SELECT * FROM {table}") == [], table
        async with db.transaction() as tx:
            await tx.execute("UPDATE jobs SET cost = 2 WHERE id = 2")
        await db.close()
        report = await copy_sqlite_to_postgresql(path, postgres_dsn)
        assert report.rows["jobs"] == 3
    finally:
        await target.close()


async def test_the_command_copies_then_refuses_a_second_run_with_the_reason(
    tmp_path: Path, postgres_dsn: str
) -> None:
    await _populated_sqlite(tmp_path / "stablehand.db")
    first = run_cli("migrate-db", "--to", postgres_dsn, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "quota_holds: 3 rows" in first.stdout
    assert "verified" in first.stdout and "PostgreSQL 18." in first.stdout
    again = run_cli("migrate-db", "--to", postgres_dsn, cwd=tmp_path)
    assert again.returncode == 1
    assert "already has data" in again.stderr and "Traceback" not in again.stderr
    missing = run_cli("migrate-db", "--to", postgres_dsn, "--from", "nowhere.db", cwd=tmp_path)
    assert missing.returncode == 1 and "no SQLite database at nowhere.db" in missing.stderr


def test_without_the_postgresql_extra_the_bot_runs_and_migrate_db_says_what_to_install(
    tmp_path: Path,
) -> None:
    """asyncpg is only in the `postgresql` extra: a plain install must not need it."""
    script = (
        "import sys; sys.modules['asyncpg'] = None\n"
        "import bot.app, bot.store\n"
        "from bot.__main__ import main\n"
        "sys.exit(main(['migrate-db', '--to', 'postgresql://localhost/empty']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "migrate-db needs asyncpg: pip install '.[postgresql]'" in result.stderr
