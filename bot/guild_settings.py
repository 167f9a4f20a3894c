"""Per-server policy set by moderators: channels, NSFW mode, defaults, caps, moderator role,
blocked words and workflows turned off.

All SQL is in `bot/store/guild_settings.py`; each change's audit entry records the setting's value
before and after (`settings.<name>`), and the cogs word it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from bot import audit
from bot.db import Database
from bot.prompt import ContentPolicy
from bot.store import stores_for
from bot.store.audit import AuditStore
from bot.store.guild_settings import SETTING_NAMES, GuildSettingsRows

EDITABLE = SETTING_NAMES
# A result that took at least this long pings its member (a delivery edit notifies nobody).
DEFAULT_PING_AFTER = 30


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
    blocked_words: tuple[str, ...] | None = None
    disabled_workflows: tuple[str, ...] | None = None
    ping_after: int | None = None
    gallery_channel_id: int | None = None

    @property
    def ping_after_seconds(self) -> int:
        """How long a job must have waited for its result to ping its member."""
        return DEFAULT_PING_AFTER if self.ping_after is None else self.ping_after

    def policy(self, base: ContentPolicy) -> ContentPolicy:
        """The operator's policy with this server's choices; caps can only be narrowed, and the
        server's blocked words are added to the operator's."""

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
            blocked_words=(
                *base.blocked_words,
                *(w for w in self.blocked_words or () if w not in base.blocked_words),
            ),
        )

    def allows_workflow(self, name: str) -> bool:
        return name not in (self.disabled_workflows or ())

    def allows_channel(self, channel_id: int | None) -> bool:
        return self.allowed_channels is None or channel_id in self.allowed_channels


@dataclass(frozen=True)
class Change:
    """One committed change: the settings just before it and just after it."""

    before: GuildSettings
    after: GuildSettings


Decide = Callable[[GuildSettings], Mapping[str, Any]]
# Whether a server's settings, all together, still let a job run: None, or the conflict named.
Check = Callable[[GuildSettings], str | None]


class SettingsConflict(ValueError):
    """A change that, with the server's other settings, would make every job fail."""


class GuildSettingsStore:
    """Reads are cached (every /imagine needs them); every change is one transaction plus audit rows.

    A change reads the stored row inside its own transaction and writes only the columns it
    names, so two moderators (or two processes) changing settings at once never undo each other.
    """

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], float] = time.time,
        rows: GuildSettingsRows | None = None,
        audit_store: AuditStore | None = None,
        check: Check | None = None,
    ) -> None:
        self.db = db
        self._clock = clock
        self._check = check
        engine = stores_for(db)
        self._rows = rows or engine.guild_settings
        self._audit_store = audit_store or engine.audit
        self._cache: dict[int, GuildSettings] = {}
        # Orders cache fills against changes, so an older read never replaces a newer write.
        self._cache_lock = asyncio.Lock()

    async def get(self, guild_id: int) -> GuildSettings:
        cached = self._cache.get(guild_id)
        if cached is not None:
            return cached
        async with self._cache_lock:
            if guild_id not in self._cache:
                stored = await self._rows.read(guild_id)
                self._cache[guild_id] = GuildSettings(guild_id, **(stored or {}))
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

    async def add_word(self, guild_id: int, moderator_id: int, word: str) -> Change:
        def added(current: GuildSettings) -> dict[str, Any]:
            words = current.blocked_words or ()
            return {} if word in words else {"blocked_words": (*words, word)}

        return await self.change(guild_id, moderator_id, added)

    async def remove_word(self, guild_id: int, moderator_id: int, word: str) -> Change:
        def removed(current: GuildSettings) -> dict[str, Any]:
            words = current.blocked_words or ()
            if word not in words:
                return {}
            return {"blocked_words": tuple(w for w in words if w != word) or None}

        return await self.change(guild_id, moderator_id, removed)

    async def set_workflow(
        self, guild_id: int, moderator_id: int, workflow: str, *, enabled: bool
    ) -> Change:
        def toggled(current: GuildSettings) -> dict[str, Any]:
            off = current.disabled_workflows or ()
            if enabled:
                return {"disabled_workflows": tuple(w for w in off if w != workflow) or None}
            return {} if workflow in off else {"disabled_workflows": (*off, workflow)}

        return await self.change(guild_id, moderator_id, toggled)

    async def change(self, guild_id: int, moderator_id: int, decide: Decide) -> Change:
        """Apply `decide(stored settings)` in one transaction; an exception from it writes nothing,
        nor does a change the check finds in conflict (`SettingsConflict`)."""
        now = self._clock()
        async with self._cache_lock:
            async with self.db.transaction() as tx:
                stored = await self._rows.read(guild_id, tx=tx)
                before = GuildSettings(guild_id, **(stored or {}))
                changes = dict(decide(before))
                unknown = set(changes) - set(EDITABLE)
                if unknown:
                    raise ValueError(f"not a server setting: {', '.join(sorted(unknown))}")
                after = replace(before, **changes)
                changed = [name for name in changes if getattr(before, name) != changes[name]]
                if changed and self._check is not None:
                    conflict = self._check(after)
                    # Settings stored in conflict before this check existed may still be changed.
                    if conflict is not None and self._check(before) is None:
                        raise SettingsConflict(conflict)
                await self._rows.write(tx, guild_id, {n: changes[n] for n in changed}, at=now)
                for name in changed:
                    await audit.record(
                        self._audit_store,
                        tx,
                        guild_id=guild_id,
                        moderator_id=moderator_id,
                        action=f"settings.{name}",
                        at=now,
                        facts={"before": getattr(before, name), "after": changes[name]},
                    )
            self._cache[guild_id] = after
        return Change(before, after)
