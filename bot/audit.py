"""The audit trail: every moderator action, append-only, readable back per server or member.

An entry records what changed as values (`facts`); whoever shows the trail writes the sentence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.db import Database, Transaction
from bot.store import stores_for
from bot.store.audit import AuditEntry, AuditStore

__all__ = ["AuditEntry", "entries", "record"]


async def record(
    store: AuditStore,
    tx: Transaction,
    *,
    guild_id: int,
    moderator_id: int,
    action: str,
    at: float,
    target_id: int | None = None,
    reason: str | None = None,
    facts: Mapping[str, Any] | None = None,
) -> None:
    """Write one entry inside the transaction that made the change."""
    entry = AuditEntry(at, moderator_id, action, target_id, reason, dict(facts or {}))
    await store.append(tx, guild_id, entry)


async def entries(
    db: Database, guild_id: int, *, target_id: int | None = None, limit: int = 15
) -> list[AuditEntry]:
    """The newest entries first; only those about `target_id` when it is given."""
    return await stores_for(db).audit.newest(guild_id, target_id=target_id, limit=limit)
