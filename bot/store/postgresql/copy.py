"""`migrate-db`: copy a SQLite database, every table, into an empty PostgreSQL database.

The copy is one PostgreSQL transaction: row counts and ledger totals are compared before it
commits, so a refused row or a mismatch leaves the target as empty as it was. The SQLite file
is only read (after being brought to the current schema, as the bot does at start).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from graphlib import TopologicalSorter
from pathlib import Path

import asyncpg

from bot.db import Database
from bot.postgres import PostgresDatabase, PostgresTransaction

BATCH_ROWS = 500
_VERSIONS_TABLE = "schema_migrations"


class CopyRefused(Exception):
    """The copy did not start, or was rolled back: the message says why and what to do."""


@dataclass(frozen=True)
class LedgerTotals:
    """What the credits add up to: equal on both sides, or the copy is rolled back."""

    holds_by_state: tuple[tuple[str, int, int], ...]  # (state, holds, credits)
    usd_estimated: float
    usd_actual: float
    granted_credits: int

    def matches(self, other: LedgerTotals) -> bool:
        return (
            self.holds_by_state == other.holds_by_state
            and self.granted_credits == other.granted_credits
            and math.isclose(self.usd_estimated, other.usd_estimated, rel_tol=1e-9)
            and math.isclose(self.usd_actual, other.usd_actual, rel_tol=1e-9)
        )


@dataclass(frozen=True)
class CopyReport:
    rows: dict[str, int]  # table -> rows copied
    ledger: LedgerTotals
    schema_version: int
    server_version: str


async def copy_sqlite_to_postgresql(sqlite_path: Path, dsn: str) -> CopyReport:
    """Copy every table of `sqlite_path` into the empty database at `dsn`, verified, or refuse."""
    if not await asyncio.to_thread(sqlite_path.is_file):
        raise CopyRefused(f"there is no SQLite database at {sqlite_path}")
    await _refuse_unless_empty(dsn)
    source = await Database.open(sqlite_path)
    try:
        target = await PostgresDatabase.open(dsn)
        try:
            return await _copy(source, target)
        finally:
            await target.close()
    finally:
        await source.close()


async def _refuse_unless_empty(dsn: str) -> None:
    """Refuse a database where any table (the migration record aside) holds a row."""
    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise CopyRefused(f"cannot connect to PostgreSQL: {exc}") from exc
    try:
        tables = await conn.fetch(
            "SELECT format('%I.%I', table_schema, table_name) AS name FROM information_schema.tables"
            " WHERE table_type = 'BASE TABLE'"
            " AND table_schema NOT IN ('pg_catalog', 'information_schema') AND table_name != $1",
            _VERSIONS_TABLE,
        )
        for table in tables:
            if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table['name']})"):
                raise CopyRefused(
                    f"the PostgreSQL database already has data (table {table['name']}): "
                    "migrate-db only copies into an empty database; create a new one"
                )
    finally:
        await conn.close()


async def _copy(source: Database, target: PostgresDatabase) -> CopyReport:
    version = await source.schema_version()
    if version != await target.schema_version():
        raise CopyRefused(
            f"the SQLite database is at schema version {version}, and this version's PostgreSQL "
            f"schema at {await target.schema_version()}: copy with the same version of Stablehand"
        )
    tables = await _tables_in_dependency_order(source)
    rows: dict[str, int] = {}
    async with target.transaction() as tx:
        for table in tables:
            rows[table] = await _copy_table(source, tx, table)
        await _restart_identities(tx)
        for table, count in rows.items():
            copied = await tx.fetchone(f"SELECT COUNT(*) FROM {table}")
            assert copied is not None
            if copied[0] != count:
                raise CopyRefused(f"{table}: {count} rows read, {copied[0]} written; nothing kept")
        before, after = await _totals(source), await _totals(tx)
        if not before.matches(after):
            raise CopyRefused(
                f"the ledger totals differ after the copy ({before} != {after}); nothing kept"
            )
    return CopyReport(rows, before, version, await target.server_version())


async def _tables_in_dependency_order(source: Database) -> list[str]:
    """Every table, each after those its foreign keys point to."""
    names = [
        row["name"]
        for row in await source.fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    graph = {
        name: {ref["table"] for ref in await source.fetchall(f"PRAGMA foreign_key_list({name})")}
        for name in names
    }
    return list(TopologicalSorter(graph).static_order())


async def _copy_table(source: Database, tx: PostgresTransaction, table: str) -> int:
    columns = [row["name"] for row in await source.fetchall(f"PRAGMA table_info({table})")]
    listed = ", ".join(columns)
    insert = (
        f"INSERT INTO {table} ({listed}) "
        f"VALUES ({', '.join(f'${n}' for n in range(1, len(columns) + 1))})"
    )
    copied, last_rowid = 0, None
    while True:
        # By rowid, a batch at a time: stored images make whole tables too big to hold at once.
        batch = await source.fetchall(
            f"SELECT rowid AS rowid_, {listed} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (last_rowid if last_rowid is not None else -(2**63), BATCH_ROWS),
        )
        if not batch:
            return copied
        try:
            await tx.executemany(insert, [tuple(row)[1:] for row in batch])
        except (asyncpg.PostgresError, asyncpg.DataError) as exc:
            raise CopyRefused(
                f"PostgreSQL refused a row of {table} near rowid {batch[0]['rowid_']}: {exc}; "
                "nothing kept"
            ) from exc
        copied += len(batch)
        last_rowid = batch[-1]["rowid_"]


async def _restart_identities(tx: PostgresTransaction) -> None:
    """Ids the copy set itself: each identity goes on after the highest one copied."""
    identities = await tx.fetchall(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE is_identity = 'YES' AND table_schema = current_schema()"
    )
    for row in identities:
        table, column = row["table_name"], row["column_name"]
        await tx.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
            f" COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)"
        )


_HOLDS_BY_STATE = (
    "SELECT state, COUNT(*) AS holds, COALESCE(SUM(credits), 0) AS credits FROM quota_holds"
    " GROUP BY state ORDER BY state"
)
_USD = "SELECT COALESCE(SUM(usd_estimate), 0), COALESCE(SUM(usd_actual), 0) FROM quota_holds"
_GRANTED = "SELECT COALESCE(SUM(credits), 0) FROM quota_grants"


async def _totals(source: Database | PostgresTransaction) -> LedgerTotals:
    """The same plain SQL on either engine."""
    states = await source.fetchall(_HOLDS_BY_STATE)
    usd, granted = await source.fetchone(_USD), await source.fetchone(_GRANTED)
    assert usd is not None and granted is not None
    return LedgerTotals(
        tuple((r["state"], int(r["holds"]), int(r["credits"])) for r in states),
        float(usd[0]),
        float(usd[1]),
        int(granted[0]),
    )
