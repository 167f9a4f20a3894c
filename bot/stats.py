"""The figures behind the charts: credits, spend, outcomes and timings per day, from the ledger and jobs.

Every figure here is plain data (ids, amounts, timestamps); the charts module draws it and the
cogs word it. Days turn at the quota reset hour, as the budget day does (`bot/quotas.py`).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from bot.quotas import QuotaLedger, period_start
from bot.store.ledger import HoldState
from bot.store.stats import HoldFact, JobFact, StatsStore

DAY = 86_400.0

# Outcomes of jobs that ended, in the order charts stack them.
OUTCOMES = ("done", "failed", "timed out", "cancelled")
_OUTCOME_OF_STATE = {
    "done": "done",
    "failed": "failed",
    "timed_out": "timed out",
    "expired": "timed out",
    "cancelled": "cancelled",
}
# Failure kinds (`bot/failures.py`, the `job_events` detail) in a few words each.
CAUSE_WORDS = {
    "oom": "out of GPU memory",
    "validation": "workflow refused",
    "worker": "worker error",
    "no_images": "no images returned",
    "download": "download failed",
    "timed_out": "took too long",
    "queue_timeout": "no GPU in time",
    "expired": "result expired",
    "model_missing": "model missing",
}


@dataclass(frozen=True)
class Window:
    """Whole days from `start` (a day boundary) to `end`, oldest first."""

    start: float
    days: int

    @property
    def end(self) -> float:
        return self.start + self.days * DAY

    @property
    def day_starts(self) -> tuple[float, ...]:
        return tuple(self.start + n * DAY for n in range(self.days))

    def day_of(self, at: float) -> int | None:
        index = int((at - self.start) // DAY)
        return index if 0 <= index < self.days else None


def window_ending_today(now: float, days: int, *, reset_hour: int) -> Window:
    """The last `days` days, today included."""
    today = period_start(now, period="daily", reset_hour=reset_hour)
    return Window(today - (days - 1) * DAY, days)


# ----- /usage -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageFigures:
    """A member's credits per day over the current and previous periods, and their allowance."""

    window: Window
    allowance: tuple[int, ...]  # credits taken from the allowance, per day (refunds left out)
    bonus: tuple[int, ...]  # credits taken from granted bonus, per day
    refunded: tuple[int, ...]  # credits given back for jobs that made no images, per day
    limit: int
    period: str  # "daily" or "weekly"
    period_starts: tuple[float, ...]  # where a period begins within the window

    @property
    def empty(self) -> bool:
        return not any(self.allowance) and not any(self.bonus) and not any(self.refunded)

    @property
    def used_in_period(self) -> tuple[int, ...]:
        """Allowance used so far in each day's period, day by day (what the limit is held against)."""
        running, out = 0, []
        for start, used in zip(self.window.day_starts, self.allowance, strict=True):
            if start in self.period_starts:
                running = 0
            running += used
            out.append(running)
        return tuple(out)


def usage_window(now: float, *, period: str, reset_hour: int) -> Window:
    """The current and the previous period, at least a week so a daily allowance shows a trend."""
    current = period_start(now, period=period, reset_hour=reset_hour)
    previous = period_start(current - 1, period=period, reset_hour=reset_hour)
    today = period_start(now, period="daily", reset_hour=reset_hour)
    days = max(7, round((today - previous) / DAY) + 1)
    return Window(today - (days - 1) * DAY, days)


def usage_figures(
    holds: Iterable[HoldFact], window: Window, *, limit: int, period: str, reset_hour: int
) -> UsageFigures:
    allowance, bonus, refunded = [0] * window.days, [0] * window.days, [0] * window.days
    for hold in holds:
        day = window.day_of(hold.created_at)
        if day is None:
            continue
        if hold.state is HoldState.REFUNDED:
            refunded[day] += hold.credits
        else:
            allowance[day] += hold.credits - hold.bonus_credits
            bonus[day] += hold.bonus_credits
    starts = tuple(
        start
        for start in window.day_starts
        if period_start(start, period=period, reset_hour=reset_hour) == start
    )
    return UsageFigures(
        window, tuple(allowance), tuple(bonus), tuple(refunded), limit, period, starts
    )


# ----- /quota top -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberSpend:
    user_id: int
    jobs: int
    credits: int
    gpu_seconds: float
    usd: float


@dataclass(frozen=True)
class SpendFigures:
    """Credits and estimated dollars per member since `since`, most credits first."""

    since: float
    until: float
    members: tuple[MemberSpend, ...]

    @property
    def empty(self) -> bool:
        return not self.members

    @property
    def total_credits(self) -> int:
        return sum(m.credits for m in self.members)

    @property
    def total_usd(self) -> float:
        return sum(m.usd for m in self.members)


def spend_figures(holds: Iterable[HoldFact], *, since: float, until: float) -> SpendFigures:
    """Captured holds only, as `/quota top` has always counted: what images really cost."""
    jobs: Counter[int] = Counter()
    credits: Counter[int] = Counter()
    gpu: defaultdict[int, float] = defaultdict(float)
    usd: defaultdict[int, float] = defaultdict(float)
    for hold in holds:
        if hold.state is not HoldState.CAPTURED:
            continue
        jobs[hold.user_id] += 1
        credits[hold.user_id] += hold.credits
        gpu[hold.user_id] += hold.gpu_seconds or 0.0
        usd[hold.user_id] += hold.usd
    members = sorted(
        (MemberSpend(u, jobs[u], credits[u], gpu[u], usd[u]) for u in jobs),
        key=lambda m: (-m.credits, -m.gpu_seconds, m.user_id),
    )
    return SpendFigures(since, until, tuple(members))


