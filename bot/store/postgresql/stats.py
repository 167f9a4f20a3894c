"""`StatsStore` on PostgreSQL."""

from __future__ import annotations

from bot.postgres import PostgresDatabase
from bot.store.stats import HOLDS, JOBS, HoldFact, JobFact, hold_from_row, job_from_row


class PostgresStatsStore:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def holds(
        self, guild_id: int, since: float, until: float, *, user_id: int | None = None
    ) -> list[HoldFact]:
        sql = HOLDS + "WHERE guild_id = $1 AND created_at >= $2 AND created_at < $3"
        params: list[object] = [guild_id, since, until]
        if user_id is not None:
            sql += " AND user_id = $4"
            params.append(user_id)
        rows = await self.db.fetchall(sql + " ORDER BY created_at", params)
        return [hold_from_row(r) for r in rows]

    async def jobs(self, guild_id: int, since: float, until: float) -> list[JobFact]:
        rows = await self.db.fetchall(
            JOBS + "WHERE j.guild_id = $1 AND j.created_at >= $2 AND j.created_at < $3 "
            "ORDER BY j.created_at",
            (guild_id, since, until),
        )
        return [job_from_row(r) for r in rows]

    async def daily_budget(self, guild_id: int) -> float | None:
        row = await self.db.fetchone(
            "SELECT daily_usd FROM quota_budgets WHERE guild_id = $1", (guild_id,)
        )
        return float(row["daily_usd"]) if row else None
