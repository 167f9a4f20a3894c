"""What every engine's stores must do, through the interfaces only (SQLite today; PostgreSQL next).

A second engine joins by adding its name to `ENGINES` and a branch to `engine`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from bot.db import Database
from bot.store import Stores, stores_for
from bot.store.audit import AuditEntry
from bot.store.ledger import Block, Hold, LimitScope, Spending

ENGINES = ["sqlite"]
GUILD, OTHER = 100, 200
DM = None


@dataclass
class Engine:
    db: Database
    stores: Stores

    async def job(self, job_id: int) -> None:
        """A job row for a hold to belong to (until the job store moves under bot/store)."""
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO jobs (id, user_id, state, template, request, workflow, created_at, updated_at)"
                " VALUES (?, 1, 'queued', 't', '{}', '{}', 0, 0)",
                (job_id,),
            )


@pytest_asyncio.fixture(params=ENGINES)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    db = await Database.open(tmp_path / "store.db")
    try:
        yield Engine(db, stores_for(db))
    finally:
        await db.close()


def _hold(job_id: int, guild_id: int | None, *, credits: int = 2, bonus: int = 0) -> Hold:
    return Hold(job_id, guild_id, 1, credits, bonus, 0.5, created_at=1000.0 + job_id)


async def _held(engine: Engine, *holds: Hold) -> None:
    for hold in holds:
        await engine.job(hold.job_id)
    async with engine.db.transaction() as tx:
        for hold in holds:
            await engine.stores.ledger.hold(tx, hold)


async def test_a_direct_message_is_counted_apart_from_every_server(engine: Engine) -> None:
    await _held(engine, _hold(1, DM), _hold(2, GUILD), _hold(3, OTHER, credits=5))
    ledger = engine.stores.ledger
    async with engine.db.transaction() as tx:
        assert await ledger.spending(tx, DM, 1, since=0) == Spending(used=2, held=2)
        assert await ledger.spending(tx, OTHER, 1, since=0) == Spending(used=5, held=5)
        assert await ledger.spending(tx, GUILD, 1, since=1002.5) == Spending(0, 0)
        assert await ledger.spent_usd(tx, 0, DM) == 0.5
        assert await ledger.spent_usd_everywhere(tx, 0) == 1.5


async def test_a_hold_is_settled_once_whatever_comes_second(engine: Engine) -> None:
    await _held(engine, _hold(1, GUILD), _hold(2, GUILD), _hold(3, GUILD))
    ledger = engine.stores.ledger
    async with engine.db.transaction() as tx:
        await ledger.capture(tx, 1, at=2000, gpu_seconds=10.0, usd=0.25)
        await ledger.refund(tx, 1, at=2001)
        await ledger.refund(tx, 2, at=2000)
        await ledger.capture(tx, 2, at=2001, gpu_seconds=None, usd=None)
        assert await ledger.held_job_ids(tx) == [3]
        # Captured: its actual cost; refunded: nothing; still held: its estimate.
        assert await ledger.spent_usd(tx, 0, GUILD) == 0.25 + 0.5
        assert await ledger.spending(tx, GUILD, 1, since=0) == Spending(used=4, held=2)
    [spender] = await ledger.top_spenders(GUILD, 0, limit=10)
    assert (spender.jobs, spender.credits, spender.gpu_seconds, spender.usd) == (1, 2, 10.0, 0.25)


async def test_a_capture_without_gpu_time_keeps_the_estimate(engine: Engine) -> None:
    await _held(engine, _hold(1, GUILD))
    async with engine.db.transaction() as tx:
        await engine.stores.ledger.capture(tx, 1, at=2000, gpu_seconds=None, usd=None)
        assert await engine.stores.ledger.spent_usd(tx, 0, GUILD) == 0.5


async def test_bonus_left_counts_grants_less_bonus_spent_by_holds_not_refunded(
    engine: Engine,
) -> None:
    ledger = engine.stores.ledger
    await _held(engine, _hold(1, GUILD, credits=3, bonus=3), _hold(2, GUILD, credits=2, bonus=2))
    async with engine.db.transaction() as tx:
        await ledger.add_grant(tx, GUILD, 1, 10, reason="contest", moderator_id=9, at=1)
        await ledger.add_grant(tx, OTHER, 1, 50, reason="elsewhere", moderator_id=9, at=1)
        await ledger.refund(tx, 2, at=2)
        assert await ledger.bonus_left(tx, GUILD, 1) == 7
        assert await ledger.spending(tx, GUILD, 1, since=0) == Spending(used=0, held=3)


async def test_limits_blocks_resets_and_budgets_are_set_replaced_and_removed(
    engine: Engine,
) -> None:
    ledger = engine.stores.ledger
    async with engine.db.transaction() as tx:
        await ledger.set_limit(tx, GUILD, LimitScope.MEMBER, 1, 5)
        await ledger.set_limit(tx, GUILD, LimitScope.MEMBER, 1, 6)
        await ledger.set_limit(tx, GUILD, LimitScope.ROLE, 501, 40)
        await ledger.set_limit(tx, GUILD, LimitScope.DEFAULT, 0, 9)
        await ledger.remove_limit(tx, GUILD, LimitScope.ROLE, 501)
        assert await ledger.limits(tx, GUILD) == {
            LimitScope.MEMBER: {1: 6},
            LimitScope.DEFAULT: {0: 9},
        }
        assert await ledger.limits(tx, OTHER) == {}

        await ledger.set_block(tx, GUILD, 1, Block("spam", 9, expires_at=500.0), at=100)
        assert await ledger.active_block(tx, GUILD, 1, now=499) == Block("spam", 9, 500.0)
        assert await ledger.active_block(tx, GUILD, 1, now=500) is None
        await ledger.set_block(tx, GUILD, 1, Block("again", 8, expires_at=None), at=600)
        assert await ledger.active_block(tx, GUILD, 1, now=10**9) == Block("again", 8, None)
        assert await ledger.remove_block(tx, GUILD, 1)
        assert not await ledger.remove_block(tx, GUILD, 1)

        assert await ledger.reset_at(tx, GUILD, 1) is None
        await ledger.set_reset(tx, GUILD, 1, at=10)
        await ledger.set_reset(tx, GUILD, 1, at=20)
        assert await ledger.reset_at(tx, GUILD, 1) == 20

        await ledger.set_daily_budget(tx, GUILD, 2.5)
        await ledger.set_daily_budget(tx, GUILD, 3.0)
        assert await ledger.daily_budget(tx, GUILD) == 3.0
        await ledger.remove_daily_budget(tx, GUILD)
        assert await ledger.daily_budget(tx, GUILD) is None


async def test_server_settings_write_only_the_values_named(engine: Engine) -> None:
    rows = engine.stores.guild_settings
    assert await rows.read(GUILD) is None
    async with engine.db.transaction() as tx:
        await rows.write(
            tx, GUILD, {"nsfw_policy": "age_restricted_only", "allowed_channels": (7, 8)}, at=1
        )
        await rows.write(tx, GUILD, {"max_steps": 30}, at=2)
        await rows.write(tx, OTHER, {"allowed_channels": ()}, at=2)
    stored = await rows.read(GUILD)
    assert stored is not None
    assert (stored["nsfw_policy"], stored["allowed_channels"], stored["max_steps"]) == (
        "age_restricted_only",
        (7, 8),
        30,
    )
    assert stored["default_cfg"] is None
    other = await rows.read(OTHER)
    assert other is not None and other["allowed_channels"] == ()


async def test_a_value_for_no_setting_is_refused_before_anything_is_written(
    engine: Engine,
) -> None:
    rows = engine.stores.guild_settings
    with pytest.raises(ValueError, match="not a server setting: colour"):
        async with engine.db.transaction() as tx:
            await rows.write(tx, GUILD, {"max_steps": 30, "colour": "red"}, at=1)
    assert await rows.read(GUILD) is None


async def test_the_audit_trail_reads_back_newest_first_per_server_and_member(
    engine: Engine,
) -> None:
    audit = engine.stores.audit
    async with engine.db.transaction() as tx:
        for n, target in enumerate((1, 2, 1, None)):
            entry = AuditEntry(float(n), 9, f"action{n}", target, "why" if n else None, {"n": n})
            await audit.append(tx, GUILD, entry)
        await audit.append(tx, OTHER, AuditEntry(9.0, 9, "elsewhere", 1, None))
    newest = await audit.newest(GUILD, target_id=None, limit=3)
    assert [e.action for e in newest] == ["action3", "action2", "action1"]
    assert newest[1] == AuditEntry(2.0, 9, "action2", 1, "why", {"n": 2})
    about_one = await audit.newest(GUILD, target_id=1, limit=10)
    assert [e.action for e in about_one] == ["action2", "action0"]
    assert about_one[1].reason is None and about_one[1].legacy_detail == ""
