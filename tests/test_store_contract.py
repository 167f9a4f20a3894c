"""What every engine's stores must do, through the interfaces only: SQLite and PostgreSQL.

An engine joins by adding its name to `ENGINES` and a branch to `engine`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.db import Database
from bot.images import ImageFile
from bot.jobs import Job, JobState, NewJob
from bot.postgres import PostgresDatabase
from bot.prompt import GenerationRequest
from bot.store import Stores, stores_for
from bot.store.audit import AuditEntry
from bot.store.ledger import Block, Hold, LimitScope, Spending
from tests.postgres_server import fresh_database

ENGINES = ["sqlite", "postgresql"]
GUILD, OTHER = 100, 200
DM = None


@dataclass
class Engine:
    db: Database | PostgresDatabase
    stores: Stores

    async def job(self, job_id: int) -> None:
        """A job row for a hold to belong to (until the job store moves under bot/store)."""
        placeholder = "?" if isinstance(self.db, Database) else "$1"
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO jobs (id, user_id, state, template, request, workflow, created_at, updated_at)"
                f" VALUES ({placeholder}, 1, 'queued', 't', '{{}}', '{{}}', 0, 0)",
                (job_id,),
            )


@pytest_asyncio.fixture(params=ENGINES)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    if request.param == "sqlite":
        db = await Database.open(tmp_path / "store.db")
        try:
            yield Engine(db, stores_for(db))
        finally:
            await db.close()
        return
    async with fresh_database(request.getfixturevalue("postgres_server")) as dsn:
        pg = await PostgresDatabase.open(dsn)
        try:
            yield Engine(pg, stores_for(pg))
        finally:
            await pg.close()


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


# ----- gallery and stats (charts) ---------------------------------------------------------------


async def test_an_image_is_claimed_for_the_gallery_once_and_a_removal_stays(
    engine: Engine,
) -> None:
    await engine.job(1)
    gallery = engine.stores.gallery
    claim = {"shared_by": 7, "channel_id": 9, "at": 1000.0, "stale_before": 0.0}
    first = await gallery.claim(GUILD, 1, 0, **claim)
    assert first is not None and (first.job_id, first.image_index, first.message_id) == (1, 0, None)
    assert await gallery.claim(GUILD, 1, 0, **claim) is None
    assert (await gallery.claim(GUILD, 1, 1, **claim)) is not None  # another image of the job
    await gallery.posted(first.id, 555)
    assert (await gallery.of_image(1, 0)).message_id == 555
    async with engine.db.transaction() as tx:
        assert await gallery.remove(tx, first.id, removed_by=3, at=2000.0)
    async with engine.db.transaction() as tx:
        assert not await gallery.remove(tx, first.id, removed_by=3, at=2001.0)
    removed = await gallery.get(first.id)
    assert (removed.removed_by, removed.removed_at) == (3, 2000.0)
    late = {**claim, "at": 5000.0, "stale_before": 4000.0}
    assert await gallery.claim(GUILD, 1, 0, **late) is None  # removed images stay out


async def test_a_claim_left_by_a_crash_is_taken_over_and_a_failed_post_released(
    engine: Engine,
) -> None:
    await engine.job(1)
    gallery = engine.stores.gallery
    left = await gallery.claim(GUILD, 1, 0, shared_by=7, channel_id=9, at=1000.0, stale_before=0)
    fresh = {"shared_by": 8, "channel_id": 9, "at": 1100.0}
    assert await gallery.claim(GUILD, 1, 0, **fresh, stale_before=900.0) is None  # still young
    taken = await gallery.claim(GUILD, 1, 0, **fresh, stale_before=1050.0)
    assert taken is not None and (taken.id, taken.shared_by) == (left.id, 8)
    await gallery.release(taken.id)
    assert await gallery.of_image(1, 0) is None


async def test_stats_read_one_servers_holds_and_jobs_in_the_window(engine: Engine) -> None:
    await _held(engine, _hold(1, GUILD, credits=3, bonus=1), _hold(2, OTHER), _hold(3, GUILD))
    async with engine.db.transaction() as tx:
        await engine.stores.ledger.refund(tx, 3, at=1010.0)
    stats = engine.stores.stats
    holds = await stats.holds(GUILD, 1000.0, 1003.5)
    assert [(h.credits, h.bonus_credits, h.state.value, h.usd) for h in holds] == [
        (3, 1, "held", 0.5),
        (2, 0, "refunded", 0.5),
    ]
    assert await stats.holds(GUILD, 1000.0, 1003.5, user_id=2) == []
    assert await stats.holds(GUILD, 1001.5, 1003.5) == holds[1:]
    assert [j.state for j in await stats.jobs(0, -1.0, 1.0)] == []
    assert await stats.daily_budget(GUILD) is None


def _new_job(user_id: int, guild_id: int | None, **overrides: object) -> NewJob:
    request = GenerationRequest("pony", "a fox", "", "a fox", "", seed=1, width=64, height=64)
    values: dict[str, object] = {
        "user_id": user_id,
        "guild_id": guild_id,
        "channel_id": 5,
        "request": request,
        "workflow": {"3": {"class_type": "KSampler", "inputs": {}}},
        **overrides,
    }
    return NewJob(**values)


async def _add(engine: Engine, new: NewJob, at: float = 1000.0) -> Job:
    async with engine.db.transaction() as tx:
        return await engine.stores.jobs.add(tx, new, at=at)


async def _move(
    engine: Engine, job: Job, *from_states: JobState, to: JobState, **fields: object
) -> tuple[JobState, Job] | None:
    async with engine.db.transaction() as tx:
        return await engine.stores.jobs.change_state(
            tx, job.id, set(from_states), to, fields=fields, at=2000.0, detail="why"
        )


async def test_a_job_added_reads_back_with_its_inputs_endpoint_and_first_event(
    engine: Engine,
) -> None:
    new = _new_job(1, GUILD, input_images=(("in.png", b"png"),), role_ids=(7,), endpoint="flux")
    job = await _add(engine, new)
    stored = await engine.stores.jobs.get(job.id)
    assert stored == job and (stored.state, stored.endpoint, stored.role_ids) == (
        JobState.ACCEPTED,
        "flux",
        (7,),
    )
    assert stored.workflow == new.workflow and stored.request == new.request
    assert await engine.stores.jobs.inputs(job.id) == [("in.png", b"png")]
    assert await engine.stores.jobs.events(job.id) == [(None, "accepted", None)]


async def test_a_state_change_is_a_compare_and_set_that_records_its_event(engine: Engine) -> None:
    job = await _add(engine, _new_job(1, GUILD))
    assert await _move(engine, job, JobState.QUEUED, to=JobState.SUBMITTING) is None
    assert (await engine.stores.jobs.get(job.id)).state is JobState.ACCEPTED, "nothing written"
    changed = await _move(engine, job, JobState.ACCEPTED, to=JobState.QUEUED, message_id=9)
    assert changed is not None
    before, after = changed
    assert before is JobState.ACCEPTED and (after.state, after.message_id) == (JobState.QUEUED, 9)
    assert (await engine.stores.jobs.events(job.id))[-1] == ("accepted", "queued", "why")
    with pytest.raises(ValueError, match="not a field a state change sets: cost"):
        await _move(engine, after, JobState.QUEUED, to=JobState.SUBMITTING, cost=0)
    assert (await engine.stores.jobs.get(job.id)).state is JobState.QUEUED


async def test_outputs_are_kept_in_order_until_dropped_and_a_member_is_told_once(
    engine: Engine,
) -> None:
    job = await _add(engine, _new_job(1, GUILD))
    images = [ImageFile("b.png", "image/png", b"2"), ImageFile("a.png", "image/png", b"1")]
    async with engine.db.transaction() as tx:
        await engine.stores.jobs.add_outputs(tx, job.id, images)
        await engine.stores.jobs.mark_notified(tx, job.id, at=10.0)
        await engine.stores.jobs.mark_notified(tx, job.id, at=20.0)
    assert await engine.stores.jobs.outputs(job.id) == images
    assert (await engine.stores.jobs.get(job.id)).delivered_at == 10.0
    async with engine.db.transaction() as tx:
        await engine.stores.jobs.drop_outputs(tx, job.id)
        await engine.stores.jobs.drop_inputs(tx, job.id)
    assert await engine.stores.jobs.outputs(job.id) == []


async def test_unfinished_active_recent_and_ended_jobs_are_found_by_member_and_server(
    engine: Engine,
) -> None:
    here = await _add(engine, _new_job(1, GUILD))
    direct = await _add(engine, _new_job(1, DM))
    other = await _add(engine, _new_job(2, OTHER))
    await _move(engine, other, JobState.ACCEPTED, to=JobState.FAILED)
    async with engine.db.transaction() as tx:
        assert await engine.stores.jobs.unfinished_count(tx, 1) == 2, "every server together"
        ended = await engine.stores.jobs.ended_among(tx, [here.id, direct.id, other.id])
    assert [job.id for job in ended] == [other.id]
    assert [j.id for j in await engine.stores.jobs.active(DM, None)] == [direct.id]
    assert [j.id for j in await engine.stores.jobs.active(GUILD, 2)] == []
    assert [j.id for j in await engine.stores.jobs.recent(OTHER, 2, 10)] == [other.id]
    unfinished = await engine.stores.jobs.unfinished(undelivered=False)
    assert [j.id for j in unfinished] == [here.id, direct.id]
    undelivered = await engine.stores.jobs.unfinished(undelivered=True)
    assert [j.id for j in undelivered] == [here.id, direct.id, other.id]


async def test_a_servers_recent_jobs_come_newest_first_for_one_member_or_everyone(
    engine: Engine,
) -> None:
    first = await _add(engine, _new_job(1, GUILD))
    second = await _add(engine, _new_job(2, GUILD))
    third = await _add(engine, _new_job(1, GUILD))
    await _add(engine, _new_job(1, OTHER))
    jobs = engine.stores.jobs
    assert [j.id for j in await jobs.recent(GUILD, None, 10)] == [third.id, second.id, first.id]
    assert [j.id for j in await jobs.recent(GUILD, None, 2, 1)] == [second.id, first.id]
    assert [j.id for j in await jobs.recent(GUILD, 1, 10)] == [third.id, first.id]
    assert [j.id for j in await jobs.recent(GUILD, 1, 1, 1)] == [first.id]


async def test_submissions_are_counted_and_run_times_read_oldest_first(engine: Engine) -> None:
    first = await _add(engine, _new_job(1, GUILD))
    second = await _add(engine, _new_job(2, GUILD))
    for job in (first, second):
        await _move(engine, job, JobState.ACCEPTED, to=JobState.QUEUED)
    await _move(engine, first, JobState.QUEUED, to=JobState.SUBMITTING)
    await _move(engine, first, JobState.SUBMITTING, to=JobState.QUEUED)
    await _move(engine, first, JobState.QUEUED, to=JobState.SUBMITTING, execution_ms=1500)
    await _move(engine, second, JobState.QUEUED, to=JobState.SUBMITTING, execution_ms=900)
    assert await engine.stores.jobs.submit_attempts(first.id) == 2
    assert [ms for _, _, ms in await engine.stores.jobs.durations(10)] == [1500, 900]
    assert [ms for _, _, ms in await engine.stores.jobs.durations(1)] == [900]


async def test_a_member_racing_to_queue_more_jobs_than_allowed_gets_only_the_limit(
    engine: Engine,
) -> None:
    limit = 3

    async def accept(n: int) -> Job | None:
        async def body(tx: Any) -> Job | None:
            if await engine.stores.jobs.unfinished_count(tx, 1) >= limit:
                return None
            return await engine.stores.jobs.add(tx, _new_job(1, GUILD), at=float(n))

        return await engine.db.write(body)

    accepted = [job for job in await asyncio.gather(*(accept(n) for n in range(10))) if job]
    assert len(accepted) == limit
    async with engine.db.transaction() as tx:
        assert await engine.stores.jobs.unfinished_count(tx, 1) == limit


async def test_preferences_change_only_what_is_named_and_clear_back_to_none(
    engine: Engine,
) -> None:
    rows = engine.stores.preferences
    assert await rows.read(1) is None
    async with engine.db.transaction() as tx:
        await rows.write(tx, 1, {"aspect": "16:9", "count": 2, "ping": False}, at=10.0)
    async with engine.db.transaction() as tx:
        await rows.write(tx, 1, {"dm": True}, at=11.0)
    stored = await rows.read(1)
    assert stored == {
        "aspect": "16:9",
        "negative": None,
        "count": 2,
        "style": None,
        "ping": False,
        "dm": True,
    }
    async with engine.db.transaction() as tx:
        await rows.clear(tx, 1, ["aspect", "ping"])
    assert await rows.read(1) == {**stored, "aspect": None, "ping": None}
    assert await rows.read(2) is None


async def test_an_unknown_preference_is_refused_and_nothing_is_written(engine: Engine) -> None:
    rows = engine.stores.preferences
    with pytest.raises(ValueError, match="not a preference: colour"):
        async with engine.db.transaction() as tx:
            await rows.write(tx, 1, {"aspect": "1:1", "colour": "red"}, at=1.0)
    assert await rows.read(1) is None


async def test_a_servers_styles_are_added_once_listed_by_name_and_removed(engine: Engine) -> None:
    rows = engine.stores.styles
    definition = {"prompt": "watercolor of {prompt}", "loras": [{"name": "a", "weight": 0.5}]}
    async with engine.db.transaction() as tx:
        assert await rows.add(tx, GUILD, "watercolor", definition, by=1, at=1.0)
        assert await rows.add(tx, GUILD, "noir", {"prompt": "noir {prompt}"}, by=1, at=2.0)
        assert not await rows.add(tx, GUILD, "noir", {"prompt": "other {prompt}"}, by=2, at=3.0)
        assert list(await rows.all(GUILD, tx=tx)) == ["noir", "watercolor"]
    assert await rows.all(GUILD) == {"noir": {"prompt": "noir {prompt}"}, "watercolor": definition}
    assert await rows.all(OTHER) == {}
    async with engine.db.transaction() as tx:
        assert await rows.remove(tx, GUILD, "noir") == {"prompt": "noir {prompt}"}
        assert await rows.remove(tx, GUILD, "noir") is None
    assert list(await rows.all(GUILD)) == ["watercolor"]


async def test_a_servers_blocked_words_and_workflows_turned_off_read_back_as_lists(
    engine: Engine,
) -> None:
    rows = engine.stores.guild_settings
    async with engine.db.transaction() as tx:
        await rows.write(
            tx,
            GUILD,
            {"blocked_words": ("kitten", "café"), "disabled_workflows": ("sdxl",)},
            at=1,
        )
    stored = await rows.read(GUILD)
    assert stored is not None
    assert stored["blocked_words"] == ("kitten", "café")
    assert stored["disabled_workflows"] == ("sdxl",)
