"""The seams of the core: SQL only in the store, Discord markup only in the cogs and `bot/app.py`."""

from __future__ import annotations

import inspect
import re
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from bot import audit
from bot.db import Database, bundled_migrations
from bot.guild_settings import EDITABLE, GuildSettings, GuildSettingsStore
from bot.store import audit as audit_store
from bot.store import gallery as gallery_store
from bot.store import guild_settings as settings_store
from bot.store import jobs as jobs_store
from bot.store import leases as leases_store
from bot.store import ledger as ledger_store
from bot.store import stats as stats_store
from bot.store.postgresql import audit as pg_audit_store
from bot.store.postgresql import gallery as pg_gallery_store
from bot.store.postgresql import guild_settings as pg_settings_store
from bot.store.postgresql import jobs as pg_jobs_store
from bot.store.postgresql import leases as pg_leases_store
from bot.store.postgresql import ledger as pg_ledger_store
from bot.store.postgresql import stats as pg_stats_store
from cogs.common import audit_lines

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "bot"
DISCORD_MARKUP = re.compile(r"<@|<#|<t:")
SQL = re.compile(r"\b(SELECT|INSERT INTO|DELETE FROM|UPDATE \w+ SET|PRAGMA|BEGIN)\b")
# The engines themselves: opening the connection, running the migrations, BEGIN IMMEDIATE and the
# retries of a transaction are what every store stands on, so they cannot live in one of them.
SQL_OUTSIDE_THE_STORE = {CORE / "db.py", CORE / "postgres.py"}


def _core_files() -> list[Path]:
    return [p for p in CORE.rglob("*") if p.is_file() and "__pycache__" not in p.parts]


def test_the_core_writes_no_discord_markup() -> None:
    """Mentions, channels and timestamps are the cogs' to write; only the Bot subclass is Discord."""
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in _core_files()
        if path != CORE / "app.py" and path.suffix in {".py", ".sql", ".json"}
        for n, line in enumerate(path.read_text("utf-8").splitlines(), start=1)
        if DISCORD_MARKUP.search(line)
    ]
    assert found == []


def test_sql_is_written_only_in_the_store() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in CORE.rglob("*.py")
        if CORE / "store" not in path.parents and path not in SQL_OUTSIDE_THE_STORE
        for n, line in enumerate(path.read_text("utf-8").splitlines(), start=1)
        if SQL.search(line)
    ]
    assert found == []


@pytest.mark.parametrize(
    ("interface", "store"),
    [
        (ledger_store.LedgerStore, ledger_store.SqliteLedgerStore),
        (settings_store.GuildSettingsRows, settings_store.SqliteGuildSettingsRows),
        (audit_store.AuditStore, audit_store.SqliteAuditStore),
        (stats_store.StatsStore, stats_store.SqliteStatsStore),
        (gallery_store.GalleryStore, gallery_store.SqliteGalleryStore),
        (ledger_store.LedgerStore, pg_ledger_store.PostgresLedgerStore),
        (settings_store.GuildSettingsRows, pg_settings_store.PostgresGuildSettingsRows),
        (audit_store.AuditStore, pg_audit_store.PostgresAuditStore),
        (stats_store.StatsStore, pg_stats_store.PostgresStatsStore),
        (gallery_store.GalleryStore, pg_gallery_store.PostgresGalleryStore),
        (jobs_store.JobStore, jobs_store.SqliteJobStore),
        (jobs_store.JobStore, pg_jobs_store.PostgresJobStore),
        (leases_store.LeaseStore, leases_store.SoleProcessLeases),
        (leases_store.LeaseStore, pg_leases_store.PostgresLeaseStore),
    ],
    ids=[
        "ledger",
        "guild_settings",
        "audit",
        "stats",
        "gallery",
        "pg-ledger",
        "pg-guild_settings",
        "pg-audit",
        "pg-stats",
        "pg-gallery",
        "jobs",
        "pg-jobs",
        "leases",
        "pg-leases",
    ],
)
def test_each_store_takes_exactly_its_interfaces_calls(interface: type, store: type) -> None:
    """Each engine implements the interface; none has grown calls beside it."""

    def calls(cls: type) -> dict[str, list[str]]:
        return {
            name: list(inspect.signature(member).parameters)
            for name, member in vars(cls).items()
            if inspect.iscoroutinefunction(member) and not name.startswith("_")
        }

    assert calls(store) == calls(interface)


def test_the_stored_settings_are_the_settings_a_server_has() -> None:
    assert tuple(f.name for f in fields(GuildSettings) if f.name != "guild_id") == EDITABLE


async def test_a_setting_the_table_does_not_have_is_refused_and_nothing_is_written(
    db: Database,
) -> None:
    store = GuildSettingsStore(db)
    with pytest.raises(ValueError, match="not a server setting: colour"):
        await store.update(1, 9, colour="red")
    assert await db.fetchone("SELECT * FROM guild_settings") is None
    assert await audit.entries(db, 1) == []


async def test_audit_entries_written_before_an_upgrade_still_read_as_they_did(
    tmp_path: Path,
) -> None:
    """Rows from version 4 kept their sentence in `detail`; the trail shows it unchanged."""
    path = tmp_path / "old.db"
    migrations = bundled_migrations()
    old = await Database.open(path, migrations=migrations[:4])
    async with old.transaction() as tx:
        await tx.insert(
            "INSERT INTO audit_log (guild_id, moderator_id, action, target_id, detail, reason, at) "
            "VALUES (1, 9, 'grant', 5, 'gave <@5> 3 credits of bonus', 'contest', 100.0)"
        )
    await old.close()
    db = await Database.open(path)
    try:
        await GuildSettingsStore(db).update(1, 9, max_steps=30)
        newer, older = await audit.entries(db, 1)
        assert audit_lines.said(older) == "gave <@5> 3 credits of bonus"
        assert (older.action, older.target_id, older.reason) == ("grant", 5, "contest")
        assert audit_lines.said(newer) == "set the steps cap to 30"
        assert newer.facts == {"before": None, "after": 30}
    finally:
        await db.close()


def test_an_action_a_newer_version_recorded_is_shown_by_its_name() -> None:
    entry = audit.AuditEntry(1.0, 9, "quota.freeze", 5, None, {"credits": 3})
    assert audit_lines.said(entry) == "quota.freeze"


def test_every_package_of_the_bot_is_installed() -> None:
    """A package missing from pyproject is missing from the wheel and the Docker image."""
    declared = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"][
            "packages"
        ]
    )
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("bot", "cogs")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk <= declared
