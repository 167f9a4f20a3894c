"""One row per server of the policy its moderators set; a value left None means the bot's default."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

from bot.db import Database
from bot.db import Transaction as SqliteTransaction
from bot.store.base import Transaction

# Every setting a server can store; the tuples are stored as JSON lists.
SETTING_NAMES = (
    "moderator_role_id",
    "nsfw_policy",
    "allowed_channels",
    "default_workflow",
    "default_steps",
    "default_cfg",
    "max_steps",
    "max_count",
    "max_pixels",
    "blocked_words",
    "disabled_workflows",
    "ping_after",
    "gallery_channel_id",
)
# Settings whose value is a tuple (of channel ids, words, workflow names).
_LISTS = ("allowed_channels", "blocked_words", "disabled_workflows")


class GuildSettingsRows(Protocol):
    async def read(self, guild_id: int, *, tx: Transaction | None = None) -> dict[str, Any] | None:
        """A server's stored values by setting name, or None if it never changed one.

        Given `tx`, the read sees (and, on SQLite, holds) that transaction's snapshot.
        """
        ...

    async def write(
        self, tx: Transaction, guild_id: int, values: Mapping[str, Any], *, at: float
    ) -> None:
        """Store the named values and leave every other setting as it is."""
        ...


class SqliteGuildSettingsRows:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def read(
        self, guild_id: int, *, tx: SqliteTransaction | None = None
    ) -> dict[str, Any] | None:
        source = tx or self.db
        row = await source.fetchone("SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,))
        return None if row is None else settings_from_row(row)

    async def write(
        self, tx: SqliteTransaction, guild_id: int, values: Mapping[str, Any], *, at: float
    ) -> None:
        unknown = set(values) - set(SETTING_NAMES)
        if unknown:
            raise ValueError(f"not a server setting: {', '.join(sorted(unknown))}")
        names = list(values)
        if not names:
            return
        # Only the named columns: a concurrent change to another setting is kept.
        await tx.execute(
            f"INSERT INTO guild_settings (guild_id, {', '.join(names)}, updated_at) "
            f"VALUES (?, {', '.join('?' for _ in names)}, ?) "
            "ON CONFLICT (guild_id) DO UPDATE SET "
            + ", ".join(f"{name} = excluded.{name}" for name in names)
            + ", updated_at = excluded.updated_at",
            (guild_id, *(stored_value(name, values[name]) for name in names), at),
        )


def settings_from_row(row: Any) -> dict[str, Any]:
    """A row of `guild_settings`, of either engine, as values by setting name."""
    values = {name: row[name] for name in SETTING_NAMES}
    for name in _LISTS:
        if values[name] is not None:
            values[name] = tuple(json.loads(values[name]))
    return values


def stored_value(name: str, value: Any) -> Any:
    """A setting's value as its column holds it (the tuples as JSON lists)."""
    if name in _LISTS and value is not None:
        return json.dumps(list(value), ensure_ascii=False)
    return value
