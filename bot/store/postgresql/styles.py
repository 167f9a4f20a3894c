"""`StyleRows` on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bot.postgres import PostgresDatabase, PostgresTransaction


class PostgresStyleRows:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def all(
        self, guild_id: int, *, tx: PostgresTransaction | None = None
    ) -> dict[str, dict[str, Any]]:
        source = tx or self.db
        rows = await source.fetchall(
            "SELECT name, definition FROM guild_styles WHERE guild_id = $1 ORDER BY name",
            (guild_id,),
        )
        return {row["name"]: json.loads(row["definition"]) for row in rows}

    async def add(
        self,
        tx: PostgresTransaction,
        guild_id: int,
        name: str,
        definition: Mapping[str, Any],
        *,
        by: int,
        at: float,
    ) -> bool:
        added = await tx.execute(
            "INSERT INTO guild_styles (guild_id, name, definition, created_by, created_at) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (guild_id, name) DO NOTHING",
            (guild_id, name, json.dumps(dict(definition), ensure_ascii=False), by, at),
        )
        return added == 1

    async def remove(
        self, tx: PostgresTransaction, guild_id: int, name: str
    ) -> dict[str, Any] | None:
        row = await tx.fetchone(
            "DELETE FROM guild_styles WHERE guild_id = $1 AND name = $2 RETURNING definition",
            (guild_id, name),
        )
        return None if row is None else json.loads(row["definition"])
