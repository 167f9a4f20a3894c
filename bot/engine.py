"""Which database the bot keeps its state in: the SQLite file, or PostgreSQL when `DATABASE_URL`
names a server. Either opens migrated; a failure is a `ConfigError` that names no password."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import ConfigError, Secret, Settings
from bot.database_url import scrubbed, shown
from bot.db import Database

if TYPE_CHECKING:
    from bot.postgres import PostgresDatabase


async def open_database(
    settings: Settings, database_path: Path | None = None, *, process: str | None = None
) -> Database | PostgresDatabase:
    """PostgreSQL if `DATABASE_URL` is set and no SQLite file is asked for, else that file;
    `process` names this bot process on PostgreSQL's connections."""
    if database_path is None and settings.database_url is not None:
        return await open_postgresql(settings.database_url, process=process)
    return await open_sqlite(Path(database_path or settings.database_path))


async def open_sqlite(path: Path) -> Database:
    folder = path.parent.resolve()
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ConfigError(
            [
                f"DATABASE_PATH={str(path)!r} cannot be opened: its directory must exist and be writable."
            ]
        )
    try:
        return await Database.open(path)
    except sqlite3.Error as exc:
        raise ConfigError(
            [
                f"DATABASE_PATH={str(path)!r} cannot be opened ({exc}): its directory must exist and be writable."
            ]
        ) from None


async def open_postgresql(url: Secret, *, process: str | None = None) -> PostgresDatabase:
    try:
        import asyncpg

        from bot.postgres import PostgresDatabase
    except ImportError:
        raise ConfigError(
            ["DATABASE_URL needs the PostgreSQL driver: pip install '.[postgresql]'"]
        ) from None
    try:
        return await PostgresDatabase.open(url.reveal(), process=process)
    except (
        OSError,
        TimeoutError,
        ValueError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
    ) as exc:
        reason = scrubbed(f"{type(exc).__name__}: {exc}", url)
        raise ConfigError(
            [
                f"DATABASE_URL={shown(url)} cannot be opened ({reason}): check that the server is "
                "up and the user, password and database are right"
            ]
        ) from None
