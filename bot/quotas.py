"""Credits as a ledger: what a job costs, holds on acceptance, capture or refund exactly once.

Shaped like Red-DiscordBot's bank: `balance` / `can_spend` to ask, `reserve` / `capture` /
`refund` to move credits, and refusals as exceptions whose text a member can read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot import audit
from bot.config import Settings
from bot.db import Database, Transaction
from bot.estimates import DurationModel, work_units
from bot.jobs import Job, JobError, NewJob
from bot.prompt import GenerationRequest
from bot.runpod import MAX_EXECUTION_MS
from bot.workflows import Template

DAY = timedelta(days=1)


def credit_cost(request: GenerationRequest, template: Template) -> int:
    """Credits scale with GPU work: a 1024x1024, 25-step image is 1 credit; never less than 1."""
    return max(1, round(work_units(request) * template.cost_multiplier))


def relative(at: float) -> str:
    """A Discord timestamp that each member sees in their own time zone ("in 3 hours")."""
    return f"<t:{int(at)}:R>"


class QuotaError(JobError):
    """A refusal to spend credits, saying why and when it changes."""


class QuotaExceeded(QuotaError):
    """Not enough credits left in this period."""


class Blocked(QuotaError):
    """A moderator blocked this member."""


class BudgetReached(QuotaError):
    """The operator's or the server's daily GPU budget is spent."""


@dataclass(frozen=True)
class QuotaConfig:
    """The operator's defaults: allowance, period, price and budget."""

    daily_credits: int = 25
    period: str = "daily"
    reset_hour: int = 0
    price_per_second: float = 0.00031
    daily_budget_usd: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> QuotaConfig:
        return cls(
            daily_credits=settings.daily_credits,
            period=settings.quota_period,
            reset_hour=settings.quota_reset_hour,
            price_per_second=settings.gpu_price_per_second,
            daily_budget_usd=settings.daily_budget_usd,
        )


@dataclass(frozen=True)
class Block:
    reason: str
    moderator_id: int
    expires_at: float | None


@dataclass(frozen=True)
class Balance:
    """Where a member stands in the current period."""

    limit: int
    limit_source: str
    used: int
    held: int
    bonus: int
    period_start: float
    resets_at: float
    block: Block | None

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used) + self.bonus


@dataclass(frozen=True)
class Spender:
    user_id: int
    jobs: int
    credits: int
    gpu_seconds: float
    usd: float


@dataclass(frozen=True)
class BudgetStatus:
    guild_spent_usd: float
    guild_budget_usd: float | None
    total_spent_usd: float
    total_budget_usd: float | None
    reopens_at: float


def period_start(now: float, *, period: str, reset_hour: int) -> float:
    """The start of the allowance period containing `now` (weekly periods start on Mondays)."""
    moment = datetime.fromtimestamp(now, UTC)
    start = moment.replace(hour=reset_hour, minute=0, second=0, microsecond=0)
    if period == "weekly":
        start -= timedelta(days=start.weekday())
        if start > moment:
            start -= timedelta(days=7)
    elif start > moment:
        start -= DAY
    return start.timestamp()


