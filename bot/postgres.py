"""The PostgreSQL engine: a connection pool, write transactions, migrations under an advisory lock.

The twin of `bot/db.py` for several processes on one database. Where SQLite's `BEGIN IMMEDIATE`
makes every transaction the only writer, PostgreSQL runs them side by side: a store that needs a
decision to stay exact under concurrency takes a transaction-scoped advisory lock (`AdvisoryLock`).
Needs the `postgresql` extra (asyncpg).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from enum import IntEnum
from typing import Any, TypeVar

import asyncpg

from bot.db import Migration, TransientRetry, bundled_migrations

log = logging.getLogger(__name__)

MIGRATIONS_FOLDER = "postgresql"
Params = Sequence[Any]
T = TypeVar("T")

# A transaction PostgreSQL ended to keep concurrent ones exact; running it again can succeed.
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected

_CREATE_VERSIONS = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
)


class AdvisoryLock(IntEnum):
    """Advisory lock keys of the bot (64-bit; chosen not to collide with another application's).

    Taken with `PostgresTransaction.lock`. Transactions run at READ COMMITTED, PostgreSQL's
    default, on which this relies: each statement after the lock sees what the previous holder
    committed (a REPEATABLE READ snapshot taken before the lock would not).
    """

    MIGRATIONS = 0x5354_4142_4C45_0001  # one process applies migrations at a time
    LEDGER = 0x5354_4142_4C45_0002  # one credit decision at a time, as BEGIN IMMEDIATE gives SQLite
    ADMISSION = 0x5354_4142_4C45_0003  # one job accepted at a time: a member's count stays exact
    CLAIM = (
        0x5354_4142_4C45_0004  # one job sent at a time: the in-flight caps hold across processes
    )


def is_retryable(exc: BaseException) -> bool:
    """Whether PostgreSQL ended the transaction to keep concurrent ones exact (rerunning may pass)."""
    return isinstance(exc, asyncpg.PostgresError) and exc.sqlstate in _RETRYABLE_SQLSTATES


def postgresql_migrations() -> list[Migration]:
    """The PostgreSQL twins of the bundled migrations (`bot/migrations/postgresql`), in order."""
    return bundled_migrations(MIGRATIONS_FOLDER)


class PostgresTransaction:
    """The handle a write transaction's body uses; only valid inside `PostgresDatabase.transaction()`.

    The same methods as `bot.db.Transaction`; statements use PostgreSQL's `$1` placeholders, and
    `insert` needs a statement ending in `RETURNING id`.
    """

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self._locks: set[AdvisoryLock] = set()

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement (or, without params, a script); return the number of rows it changed."""
        status = await self._conn.execute(sql, *params)
        return _rowcount(status)

    async def insert(self, sql: str, params: Params = ()) -> int:
        """Run one `INSERT ... RETURNING id`; return the new row id."""
        row_id = await self._conn.fetchval(sql, *params)
        assert row_id is not None
        return int(row_id)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        await self._conn.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Params = ()) -> asyncpg.Record | None:
        return await self._conn.fetchrow(sql, *params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[asyncpg.Record]:
        return list(await self._conn.fetch(sql, *params))

    async def lock(self, key: AdvisoryLock) -> None:
        """Wait for, then hold until this transaction ends, the advisory lock `key`."""
        if key not in self._locks:
            await self._conn.execute("SELECT pg_advisory_xact_lock($1)", int(key))
            self._locks.add(key)


# The `application_name` of a bot process's connections: this, then the process's name.
PROCESS_PREFIX = "stablehand process "


class PostgresDatabase:
    """A pool of asyncpg connections; each transaction has one to itself."""

    def __init__(self, pool: asyncpg.Pool, retry: TransientRetry | None = None) -> None:
        self._pool = pool
        self.retry = retry or TransientRetry()

    @classmethod
    async def open(
        cls,
        dsn: str,
        migrations: list[Migration] | None = None,
        *,
        min_connections: int = 1,
        max_connections: int = 10,
        process: str | None = None,
    ) -> PostgresDatabase:
        # Each connection carries its bot process's name, so the live processes can be counted.
        name = f"{PROCESS_PREFIX}{process}"[:63] if process else "stablehand"
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_connections,
            max_size=max_connections,
            server_settings={"application_name": name},
        )
        try:
            db = cls(pool)
            await db.migrate(postgresql_migrations() if migrations is None else migrations)
        except BaseException:
            await pool.close()
            raise
        return db

    async def migrate(self, migrations: list[Migration]) -> int:
        """Apply every migration not yet recorded, one process at a time; return the version reached."""
        for migration in migrations:
            async with self.transaction() as tx:
                # Processes starting together queue here: the next one sees what the first applied.
                await tx.lock(AdvisoryLock.MIGRATIONS)
                await tx.execute(_CREATE_VERSIONS)
                row = await tx.fetchone("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                assert row is not None
                if row[0] >= migration.version:
                    continue
                log.info("applying database migration %s", migration.name)
                await tx.execute(migration.sql)
                await tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    (migration.version, migration.name, time.time()),
                )
        return await self.schema_version()

    async def schema_version(self) -> int:
        exists = await self._pool.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not exists:
            return 0
        return int(
            await self._pool.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        )

    async def server_version(self) -> str:
        """The server's version, as `SHOW server_version` says it (e.g. "18.1")."""
        return str(await self._pool.fetchval("SHOW server_version"))

    def transaction(self) -> contextlib.AbstractAsyncContextManager[PostgresTransaction]:
        """A transaction on a connection of its own: committed, or rolled back if the body raises."""
        return self._transaction()

    async def write(self, body: Callable[[PostgresTransaction], Awaitable[T]]) -> T:
        """Run `body` in one transaction; one PostgreSQL ended to keep others exact is run again.

        `body` must only touch the database: it may run several times, and only the last counts.
        """
        for attempt in itertools.count():
            try:
                async with self.transaction() as tx:
                    return await body(tx)
            except asyncpg.PostgresError as exc:
                if not is_retryable(exc) or attempt + 1 >= self.retry.attempts:
                    raise
                delay = self.retry.delay(attempt)
                log.warning(
                    "database write ended by PostgreSQL (%s); trying again in %.2fs (attempt %d of %d)",
                    exc.sqlstate,
                    delay,
                    attempt + 1,
                    self.retry.attempts,
                )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def fetchone(self, sql: str, params: Params = ()) -> asyncpg.Record | None:
        return await self._pool.fetchrow(sql, *params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[asyncpg.Record]:
        return list(await self._pool.fetch(sql, *params))

    async def close(self) -> None:
        await self._pool.close()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[PostgresTransaction]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield PostgresTransaction(conn)


def _rowcount(status: str) -> int:
    """Rows changed, from a command tag such as `UPDATE 3` or `INSERT 0 1` (0 for `CREATE TABLE`)."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0
