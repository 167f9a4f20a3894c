"""`AuditStore` on PostgreSQL."""

from __future__ import annotations

import json

from bot.postgres import PostgresDatabase, PostgresTransaction
from bot.store.audit import AuditEntry, entry_from_row


class PostgresAuditStore:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def append(self, tx: PostgresTransaction, guild_id: int, entry: AuditEntry) -> None:
        await tx.insert(
            "INSERT INTO audit_log (guild_id, moderator_id, action, target_id, detail, facts, reason, at)"
            " VALUES ($1, $2, $3, $4, '', $5, $6, $7) RETURNING id",
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
        sql = "SELECT * FROM audit_log WHERE guild_id = $1"
        params: list[object] = [guild_id]
        if target_id is not None:
            params.append(target_id)
            sql += f" AND target_id = ${len(params)}"
        params.append(limit)
        rows = await self.db.fetchall(sql + f" ORDER BY id DESC LIMIT ${len(params)}", params)
        return [entry_from_row(r) for r in rows]
