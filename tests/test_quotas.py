"""The credit ledger on a real database: outcomes, concurrency, tiers, periods, budgets, blocks."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.db import Database
from bot.estimates import DurationModel
from bot.jobs import JobState, Limits
from bot.quotas import (
    Blocked,
    BudgetReached,
    LimitSource,
    QuotaConfig,
    QuotaExceeded,
    QuotaLedger,
    period_start,
)
from bot.services import Services
from cogs.common.render import refusal_text
from tests.conftest import OpenServices, RecordingDelivery, make_settings, wait_for_state
from tests.fakes import fake_runpod as fr
from tests.fakes.fake_runpod import FakeRunPod, Outcome

GUILD, OTHER_GUILD = 100, 200


class Clock:
    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now


def _new(
    services: Services,
    user: int,
    *,
    guild: int = GUILD,
    text: str = "a pony",
    roles: tuple[int, ...] = (),
):
    return services.prepare(text, user_id=user, guild_id=guild, channel_id=1, role_ids=roles)


async def _ledger_totals(db: Database) -> dict[str, int]:
    rows = await db.fetchall("SELECT state, COUNT(*) AS n FROM quota_holds GROUP BY state")
    return {r["state"]: r["n"] for r in rows}


async def test_every_job_outcome_settles_its_hold_exactly_once(
    tmp_path: Path, fake_runpod: FakeRunPod, open_services: OpenServices
) -> None:
    settings = make_settings(tmp_path, fake_runpod, DAILY_CREDITS="50")
    services = await open_services(settings)
    services.jobs.limits = Limits(max_in_flight=10, member_max_in_flight=10, member_max_queued=10)
    fake_runpod.script(
        Outcome(),
        Outcome(status="FAILED", error=fr.ERROR_VALIDATION),
        Outcome(status="TIMED_OUT"),
        Outcome(status="HANG"),  # cancelled by the member
        Outcome(status="HANG"),  # expires at RunPod
        Outcome(status="HANG"),  # still waiting when the bot restarts
    )
    delivery = RecordingDelivery()
    await services.jobs.start(delivery)
    ids = []
    for _ in range(6):
        job = await services.jobs.accept(_new(services, user=1))
        await services.jobs.attach_message(job.id, 1, 1000 + job.id)
        ids.append(job.id)
        await wait_for_state(
            services, job.id, "submitted", "running", "done", "failed", "timed_out"
        )
    done, failed, timed_out, cancel_me, expire_me, restart_me = ids
    for job_id, state in ((done, "done"), (failed, "failed"), (timed_out, "timed_out")):
        await wait_for_state(services, job_id, state)
    await services.jobs.cancel(cancel_me, by_user=1)
    del fake_runpod.jobs[(await services.jobs.get(expire_me)).backend_id]
    await wait_for_state(services, expire_me, "expired")
    balance = await services.quotas.balance(GUILD, 1)
    assert (balance.used, balance.held) == (2, 1), "the delivered job and the one still running"
    await services.close()

    fake_runpod.finish(next(j.id for j in fake_runpod.jobs.values() if j.status == "IN_QUEUE"))
    services = await open_services(settings)
    delivery = RecordingDelivery()
    await services.jobs.start(delivery)
    await delivery.wait(restart_me)
    await wait_for_state(services, restart_me, "done")
    totals = await _ledger_totals(services.db)
    assert totals == {"captured": 2, "refunded": 4}
    balance = await services.quotas.balance(GUILD, 1)
    assert (balance.used, balance.held, balance.remaining) == (2, 0, 48)
    captured = await services.db.fetchall(
        "SELECT gpu_seconds, usd_actual FROM quota_holds WHERE state = 'captured'"
    )
    assert all(r["gpu_seconds"] is not None and r["usd_actual"] is not None for r in captured)
    await services.close()


async def test_200_concurrent_reservations_never_exceed_a_limit(services: Services) -> None:
    services.jobs.limits = Limits(member_max_queued=100)
    await services.quotas.set_limit(GUILD, 9, scope="default", target_id=0, credits=5)

    async def attempt(user: int) -> bool:
        try:
            await services.jobs.accept(_new(services, user))
        except QuotaExceeded:
            return False
        return True

    results = await asyncio.gather(*(attempt(user) for user in range(20) for _ in range(10)))
    assert sum(results) == 20 * 5
    rows = await services.db.fetchall(
        "SELECT user_id, SUM(credits) AS credits FROM quota_holds GROUP BY user_id"
    )
    assert {r["credits"] for r in rows} == {5} and len(rows) == 20
    assert (await services.db.fetchone("SELECT COUNT(*) FROM jobs"))[0] == 100, (
        "refusals store no job"
    )


async def test_the_best_role_tier_wins_and_a_member_override_beats_it(services: Services) -> None:
    quotas = services.quotas
    await quotas.set_limit(GUILD, 9, scope="default", target_id=0, credits=15)
    await quotas.set_limit(GUILD, 9, scope="role", target_id=501, credits=10)
    await quotas.set_limit(GUILD, 9, scope="role", target_id=502, credits=30)
    assert (await quotas.balance(GUILD, 1, [501, 502])).limit == 30
    assert (await quotas.balance(GUILD, 1, [501])).limit == 10, (
        "a tier can also be lower than the default"
    )
    assert (await quotas.balance(GUILD, 1, [777])).limit == 15
    assert (await quotas.balance(OTHER_GUILD, 1, [502])).limit == 25, (
        "the bot default in another server"
    )
    tier = await quotas.balance(GUILD, 1, [501, 502])
    assert (tier.limit_source, tier.limit_role_id) == (LimitSource.ROLE, 502)
    await quotas.set_limit(GUILD, 9, scope="member", target_id=1, credits=3)
    balance = await quotas.balance(GUILD, 1, [501, 502])
    assert (balance.limit, balance.limit_source) == (3, LimitSource.MEMBER)
    await quotas.set_limit(GUILD, 9, scope="member", target_id=1, credits=None)
    assert (await quotas.balance(GUILD, 1, [502])).limit == 30


async def test_allowances_reset_at_the_configured_hour(db: Database) -> None:
    clock = Clock(datetime(2026, 11, 28, 5, 59, tzinfo=UTC))
    ledger = QuotaLedger(
        db, QuotaConfig(daily_credits=2, reset_hour=6), DurationModel(), clock=clock
    )
    await _hold(db, ledger, job_id=1, cost=2, at=clock)
    before = await ledger.balance(GUILD, 1)
    assert (
        before.remaining == 0
        and before.resets_at == datetime(2026, 11, 28, 6, tzinfo=UTC).timestamp()
    )
    clock.now = datetime(2026, 11, 28, 6, 0, 1, tzinfo=UTC).timestamp()
    assert (await ledger.balance(GUILD, 1)).remaining == 2


def test_weekly_periods_start_on_monday_at_the_reset_hour() -> None:
    sunday = datetime(2026, 11, 29, 23, 0, tzinfo=UTC).timestamp()
    monday_early = datetime(2026, 11, 30, 2, 0, tzinfo=UTC).timestamp()
    assert (
        period_start(sunday, period="weekly", reset_hour=3)
        == datetime(2026, 11, 23, 3, tzinfo=UTC).timestamp()
    )
    assert (
        period_start(monday_early, period="weekly", reset_hour=3)
        == datetime(2026, 11, 23, 3, tzinfo=UTC).timestamp()
    )
    assert (
        period_start(monday_early, period="weekly", reset_hour=1)
        == datetime(2026, 11, 30, 1, tzinfo=UTC).timestamp()
    )


async def _hold(
    db: Database, ledger: QuotaLedger, *, job_id: int, cost: int, at: Clock, user: int = 1
) -> None:
    """A job row plus its hold, as JobManager.accept would make them."""
    from tests.test_quotas_support import new_job

    async with db.transaction() as tx:
        await tx.insert(
            "INSERT INTO jobs (id, user_id, guild_id, state, template, request, workflow, cost, created_at, updated_at)"
            " VALUES (?, ?, ?, 'queued', 'pony-v6-xl', ?, '{}', ?, ?, ?)",
            (job_id, user, GUILD, new_job(user, cost).request.to_json(), cost, at.now, at.now),
        )
        await ledger.reserve(tx, job_id, new_job(user, cost, guild=GUILD))


async def test_a_blocked_member_is_refused_with_the_reason_until_it_expires(
    services: Services,
) -> None:
    clock = Clock(datetime(2026, 11, 28, 12, tzinfo=UTC))
    services.quotas._clock = clock
    await services.quotas.block(GUILD, 9, 1, "spamming the channel", duration=3600)
    with pytest.raises(Blocked) as caught:
        await services.jobs.accept(_new(services, 1))
    assert caught.value.block.expires_at == clock.now + 3600
    said = refusal_text(caught.value)
    assert "spamming the channel" in said and f"<t:{int(clock.now + 3600)}:R>" in said
    assert (await services.db.fetchone("SELECT COUNT(*) FROM jobs"))[0] == 0
    await services.jobs.accept(
        _new(services, 1, guild=OTHER_GUILD)
    )  # other servers are not affected
    clock.now += 3601
    await services.jobs.accept(_new(services, 1))


async def test_bonus_credits_are_spent_after_the_allowance_and_come_back_on_refund(
    services: Services,
) -> None:
    quotas = services.quotas
    await quotas.set_limit(GUILD, 9, scope="member", target_id=1, credits=1)
    await quotas.grant(GUILD, 9, 1, 2, "won the contest")
    jobs = [await services.jobs.accept(_new(services, 1)) for _ in range(3)]
    assert (await quotas.balance(GUILD, 1)).remaining == 0
    with pytest.raises(QuotaExceeded) as caught:
        await services.jobs.accept(_new(services, 1))
    assert (caught.value.cost, caught.value.remaining) == (1, 0)
    said = refusal_text(caught.value)
    assert "you have 0 left" in said and "come back <t:" in said
    await services.jobs.attach_message(jobs[2].id, 1, 1000)
    await services.jobs.cancel(jobs[2].id, by_user=1)
    balance = await quotas.balance(GUILD, 1)
    assert (balance.remaining, balance.bonus) == (1, 1)


async def test_a_reset_gives_the_allowance_back(services: Services) -> None:
    await services.quotas.set_limit(GUILD, 9, scope="default", target_id=0, credits=1)
    await services.jobs.accept(_new(services, 1))
    assert (await services.quotas.balance(GUILD, 1)).remaining == 0
    await services.quotas.reset(GUILD, 9, 1)
    assert (await services.quotas.balance(GUILD, 1)).remaining == 1


async def test_budgets_under_concurrent_load_are_never_exceeded(
    tmp_path: Path, fake_runpod: FakeRunPod, open_services: OpenServices
) -> None:
    settings = make_settings(tmp_path, fake_runpod, DAILY_BUDGET_USD="0.02", DAILY_CREDITS="100")
    services = await open_services(settings)
    services.jobs.limits = Limits(member_max_queued=100)
    estimate = services.quotas.estimate_usd(_new(services, 1).request)
    expected = int(0.02 // estimate)

    async def attempt(user: int) -> str:
        try:
            await services.jobs.accept(_new(services, user))
        except BudgetReached as refusal:
            return refusal_text(refusal)
        return "accepted"

    results = await asyncio.gather(*(attempt(user % 7) for user in range(40)))
    assert results.count("accepted") == expected >= 2
    refusal = next(r for r in results if r != "accepted")
    assert "bot's GPU budget for today is used up" in refusal and "reopens <t:" in refusal
    status = await services.quotas.budget_status(GUILD)
    assert status.total_spent_usd <= 0.02
    await services.close()


async def test_a_server_budget_stops_only_that_server(services: Services) -> None:
    estimate = services.quotas.estimate_usd(_new(services, 1).request)
    await services.quotas.set_budget(GUILD, 9, estimate * 2.5)
    services.jobs.limits = Limits(member_max_queued=100)
    await services.jobs.accept(_new(services, 1))
    await services.jobs.accept(_new(services, 2))
    with pytest.raises(BudgetReached) as caught:
        await services.jobs.accept(_new(services, 3))
    assert "This server's GPU budget" in refusal_text(caught.value)
    await services.jobs.accept(_new(services, 3, guild=OTHER_GUILD))


async def test_every_moderator_action_is_audited(services: Services) -> None:
    from bot import audit

    quotas = services.quotas
    await quotas.set_limit(GUILD, 9, scope="member", target_id=1, credits=4)
    await quotas.grant(GUILD, 9, 1, 3, "helped out")
    await quotas.reset(GUILD, 9, 1)
    await quotas.block(GUILD, 9, 1, "rude")
    assert await quotas.unblock(GUILD, 9, 1)
    await quotas.set_budget(GUILD, 9, 1.5)
    entries = await audit.entries(services.db, GUILD)
    assert [e.action for e in entries] == [
        "budget",
        "unblock",
        "block",
        "reset",
        "grant",
        "limit.member",
    ]
    assert entries[4].reason == "helped out" and entries[3].reason is None
    assert await audit.entries(services.db, OTHER_GUILD) == []
    assert [e.action for e in await audit.entries(services.db, GUILD, target_id=1)][:2] == [
        "unblock",
        "block",
    ]


def test_quota_config_comes_from_settings(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        DAILY_CREDITS="7",
        QUOTA_PERIOD="weekly",
        GPU_PRICE_PER_SECOND="0.001",
        RUNPOD_ENDPOINTS="flux=abc123",
        ENDPOINT_GPU_PRICES="flux=0.002",
    )
    config = QuotaConfig.from_settings(settings)
    assert dataclasses.astuple(config) == (7, "weekly", 0, 0.001, 0.0, {"flux": 0.002})
    assert (config.price_on("flux"), config.price_on("default")) == (0.002, 0.001)
    assert JobState.DONE  # the ledger settles on the job manager's outcomes
