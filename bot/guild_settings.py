"""Per-server policy set by moderators: channels, NSFW mode, defaults, caps, moderator role."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
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


@dataclass(frozen=True)
class Change:
    """One committed change: the settings just before it and just after it."""

    before: GuildSettings
    after: GuildSettings


Decide = Callable[[GuildSettings], Mapping[str, Any]]


class GuildSettingsStore:
    """Reads are cached (every /imagine needs them); every change is one transaction plus audit rows.

    A change reads the stored row inside its own transaction and writes only the columns it
    names, so two moderators (or two processes) changing settings at once never undo each other.
    """

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock
        self._cache: dict[int, GuildSettings] = {}
        # Orders cache fills against changes, so an older read never replaces a newer write.
        self._cache_lock = asyncio.Lock()

    async def get(self, guild_id: int) -> GuildSettings:
        cached = self._cache.get(guild_id)
        if cached is not None:
            return cached
        async with self._cache_lock:
            if guild_id not in self._cache:
                row = await self.db.fetchone(
                    "SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,)
                )
                self._cache[guild_id] = _from_row(row) if row else GuildSettings(guild_id)
            return self._cache[guild_id]

    async def update(self, guild_id: int, moderator_id: int, **changes: Any) -> GuildSettings:
        """Set the given fields (None resets one to the bot's default) and audit each change."""
        return (await self.change(guild_id, moderator_id, lambda _: changes)).after

    async def add_channel(self, guild_id: int, moderator_id: int, channel_id: int) -> Change:
        def added(current: GuildSettings) -> dict[str, Any]:
            allowed = current.allowed_channels or ()
            return {} if channel_id in allowed else {"allowed_channels": (*allowed, channel_id)}

        return await self.change(guild_id, moderator_id, added)

    async def remove_channel(self, guild_id: int, moderator_id: int, channel_id: int) -> Change:
        def removed(current: GuildSettings) -> dict[str, Any]:
            allowed = current.allowed_channels or ()
            if channel_id not in allowed:
                return {}
            return {"allowed_channels": tuple(c for c in allowed if c != channel_id)}

        return await self.change(guild_id, moderator_id, removed)

    async def change(self, guild_id: int, moderator_id: int, decide: Decide) -> Change:
        """Apply `decide(stored settings)` in one transaction; an exception from it writes nothing."""
        now = self._clock()
        async with self._cache_lock:
            async with self.db.transaction() as tx:
                row = await tx.fetchone(
                    "SELECT * FROM guild_settings WHERE guild_id = ?", (guild_id,)
                )
                before = _from_row(row) if row else GuildSettings(guild_id)
                changes = dict(decide(before))
                unknown = set(changes) - set(EDITABLE)
                if unknown:
                    raise ValueError(f"not a server setting: {', '.join(sorted(unknown))}")
                after = replace(before, **changes)
                changed = [name for name in changes if getattr(before, name) != changes[name]]
                if changed:
                    await tx.execute(
                        f"INSERT INTO guild_settings (guild_id, {', '.join(changed)}, updated_at) "
                        f"VALUES (?, {', '.join('?' for _ in changed)}, ?) "
                        "ON CONFLICT (guild_id) DO UPDATE SET "
                        + ", ".join(f"{name} = excluded.{name}" for name in changed)
                        + ", updated_at = excluded.updated_at",
                        (guild_id, *(_to_column(n, changes[n]) for n in changed), now),
                    )
                for name in changed:
                    await audit.record(
                        tx,
                        guild_id=guild_id,
                        moderator_id=moderator_id,
                        action=f"settings.{name}",
                        detail=_said(name, getattr(before, name), changes[name]),
                        at=now,
                    )
            self._cache[guild_id] = after
        return Change(before, after)


def _from_row(row: Any) -> GuildSettings:
    values = {f.name: row[f.name] for f in fields(GuildSettings)}
    if values["allowed_channels"] is not None:
        values["allowed_channels"] = tuple(json.loads(values["allowed_channels"]))
    return GuildSettings(**values)


def _to_column(name: str, value: Any) -> Any:
    if name == "allowed_channels" and value is not None:
        return json.dumps(list(value))
    return value


def _said(name: str, before: Any, after: Any) -> str:
    """The audit line for one setting; a channel added or removed is named on its own."""
    what = LABELS[name]
    if after is None:
        return f"reset {what} to the bot's default"
    if name == "allowed_channels" and before is not None:
        added = [c for c in after if c not in before]
        removed = [c for c in before if c not in after]
        if added and not removed:
            return f"added {_shown(name, added)} to {what}"
        if removed and not added:
            return f"removed {_shown(name, removed)} from {what}"
    return f"set {what} to {_shown(name, after)}"


def _shown(name: str, value: Any) -> str:
    if name == "allowed_channels":
        return ", ".join(f"<#{c}>" for c in value) or "none"
    if name == "moderator_role_id":
        return f"<@&{value}>"
    if name == "max_pixels":
        return f"{value / 2**20:.2f} MP"
    return str(value)
