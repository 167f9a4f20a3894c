"""One row per member of their own /imagine defaults; a value left None means no preference."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from bot.db import Database
from bot.db import Transaction as SqliteTransaction
from bot.store.base import Transaction

# Every preference a member can store; `ping` and `dm` are booleans.
PREFERENCE_NAMES = ("aspect", "negative", "count", "style", "ping", "dm")
_BOOLEANS = frozenset({"ping", "dm"})


class PreferenceRows(Protocol):
    async def read(self, user_id: int) -> dict[str, Any] | None:
        """A member's stored values by preference name, or None if they never set one."""
        ...

    async def write(
        self, tx: Transaction, user_id: int, values: Mapping[str, Any], *, at: float
    ) -> None:
        """Store the named values (None clears one) and leave every other preference as it is."""
        ...

    async def clear(self, tx: Transaction, user_id: int, names: Iterable[str]) -> None:
        """Forget the named preferences, back to the bot's defaults."""
        ...


class SqlitePreferenceRows:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def read(self, user_id: int) -> dict[str, Any] | None:
        row = await self.db.fetchone(
            "SELECT * FROM member_preferences WHERE user_id = ?", (user_id,)
        )
        return None if row is None else preferences_from_row(row)

    async def write(
        self, tx: SqliteTransaction, user_id: int, values: Mapping[str, Any], *, at: float
    ) -> None:
        names = known_names(values)
        if not names:
            return
        await tx.execute(
            f"INSERT INTO member_preferences (user_id, {', '.join(names)}, updated_at) "
            f"VALUES (?, {', '.join('?' for _ in names)}, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET "
            + ", ".join(f"{name} = excluded.{name}" for name in names)
            + ", updated_at = excluded.updated_at",
            (user_id, *(stored_value(values[name]) for name in names), at),
        )

    async def clear(self, tx: SqliteTransaction, user_id: int, names: Iterable[str]) -> None:
        columns = known_names(names)
        if columns:
            await tx.execute(
                f"UPDATE member_preferences SET {', '.join(f'{n} = NULL' for n in columns)} "
                "WHERE user_id = ?",
                (user_id,),
            )


def known_names(names: Iterable[str]) -> list[str]:
    """`names` as a list; any that is not a preference is refused before anything is written."""
    names = list(names)
    unknown = set(names) - set(PREFERENCE_NAMES)
    if unknown:
        raise ValueError(f"not a preference: {', '.join(sorted(unknown))}")
    return names


def preferences_from_row(row: Any) -> dict[str, Any]:
    """A row of `member_preferences`, of either engine, as values by preference name."""
    return {
        name: bool(row[name]) if name in _BOOLEANS and row[name] is not None else row[name]
        for name in PREFERENCE_NAMES
    }


def stored_value(value: Any) -> Any:
    """A preference as its column holds it (booleans as 0 or 1)."""
    return int(value) if isinstance(value, bool) else value
