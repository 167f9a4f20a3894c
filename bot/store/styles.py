"""Styles a server's moderators added: one row per server and name, the definition as JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from bot.db import Database
from bot.db import Transaction as SqliteTransaction
from bot.store.base import Transaction


class StyleRows(Protocol):
    async def all(
        self, guild_id: int, *, tx: Transaction | None = None
    ) -> dict[str, dict[str, Any]]:
        """A server's styles: each definition by name; given `tx`, as that transaction sees them."""
        ...

    async def add(
        self,
        tx: Transaction,
        guild_id: int,
        name: str,
        definition: Mapping[str, Any],
        *,
        by: int,
        at: float,
    ) -> bool:
        """Store a new style; False (and nothing written) if the server has one of that name."""
        ...

    async def remove(self, tx: Transaction, guild_id: int, name: str) -> dict[str, Any] | None:
        """Delete a style and return its definition, or None if the server has no such style."""
        ...


class SqliteStyleRows:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(
        self, guild_id: int, *, tx: SqliteTransaction | None = None
    ) -> dict[str, dict[str, Any]]:
        source = tx or self.db
        rows = await source.fetchall(
            "SELECT name, definition FROM guild_styles WHERE guild_id = ? ORDER BY name",
            (guild_id,),
        )
        return {row["name"]: json.loads(row["definition"]) for row in rows}

    async def add(
        self,
        tx: SqliteTransaction,
        guild_id: int,
        name: str,
        definition: Mapping[str, Any],
        *,
        by: int,
        at: float,
    ) -> bool:
        added = await tx.execute(
            "INSERT INTO guild_styles (guild_id, name, definition, created_by, created_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (guild_id, name) DO NOTHING",
            (guild_id, name, json.dumps(dict(definition), ensure_ascii=False), by, at),
        )
        return added == 1

    async def remove(
        self, tx: SqliteTransaction, guild_id: int, name: str
    ) -> dict[str, Any] | None:
        row = await tx.fetchone(
            "SELECT definition FROM guild_styles WHERE guild_id = ? AND name = ?", (guild_id, name)
        )
        if row is None:
            return None
        await tx.execute(
            "DELETE FROM guild_styles WHERE guild_id = ? AND name = ?", (guild_id, name)
        )
        return json.loads(row["definition"])
