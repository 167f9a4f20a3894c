"""The credit ledger's rows: holds, allowances, grants, resets, blocks and budgets.

The rules (what a member may spend, what a job costs) stay in `bot/quotas.py`; this module only
reads and writes what those rules decided. `guild_id` None is a direct message.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from bot.db import Database
from bot.db import Transaction as SqliteTransaction
from bot.store.base import Transaction


class HoldState(StrEnum):
    """A hold's stored state: settled once, by capture or refund (`bot.jobs.Settlement`)."""

    HELD = "held"  # reserved when the job was accepted; the job has not ended
    CAPTURED = "captured"  # the job delivered its images: charged
    REFUNDED = "refunded"  # the job ended without images: given back


class LimitScope(StrEnum):
    MEMBER = "member"  # one member's own allowance, set by a moderator
    ROLE = "role"  # a tier for everyone with a role; the best of a member's roles applies
    DEFAULT = "default"  # the server's default (its target id is 0)


@dataclass(frozen=True)
class Hold:
    """Credits and an estimated cost reserved for one job."""

    job_id: int
    guild_id: int | None
    user_id: int
    credits: int
    bonus_credits: int  # the part of `credits` taken from granted bonus
    usd_estimate: float
    created_at: float


@dataclass(frozen=True)
class Spending:
    """A member's holds since a moment, refunds left out."""

    used: int  # credits taken from the allowance (bonus not counted)
    held: int  # credits of jobs that have not ended yet


@dataclass(frozen=True)
class Block:
    reason: str
    moderator_id: int
    expires_at: float | None


@dataclass(frozen=True)
class Spender:
    user_id: int
    jobs: int
    credits: int
    gpu_seconds: float
    usd: float


class LedgerStore(Protocol):
    """The ledger's tables; every write joins the caller's transaction."""

    async def reset_at(self, tx: Transaction, guild_id: int | None, user_id: int) -> float | None:
        """When a moderator last gave this member their allowance back, if ever."""
        ...

    async def spending(
        self, tx: Transaction, guild_id: int | None, user_id: int, since: float
    ) -> Spending: ...

    async def bonus_left(self, tx: Transaction, guild_id: int | None, user_id: int) -> int:
        """Bonus granted minus bonus spent by holds not refunded (may be below 0 on old rows)."""
        ...

    async def limits(
        self, tx: Transaction, guild_id: int | None
    ) -> dict[LimitScope, dict[int, int]]:
        """Every allowance of a server: scope -> target id (member, role, 0) -> credits."""
        ...

    async def active_block(
        self, tx: Transaction, guild_id: int | None, user_id: int, now: float
    ) -> Block | None: ...

    async def spent_usd(self, tx: Transaction, since: float, guild_id: int | None) -> float:
        """One server's dollars since `since`: actual where known, else the estimate."""
        ...

    async def spent_usd_everywhere(self, tx: Transaction, since: float) -> float: ...

    async def daily_budget(self, tx: Transaction, guild_id: int | None) -> float | None: ...

    async def hold(self, tx: Transaction, hold: Hold) -> None: ...

    async def capture(
        self,
        tx: Transaction,
        job_id: int,
        *,
        at: float,
        gpu_seconds: float | None,
        usd: float | None,
    ) -> None:
        """Charge a held job; `usd` None keeps its estimate. A job already settled is left alone."""
        ...

    async def refund(self, tx: Transaction, job_id: int, *, at: float) -> None:
        """Give a held job's credits back. A job already settled is left alone."""
        ...

    async def held_job_ids(self, tx: Transaction) -> list[int]: ...

    async def set_limit(
        self, tx: Transaction, guild_id: int, scope: LimitScope, target_id: int, credits: int
    ) -> None: ...

    async def remove_limit(
        self, tx: Transaction, guild_id: int, scope: LimitScope, target_id: int
    ) -> None: ...

    async def add_grant(
        self,
        tx: Transaction,
        guild_id: int,
        user_id: int,
        credits: int,
        *,
        reason: str,
        moderator_id: int,
        at: float,
    ) -> None: ...

    async def set_reset(self, tx: Transaction, guild_id: int, user_id: int, at: float) -> None: ...

    async def set_block(
        self, tx: Transaction, guild_id: int, user_id: int, block: Block, *, at: float
    ) -> None: ...

    async def remove_block(self, tx: Transaction, guild_id: int, user_id: int) -> bool:
        """Whether there was a block to remove."""
        ...

    async def set_daily_budget(self, tx: Transaction, guild_id: int, daily_usd: float) -> None: ...

    async def remove_daily_budget(self, tx: Transaction, guild_id: int) -> None: ...

    async def top_spenders(self, guild_id: int, since: float, limit: int) -> list[Spender]:
        """Members by credits captured since `since`, most first."""
        ...


