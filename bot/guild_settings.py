"""Per-server policy set by moderators: channels, NSFW mode, defaults, caps, moderator role."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from bot import audit
from bot.db import Database
from bot.prompt import ContentPolicy

LABELS = {
    "moderator_role_id": "the moderator role",
    "nsfw_policy": "the NSFW policy",
    "allowed_channels": "the channels /imagine works in",
    "default_workflow": "the default workflow",
    "default_steps": "the default steps",
    "default_cfg": "the default CFG",
    "max_steps": "the steps cap",
    "max_count": "the images-per-job cap",
    "max_pixels": "the pixels-per-image cap",
}


EDITABLE = tuple(LABELS)


@dataclass(frozen=True)
class GuildSettings:
    """One server's choices; None means the bot's default applies."""

    guild_id: int
    moderator_role_id: int | None = None
    nsfw_policy: str | None = None
    allowed_channels: tuple[int, ...] | None = None
    default_workflow: str | None = None
    default_steps: int | None = None
    default_cfg: float | None = None
    max_steps: int | None = None
    max_count: int | None = None
    max_pixels: int | None = None

    def policy(self, base: ContentPolicy) -> ContentPolicy:
        """The operator's policy with this server's choices; caps can only be narrowed."""

        def narrowed(mine: int | None, operator: int) -> int:
            return operator if mine is None else min(mine, operator)

        return replace(
            base,
            nsfw_policy=self.nsfw_policy or base.nsfw_policy,
            default_template=self.default_workflow or base.default_template,
            default_steps=self.default_steps
            if self.default_steps is not None
            else base.default_steps,
            default_cfg=self.default_cfg if self.default_cfg is not None else base.default_cfg,
            max_steps=narrowed(self.max_steps, base.max_steps),
            max_count=narrowed(self.max_count, base.max_count),
            max_pixels=narrowed(self.max_pixels, base.max_pixels),
        )

    def allows_channel(self, channel_id: int | None) -> bool:
        return self.allowed_channels is None or channel_id in self.allowed_channels


class GuildSettingsStore:
    """Reads are cached (every /imagine needs them); every change is one transaction plus audit rows."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock
        self._cache: dict[int, GuildSettings] = {}

    async def get(self, guild_id: int) -> GuildSettings:
        cached = self._cache.get(guild_id)
        if cached is not None:
            return cached
        row = await self.db.fetchone("SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,))
        settings = _from_row(row) if row else GuildSettings(guild_id)
        self._cache[guild_id] = settings
        return settings

    async def update(self, guild_id: int, moderator_id: int, **changes: Any) -> GuildSettings:
        """Set the given fields (None resets one to the bot's default) and audit each change."""
        unknown = set(changes) - set(EDITABLE)
        if unknown:
            raise ValueError(f"not a server setting: {', '.join(sorted(unknown))}")
        current = await self.get(guild_id)
        updated = replace(current, **changes)
        now = self._clock()
        async with self.db.transaction() as tx:
            values = [_to_column(name, getattr(updated, name)) for name in EDITABLE]
            await tx.execute(
                f"INSERT INTO guild_settings (guild_id, {', '.join(EDITABLE)}, updated_at) "
                f"VALUES (?, {', '.join('?' for _ in EDITABLE)}, ?) ON CONFLICT (guild_id) DO UPDATE SET "
                + ", ".join(f"{name} = excluded.{name}" for name in EDITABLE)
                + ", updated_at = excluded.updated_at",
                (guild_id, *values, now),
            )
            for name, value in changes.items():
                if getattr(current, name) != value:
                    what = LABELS[name]
                    said = (
                        f"reset {what} to the bot's default"
                        if value is None
                        else f"set {what} to {_shown(name, value)}"
                    )
                    await audit.record(
                        tx,
                        guild_id=guild_id,
                        moderator_id=moderator_id,
                        action=f"settings.{name}",
                        detail=said,
                        at=now,
                    )
        self._cache[guild_id] = updated
        return updated


def _from_row(row: Any) -> GuildSettings:
    values = {f.name: row[f.name] for f in fields(GuildSettings)}
    if values["allowed_channels"] is not None:
        values["allowed_channels"] = tuple(json.loads(values["allowed_channels"]))
    return GuildSettings(**values)


def _to_column(name: str, value: Any) -> Any:
    if name == "allowed_channels" and value is not None:
        return json.dumps(list(value))
    return value


def _shown(name: str, value: Any) -> str:
    if name == "allowed_channels":
        return ", ".join(f"<#{c}>" for c in value) or "none"
    if name == "moderator_role_id":
        return f"<@&{value}>"
    if name == "max_pixels":
        return f"{value / 2**20:.2f} MP"
    return str(value)
