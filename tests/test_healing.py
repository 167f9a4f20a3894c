"""Faults the running bot meets, survived without a restart: each test states what a member or
operator would notice — every job still ends, no slot leaks, no credit is lost or doubled, new
jobs still run afterwards.

All through the real parts: the bot's SQLite file with a second real connection holding its write
lock, SQLite's own "database or disk is full", the fake RunPod refusing connections or answering
garbage, and the real job manager.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import pytest
import pytest_asyncio

from bot.db import TransientRetry
from bot.images import ImageFile
from bot.jobs import DatabaseBusy, Job, JobError, JobManager, JobState, Limits, MemberBusy
from bot.polling import Timing
from bot.services import Services
from tests.conftest import FAST, FAST_RETRY, OpenServices, RecordingDelivery, wait_for_state
from tests.fakes import fake_runpod as fr
from tests.fakes.fake_runpod import FakeRunPod, Outcome
from tests.test_jobs import _job, _submit

# Reconciler passes every 20 ms; an accepted job gets 50 ms to have its message attached.
HEALING = dataclasses.replace(FAST, reconcile_interval=0.02, accept_grace=0.05)
# Three quick tries, then the manager's own fallback: so tests see both the retry and the give-up.
IMPATIENT = TransientRetry(attempts=3, base_delay=0.001, max_delay=0.005)


@pytest_asyncio.fixture
async def healing(open_services: OpenServices) -> Services:
    """The real services with a short busy timeout, quick database retries and a fast reconciler."""
    services = await open_services(timing=HEALING)
    services.db.retry = IMPATIENT
    await services.db.set_busy_timeout(10)
    return services


class OtherProcess:
    """A second real SQLite connection to the bot's file, as an operator's `sqlite3` shell or a
    backup would open; it runs in a thread so the bot's event loop never waits on it."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(
            path, timeout=10, isolation_level=None, check_same_thread=False
        )

    async def take_write_lock(self) -> None:
        await asyncio.to_thread(self._conn.execute, "BEGIN IMMEDIATE")

    async def release_write_lock(self) -> None:
        await asyncio.to_thread(self._conn.execute, "ROLLBACK")

    def close(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
        self._conn.close()


@pytest.fixture
def other_process(healing: Services) -> Iterator[OtherProcess]:
    holder = OtherProcess(healing.db.path)
    yield holder
    holder.close()


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (in small steps) until `condition` holds: state the bot exposes, never a duration."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def refused_for_a_while(services: Services, *, give_ups: int = 2) -> None:
    """Wait until the bot has been refused and given up (after its quick retries) a few times."""
    start = services.db.transient_errors
    await until(lambda: services.db.transient_errors >= start + give_ups * IMPATIENT.attempts)


async def assert_every_credit_settled_once(services: Services) -> None:
    """Each ended job's hold went exactly one way: captured if delivered, refunded otherwise."""
    rows = await services.db.fetchall(
        "SELECT j.id, j.state, h.state AS hold, h.settled_at FROM jobs j "
        "JOIN quota_holds h ON h.job_id = j.id"
    )
    assert rows, "jobs were charged"
    for row in rows:
        expected = "captured" if row["state"] == "done" else "refunded"
        assert (row["hold"], row["settled_at"] is not None) == (expected, True), dict(row)


def assert_no_slot_held(services: Services) -> None:
    assert services.jobs._queue.out == 0, "every slot is free once every job has ended"


async def assert_new_jobs_still_run(services: Services, delivery: RecordingDelivery) -> None:
    job_id = await _submit(services, _job(services, user=99))
    await delivery.wait(job_id)
    assert (await wait_for_state(services, job_id, "done")).state is JobState.DONE


# ----- case 1: a transient database error never wedges the queue ------------------------------


async def test_a_write_lock_held_by_another_process_when_a_429_sends_the_job_back_only_delays_it(
    healing: Services,
    other_process: OtherProcess,
    fake_runpod: FakeRunPod,
    delivery: RecordingDelivery,
) -> None:
    # RunPod refuses the first /run with 429s; the last one is answered only once the lock is held,
    # so putting the job back in the queue (and sending it again) meets a locked database.
    answer_last_429 = asyncio.Event()
    fake_runpod.inject(
        "run",
        *[fr.http(429, retry_after=0)] * (FAST_RETRY.attempts - 1),
        fr.http(429, retry_after=0, gate=answer_last_429),
    )
    await healing.jobs.start(delivery)
    job_id = await _submit(healing, _job(healing))
    await fake_runpod.wait_for_requests("run", FAST_RETRY.attempts)
    await other_process.take_write_lock()
    answer_last_429.set()
    await refused_for_a_while(healing)
    assert (await healing.jobs.get(job_id)).state is JobState.SUBMITTING  # nothing half-applied
    await other_process.release_write_lock()

    await delivery.wait(job_id)
    assert (await wait_for_state(healing, job_id, "done")).state is JobState.DONE
    assert len(fake_runpod.jobs) == 1, "RunPod ran it once"
    assert len(delivery.delivered[job_id]) == 1
    assert_no_slot_held(healing)
    await assert_every_credit_settled_once(healing)
    await assert_new_jobs_still_run(healing, delivery)


async def test_jobs_dispatched_while_another_process_holds_the_write_lock_run_once_it_lets_go(
    healing: Services, other_process: OtherProcess, delivery: RecordingDelivery
) -> None:
    healing.jobs.limits = Limits(max_in_flight=1, member_max_in_flight=1, member_max_queued=4)
    waiting = [await _submit(healing, _job(healing, user=user)) for user in (1, 2, 3)]
    await other_process.take_write_lock()
    await healing.jobs.start(delivery)
    await refused_for_a_while(healing, give_ups=3)
    for job_id in waiting:
        assert (await healing.jobs.get(job_id)).state is JobState.QUEUED
    await other_process.release_write_lock()

    for job_id in waiting:
        await delivery.wait(job_id)
        assert (await wait_for_state(healing, job_id, "done")).state is JobState.DONE
    assert_no_slot_held(healing)
    await assert_every_credit_settled_once(healing)
    await assert_new_jobs_still_run(healing, delivery)


async def test_a_lock_while_the_progress_message_is_recorded_does_not_leave_the_job_starting(
    healing: Services, other_process: OtherProcess, delivery: RecordingDelivery
) -> None:
    await healing.jobs.start(delivery)
    job = await healing.jobs.accept(_job(healing))
    await other_process.take_write_lock()
    assert await healing.jobs.attach_message(job.id, 100, 500) is None  # kept, not lost
    with pytest.raises(JobError, match="try again"):
        await healing.jobs.cancel(job.id, by_user=1)
    await other_process.release_write_lock()

    await delivery.wait(job.id)
    done = await wait_for_state(healing, job.id, "done")
    assert (done.channel_id, done.message_id) == (100, 500), "shown in its own progress message"
    await assert_every_credit_settled_once(healing)


async def test_a_job_withdrawn_during_a_lock_is_refunded_once_it_lets_go_and_never_runs(
    healing: Services,
    other_process: OtherProcess,
    fake_runpod: FakeRunPod,
    delivery: RecordingDelivery,
) -> None:
    await healing.jobs.start(delivery)
    job = await healing.jobs.accept(_job(healing))
    await other_process.take_write_lock()
    await healing.jobs.abandon(job.id, "its progress message could not be posted")
    await refused_for_a_while(healing)
    await other_process.release_write_lock()

    withdrawn = await wait_for_state(healing, job.id, "cancelled")
    assert withdrawn.error == "its progress message could not be posted"
    await assert_every_credit_settled_once(healing)
    assert fake_runpod.requests_for("run") == []


async def test_imagine_during_a_long_lock_is_refused_with_a_sentence_and_charges_nothing(
    healing: Services, other_process: OtherProcess
) -> None:
    await other_process.take_write_lock()
    with pytest.raises(DatabaseBusy, match="try again"):
        await healing.jobs.accept(_job(healing))
    await other_process.release_write_lock()
    assert (await healing.db.fetchone("SELECT COUNT(*) FROM jobs"))[0] == 0
    assert (await healing.db.fetchone("SELECT COUNT(*) FROM quota_holds"))[0] == 0


async def test_cancel_during_a_lock_says_try_again_and_changes_nothing(
    healing: Services,
    other_process: OtherProcess,
    fake_runpod: FakeRunPod,
    delivery: RecordingDelivery,
) -> None:
    fake_runpod.script(Outcome(status="HANG"))
    await healing.jobs.start(delivery)
    job_id = await _submit(healing, _job(healing))
    await wait_for_state(healing, job_id, "submitted")
    await other_process.take_write_lock()
    with pytest.raises(DatabaseBusy, match="nothing was changed"):
        await healing.jobs.cancel(job_id, by_user=1)
    assert fake_runpod.requests_for("cancel") == []
    await other_process.release_write_lock()

    cancelled = await healing.jobs.cancel(job_id, by_user=1)
    assert cancelled.state is JobState.CANCELLED
    await assert_every_credit_settled_once(healing)
    assert_no_slot_held(healing)


class LockedAfterShowing(RecordingDelivery):
    """Shows the images, and in that moment another process takes the database's write lock."""

    def __init__(self, other: OtherProcess) -> None:
        super().__init__()
        self._other = other

    async def deliver(self, job: Job, images: Sequence[ImageFile]) -> None:
        await self._other.take_write_lock()
        await super().deliver(job, images)


async def test_a_lock_just_after_the_images_are_shown_charges_once_and_never_posts_twice(
    healing: Services, other_process: OtherProcess
) -> None:
    delivery = LockedAfterShowing(other_process)
    # No reconciler passes: every refusal counted below is one of the delivery's own.
    healing.jobs.timing = dataclasses.replace(HEALING, reconcile_interval=3600)
    await healing.jobs.start(delivery)
    job_id = await _submit(healing, _job(healing))
    await delivery.wait(job_id)
    # Longer than delivery's patience with crashes: a refusing database is not a crash.
    await refused_for_a_while(healing, give_ups=HEALING.max_delivery_attempts + 1)
    assert (await healing.jobs.get(job_id)).state is JobState.DELIVERING
    await other_process.release_write_lock()

    assert (await wait_for_state(healing, job_id, "done")).state is JobState.DONE
    assert len(delivery.delivered[job_id]) == 1
    await assert_every_credit_settled_once(healing)


async def test_a_full_disk_while_the_images_are_stored_only_delays_the_job(
    healing: Services, fake_runpod: FakeRunPod, delivery: RecordingDelivery
) -> None:
    fake_runpod.script(Outcome(status="HANG", noise=True))
    await healing.jobs.start(delivery)
    job_id = await _submit(healing, _job(healing))
    runpod_id = (await wait_for_state(healing, job_id, "submitted")).backend_id
    # SQLite's own "database or disk is full". The limit is the connection's, so it is set on the
    # bot's connection: from a second one it would bind only that one.
    pages = (await healing.db.fetchone("PRAGMA page_count"))[0]
    usual = (await healing.db.fetchone("PRAGMA max_page_count"))[0]
    await healing.db.fetchone(f"PRAGMA max_page_count = {pages}")
    fake_runpod.finish(runpod_id)
    await refused_for_a_while(healing)
    assert (await healing.jobs.get(job_id)).state is JobState.SUBMITTED  # nothing half-applied
    await healing.db.fetchone(f"PRAGMA max_page_count = {usual}")

    await delivery.wait(job_id)
    assert (await wait_for_state(healing, job_id, "done")).state is JobState.DONE
    assert len(delivery.delivered[job_id]) == 1
    assert_no_slot_held(healing)
    await assert_every_credit_settled_once(healing)
    await assert_new_jobs_still_run(healing, delivery)


# ----- RunPod unreachable for a moment ---------------------------------------------------------


async def test_runpod_unreachable_for_a_moment_ends_every_job_and_frees_every_slot(
    healing: Services, fake_runpod: FakeRunPod, delivery: RecordingDelivery
) -> None:
    fake_runpod.script(Outcome(status="HANG"))
    await healing.jobs.start(delivery)
    at_runpod = await _submit(healing, _job(healing, user=1))
    runpod_id = (await wait_for_state(healing, at_runpod, "submitted")).backend_id
    await fake_runpod.go_offline()
    polls = healing.runpod.stats.calls.get("status", 0)
    sent_meanwhile = await _submit(healing, _job(healing, user=2))
    never_sent = await wait_for_state(healing, sent_meanwhile, "failed")
    assert "could not be reached" in never_sent.failure
    await until(lambda: healing.runpod.stats.calls.get("status", 0) >= polls + 3)
    assert (await healing.jobs.get(at_runpod)).state is JobState.SUBMITTED
    await fake_runpod.go_online()

    fake_runpod.finish(runpod_id)
    await delivery.wait(at_runpod)
    assert (await wait_for_state(healing, at_runpod, "done")).state is JobState.DONE
    assert_no_slot_held(healing)
    await assert_every_credit_settled_once(healing)
    await assert_new_jobs_still_run(healing, delivery)


# ----- case 4: deadlines hold whatever RunPod answers -------------------------------------------


async def _no_id(fake: FakeRunPod) -> None:
    fake.inject("status", *[fr.http(200, body={"status": "IN_QUEUE"})] * 5000)


async def _server_errors(fake: FakeRunPod) -> None:
    fake.inject("status", *[fr.http(502)] * 5000)


async def _unreachable(fake: FakeRunPod) -> None:
    await fake.go_offline()


@pytest.mark.parametrize("answer", [_no_id, _server_errors, _unreachable])
async def test_the_queue_deadline_ends_a_job_whatever_status_answers(
    open_services: OpenServices,
    fake_runpod: FakeRunPod,
    delivery: RecordingDelivery,
    answer: Callable[[FakeRunPod], Awaitable[None]],
) -> None:
    services = await open_services(timing=dataclasses.replace(HEALING, queue_timeout=0.2))
    fake_runpod.script(Outcome(status="HANG"))
    await services.jobs.start(delivery)
    job_id = await _submit(services, _job(services))
    await wait_for_state(services, job_id, "submitted")
    await answer(fake_runpod)

    ended = await wait_for_state(services, job_id, "timed_out")
    assert "No GPU became free" in ended.failure
    await delivery.wait(job_id)
    assert_no_slot_held(services)
    await assert_every_credit_settled_once(services)
    await fake_runpod.go_online()


# ----- a COMPLETED answer that cannot be used fails once ---------------------------------------


async def test_a_completed_answer_with_an_unusable_image_url_fails_the_job_once_and_refunds(
    healing: Services,
    fake_runpod: FakeRunPod,
    delivery: RecordingDelivery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_runpod.script(Outcome(status="HANG"))
    await healing.jobs.start(delivery)
    job_id = await _submit(healing, _job(healing))
    runpod_id = (await wait_for_state(healing, job_id, "submitted")).backend_id
    garbage = {
        "id": runpod_id,
        "status": "COMPLETED",
        "output": {
            "images": [{"filename": "a.png", "type": "s3_url", "data": "http://bucket:abc/a.png"}]
        },
    }
    # One garbage answer; were it retried, the job would go back to waiting in RunPod's queue.
    fake_runpod.inject("status", fr.http(200, body=garbage))

    failed = await wait_for_state(healing, job_id, "failed")
    assert failed.failure.endswith(".") and failed.failure.count(". ") == 0, failed.failure
    assert "Traceback" not in failed.failure and "bucket" not in failed.failure
    assert "bucket:abc" in caplog.text, "the raw answer is in the operator's log"
    assert [to for _, to, _ in await healing.jobs.events(job_id)].count("failed") == 1
    await delivery.wait(job_id)
    assert_no_slot_held(healing)
    await assert_every_credit_settled_once(healing)


# ----- case 8: a step of the wall clock ends no healthy job -------------------------------------


class WallClock:
    """The wall clock, which an operator or NTP may step at any moment."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


async def test_a_wall_clock_step_of_200s_during_a_running_job_does_not_time_it_out(
    services: Services, fake_runpod: FakeRunPod, delivery: RecordingDelivery
) -> None:
    clock = WallClock()
    jobs = JobManager(
        services.db,
        services.jobs.backends,
        accounting=services.quotas,
        timing=FAST,
        durations=services.jobs.durations,
        clock=clock,
    )
    # Execution limit 120 s + 30 s grace: a 200 s step would be over it on a wall clock.
    assert FAST.execution_timeout >= 150
    fake_runpod.script(Outcome(status="STUCK"))
    await jobs.start(delivery)
    try:
        job = await jobs.accept(_job(services))
        await jobs.attach_message(job.id, 100, 500)
        runpod_id = (await wait_for_state(services, job.id, "running")).backend_id
        clock.offset += 200.0
        polls = fake_runpod.jobs[runpod_id].status_reads
        await until(lambda: fake_runpod.jobs[runpod_id].status_reads >= polls + 3)
        fake_runpod.finish(runpod_id)
        await delivery.wait(job.id)
        assert (await wait_for_state(services, job.id, "done")).state is JobState.DONE
        assert fake_runpod.requests_for("cancel") == []
    finally:
        await jobs.stop()


async def _restart_with_stored_submit_time(
    open_services: OpenServices, fake_runpod: FakeRunPod, submitted_at: float, timing: Timing
) -> tuple[Services, RecordingDelivery, int, str]:
    first = await open_services(timing=HEALING)
    fake_runpod.script(Outcome(status="HANG"))
    await first.jobs.start(RecordingDelivery())
    job_id = await _submit(first, _job(first))
    runpod_id = (await wait_for_state(first, job_id, "submitted")).backend_id
    await first.jobs.stop()
    async with first.db.transaction() as tx:
        await tx.execute("UPDATE jobs SET submitted_at = ? WHERE id = ?", (submitted_at, job_id))
    await first.close()
    second = await open_services(timing=timing)
    delivery = RecordingDelivery()
    await second.jobs.start(delivery)
    return second, delivery, job_id, runpod_id


async def test_after_a_restart_a_submit_time_in_the_future_still_lets_the_deadline_come(
    open_services: OpenServices, fake_runpod: FakeRunPod
) -> None:
    ten_days_ahead = time.time() + 10 * 86400
    services, _, job_id, _ = await _restart_with_stored_submit_time(
        open_services,
        fake_runpod,
        ten_days_ahead,
        dataclasses.replace(HEALING, queue_timeout=0.2),
    )
    assert (await wait_for_state(services, job_id, "timed_out")).state is JobState.TIMED_OUT
    await assert_every_credit_settled_once(services)


async def test_after_a_restart_an_absurdly_old_submit_time_does_not_kill_a_live_job(
    open_services: OpenServices, fake_runpod: FakeRunPod
) -> None:
    services, delivery, job_id, runpod_id = await _restart_with_stored_submit_time(
        open_services, fake_runpod, 1.0, HEALING
    )
    polls = fake_runpod.jobs[runpod_id].status_reads
    await until(lambda: fake_runpod.jobs[runpod_id].status_reads >= polls + 3)
    fake_runpod.finish(runpod_id)
    await delivery.wait(job_id)
    assert (await wait_for_state(services, job_id, "done")).state is JobState.DONE
    assert fake_runpod.requests_for("cancel") == []


# ----- case 9: one person, one set of limits ------------------------------------------------------


async def test_one_member_in_four_servers_holds_one_job_at_runpod_and_queues_four_in_all(
    healing: Services, fake_runpod: FakeRunPod, delivery: RecordingDelivery
) -> None:
    healing.jobs.limits = Limits(max_in_flight=4, member_max_in_flight=1, member_max_queued=4)
    fake_runpod.default_outcome = Outcome(status="HANG")
    await healing.jobs.start(delivery)
    mine = [await _submit(healing, _job(healing, user=7, guild=guild)) for guild in (1, 2, 3, 4)]
    with pytest.raises(MemberBusy, match="all servers"):
        await healing.jobs.accept(_job(healing, user=7, guild=5))
    other = await _submit(healing, _job(healing, user=8, guild=1))
    await wait_for_state(healing, other, "submitted")  # the scheduler has passed over them all
    await wait_for_state(healing, mine[0], "submitted")
    assert len(fake_runpod.jobs) == 2, "one job of member 7, one of member 8"

    for job_id in mine:
        runpod_id = (await wait_for_state(healing, job_id, "submitted")).backend_id
        at_runpod = await healing.db.fetchall(
            "SELECT id FROM jobs WHERE user_id = 7 AND state IN ('submitting', 'submitted', 'running')"
        )
        assert [row["id"] for row in at_runpod] == [job_id]
        fake_runpod.finish(runpod_id, Outcome())
        await delivery.wait(job_id)
        await wait_for_state(healing, job_id, "done")
    assert len(fake_runpod.jobs) == 5


# ----- the reconciler ----------------------------------------------------------------------------


async def test_the_reconciler_adopts_a_queued_job_memory_lost(
    healing: Services, fake_runpod: FakeRunPod, delivery: RecordingDelivery
) -> None:
    healing.jobs.limits = Limits(max_in_flight=1, member_max_in_flight=1, member_max_queued=4)
    fake_runpod.script(Outcome(status="HANG"))
    await healing.jobs.start(delivery)
    first = await _submit(healing, _job(healing, user=1))
    runpod_id = (await wait_for_state(healing, first, "submitted")).backend_id
    lost = await _submit(healing, _job(healing, user=2))
    healing.jobs._queue.remove(lost)  # what an escaped exception used to leave behind
    fake_runpod.finish(runpod_id, Outcome())

    await delivery.wait(lost)
    assert (await wait_for_state(healing, lost, "done")).state is JobState.DONE
    assert_no_slot_held(healing)
    await assert_every_credit_settled_once(healing)


async def test_the_reconciler_runs_a_job_whose_progress_message_was_never_recorded(
    healing: Services, delivery: RecordingDelivery
) -> None:
    await healing.jobs.start(delivery)
    job = await healing.jobs.accept(_job(healing))  # and then the command handler died

    await delivery.wait(job.id)
    done = await wait_for_state(healing, job.id, "done")
    assert done.message_id is None, "delivered as a fresh post"
    await assert_every_credit_settled_once(healing)


async def test_the_reconciler_frees_a_slot_no_live_job_holds(
    healing: Services, delivery: RecordingDelivery
) -> None:
    healing.jobs.limits = Limits(max_in_flight=1, member_max_in_flight=1, member_max_queued=4)
    await healing.jobs.start(delivery)
    ended = await _submit(healing, _job(healing, user=1))
    await wait_for_state(healing, ended, "done")
    healing.jobs._queue.hold(ended, 1)  # a slot an ended job never gave back
    await assert_new_jobs_still_run(healing, delivery)
    assert_no_slot_held(healing)


async def test_the_reconciler_settles_the_credits_of_ended_jobs_exactly_once(
    healing: Services, delivery: RecordingDelivery, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(), Outcome(status="FAILED", error=fr.ERROR_JOB_PROCESSING))
    await healing.jobs.start(delivery)
    done = await _submit(healing, _job(healing, user=1))
    failed = await _submit(healing, _job(healing, user=2))
    await wait_for_state(healing, done, "done")
    await wait_for_state(healing, failed, "failed")
    await healing.jobs.stop()
    # Holds left open, as a crash between two writes of an older version could leave them.
    async with healing.db.transaction() as tx:
        await tx.execute("UPDATE quota_holds SET state = 'held', settled_at = NULL")
    await healing.jobs.start(delivery)
    await assert_every_credit_settled_once(healing)
    settled = await healing.db.fetchall("SELECT job_id, state, settled_at FROM quota_holds")
    await healing.jobs._reconcile()
    again = await healing.db.fetchall("SELECT job_id, state, settled_at FROM quota_holds")
    assert [tuple(r) for r in again] == [tuple(r) for r in settled], "settled once, not twice"
    balance = await healing.quotas.balance(10, 1)
    assert (balance.held, balance.used) == (0, (await healing.jobs.get(done)).cost)
