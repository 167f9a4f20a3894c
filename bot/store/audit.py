"""The audit trail's rows: append-only, read back newest first."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.db import Database
from bot.db import Transaction as SqliteTransaction
from bot.store.base import Transaction


@dataclass(frozen=True)
class AuditEntry:
    """One moderator action: who, when, on whom, and what changed as values."""

    at: float
    moderator_id: int
    action: str
    target_id: int | None
    reason: str | None
    facts: Mapping[str, Any] = field(default_factory=dict)
    # The sentence rows written before `facts` existed carry instead (with Discord markup).
    legacy_detail: str = ""


class AuditStore(Protocol):
    async def append(self, tx: Transaction, guild_id: int, entry: AuditEntry) -> None:
        """Add one entry inside the transaction that made the change."""
        ...

    async def newest(self, guild_id: int, *, target_id: int | None, limit: int) -> list[AuditEntry]:
        """A server's newest entries first; only those about `target_id` when it is given."""
        ...


class SqliteAuditStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def append(self, tx: SqliteTransaction, guild_id: int, entry: AuditEntry) -> None:
        await tx.insert(
            "INSERT INTO audit_log (guild_id, moderator_id, action, target_id, detail, facts, reason, at) "
            "VALUES (?, ?, ?, ?, '', ?, ?, ?)",
            (
                guild_id,
                entry.moderator_id,
                entry.action,
                entry.target_id,
                json.dumps(dict(entry.facts)),
                entry.reason,
                entry.at,
            ),
        )

    async def newest(self, guild_id: int, *, target_id: int | None, limit: int) -> list[AuditEntry]:
        sql = "SELECT * FROM audit_log WHERE guild_id = ?"
        params: list[object] = [guild_id]
        if target_id is not None:
            sql += " AND target_id = ?"
            params.append(target_id)
        rows = await self.db.fetchall(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
        return [entry_from_row(r) for r in rows]


def entry_from_row(r: Any) -> AuditEntry:
    """A row of `audit_log`, of either engine, as the entry it records."""
    return AuditEntry(
        at=r["at"],
        moderator_id=r["moderator_id"],
        action=r["action"],
        target_id=r["target_id"],
        reason=r["reason"],
        facts=json.loads(r["facts"]) if r["facts"] is not None else {},
        legacy_detail=r["detail"],
    )