class SqliteLedgerStore:
    """`LedgerStore` on SQLite (`IS ?` matches a NULL guild, a direct message)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def reset_at(
        self, tx: SqliteTransaction, guild_id: int | None, user_id: int
    ) -> float | None:
        row = await tx.fetchone(
            "SELECT at FROM quota_resets WHERE guild_id IS ? AND user_id = ?", (guild_id, user_id)
        )
        return row["at"] if row else None

    async def spending(
        self, tx: SqliteTransaction, guild_id: int | None, user_id: int, since: float
    ) -> Spending:
        row = await tx.fetchone(
            "SELECT COALESCE(SUM(credits - bonus_credits), 0) AS used, "
            f"COALESCE(SUM(CASE WHEN state = '{HoldState.HELD}' THEN credits END), 0) AS held "
            f"FROM quota_holds WHERE guild_id IS ? AND user_id = ? AND state != '{HoldState.REFUNDED}' AND created_at >= ?",
            (guild_id, user_id, since),
        )
        return Spending(used=int(row["used"]), held=int(row["held"]))

    async def bonus_left(self, tx: SqliteTransaction, guild_id: int | None, user_id: int) -> int:
        row = await tx.fetchone(
            "SELECT (SELECT COALESCE(SUM(credits), 0) FROM quota_grants WHERE guild_id IS ? AND user_id = ?)"
            " - (SELECT COALESCE(SUM(bonus_credits), 0) FROM quota_holds"
            f"    WHERE guild_id IS ? AND user_id = ? AND state != '{HoldState.REFUNDED}')",
            (guild_id, user_id, guild_id, user_id),
        )
        return int(row[0])

    async def limits(
        self, tx: SqliteTransaction, guild_id: int | None
    ) -> dict[LimitScope, dict[int, int]]:
        rows = await tx.fetchall(
            "SELECT scope, target_id, credits FROM quota_limits WHERE guild_id IS ?", (guild_id,)
        )
        by_scope: dict[LimitScope, dict[int, int]] = {}
        for row in rows:
            by_scope.setdefault(LimitScope(row["scope"]), {})[row["target_id"]] = row["credits"]
        return by_scope

    async def active_block(
        self, tx: SqliteTransaction, guild_id: int | None, user_id: int, now: float
    ) -> Block | None:
        row = await tx.fetchone(
            "SELECT reason, moderator_id, expires_at FROM quota_blocks WHERE guild_id IS ? AND user_id = ? "
            "AND (expires_at IS NULL OR expires_at > ?)",
            (guild_id, user_id, now),
        )
        return Block(row["reason"], row["moderator_id"], row["expires_at"]) if row else None

    async def spent_usd(self, tx: SqliteTransaction, since: float, guild_id: int | None) -> float:
        row = await tx.fetchone(_SPENT_USD + " AND guild_id IS ?", (since, guild_id))
        return float(row[0])

    async def spent_usd_everywhere(self, tx: SqliteTransaction, since: float) -> float:
        row = await tx.fetchone(_SPENT_USD, (since,))
        return float(row[0])

    async def daily_budget(self, tx: SqliteTransaction, guild_id: int | None) -> float | None:
        row = await tx.fetchone(
            "SELECT daily_usd FROM quota_budgets WHERE guild_id IS ?", (guild_id,)
        )
        return float(row["daily_usd"]) if row else None

    async def hold(self, tx: SqliteTransaction, hold: Hold) -> None:
        await tx.insert(
            "INSERT INTO quota_holds (job_id, guild_id, user_id, credits, bonus_credits, usd_estimate, state, "
            f"created_at) VALUES (?, ?, ?, ?, ?, ?, '{HoldState.HELD}', ?)",
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
        tx: SqliteTransaction,
        job_id: int,
        *,
        at: float,
        gpu_seconds: float | None,
        usd: float | None,
    ) -> None:
        await tx.execute(
            f"UPDATE quota_holds SET state = '{HoldState.CAPTURED}', settled_at = ?, gpu_seconds = ?, "
            f"usd_actual = COALESCE(?, usd_estimate) WHERE job_id = ? AND state = '{HoldState.HELD}'",
            (at, gpu_seconds, usd, job_id),
        )

    async def refund(self, tx: SqliteTransaction, job_id: int, *, at: float) -> None:
        await tx.execute(
            f"UPDATE quota_holds SET state = '{HoldState.REFUNDED}', settled_at = ? WHERE job_id = ? AND state = '{HoldState.HELD}'",
            (at, job_id),
        )

    async def held_job_ids(self, tx: SqliteTransaction) -> list[int]:
        rows = await tx.fetchall(f"SELECT job_id FROM quota_holds WHERE state = '{HoldState.HELD}'")
        return [row["job_id"] for row in rows]

    async def set_limit(
        self,
        tx: SqliteTransaction,
        guild_id: int,
        scope: LimitScope,
        target_id: int,
        credits: int,
    ) -> None:
        await tx.execute(
            "INSERT INTO quota_limits (guild_id, scope, target_id, credits) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (guild_id, scope, target_id) DO UPDATE SET credits = excluded.credits",
            (guild_id, scope.value, target_id, credits),
        )

    async def remove_limit(
        self, tx: SqliteTransaction, guild_id: int, scope: LimitScope, target_id: int
    ) -> None:
        await tx.execute(
            "DELETE FROM quota_limits WHERE guild_id = ? AND scope = ? AND target_id = ?",
            (guild_id, scope.value, target_id),
        )

    async def add_grant(
        self,
        tx: SqliteTransaction,
        guild_id: int,
        user_id: int,
        credits: int,
        *,
        reason: str,
        moderator_id: int,
        at: float,
    ) -> None:
        await tx.insert(
            "INSERT INTO quota_grants (guild_id, user_id, credits, reason, moderator_id, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (guild_id, user_id, credits, reason, moderator_id, at),
        )

    async def set_reset(
        self, tx: SqliteTransaction, guild_id: int, user_id: int, at: float
    ) -> None:
        await tx.execute(
            "INSERT INTO quota_resets (guild_id, user_id, at) VALUES (?, ?, ?) "
            "ON CONFLICT (guild_id, user_id) DO UPDATE SET at = excluded.at",
            (guild_id, user_id, at),
        )

    async def set_block(
        self, tx: SqliteTransaction, guild_id: int, user_id: int, block: Block, *, at: float
    ) -> None:
        await tx.execute(
            "INSERT INTO quota_blocks (guild_id, user_id, reason, moderator_id, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (guild_id, user_id) DO UPDATE SET "
            "reason = excluded.reason, moderator_id = excluded.moderator_id, "
            "created_at = excluded.created_at, expires_at = excluded.expires_at",
            (guild_id, user_id, block.reason, block.moderator_id, at, block.expires_at),
        )

    async def remove_block(self, tx: SqliteTransaction, guild_id: int, user_id: int) -> bool:
        removed = await tx.execute(
            "DELETE FROM quota_blocks WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
        )
        return bool(removed)

    async def set_daily_budget(
        self, tx: SqliteTransaction, guild_id: int, daily_usd: float
    ) -> None:
        await tx.execute(
            "INSERT INTO quota_budgets (guild_id, daily_usd) VALUES (?, ?) "
            "ON CONFLICT (guild_id) DO UPDATE SET daily_usd = excluded.daily_usd",
            (guild_id, daily_usd),
        )

    async def remove_daily_budget(self, tx: SqliteTransaction, guild_id: int) -> None:
        await tx.execute("DELETE FROM quota_budgets WHERE guild_id = ?", (guild_id,))

    async def top_spenders(self, guild_id: int, since: float, limit: int) -> list[Spender]:
        rows = await self.db.fetchall(
            "SELECT user_id, COUNT(*) AS jobs, SUM(credits) AS credits, COALESCE(SUM(gpu_seconds), 0) AS gpu, "
            "SUM(COALESCE(usd_actual, usd_estimate)) AS usd FROM quota_holds "
            f"WHERE guild_id = ? AND state = '{HoldState.CAPTURED}' AND created_at >= ? "
            "GROUP BY user_id ORDER BY credits DESC, gpu DESC LIMIT ?",
            (guild_id, since, limit),
        )
        return [Spender(r["user_id"], r["jobs"], r["credits"], r["gpu"], r["usd"]) for r in rows]


# A hold still held counts at its estimate; a settled one at what it really cost, if known.
_SPENT_USD = (
    f"SELECT COALESCE(SUM(CASE state WHEN '{HoldState.HELD}' THEN usd_estimate "
    "ELSE COALESCE(usd_actual, usd_estimate) END), 0) FROM quota_holds "
    f"WHERE state != '{HoldState.REFUNDED}' AND created_at >= ?"
)
