"""`LedgerStore` on PostgreSQL, kept exact when several processes reserve credits at once."""

from __future__ import annotations

from bot.postgres import AdvisoryLock, PostgresDatabase, PostgresTransaction
from bot.store.ledger import Block, Hold, HoldState, LimitScope, Spender, Spending


class PostgresLedgerStore:
    """`IS NOT DISTINCT FROM` matches a NULL guild (a direct message), as SQLite's `IS ?` does.

    Every call inside a transaction first takes the ledger's advisory lock, held until that
    transaction ends: a reservation's reads and its hold stay one decision while another process
    reserves for the same member or budget, as SQLite's single writer (`BEGIN IMMEDIATE`) ensures.
    Reads outside a transaction (`top_spenders`) take no lock.
    """

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def reset_at(
        self, tx: PostgresTransaction, guild_id: int | None, user_id: int
    ) -> float | None:
        await tx.lock(AdvisoryLock.LEDGER)
        row = await tx.fetchone(
            "SELECT at FROM quota_resets WHERE guild_id IS NOT DISTINCT FROM $1 AND user_id = $2",
            (guild_id, user_id),
        )
        return row["at"] if row else None

    async def spending(
        self, tx: PostgresTransaction, guild_id: int | None, user_id: int, since: float
    ) -> Spending:
        await tx.lock(AdvisoryLock.LEDGER)
        row = await tx.fetchone(
            "SELECT COALESCE(SUM(credits - bonus_credits), 0) AS used, "
            f"COALESCE(SUM(CASE WHEN state = '{HoldState.HELD}' THEN credits END), 0) AS held "
            "FROM quota_holds WHERE guild_id IS NOT DISTINCT FROM $1 AND user_id = $2 "
            f"AND state != '{HoldState.REFUNDED}' AND created_at >= $3",
            (guild_id, user_id, since),
        )
        assert row is not None
        return Spending(used=int(row["used"]), held=int(row["held"]))

    async def bonus_left(self, tx: PostgresTransaction, guild_id: int | None, user_id: int) -> int:
        await tx.lock(AdvisoryLock.LEDGER)
        row = await tx.fetchone(
            "SELECT (SELECT COALESCE(SUM(credits), 0) FROM quota_grants"
            "    WHERE guild_id IS NOT DISTINCT FROM $1 AND user_id = $2)"
            " - (SELECT COALESCE(SUM(bonus_credits), 0) FROM quota_holds"
            "    WHERE guild_id IS NOT DISTINCT FROM $1 AND user_id = $2"
            f"   AND state != '{HoldState.REFUNDED}')",
            (guild_id, user_id),
        )
        assert row is not None
        return int(row[0])

    async def limits(
        self, tx: PostgresTransaction, guild_id: int | None
    ) -> dict[LimitScope, dict[int, int]]:
        await tx.lock(AdvisoryLock.LEDGER)
        rows = await tx.fetchall(
            "SELECT scope, target_id, credits FROM quota_limits"
            " WHERE guild_id IS NOT DISTINCT FROM $1",
            (guild_id,),
        )
        by_scope: dict[LimitScope, dict[int, int]] = {}
        for row in rows:
            by_scope.setdefault(LimitScope(row["scope"]), {})[row["target_id"]] = row["credits"]
        return by_scope

    async def active_block(
        self, tx: PostgresTransaction, guild_id: int | None, user_id: int, now: float
    ) -> Block | None:
        await tx.lock(AdvisoryLock.LEDGER)
        row = await tx.fetchone(
            "SELECT reason, moderator_id, expires_at FROM quota_blocks"
            " WHERE guild_id IS NOT DISTINCT FROM $1 AND user_id = $2"
            " AND (expires_at IS NULL OR expires_at > $3)",
            (guild_id, user_id, now),
        )
        return Block(row["reason"], row["moderator_id"], row["expires_at"]) if row else None

    async def spent_usd(self, tx: PostgresTransaction, since: float, guild_id: int | None) -> float:
        await tx.lock(AdvisoryLock.LEDGER)
        row = await tx.fetchone(
            _SPENT_USD + " AND guild_id IS NOT DISTINCT FROM $2", (since, guild_id)
        )
        assert row is not None
        return float(row[0])

    async def spent_usd_everywhere(self, tx: PostgresTransaction, since: float) -> float:
        await tx.lock(AdvisoryLock.LEDGER)
        row = await tx.fetchone(_SPENT_USD, (since,))
        assert row is not None
        return float(row[0])

    async def daily_budget(self, tx: PostgresTransaction, guild_id: int | None) -> float | None:
        await tx.lock(AdvisoryLock.LEDGER)
        row = await tx.fetchone(
            "SELECT daily_usd FROM quota_budgets WHERE guild_id IS NOT DISTINCT FROM $1",
            (guild_id,),
        )
        return float(row["daily_usd"]) if row else None

    async def hold(self, tx: PostgresTransaction, hold: Hold) -> None:
        await tx.lock(AdvisoryLock.LEDGER)
        await tx.execute(
            "INSERT INTO quota_holds (job_id, guild_id, user_id, credits, bonus_credits,"
            f" usd_estimate, state, created_at) VALUES ($1, $2, $3, $4, $5, $6, '{HoldState.HELD}', $7)",
            (
                hold.job_id,
                hold.guild_id,
                hold.user_id,
                hold.credits,
                hold.bonus_credits,
                hold.usd_estimate,
                hold.created_at,
            ),
        )

    async def capture(
        self,
        tx: PostgresTransaction,
        job_id: int,
        *,
        at: float,
        gpu_seconds: float | None,
        usd: float | None,
    ) -> None:
        await tx.lock(AdvisoryLock.LEDGER)
        await tx.execute(
            f"UPDATE quota_holds SET state = '{HoldState.CAPTURED}', settled_at = $1,"
            " gpu_seconds = $2, usd_actual = COALESCE($3, usd_estimate)"
            f" WHERE job_id = $4 AND state = '{HoldState.HELD}'",
            (at, gpu_seconds, usd, job_id),
        )

    async def refund(self, tx: PostgresTransaction, job_id: int, *, at: float) -> None:
        await tx.lock(AdvisoryLock.LEDGER)
        await tx.execute(
            f"UPDATE quota_holds SET state = '{HoldState.REFUNDED}', settled_at = $1"
            f" WHERE job_id = $2 AND state = '{HoldState.HELD}'",
            (at, job_id),
        )

    async def held_job_ids(self, tx: PostgresTransaction) -> list[int]:
        await tx.lock(AdvisoryLock.LEDGER)
        rows = await tx.fetchall(
            f"SELECT job_id FROM quota_holds WHERE state = '{HoldState.HELD}' ORDER BY job_id"
        )
        return [row["job_id"] for row in rows]

    async def set_limit(
        self,
        tx: PostgresTransaction,
        guild_id: int,
        scope: LimitScope,
        target_id: int,
        credits: int,
    ) -> None:
        await tx.lock(AdvisoryLock.LEDGER)
        await tx.execute(
            "INSERT INTO quota_limits (guild_id, scope, target_id, credits) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (guild_id, scope, target_id) DO UPDATE SET credits = excluded.credits",
            (guild_id, scope.value, target_id, credits),
        )

    async def remove_limit(
        self, tx: PostgresTransaction, guild_id: int, scope: LimitScope, target_id: int
    ) -> None:
        await tx.lock(AdvisoryLock.LEDGER)
        await tx.execute(
            "DELETE FROM quota_limits WHERE guild_id = $1 AND scope = $2 AND target_id = $3",
            (guild_id, scope.value, target_id),
        )

    async def add_grant(
        self,
        tx: PostgresTransaction,
        guild_id: int,
        user_id: int,
        credits: int,
        *,
        reason: str,
        moderator_id: int,
        at: float,
    ) -> None:
        await tx.lock(AdvisoryLock.LEDGER)
        await tx.insert(
            "INSERT INTO quota_grants (guild_id, user_id, credits, reason, moderator_id, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            (guild_id, user_id, credits, reason, moderator_id, at),
        )

    async def set_reset(
        self, tx: PostgresTransaction, guild_id: int, user_id: int, at: float
    ) -> None:
        await tx.lock(AdvisoryLock.LEDGER)
        await tx.execute(
            "INSERT INTO quota_resets (guild_id, user_id, at) VALUES ($1, $2, $3)"
            " ON CONFLICT (guild_id, user_id) DO UPDATE SET at = excluded.at",
            (guild_id, user_id, at),
        )

    async def set_block(
        self, tx: PostgresTransaction, guild_id: int, user_id: int, block: Block, *, at: float
    ) -> None:
        await tx.lock(AdvisoryLock.LEDGER)
        await tx.execute(
            "INSERT INTO quota_blocks (guild_id, user_id, reason, moderator_id, created_at, expires_at)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (guild_id, user_id) DO UPDATE SET"
            " reason = excluded.reason, moderator_id = excluded.moderator_id,"
            " created_at = excluded.created_at, expires_at = excluded.expires_at",
            (guild_id, user_id, block.reason, block.moderator_id, at, block.expires_at),
        )

    async def remove_block(self, tx: PostgresTransaction, guild_id: int, user_id: int) -> bool:
        await tx.lock(AdvisoryLock.LEDGER)
        removed = await tx.execute(
            "DELETE FROM quota_blocks WHERE guild_id = $1 AND user_id = $2", (guild_id, user_id)
        )
        return bool(removed)

    async def set_daily_budget(
        self, tx: PostgresTransaction, guild_id: int, daily_usd: float
    ) -> None:
        await tx.lock(AdvisoryLock.LEDGER)
        await tx.execute(
            "INSERT INTO quota_budgets (guild_id, daily_usd) VALUES ($1, $2)"
            " ON CONFLICT (guild_id) DO UPDATE SET daily_usd = excluded.daily_usd",
            (guild_id, daily_usd),
        )

    async def remove_daily_budget(self, tx: PostgresTransaction, guild_id: int) -> None:
        await tx.lock(AdvisoryLock.LEDGER)
        await tx.execute("DELETE FROM quota_budgets WHERE guild_id = $1", (guild_id,))

    async def top_spenders(self, guild_id: int, since: float, limit: int) -> list[Spender]:
        rows = await self.db.fetchall(
            "SELECT user_id, COUNT(*) AS jobs, SUM(credits)::BIGINT AS credits,"
            " COALESCE(SUM(gpu_seconds), 0) AS gpu, SUM(COALESCE(usd_actual, usd_estimate)) AS usd"
            f" FROM quota_holds WHERE guild_id = $1 AND state = '{HoldState.CAPTURED}'"
            " AND created_at >= $2 GROUP BY user_id ORDER BY credits DESC, gpu DESC LIMIT $3",
            (guild_id, since, limit),
        )
        return [Spender(r["user_id"], r["jobs"], r["credits"], r["gpu"], r["usd"]) for r in rows]


# A hold still held counts at its estimate; a settled one at what it really cost, if known.
_SPENT_USD = (
    f"SELECT COALESCE(SUM(CASE state WHEN '{HoldState.HELD}' THEN usd_estimate "
    "ELSE COALESCE(usd_actual, usd_estimate) END), 0) FROM quota_holds "
    f"WHERE state != '{HoldState.REFUNDED}' AND created_at >= $1"
)
