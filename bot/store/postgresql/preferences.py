"""`PreferenceRows` on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bot.postgres import PostgresDatabase, PostgresTransaction
from bot.store.preferences import known_names, preferences_from_row, stored_value


class PostgresPreferenceRows:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def read(self, user_id: int) -> dict[str, Any] | None:
        row = await self.db.fetchone(
            "SELECT * FROM member_preferences WHERE user_id = $1", (user_id,)
        )
        return None if row is None else preferences_from_row(row)

    async def write(
        self, tx: PostgresTransaction, user_id: int, values: Mapping[str, Any], *, at: float
    ) -> None:
        names = known_names(values)
        if not names:
            return
        placeholders = ", ".join(f"${n}" for n in range(2, len(names) + 2))
        # Only the named columns: a concurrent change to another preference is kept.
        await tx.execute(
            f"INSERT INTO member_preferences (user_id, {', '.join(names)}, updated_at) "
            f"VALUES ($1, {placeholders}, ${len(names) + 2}) "
            "ON CONFLICT (user_id) DO UPDATE SET "
            + ", ".join(f"{name} = excluded.{name}" for name in names)
            + ", updated_at = excluded.updated_at",
            (user_id, *(stored_value(values[name]) for name in names), at),
        )

    async def clear(self, tx: PostgresTransaction, user_id: int, names: Iterable[str]) -> None:
        columns = known_names(names)
        if columns:
            await tx.execute(
                f"UPDATE member_preferences SET {', '.join(f'{n} = NULL' for n in columns)} "
                "WHERE user_id = $1",
                (user_id,),
            )