class QuotaLedger:
    """Per-server credits and budgets in SQLite; implements the job manager's `Accounting`."""

    def __init__(
        self,
        db: Database,
        config: QuotaConfig,
        durations: DurationModel,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.config = config
        self.durations = durations
        self._clock = clock

    # ----- periods ------------------------------------------------------------------------

    @property
    def period_word(self) -> str:
        return "week" if self.config.period == "weekly" else "day"

    @property
    def this_period(self) -> str:
        return "this week" if self.config.period == "weekly" else "today"

    def _period(self, now: float) -> tuple[float, float]:
        start = period_start(now, period=self.config.period, reset_hour=self.config.reset_hour)
        length = 7 * DAY if self.config.period == "weekly" else DAY
        return start, (datetime.fromtimestamp(start, UTC) + length).timestamp()

    def today_start(self, now: float) -> float:
        """The start of the current budget day (it turns at the reset hour)."""
        return self._budget_day(now)[0]

    def _budget_day(self, now: float) -> tuple[float, float]:
        start = period_start(now, period="daily", reset_hour=self.config.reset_hour)
        return start, start + DAY.total_seconds()

    # ----- reading ------------------------------------------------------------------------

    async def balance(
        self, guild_id: int | None, user_id: int, role_ids: Iterable[int] = ()
    ) -> Balance:
        async with self.db.transaction() as tx:
            return await self._balance(tx, guild_id, user_id, tuple(role_ids), self._clock())

    async def can_spend(
        self, guild_id: int | None, user_id: int, role_ids: Iterable[int], credits: int
    ) -> bool:
        balance = await self.balance(guild_id, user_id, role_ids)
        return balance.block is None and balance.remaining >= credits

    async def _balance(
        self,
        tx: Transaction,
        guild_id: int | None,
        user_id: int,
        role_ids: tuple[int, ...],
        now: float,
    ) -> Balance:
        start, resets_at = self._period(now)
        reset = await tx.fetchone(
            "SELECT at FROM quota_resets WHERE guild_id IS ? AND user_id = ?", (guild_id, user_id)
        )
        since = max(start, reset["at"]) if reset else start
        spent = await tx.fetchone(
            "SELECT COALESCE(SUM(credits - bonus_credits), 0) AS used, "
            "COALESCE(SUM(CASE WHEN state = 'held' THEN credits END), 0) AS held "
            "FROM quota_holds WHERE guild_id IS ? AND user_id = ? AND state != 'refunded' AND created_at >= ?",
            (guild_id, user_id, since),
        )
        bonus = await tx.fetchone(
            "SELECT (SELECT COALESCE(SUM(credits), 0) FROM quota_grants WHERE guild_id IS ? AND user_id = ?)"
            " - (SELECT COALESCE(SUM(bonus_credits), 0) FROM quota_holds"
            "    WHERE guild_id IS ? AND user_id = ? AND state != 'refunded')",
            (guild_id, user_id, guild_id, user_id),
        )
        limit, source = await self._limit(tx, guild_id, user_id, role_ids)
        return Balance(
            limit=limit,
            limit_source=source,
            used=int(spent["used"]),
            held=int(spent["held"]),
            bonus=max(0, int(bonus[0])),
            period_start=since,
            resets_at=resets_at,
            block=await self._block(tx, guild_id, user_id, now),
        )

    async def _limit(
        self, tx: Transaction, guild_id: int | None, user_id: int, role_ids: tuple[int, ...]
    ) -> tuple[int, str]:
        """Member override > the best tier among the member's roles > server default > bot default."""
        rows = await tx.fetchall(
            "SELECT scope, target_id, credits FROM quota_limits WHERE guild_id IS ?", (guild_id,)
        )
        by_scope: dict[str, dict[int, int]] = {}
        for row in rows:
            by_scope.setdefault(row["scope"], {})[row["target_id"]] = row["credits"]
        if user_id in by_scope.get("member", {}):
            return by_scope["member"][user_id], "set for this member"
        tiers = [
            (credits, role)
            for role, credits in by_scope.get("role", {}).items()
            if role in role_ids
        ]
        if tiers:
            credits, role = max(tiers)
            return credits, f"from the role <@&{role}>"
        if 0 in by_scope.get("default", {}):
            return by_scope["default"][0], "server default"
        return self.config.daily_credits, "bot default"

    async def _block(
        self, tx: Transaction, guild_id: int | None, user_id: int, now: float
    ) -> Block | None:
        row = await tx.fetchone(
            "SELECT reason, moderator_id, expires_at FROM quota_blocks WHERE guild_id IS ? AND user_id = ? "
            "AND (expires_at IS NULL OR expires_at > ?)",
            (guild_id, user_id, now),
        )
        return Block(row["reason"], row["moderator_id"], row["expires_at"]) if row else None

    async def _spent_usd(
        self, tx: Transaction, since: float, guild_id: int | None = None, *, all_guilds: bool
    ) -> float:
        sql = (
            "SELECT COALESCE(SUM(CASE state WHEN 'held' THEN usd_estimate "
            "ELSE COALESCE(usd_actual, usd_estimate) END), 0) FROM quota_holds "
            "WHERE state != 'refunded' AND created_at >= ?"
        )
        params: tuple = (since,)
        if not all_guilds:
            sql += " AND guild_id IS ?"
            params = (since, guild_id)
        row = await tx.fetchone(sql, params)
        return float(row[0])

    async def _guild_budget(self, tx: Transaction, guild_id: int | None) -> float | None:
        row = await tx.fetchone(
            "SELECT daily_usd FROM quota_budgets WHERE guild_id IS ?", (guild_id,)
        )
        return float(row["daily_usd"]) if row else None

    async def budget_status(self, guild_id: int | None) -> BudgetStatus:
        now = self._clock()
        day_start, day_end = self._budget_day(now)
        async with self.db.transaction() as tx:
            return BudgetStatus(
                guild_spent_usd=await self._spent_usd(tx, day_start, guild_id, all_guilds=False),
                guild_budget_usd=await self._guild_budget(tx, guild_id),
                total_spent_usd=await self._spent_usd(tx, day_start, all_guilds=True),
                total_budget_usd=self.config.daily_budget_usd or None,
                reopens_at=day_end,
            )

    def estimate_usd(self, request: GenerationRequest) -> float:
        return self.durations.expect(request).seconds * self.config.price_per_second

    # ----- moving credits (the job manager's Accounting) ------------------------------------------

    async def reserve(self, tx: Transaction, job_id: int, new: NewJob) -> None:
        """Hold the job's cost, or raise a `QuotaError` (the caller's transaction then rolls back)."""
        now = self._clock()
        balance = await self._balance(tx, new.guild_id, new.user_id, new.role_ids, now)
        if balance.block is not None:
            raise Blocked(_blocked_text(balance.block))
        if new.cost > balance.remaining:
            raise QuotaExceeded(
                f"This needs {credit_text(new.cost)} but you have {balance.remaining} left. "
                f"Your credits come back {relative(balance.resets_at)}."
            )
        usd = self.estimate_usd(new.request)
        await self._check_budgets(tx, new.guild_id, usd, now)
        from_allowance = min(new.cost, max(0, balance.limit - balance.used))
        await tx.insert(
            "INSERT INTO quota_holds (job_id, guild_id, user_id, credits, bonus_credits, usd_estimate, state, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, 'held', ?)",
            (job_id, new.guild_id, new.user_id, new.cost, new.cost - from_allowance, usd, now),
        )

    async def _check_budgets(
        self, tx: Transaction, guild_id: int | None, usd: float, now: float
    ) -> None:
        day_start, reopens = self._budget_day(now)
        if self.config.daily_budget_usd > 0:
            spent = await self._spent_usd(tx, day_start, all_guilds=True)
            if spent + usd > self.config.daily_budget_usd:
                raise BudgetReached(
                    "The bot's GPU budget for today is used up, so no new images can start. "
                    f"It reopens {relative(reopens)}."
                )
        budget = await self._guild_budget(tx, guild_id)
        if budget is not None:
            spent = await self._spent_usd(tx, day_start, guild_id, all_guilds=False)
            if spent + usd > budget:
                raise BudgetReached(
                    f"This server's GPU budget for today (${budget:.2f}) is used up. It reopens {relative(reopens)}."
                )

    async def capture(self, tx: Transaction, job: Job) -> None:
        """Charge a delivered job: its credits, and its actual GPU time at the configured price."""
        seconds = None
        if job.execution_ms is not None:
            # Checked on entry too; clamped here so no stored value can refill the budget.
            seconds = min(max(job.execution_ms, 0), MAX_EXECUTION_MS) / 1000
        await tx.execute(
            "UPDATE quota_holds SET state = 'captured', settled_at = ?, gpu_seconds = ?, "
            "usd_actual = COALESCE(? * ?, usd_estimate) WHERE job_id = ? AND state = 'held'",
            (self._clock(), seconds, seconds, self.config.price_per_second, job.id),
        )

    async def refund(self, tx: Transaction, job: Job) -> None:
        await tx.execute(
            "UPDATE quota_holds SET state = 'refunded', settled_at = ? WHERE job_id = ? AND state = 'held'",
            (self._clock(), job.id),
        )

    async def held_job_ids(self, tx: Transaction) -> list[int]:
        rows = await tx.fetchall("SELECT job_id FROM quota_holds WHERE state = 'held'")
        return [row["job_id"] for row in rows]

    # ----- moderation: every change writes an audit row in the same transaction ------------------

    async def set_limit(
        self, guild_id: int, moderator_id: int, *, scope: str, target_id: int, credits: int | None
    ) -> None:
        """Set (or with None, remove) a member override, a role tier or the server default."""
        what = {
            "member": f"<@{target_id}>'s own limit",
            "role": f"the <@&{target_id}> tier",
            "default": "the server default",
        }[scope]
        async with self.db.transaction() as tx:
            if credits is None:
                await tx.execute(
                    "DELETE FROM quota_limits WHERE guild_id = ? AND scope = ? AND target_id = ?",
                    (guild_id, scope, target_id),
                )
                detail = f"removed {what}"
            else:
                await tx.execute(
                    "INSERT INTO quota_limits (guild_id, scope, target_id, credits) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (guild_id, scope, target_id) DO UPDATE SET credits = excluded.credits",
                    (guild_id, scope, target_id, credits),
                )
                detail = f"set {what} to {credit_text(credits)} per {self.period_word}"
            await self._audit(
                tx, guild_id, moderator_id, f"limit.{scope}", detail, target_id or None
            )

    async def grant(
        self, guild_id: int, moderator_id: int, user_id: int, credits: int, reason: str
    ) -> None:
        """Bonus credits: spent after the period's allowance, and they do not expire."""
        async with self.db.transaction() as tx:
            await tx.insert(
                "INSERT INTO quota_grants (guild_id, user_id, credits, reason, moderator_id, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (guild_id, user_id, credits, reason, moderator_id, self._clock()),
            )
            await self._audit(
                tx,
                guild_id,
                moderator_id,
                "grant",
                f"gave <@{user_id}> {credit_text(credits)} of bonus",
                user_id,
                reason,
            )

    async def reset(self, guild_id: int, moderator_id: int, user_id: int) -> None:
        """Give a member their whole allowance back for the current period."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO quota_resets (guild_id, user_id, at) VALUES (?, ?, ?) "
                "ON CONFLICT (guild_id, user_id) DO UPDATE SET at = excluded.at",
                (guild_id, user_id, self._clock()),
            )
            await self._audit(
                tx, guild_id, moderator_id, "reset", f"reset <@{user_id}>'s allowance", user_id
            )

    async def block(
        self,
        guild_id: int,
        moderator_id: int,
        user_id: int,
        reason: str,
        *,
        duration: float | None = None,
    ) -> None:
        now = self._clock()
        expires = now + duration if duration else None
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO quota_blocks (guild_id, user_id, reason, moderator_id, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (guild_id, user_id) DO UPDATE SET "
                "reason = excluded.reason, moderator_id = excluded.moderator_id, "
                "created_at = excluded.created_at, expires_at = excluded.expires_at",
                (guild_id, user_id, reason, moderator_id, now, expires),
            )
            until = f" until {relative(expires)}" if expires else ""
            await self._audit(
                tx,
                guild_id,
                moderator_id,
                "block",
                f"blocked <@{user_id}>{until}",
                user_id,
                reason,
            )

    async def unblock(self, guild_id: int, moderator_id: int, user_id: int) -> bool:
        async with self.db.transaction() as tx:
            removed = await tx.execute(
                "DELETE FROM quota_blocks WHERE guild_id = ? AND user_id = ?", (guild_id, user_id)
            )
            if removed:
                await self._audit(
                    tx, guild_id, moderator_id, "unblock", f"unblocked <@{user_id}>", user_id
                )
        return bool(removed)

    async def set_budget(self, guild_id: int, moderator_id: int, daily_usd: float) -> None:
        """This server's daily GPU budget in dollars; 0 removes it."""
        async with self.db.transaction() as tx:
            if daily_usd <= 0:
                await tx.execute("DELETE FROM quota_budgets WHERE guild_id = ?", (guild_id,))
                detail = "removed the daily budget"
            else:
                await tx.execute(
                    "INSERT INTO quota_budgets (guild_id, daily_usd) VALUES (?, ?) "
                    "ON CONFLICT (guild_id) DO UPDATE SET daily_usd = excluded.daily_usd",
                    (guild_id, daily_usd),
                )
                detail = f"set the daily budget to ${daily_usd:.2f}"
            await self._audit(tx, guild_id, moderator_id, "budget", detail)

    async def top(self, guild_id: int, since: float, limit: int = 10) -> list[Spender]:
        rows = await self.db.fetchall(
            "SELECT user_id, COUNT(*) AS jobs, SUM(credits) AS credits, COALESCE(SUM(gpu_seconds), 0) AS gpu, "
            "SUM(COALESCE(usd_actual, usd_estimate)) AS usd FROM quota_holds "
            "WHERE guild_id = ? AND state = 'captured' AND created_at >= ? "
            "GROUP BY user_id ORDER BY credits DESC, gpu DESC LIMIT ?",
            (guild_id, since, limit),
        )
        return [Spender(r["user_id"], r["jobs"], r["credits"], r["gpu"], r["usd"]) for r in rows]

    async def _audit(
        self,
        tx: Transaction,
        guild_id: int,
        moderator_id: int,
        action: str,
        detail: str,
        target_id: int | None = None,
        reason: str | None = None,
    ) -> None:
        await audit.record(
            tx,
            guild_id=guild_id,
            moderator_id=moderator_id,
            action=action,
            detail=detail,
            at=self._clock(),
            target_id=target_id,
            reason=reason,
        )


def credit_text(n: int) -> str:
    """`1 credit`, `2 credits`: how every message counts them."""
    return f"{n} credit" if n == 1 else f"{n} credits"


def _blocked_text(block: Block) -> str:
    until = f" The block ends {relative(block.expires_at)}." if block.expires_at else ""
    return f"A moderator has blocked you from making images here: {block.reason}.{until}"
