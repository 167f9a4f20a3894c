"""What the quota ledger answers: balances, budget status, and refusals carrying their values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from bot.jobs import JobError
from bot.store.ledger import Block


def _utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


class QuotaError(JobError):
    """A refusal to spend credits, carrying why and when it changes; its text is for logs."""


class QuotaExceeded(QuotaError):
    """Not enough credits left in this period."""

    def __init__(self, *, cost: int, remaining: int, resets_at: float) -> None:
        super().__init__(f"needs {cost} credits, {remaining} left until {_utc(resets_at)}")
        self.cost = cost
        self.remaining = remaining
        self.resets_at = resets_at


class Blocked(QuotaError):
    """A moderator blocked this member."""

    def __init__(self, block: Block) -> None:
        until = f" until {_utc(block.expires_at)}" if block.expires_at else ""
        super().__init__(f"blocked by moderator {block.moderator_id}{until}: {block.reason}")
        self.block = block


class BudgetScope(StrEnum):
    BOT = "bot"  # the operator's daily budget across every server
    SERVER = "server"  # one server's own daily budget, set by its moderators


class BudgetReached(QuotaError):
    """The operator's or the server's daily GPU budget is spent."""

    def __init__(
        self, scope: BudgetScope, *, reopens_at: float, budget_usd: float | None = None
    ) -> None:
        super().__init__(f"the {scope} GPU budget is spent until {_utc(reopens_at)}")
        self.scope = scope
        self.budget_usd = budget_usd
        self.reopens_at = reopens_at


class LimitSource(StrEnum):
    """Where a member's allowance comes from, the first that applies."""

    MEMBER = "member"  # a moderator set this member's own limit
    ROLE = "role"  # the best tier among the member's roles
    SERVER_DEFAULT = "server_default"
    BOT_DEFAULT = "bot_default"  # the operator's DAILY_CREDITS


@dataclass(frozen=True)
class Balance:
    """Where a member stands in the current period."""

    limit: int
    limit_source: LimitSource
    used: int
    held: int
    bonus: int
    period_start: float
    resets_at: float
    block: Block | None
    limit_role_id: int | None = None  # the role whose tier applies, when the source is a role

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used) + self.bonus


@dataclass(frozen=True)
class BudgetStatus:
    guild_spent_usd: float
    guild_budget_usd: float | None
    total_spent_usd: float
    total_budget_usd: float | None
    reopens_at: float
