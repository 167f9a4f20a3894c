"""The audit trail: every moderator action, append-only, readable back per server or member."""

from __future__ import annotations

from dataclasses import dataclass

from bot.db import Database, Transaction


@dataclass(frozen=True)
class AuditEntry:
    at: float
    moderator_id: int
    action: str
    target_id: int | None
    detail: str
    reason: str | None


async def record(
    tx: Transaction,
    *,
    guild_id: int,
    moderator_id: int,
    action: str,
    detail: str,
    at: float,
    target_id: int | None = None,
    reason: str | None = None,
) -> None:
    """Write one audit row inside the transaction that made the change."""
    await tx.insert(
        "INSERT INTO audit_log (guild_id, moderator_id, action, target_id, detail, reason, at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (guild_id, moderator_id, action, target_id, detail, reason, at),
    )


async def entries(
    db: Database, guild_id: int, *, target_id: int | None = None, limit: int = 15
) -> list[AuditEntry]:
    """The newest entries first; only those about `target_id` when it is given."""
    sql = "SELECT * FROM audit_log WHERE guild_id = ?"
    params: list[object] = [guild_id]
    if target_id is not None:
        sql += " AND target_id = ?"
        params.append(target_id)
    rows = await db.fetchall(sql + " ORDER BY id DESC LIMIT ?", (*params, limit))
    return [
        AuditEntry(
            r["at"], r["moderator_id"], r["action"], r["target_id"], r["detail"], r["reason"]
        )
        for r in rows
    ]
