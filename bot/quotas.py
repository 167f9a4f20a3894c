"""Credits as a ledger: what a job costs, holds on acceptance, capture or refund exactly once.

Shaped like Red-DiscordBot's bank: `balance` to ask, `reserve` / `capture` / `refund` to move
credits, and refusals as exceptions carrying the values a message needs (the cogs word them).
There is no `can_spend`: asking first and reserving later could overspend in between, so
`reserve` is the one check, made in the transaction that holds the credits.
All SQL is in `bot/store/ledger.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot import audit
from bot.config import DEFAULT_ENDPOINT, Settings
from bot.db import Database, Transaction
from bot.estimates import DurationModel, work_units
from bot.jobs import Job, NewJob
from bot.prompt import GenerationRequest
from bot.quota_results import (
    Balance,
    Blocked,
    BudgetReached,
    BudgetScope,
    BudgetStatus,
    LimitSource,
    QuotaError,
    QuotaExceeded,
)
from bot.runpod import MAX_EXECUTION_MS
from bot.store import stores_for
from bot.store.audit import AuditStore
from bot.store.ledger import Block, Hold, LedgerStore, LimitScope, Spender
from bot.workflows import Template

__all__ = [
    "DAY",
    "Balance",
    "Blocked",
    "BudgetReached",
    "BudgetScope",
    "BudgetStatus",
    "LimitScope",
    "LimitSource",
    "QuotaConfig",
    "QuotaError",
    "QuotaExceeded",
    "QuotaLedger",
    "credit_cost",
    "period_start",
]

DAY = timedelta(days=1)


def credit_cost(request: GenerationRequest, template: Template) -> int:
    """Credits scale with GPU work: a 1024x1024, 25-step image is 1 credit; never less than 1."""
    return max(1, round(work_units(request) * template.cost_multiplier))


@dataclass(frozen=True)
class QuotaConfig:
    """The operator's defaults: allowance, period, price and budget."""

    daily_credits: int = 25
    period: str = "daily"
    reset_hour: int = 0
    price_per_second: float = 0.00031
    daily_budget_usd: float = 0.0
    # Endpoints run different GPUs: a price here replaces `price_per_second` on that endpoint.
    endpoint_prices: Mapping[str, float] = field(default_factory=dict)

    def price_on(self, endpoint: str) -> float:
        """Dollars per GPU-second on `endpoint`."""
        return self.endpoint_prices.get(endpoint, self.price_per_second)

    @classmethod
    def from_settings(cls, settings: Settings) -> QuotaConfig:
        return cls(
            daily_credits=settings.daily_credits,
            period=settings.quota_period,
            reset_hour=settings.quota_reset_hour,
            price_per_second=settings.gpu_price_per_second,
            daily_budget_usd=settings.daily_budget_usd,
            endpoint_prices=dict(settings.endpoint_gpu_prices),
        )


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
    """Per-server credits and budgets; implements the job manager's `Accounting`."""

    def __init__(
        self,
        db: Database,
        config: QuotaConfig,
        durations: DurationModel,
        *,
        clock: Callable[[], float] = time.time,
        store: LedgerStore | None = None,
        audit_store: AuditStore | None = None,
    ) -> None:
        self.db = db
        self.config = config
        self.durations = durations
        self._clock = clock
        engine = stores_for(db)
        self._store = store or engine.ledger
        self._audit_store = audit_store or engine.audit

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

    async def _balance(
        self,
        tx: Transaction,
        guild_id: int | None,
        user_id: int,
        role_ids: tuple[int, ...],
        now: float,
    ) -> Balance:
        start, resets_at = self._period(now)
        reset = await self._store.reset_at(tx, guild_id, user_id)
        since = max(start, reset) if reset is not None else start
        spending = await self._store.spending(tx, guild_id, user_id, since)
        limit, source, role = await self._limit(tx, guild_id, user_id, role_ids)
        return Balance(
            limit=limit,
            limit_source=source,
            used=spending.used,
            held=spending.held,
            bonus=max(0, await self._store.bonus_left(tx, guild_id, user_id)),
            period_start=since,
            resets_at=resets_at,
            block=await self._store.active_block(tx, guild_id, user_id, now),
            limit_role_id=role,
        )

    async def _limit(
        self, tx: Transaction, guild_id: int | None, user_id: int, role_ids: tuple[int, ...]
    ) -> tuple[int, LimitSource, int | None]:
        """Member override > the best tier among the member's roles > server default > bot default."""
        by_scope = await self._store.limits(tx, guild_id)
        if user_id in by_scope.get(LimitScope.MEMBER, {}):
            return by_scope[LimitScope.MEMBER][user_id], LimitSource.MEMBER, None
        tiers = [
            (credits, role)
            for role, credits in by_scope.get(LimitScope.ROLE, {}).items()
            if role in role_ids
        ]
        if tiers:
            credits, role = max(tiers)
            return credits, LimitSource.ROLE, role
        if 0 in by_scope.get(LimitScope.DEFAULT, {}):
            return by_scope[LimitScope.DEFAULT][0], LimitSource.SERVER_DEFAULT, None
        return self.config.daily_credits, LimitSource.BOT_DEFAULT, None

    async def budget_status(self, guild_id: int | None) -> BudgetStatus:
        now = self._clock()
        day_start, day_end = self._budget_day(now)
        async with self.db.transaction() as tx:
            return BudgetStatus(
                guild_spent_usd=await self._store.spent_usd(tx, day_start, guild_id),
                guild_budget_usd=await self._store.daily_budget(tx, guild_id),
                total_spent_usd=await self._store.spent_usd_everywhere(tx, day_start),
                total_budget_usd=self.config.daily_budget_usd or None,
                reopens_at=day_end,
            )

    def estimate_usd(self, request: GenerationRequest, endpoint: str = DEFAULT_ENDPOINT) -> float:
        seconds = self.durations.expect(request, endpoint).seconds
        return seconds * self.config.price_on(endpoint)

    # ----- moving credits (the job manager's Accounting) ------------------------------------------

    async def reserve(self, tx: Transaction, job_id: int, new: NewJob) -> None:
        """Hold the job's cost, or raise a `QuotaError` (the caller's transaction then rolls back)."""
        now = self._clock()
        balance = await self._balance(tx, new.guild_id, new.user_id, new.role_ids, now)
        if balance.block is not None:
            raise Blocked(balance.block)
        if new.cost > balance.remaining:
            raise QuotaExceeded(
                cost=new.cost, remaining=balance.remaining, resets_at=balance.resets_at
            )
        usd = self.estimate_usd(new.request, new.endpoint)
        await self._check_budgets(tx, new.guild_id, usd, now)
        from_allowance = min(new.cost, max(0, balance.limit - balance.used))
        await self._store.hold(
            tx,
            Hold(
                job_id=job_id,
                guild_id=new.guild_id,
                user_id=new.user_id,
                credits=new.cost,
                bonus_credits=new.cost - from_allowance,
                usd_estimate=usd,
                created_at=now,
            ),
        )

    async def _check_budgets(
        self, tx: Transaction, guild_id: int | None, usd: float, now: float
    ) -> None:
        day_start, reopens = self._budget_day(now)
        if self.config.daily_budget_usd > 0:
            spent = await self._store.spent_usd_everywhere(tx, day_start)
            if spent + usd > self.config.daily_budget_usd:
                raise BudgetReached(BudgetScope.BOT, reopens_at=reopens)
        budget = await self._store.daily_budget(tx, guild_id)
        if budget is not None:
            spent = await self._store.spent_usd(tx, day_start, guild_id)
            if spent + usd > budget:
                raise BudgetReached(BudgetScope.SERVER, reopens_at=reopens, budget_usd=budget)

    async def capture(self, tx: Transaction, job: Job) -> None:
        """Charge a delivered job: its credits, and its actual GPU time at the configured price."""
        seconds = None
        if job.execution_ms is not None:
            # Checked on entry too; clamped here so no stored value can refill the budget.
            seconds = min(max(job.execution_ms, 0), MAX_EXECUTION_MS) / 1000
        price = self.config.price_on(job.endpoint)
        usd = seconds * price if seconds is not None else None
        await self._store.capture(tx, job.id, at=self._clock(), gpu_seconds=seconds, usd=usd)

    async def refund(self, tx: Transaction, job: Job) -> None:
        await self._store.refund(tx, job.id, at=self._clock())

    async def held_job_ids(self, tx: Transaction) -> list[int]:
        return await self._store.held_job_ids(tx)

    # ----- moderation: every change writes an audit row in the same transaction ------------------

    async def set_limit(
        self,
        guild_id: int,
        moderator_id: int,
        *,
        scope: LimitScope | str,
        target_id: int,
        credits: int | None,
    ) -> None:
        """Set (or with None, remove) a member override, a role tier or the server default."""
        scope = LimitScope(scope)
        async with self.db.transaction() as tx:
            if credits is None:
                await self._store.remove_limit(tx, guild_id, scope, target_id)
            else:
                await self._store.set_limit(tx, guild_id, scope, target_id, credits)
            await self._audit(
                tx,
                guild_id,
                moderator_id,
                f"limit.{scope}",
                {"credits": credits, "period": self.config.period},
                target_id or None,
            )

    async def grant(
        self, guild_id: int, moderator_id: int, user_id: int, credits: int, reason: str
    ) -> None:
        """Bonus credits: spent after the period's allowance, and they do not expire."""
        async with self.db.transaction() as tx:
            await self._store.add_grant(
                tx,
                guild_id,
                user_id,
                credits,
                reason=reason,
                moderator_id=moderator_id,
                at=self._clock(),
            )
            await self._audit(
                tx, guild_id, moderator_id, "grant", {"credits": credits}, user_id, reason
            )

    async def reset(self, guild_id: int, moderator_id: int, user_id: int) -> None:
        """Give a member their whole allowance back for the current period."""
        async with self.db.transaction() as tx:
            await self._store.set_reset(tx, guild_id, user_id, self._clock())
            await self._audit(tx, guild_id, moderator_id, "reset", {}, user_id)

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
            block = Block(reason, moderator_id, expires)
            await self._store.set_block(tx, guild_id, user_id, block, at=now)
            await self._audit(
                tx, guild_id, moderator_id, "block", {"until": expires}, user_id, reason
            )

    async def unblock(self, guild_id: int, moderator_id: int, user_id: int) -> bool:
        async with self.db.transaction() as tx:
            removed = await self._store.remove_block(tx, guild_id, user_id)
            if removed:
                await self._audit(tx, guild_id, moderator_id, "unblock", {}, user_id)
        return removed

    async def set_budget(self, guild_id: int, moderator_id: int, daily_usd: float) -> None:
        """This server's daily GPU budget in dollars; 0 removes it."""
        async with self.db.transaction() as tx:
            if daily_usd <= 0:
                await self._store.remove_daily_budget(tx, guild_id)
            else:
                await self._store.set_daily_budget(tx, guild_id, daily_usd)
            await self._audit(
                tx,
                guild_id,
                moderator_id,
                "budget",
                {"daily_usd": daily_usd if daily_usd > 0 else None},
            )

    async def top(self, guild_id: int, since: float, limit: int = 10) -> list[Spender]:
        return await self._store.top_spenders(guild_id, since, limit)

    async def _audit(
        self,
        tx: Transaction,
        guild_id: int,
        moderator_id: int,
        action: str,
        facts: Mapping[str, Any],
        target_id: int | None = None,
        reason: str | None = None,
    ) -> None:
        await audit.record(
            self._audit_store,
            tx,
            guild_id=guild_id,
            moderator_id=moderator_id,
            action=action,
            at=self._clock(),
            target_id=target_id,
            reason=reason,
            facts=facts,
        )
