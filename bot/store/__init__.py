"""Every SQL statement of the bot lives in this package: one store per group of tables.

The domain modules keep the rules and call a store to read and write what they decided:

    ledger.py          quota_holds, quota_limits, quota_grants, quota_resets, quota_blocks,
                       quota_budgets          <- bot/quotas.py
    guild_settings.py  guild_settings         <- bot/guild_settings.py
    audit.py           audit_log              <- bot/audit.py
    styles.py          guild_styles           <- bot/styles.py
    preferences.py     member_preferences     <- bot/preferences.py
    gallery.py         gallery_shares         <- bot/gallery.py
    stats.py           quota_holds, quota_budgets, jobs, job_events (reads only, for charts)
                                          <- bot/stats.py
    jobs.py            jobs, job_events, job_inputs, job_outputs  <- bot/jobs/
    leases.py          job_leases (PostgreSQL; SQLite is one process)  <- bot/jobs/leases.py

Each module declares its interface as a Protocol in the core's words (ids, amounts, timestamps,
enums; no SQL, no rows) and its SQLite implementation beside it. Writes take the transaction the
domain opened with `Database.transaction()` or `Database.write()` (`bot/db.py`: one writer at a
time, `BEGIN IMMEDIATE`, transient refusals retried), so a rule, its rows and its audit entry
commit together. `stores_for` is the one place that picks the engine: SQLite, the embedded
default, or PostgreSQL (`bot/postgres.py`, stores in `postgresql/`), whose transactions have the
same methods with `$1` placeholders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.db import Database
from bot.store.audit import AuditStore, SqliteAuditStore
from bot.store.gallery import GalleryStore, SqliteGalleryStore
from bot.store.guild_settings import GuildSettingsRows, SqliteGuildSettingsRows
from bot.store.jobs import JobStore, SqliteJobStore
from bot.store.leases import LeaseStore, SoleProcessLeases
from bot.store.ledger import LedgerStore, SqliteLedgerStore
from bot.store.preferences import PreferenceRows, SqlitePreferenceRows
from bot.store.stats import SqliteStatsStore, StatsStore
from bot.store.styles import SqliteStyleRows, StyleRows

if TYPE_CHECKING:
    from bot.postgres import PostgresDatabase


@dataclass(frozen=True)
class Stores:
    ledger: LedgerStore
    guild_settings: GuildSettingsRows
    audit: AuditStore
    preferences: PreferenceRows
    stats: StatsStore
    gallery: GalleryStore
    jobs: JobStore
    leases: LeaseStore
    styles: StyleRows


def stores_for(db: Database | PostgresDatabase) -> Stores:
    """The stores of the engine behind `db`."""
    if isinstance(db, Database):
        return Stores(
            ledger=SqliteLedgerStore(db),
            guild_settings=SqliteGuildSettingsRows(db),
            audit=SqliteAuditStore(db),
            preferences=SqlitePreferenceRows(db),
            stats=SqliteStatsStore(db),
            gallery=SqliteGalleryStore(db),
            jobs=SqliteJobStore(db),
            leases=SoleProcessLeases(),
            styles=SqliteStyleRows(db),
        )
    # Imported here: only a PostgreSQL database needs asyncpg (the `postgresql` extra).
    from bot.store.postgresql.audit import PostgresAuditStore
    from bot.store.postgresql.gallery import PostgresGalleryStore
    from bot.store.postgresql.guild_settings import PostgresGuildSettingsRows
    from bot.store.postgresql.jobs import PostgresJobStore
    from bot.store.postgresql.leases import PostgresLeaseStore
    from bot.store.postgresql.ledger import PostgresLedgerStore
    from bot.store.postgresql.preferences import PostgresPreferenceRows
    from bot.store.postgresql.stats import PostgresStatsStore
    from bot.store.postgresql.styles import PostgresStyleRows

    return Stores(
        ledger=PostgresLedgerStore(db),
        guild_settings=PostgresGuildSettingsRows(db),
        audit=PostgresAuditStore(db),
        preferences=PostgresPreferenceRows(db),
        stats=PostgresStatsStore(db),
        gallery=PostgresGalleryStore(db),
        jobs=PostgresJobStore(db),
        leases=PostgresLeaseStore(db),
        styles=PostgresStyleRows(db),
    )