# ----- /stats -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateTimes:
    template: str
    jobs: int
    median_wait: (
        float  # seconds from acceptance to a GPU starting (local queue + RunPod + cold start)
    )
    median_run: float  # seconds of GPU execution


@dataclass(frozen=True)
class ServerFigures:
    """What a moderator sees in /stats: outcomes, spend against the budget, timings, causes."""

    window: Window
    outcomes: dict[str, tuple[int, ...]]  # outcome -> jobs per day, keys in OUTCOMES order
    gpu_seconds: tuple[float, ...]
    usd: tuple[float, ...]
    daily_budget: float | None
    templates: tuple[TemplateTimes, ...] = ()
    causes: tuple[tuple[str, int], ...] = field(default=())  # (words, jobs), most first

    @property
    def empty(self) -> bool:
        return not any(any(v) for v in self.outcomes.values()) and not any(self.usd)

    @property
    def jobs(self) -> int:
        return sum(sum(v) for v in self.outcomes.values())


def wait_seconds(job: JobFact) -> float | None:
    """Acceptance to a GPU starting: our queue (to submission) plus RunPod's queue and cold start."""
    if job.submitted_at is not None and job.delay_ms is not None:
        return max(0.0, job.submitted_at - job.created_at) + job.delay_ms / 1000
    if job.started_at is not None:
        return max(0.0, job.started_at - job.created_at)
    return None


def cause_words(kind: str | None) -> str:
    return CAUSE_WORDS.get(kind or "", (kind or "unknown").replace("_", " "))


def server_figures(
    jobs: Sequence[JobFact],
    holds: Iterable[HoldFact],
    window: Window,
    *,
    daily_budget: float | None,
) -> ServerFigures:
    outcomes = {name: [0] * window.days for name in OUTCOMES}
    gpu, usd = [0.0] * window.days, [0.0] * window.days
    waits: defaultdict[str, list[float]] = defaultdict(list)
    runs: defaultdict[str, list[float]] = defaultdict(list)
    causes: Counter[str] = Counter()
    for job in jobs:
        day = window.day_of(job.created_at)
        outcome = _OUTCOME_OF_STATE.get(job.state)
        if day is None or outcome is None:
            continue
        outcomes[outcome][day] += 1
        if outcome in ("failed", "timed out"):
            causes[cause_words(job.cause)] += 1
        if job.state == "done" and job.execution_ms is not None:
            runs[job.template].append(job.execution_ms / 1000)
            wait = wait_seconds(job)
            if wait is not None:
                waits[job.template].append(wait)
    # Dollars as the budget counts them (a hold still held at its estimate); GPU time once known.
    for hold in holds:
        day = window.day_of(hold.created_at)
        if day is None or hold.state is HoldState.REFUNDED:
            continue
        usd[day] += hold.usd
        gpu[day] += hold.gpu_seconds or 0.0
    templates = tuple(
        TemplateTimes(
            name,
            len(runs[name]),
            _median(waits[name]),
            _median(runs[name]),
        )
        for name in sorted(runs, key=lambda n: (-len(runs[n]), n))
    )
    return ServerFigures(
        window,
        {name: tuple(days) for name, days in outcomes.items()},
        tuple(gpu),
        tuple(usd),
        daily_budget,
        templates,
        tuple(sorted(causes.items(), key=lambda c: (-c[1], c[0]))),
    )


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


# ----- reading them -----------------------------------------------------------------------------


class Figures:
    """Reads the stats store and the ledger's rules into the figures above."""

    def __init__(self, store: StatsStore, quotas: QuotaLedger, *, clock: Callable[[], float]):
        self._store = store
        self._quotas = quotas
        self._clock = clock

    @property
    def _reset_hour(self) -> int:
        return self._quotas.config.reset_hour

    async def usage(self, guild_id: int, user_id: int, *, limit: int) -> UsageFigures:
        period = self._quotas.config.period
        window = usage_window(self._clock(), period=period, reset_hour=self._reset_hour)
        holds = await self._store.holds(guild_id, window.start, window.end, user_id=user_id)
        return usage_figures(holds, window, limit=limit, period=period, reset_hour=self._reset_hour)

    async def spend(self, guild_id: int, since: float) -> SpendFigures:
        # No upper bound, as the ledger's own top spenders count: a job accepted a moment ago too.
        holds = await self._store.holds(guild_id, since, math.inf)
        return spend_figures(holds, since=since, until=self._clock())

    async def server(self, guild_id: int, days: int) -> ServerFigures:
        window = window_ending_today(self._clock(), days, reset_hour=self._reset_hour)
        jobs = await self._store.jobs(guild_id, window.start, window.end)
        holds = await self._store.holds(guild_id, window.start, window.end)
        budget = await self._store.daily_budget(guild_id)
        return server_figures(jobs, holds, window, daily_budget=budget)
