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
_ENDED_FOR_EXACTNESS = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected

# Refusals that pass on their own, so the same work can succeed later. Class 08 (but 08P01, a
# protocol violation, a bug) and 57P01-57P03, 57P05: the connection was lost, the server restarted
# or is failing over; 25006: a failover left the connection on a read-only standby; 25P03: the
# server ended a transaction idle too long; class 53 (but 53400, a configured limit): out of
# connections, memory or disk for a moment; 55P03, 57014: a lock or statement timeout ran out,
# or an operator cancelled the statement; 58030: an I/O error. A syntax error, a constraint
# violation or a missing table stays permanent: running it again fails the same way.
_TRANSIENT_SQLSTATES = _ENDED_FOR_EXACTNESS | frozenset(
    {
        "08000", "08001", "08003", "08004", "08006", "08007",
        "25006", "25P03",
        "53000", "53100", "53200", "53300",
        "55P03",
        "57014", "57P01", "57P02", "57P03", "57P05",
        "58030",
    }
)  # fmt: skip

# asyncpg says a connection went away only in these words when it raises a bare InterfaceError:
# the pool detached it on close ("released back to the pool") or it was used after closing.
_CLOSED_CONNECTION_WORDS = ("connection has been released back to the pool", "connection is closed")

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


class ConnectionLost(ConnectionError):
    """PostgreSQL could not be reached or the connection dropped: the transaction did not commit."""


class CommitUncertain(Exception):
    """The connection failed during COMMIT: the transaction may or may not have committed.

    Transient (a compare-and-set step taken again finds what happened), but `write` never reruns
    its body: a body that adds rows could otherwise commit twice.
    """


def refusal_passes(exc: BaseException) -> bool:
    """Whether PostgreSQL refused for a reason that may pass (see `_TRANSIENT_SQLSTATES`); the
    rooms ask `bot.db.is_transient`, which asks this on PostgreSQL."""
    if isinstance(exc, ConnectionLost | CommitUncertain):
        return True
    return isinstance(exc, asyncpg.PostgresError) and exc.sqlstate in _TRANSIENT_SQLSTATES


def _rerunnable(exc: BaseException) -> bool:
    """Whether `write` may run its body again: transient, and surely not committed."""
    if isinstance(exc, CommitUncertain):
        return False
    # 08007: transaction_resolution_unknown, as uncertain as a lost COMMIT.
    return refusal_passes(exc) and getattr(exc, "sqlstate", None) != "08007"


def _lost(exc: BaseException) -> ConnectionLost | None:
    """`exc` as a `ConnectionLost` if it says the connection is gone, else None."""
    if type(exc) is asyncpg.InterfaceError and any(w in str(exc) for w in _CLOSED_CONNECTION_WORDS):
        return ConnectionLost(f"the connection to PostgreSQL was lost ({exc})")
    if isinstance(exc, asyncpg.InternalClientError):
        return ConnectionLost(f"the connection to PostgreSQL broke ({type(exc).__name__}: {exc})")
    if isinstance(exc, OSError) and not isinstance(exc, ConnectionLost):
        # Refused, reset or timed out while connecting or talking to the server.
        return ConnectionLost(f"PostgreSQL could not be reached ({type(exc).__name__}: {exc})")
    return None


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
        exists = await self.fetchone("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if exists is None or not exists[0]:
            return 0
        row = await self.fetchone("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        assert row is not None
        return int(row[0])

    async def server_version(self) -> str:
        """The server's version, as `SHOW server_version` says it (e.g. "18.1")."""
        row = await self.fetchone("SHOW server_version")
        assert row is not None
        return str(row[0])

    def transaction(self) -> contextlib.AbstractAsyncContextManager[PostgresTransaction]:
        """A transaction on a connection of its own: committed, or rolled back if the body raises."""
        return self._transaction()

    async def write(self, body: Callable[[PostgresTransaction], Awaitable[T]]) -> T:
        """Run `body` in one transaction; one that surely did not commit for a passing reason
        (ended to keep others exact, connection lost, server restarting) is run again, one that
        may have committed (`CommitUncertain`) never.

        `body` must only touch the database: it may run several times, and only the last counts.
        """

        async def once() -> T:
            async with self.transaction() as tx:
                return await body(tx)

        return await self._retrying("write", once, _rerunnable)

    async def fetchone(self, sql: str, params: Params = ()) -> asyncpg.Record | None:
        async def read() -> asyncpg.Record | None:
            async with self._connection() as conn:
                return await conn.fetchrow(sql, *params)

        return await self._retrying("read", read, refusal_passes)

    async def fetchall(self, sql: str, params: Params = ()) -> list[asyncpg.Record]:
        async def read() -> list[asyncpg.Record]:
            async with self._connection() as conn:
                return list(await conn.fetch(sql, *params))

        return await self._retrying("read", read, refusal_passes)

    async def close(self) -> None:
        await self._pool.close()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; losing it (or failing to make it) raises `ConnectionLost`."""
        try:
            async with self._pool.acquire() as conn:
                try:
                    yield conn
                except asyncpg.InternalClientError:
                    _discard(conn)
                    raise
        except Exception as exc:
            if (lost := _lost(exc)) is not None:
                raise lost from exc
            raise

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[PostgresTransaction]:
        async with self._connection() as conn:
            transaction = conn.transaction()
            await transaction.start()
            try:
                yield PostgresTransaction(conn)
            except BaseException:
                # On a lost connection the server has rolled the transaction back already; one
                # failing under the ROLLBACK is closed by the pool, which ends it too.
                if not _closed(conn):
                    with contextlib.suppress(Exception):
                        await transaction.rollback()
                raise
            try:
                await transaction.commit()
            except Exception as exc:
                if isinstance(exc, asyncpg.InternalClientError):
                    _discard(conn)
                elif not _closed(conn):
                    raise  # the server answered the COMMIT: it rolled back
                raise CommitUncertain(
                    f"the connection failed while committing ({_reason(exc)})"
                ) from exc

    async def _retrying(
        self,
        what: str,
        attempt_once: Callable[[], Awaitable[T]],
        retryable: Callable[[BaseException], bool],
    ) -> T:
        for attempt in itertools.count():
            try:
                return await attempt_once()
            except Exception as exc:
                if not retryable(exc) or attempt + 1 >= self.retry.attempts:
                    raise
                delay = self.retry.delay(attempt)
                log.warning(
                    "database %s refused by PostgreSQL (%s); trying again in %.2fs (attempt %d of %d)",
                    what,
                    _reason(exc),
                    delay,
                    attempt + 1,
                    self.retry.attempts,
                )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")


def _closed(conn: asyncpg.Connection) -> bool:
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:
        return True  # the pool has taken back a connection that closed under it


def _discard(conn: asyncpg.Connection) -> None:
    """Close a connection asyncpg's protocol lost its footing on (under a session the server
    ended, MagicStack/asyncpg#1069), so that the pool never hands it out again."""
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


def _reason(exc: BaseException) -> str:
    """A refusal in a log line: its SQLSTATE and message (a DSN never appears in either)."""
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{sqlstate}: {exc}" if sqlstate else f"{type(exc).__name__}: {exc}"


def _rowcount(status: str) -> int:
    """Rows changed, from a command tag such as `UPDATE 3` or `INSERT 0 1` (0 for `CREATE TABLE`)."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0
