"""`GuildSettingsRows` on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bot.postgres import PostgresDatabase, PostgresTransaction
from bot.store.guild_settings import SETTING_NAMES, _column


class PostgresGuildSettingsRows:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def read(
        self, guild_id: int, *, tx: PostgresTransaction | None = None
    ) -> dict[str, Any] | None:
        source = tx or self.db
        row = await source.fetchone("SELECT * FROM guild_settings WHERE guild_id = $1", (guild_id,))
        if row is None:
            return None
        values = {name: row[name] for name in SETTING_NAMES}
        if values["allowed_channels"] is not None:
            values["allowed_channels"] = tuple(json.loads(values["allowed_channels"]))
        return values

    async def write(
        self, tx: PostgresTransaction, guild_id: int, values: Mapping[str, Any], *, at: float
    ) -> None:
        unknown = set(values) - set(SETTING_NAMES)
        if unknown:
            raise ValueError(f"not a server setting: {', '.join(sorted(unknown))}")
        names = list(values)
        if not names:
            return
        placeholders = ", ".join(f"${n}" for n in range(2, len(names) + 2))
        # Only the named columns: a concurrent change to another setting is kept.
        await tx.execute(
            f"INSERT INTO guild_settings (guild_id, {', '.join(names)}, updated_at) "
            f"VALUES ($1, {placeholders}, ${len(names) + 2}) "
            "ON CONFLICT (guild_id) DO UPDATE SET "
            + ", ".join(f"{name} = excluded.{name}" for name in names)
            + ", updated_at = excluded.updated_at",
            (guild_id, *(_column(name, values[name]) for name in names), at),
        )
