"""`GuildSettingsRows` on PostgreSQL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.postgres import PostgresDatabase, PostgresTransaction
from bot.store.guild_settings import SETTING_NAMES, settings_from_row, stored_value


class PostgresGuildSettingsRows:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def read(
        self, guild_id: int, *, tx: PostgresTransaction | None = None
    ) -> dict[str, Any] | None:
        source = tx or self.db
        row = await source.fetchone("SELECT * FROM guild_settings WHERE guild_id = $1", (guild_id,))
        return None if row is None else settings_from_row(row)

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
            (guild_id, *(stored_value(name, values[name]) for name in names), at),
        )
