"""The one SQLite connection: WAL, foreign keys, busy timeout, migrations, serialised writes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

Params = tuple[Any, ...] | dict[str, Any]
T = TypeVar("T")

# Refusals that pass on their own: another process holds the write lock (an operator's sqlite3
# shell, a backup), the disk is full for a moment, an I/O error. Primary codes: the low byte.
_TRANSIENT_CODES = frozenset(
    {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL}
)


def is_transient(exc: BaseException) -> bool:
    """Whether the database (SQLite or PostgreSQL) refused for a reason that may pass, so trying
    again later can succeed; the one question every room asks before giving a job up."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in _TRANSIENT_CODES
    # PostgreSQL's refusals exist only once its engine is loaded (asyncpg is an optional extra).
    postgres = sys.modules.get("bot.postgres")
    return postgres is not None and bool(postgres.refusal_passes(exc))


@dataclass(frozen=True)
class TransientRetry:
    """How often, and how patiently, a statement refused for a passing reason is tried again.

    Each attempt also waits up to the busy timeout for a lock, so the defaults ride out a lock held
    for tens of seconds and a full disk for several.
    """

    attempts: int = 10
    base_delay: float = 0.05
    max_delay: float = 2.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * 2**attempt)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def bundled_migrations(engine_folder: str = "") -> list[Migration]:
    """The numbered `.sql` files shipped in `bot/migrations` (or an engine's folder in it), in order."""
    found = []
    folder = resources.files("bot.migrations")
    for entry in (folder / engine_folder if engine_folder else folder).iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 0001, 0002, ... without gaps: {versions}")
    return found


def split_statements(script: str) -> list[str]:
    """Split a SQL script into complete statements (triggers with inner `;` stay whole)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip() and not current.strip().startswith("--"):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {current[:80]!r}")
    return statements


class Transaction:
    """The handle a write transaction's body uses; only valid inside `Database.transaction()`."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the number of rows it changed."""
        cursor = await self._conn.execute(sql, params)
        return cursor.rowcount

    async def insert(self, sql: str, params: Params = ()) -> int:
        """Run one INSERT; return the new row id."""
        cursor = await self._conn.execute(sql, params)
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        await self._conn.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        async with self._conn.execute(sql, params) as cursor:
            return await cursor.fetchone()

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        async with self._conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())


class Database:
    """One aiosqlite connection shared by every coroutine, one transaction at a time.

    Coroutines sharing a connection would otherwise interleave inside each other's
    transactions, so every transaction and every read takes `_lock`; `BEGIN IMMEDIATE`
    also keeps a second process from writing in between. Transient refusals (`is_transient`)
    are retried as `retry` says: reads and `BEGIN` always, whole transactions through `write`.
    """

    def __init__(
        self, conn: aiosqlite.Connection, path: Path, retry: TransientRetry | None = None
    ) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self.path = path
        self.retry = retry or TransientRetry()
        # Refusals that passed or were given up on: an operator's clue to a lock-holding neighbour.
        self.transient_errors = 0
        self._cleanups: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(cls, path: Path | str, migrations: list[Migration] | None = None) -> Database:
        path = Path(path)
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA foreign_keys = ON")
            await conn.execute("PRAGMA synchronous = NORMAL")
            db = cls(conn, path)
            await db.migrate(bundled_migrations() if migrations is None else migrations)
        except BaseException:
            await conn.close()
            raise
        return db

    async def migrate(self, migrations: list[Migration]) -> int:
        """Apply every migration newer than `PRAGMA user_version`; return the version reached."""
        for migration in migrations:
            async with self.transaction() as tx:
                row = await tx.fetchone("PRAGMA user_version")
                if row[0] >= migration.version:
                    continue
                log.info("applying database migration %s", migration.name)
                for statement in split_statements(migration.sql):
                    await tx.execute(statement)
                await tx.execute(f"PRAGMA user_version = {migration.version:d}")
        return await self.schema_version()

    async def schema_version(self) -> int:
        row = await self.fetchone("PRAGMA user_version")
        assert row is not None
        return int(row[0])

    async def set_busy_timeout(self, milliseconds: int) -> None:
        """How long one statement waits for another process's lock before SQLite refuses."""
        await self.fetchone(f"PRAGMA busy_timeout = {milliseconds:d}")

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Transaction]:
        """`BEGIN IMMEDIATE` ... `COMMIT`, or `ROLLBACK` if the body or the commit raises.

        Only `BEGIN` is retried here; a body that must survive a full disk goes through `write`.
        """
        return self._transaction(lambda: self._retrying("BEGIN", self._begin))

    async def write(self, body: Callable[[Transaction], Awaitable[T]]) -> T:
        """Run `body` in one write transaction; a transient refusal rolls it all back and reruns it.

        `body` must only touch the database: it may run several times, and only the last counts.
        """

        async def once() -> T:
            async with self._transaction(self._begin) as tx:
                return await body(tx)

        return await self._retrying("write", once)

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        async def read() -> sqlite3.Row | None:
            async with self._lock, self._conn.execute(sql, params) as cursor:
                return await cursor.fetchone()

        return await self._retrying("read", read)

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        async def read() -> list[sqlite3.Row]:
            async with self._lock, self._conn.execute(sql, params) as cursor:
                return list(await cursor.fetchall())

        return await self._retrying("read", read)

    async def close(self) -> None:
        async with self._lock:
            await self._conn.close()

    @contextlib.asynccontextmanager
    async def _transaction(
        self, begin: Callable[[], Awaitable[None]]
    ) -> AsyncIterator[Transaction]:
        await begin()
        try:
            yield Transaction(self._conn)
            await self._conn.execute("COMMIT")
        except BaseException:
            await self._rollback()
            raise
        finally:
            self._lock.release()

    async def _begin(self) -> None:
        """Take `_lock` and open a write transaction; on a refusal, give the lock back."""
        await self._lock.acquire()
        try:
            await self._conn.execute("BEGIN IMMEDIATE")
        except asyncio.CancelledError:
            # The BEGIN still runs in the connection's thread (perhaps waiting out another
            # process's lock); a transaction it opens with nobody to end it would refuse every
            # later BEGIN. So the lock is given back only once that one is rolled back.
            cleanup = asyncio.ensure_future(self._end_abandoned_begin())
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)
            raise
        except BaseException:
            self._lock.release()
            raise

    async def _end_abandoned_begin(self) -> None:
        try:
            await self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the BEGIN was refused: there was nothing to end
        finally:
            self._lock.release()

    async def _rollback(self) -> None:
        # A full disk or an I/O error may already have rolled the transaction back; a connection
        # left inside one would refuse every later BEGIN, so this must not leave it open.
        if not self._conn.in_transaction:
            return
        try:
            await self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("database ROLLBACK failed")

    async def _retrying(self, what: str, attempt_once: Callable[[], Awaitable[T]]) -> T:
        for attempt in itertools.count():
            try:
                return await attempt_once()
            except sqlite3.Error as exc:
                if not is_transient(exc):
                    raise
                self.transient_errors += 1
                if attempt + 1 >= self.retry.attempts:
                    raise
                delay = self.retry.delay(attempt)
                log.warning(
                    "database %s refused (%s); trying again in %.2fs (attempt %d of %d)",
                    what,
                    exc,
                    delay,
                    attempt + 1,
                    self.retry.attempts,
                )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")
