"""Each member's own defaults for /imagine: below anything typed, as an option or a flag.

All SQL is in `bot/store/preferences.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from bot.db import Database
from bot.prompt import GenerationRequest, Options
from bot.store import stores_for
from bot.store.preferences import PREFERENCE_NAMES, PreferenceRows
from bot.workflows import Template

# The flags of a prompt's text that already say what a preference would.
_FLAGS_FOR = {"aspect": {"ar", "size"}, "count": {"count"}, "negative": {"no"}, "style": {"style"}}


@dataclass(frozen=True)
class Preferences:
    """One member's choices; None means the bot's default."""

    aspect: str | None = None
    negative: str | None = None
    count: int | None = None
    style: str | None = None
    ping: bool | None = None
    dm: bool | None = None

    @property
    def pings(self) -> bool:
        """Whether a result that took a while pings its member (on unless turned off)."""
        return self.ping is not False

    @property
    def by_dm(self) -> bool:
        return bool(self.dm)

    def fill(
        self,
        options: Options,
        *,
        parsed: GenerationRequest,
        template: Template,
        text_flags: frozenset[str],
        max_count: int,
    ) -> tuple[Options, tuple[str, ...]]:
        """`options` with these preferences where nothing typed or written says otherwise.

        `parsed` is the request without preferences: its workflow decides what can apply (no
        aspect for an image, no count where a workflow makes one). Returns which ones applied.
        """
        wanted = {
            "aspect": self.aspect if parsed.image is None and template.accepts("width") else None,
            "count": min(self.count, max_count)
            if self.count is not None and template.accepts("count")
            else None,
            "negative": self.negative if template.accepts("negative") else None,
            "style": self.style,
        }
        applied = {
            name: value
            for name, value in wanted.items()
            if value is not None
            and getattr(options, name) is None
            and not _FLAGS_FOR[name] & text_flags
        }
        return replace(options, **applied), tuple(applied)


class PreferenceStore:
    """Reads and changes members' preferences; each change one transaction."""

    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], float] = time.time,
        rows: PreferenceRows | None = None,
    ) -> None:
        self.db = db
        self._clock = clock
        self._rows = rows or stores_for(db).preferences

    async def get(self, user_id: int) -> Preferences:
        return Preferences(**(await self._rows.read(user_id) or {}))

    async def set(self, user_id: int, **changes: object) -> Preferences:
        """Set the given preferences; the others stay as they are."""
        async with self.db.transaction() as tx:
            await self._rows.write(tx, user_id, changes, at=self._clock())
        return await self.get(user_id)

    async def reset(self, user_id: int, names: Iterable[str] = PREFERENCE_NAMES) -> Preferences:
        """Forget the named preferences (all of them by default)."""
        async with self.db.transaction() as tx:
            await self._rows.clear(tx, user_id, names)
        return await self.get(user_id)
