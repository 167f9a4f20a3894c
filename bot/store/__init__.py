"""Every SQL statement of the bot lives in this package: one store per group of tables.

The domain modules keep the rules and call a store to read and write what they decided:

    ledger.py          quota_holds, quota_limits, quota_grants, quota_resets, quota_blocks,
                       quota_budgets          <- bot/quotas.py
    guild_settings.py  guild_settings         <- bot/guild_settings.py
    audit.py           audit_log              <- bot/audit.py
    styles.py          guild_styles           <- bot/styles.py
    jobs.py            (to come) jobs, job_events, job_inputs, job_outputs <- bot/jobs.py,
                       whose SQL has not moved here yet

Each module declares its interface as a Protocol in the core's words (ids, amounts, timestamps,
enums; no SQL, no rows) and its SQLite implementation beside it. Writes take the transaction the
domain opened with `Database.transaction()` or `Database.write()` (`bot/db.py`: one writer at a
time, `BEGIN IMMEDIATE`, transient refusals retried), so a rule, its rows and its audit entry
commit together. `stores_for` is the one place that picks the engine: SQLite, the embedded
default, today; a PostgreSQL engine adds its own implementations of the same interfaces there.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.db import Database
from bot.store.audit import AuditStore, SqliteAuditStore
from bot.store.guild_settings import GuildSettingsRows, SqliteGuildSettingsRows
from bot.store.ledger import LedgerStore, SqliteLedgerStore
from bot.store.styles import SqliteStyleRows, StyleRows


@dataclass(frozen=True)
class Stores:
    ledger: LedgerStore
    guild_settings: GuildSettingsRows
    audit: AuditStore
    styles: StyleRows


def stores_for(db: Database) -> Stores:
    """The stores of the engine behind `db`."""
    return Stores(
        ledger=SqliteLedgerStore(db),
        guild_settings=SqliteGuildSettingsRows(db),
        audit=SqliteAuditStore(db),
        styles=SqliteStyleRows(db),
    )
