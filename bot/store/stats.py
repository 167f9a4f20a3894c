"""Read-only rows for charts and figures: ledger holds and finished jobs over a window of time.

The aggregation (days, medians, outcomes) lives in `bot/stats.py`; this module only reads. It
reads the jobs tables itself, rather than through the job manager, so the figures never wait on
the manager's own work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from bot.db import Database
from bot.store.ledger import HoldState


@dataclass(frozen=True)
class HoldFact:
    """One job's hold on the ledger, as charts count it."""

    user_id: int
    credits: int
    bonus_credits: int
    state: HoldState
    usd: float  # what it really cost where known, else the estimate
    gpu_seconds: float | None
    created_at: float


@dataclass(frozen=True)
class JobFact:
    """One job's timings and outcome, as charts count it."""

    user_id: int
    template: str
    state: str  # a `bot.jobs.JobState` value
    created_at: float
    submitted_at: float | None
    started_at: float | None
    delay_ms: int | None  # RunPod's queue and cold start
    execution_ms: int | None
    cause: str | None  # the failure kind recorded when it ended without images


class StatsStore(Protocol):
    """Reads only: the ledger's holds and the jobs of one server within [since, until)."""

    async def holds(
        self, guild_id: int, since: float, until: float, *, user_id: int | None = None
    ) -> list[HoldFact]: ...

    async def jobs(self, guild_id: int, since: float, until: float) -> list[JobFact]: ...

    async def daily_budget(self, guild_id: int) -> float | None: ...


class SqliteStatsStore:
    """`StatsStore` on SQLite."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def holds(
        self, guild_id: int, since: float, until: float, *, user_id: int | None = None
    ) -> list[HoldFact]:
        sql = HOLDS + "WHERE guild_id = ? AND created_at >= ? AND created_at < ?"
        params: list[object] = [guild_id, since, until]
        if user_id is not None:
            sql += " AND user_id = ?"
            params.append(user_id)
        rows = await self.db.fetchall(sql + " ORDER BY created_at", params)
        return [hold_from_row(r) for r in rows]

    async def jobs(self, guild_id: int, since: float, until: float) -> list[JobFact]:
        rows = await self.db.fetchall(
            JOBS + "WHERE j.guild_id = ? AND j.created_at >= ? AND j.created_at < ? "
            "ORDER BY j.created_at",
            (guild_id, since, until),
        )
        return [job_from_row(r) for r in rows]

    async def daily_budget(self, guild_id: int) -> float | None:
        row = await self.db.fetchone(
            "SELECT daily_usd FROM quota_budgets WHERE guild_id = ?", (guild_id,)
        )
        return float(row["daily_usd"]) if row else None


# Shared by both engines; only the placeholders after WHERE differ.
HOLDS = (
    "SELECT user_id, credits, bonus_credits, state, gpu_seconds, created_at, "
    f"CASE state WHEN '{HoldState.HELD}' THEN usd_estimate "
    "ELSE COALESCE(usd_actual, usd_estimate) END AS usd FROM quota_holds "
)
# The cause is the detail of the event that moved the job into its final state.
JOBS = (
    "SELECT j.user_id, j.template, j.state, j.created_at, j.submitted_at, j.started_at, "
    "j.delay_ms, j.execution_ms, "
    "(SELECT e.detail FROM job_events e WHERE e.job_id = j.id AND e.to_state = j.state "
    " ORDER BY e.id DESC LIMIT 1) AS cause FROM jobs j "
)


def hold_from_row(row: Any) -> HoldFact:
    """A row of `HOLDS`, of either engine."""
    return HoldFact(
        user_id=row["user_id"],
        credits=row["credits"],
        bonus_credits=row["bonus_credits"],
        state=HoldState(row["state"]),
        usd=float(row["usd"]),
        gpu_seconds=row["gpu_seconds"],
        created_at=row["created_at"],
    )


def job_from_row(row: Any) -> JobFact:
    """A row of `JOBS`, of either engine."""
    return JobFact(
        user_id=row["user_id"],
        template=row["template"],
        state=row["state"],
        created_at=row["created_at"],
        submitted_at=row["submitted_at"],
        started_at=row["started_at"],
        delay_ms=row["delay_ms"],
        execution_ms=row["execution_ms"],
        cause=row["cause"],
    )
