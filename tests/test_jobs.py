"""The job manager against the fake RunPod: outcomes, faults, fairness, recovery."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import httpx
import pytest

from bot.config import Secret
from bot.jobs import (
    DeliveryError,
    JobError,
    JobManager,
    JobState,
    JobUpdate,
    Limits,
    MemberBusy,
    NewJob,
    NotYourJob,
)
from bot.services import Services
from tests.conftest import (
    FAST,
    OpenServices,
    RecordingDelivery,
    Watcher,
    make_client,
    make_settings,
    wait_for_state,
)
from tests.fakes import HANG_GUARD
from tests.fakes import fake_runpod as fr
from tests.fakes.fake_runpod import FakeRunPod, Outcome
from tests.told_modes import MODES, mode_settings


def _job(
    services: Services, text: str = "a pony --workflow test-pattern", user: int = 1, guild: int = 10
) -> NewJob:
    return services.prepare(text, user_id=user, guild_id=guild, channel_id=100)


async def _submit(services: Services, new: NewJob, message_id: int = 500) -> int:
    job = await services.jobs.accept(new)
    await services.jobs.attach_message(job.id, new.channel_id, message_id)
    return job.id


async def test_a_job_runs_and_is_delivered_exactly_once(
    services: Services, delivery: RecordingDelivery
) -> None:
    updates: list[JobUpdate] = []
    services.jobs.subscribe(updates.append)
    await services.jobs.start(delivery)
    job_id = await _submit(services, _job(services))
    await delivery.wait(job_id)
    done = await wait_for_state(services, job_id, "done")
    assert len(delivery.delivered[job_id]) == 1
    assert done.backend_id and done.execution_ms is not None and done.delivered_at
    history = [to for _, to, _ in await services.jobs.events(job_id)]
    assert history[:3] == ["accepted", "queued", "submitting"]
    assert history[-2:] == ["delivering", "done"]
    assert {"waiting", "delivering", "done"} <= {u.kind for u in updates}
    assert (
        await services.db.fetchone("SELECT * FROM job_outputs WHERE job_id = ?", (job_id,)) is None
    )


async def test_a_failed_job_tells_the_member_why_in_one_sentence(
    services: Services, delivery: RecordingDelivery, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(status="FAILED", error=fr.ERROR_VALIDATION))
    await services.jobs.start(delivery)
    job_id = await _submit(services, _job(services))
    await delivery.wait(job_id)
    job = await wait_for_state(services, job_id, "failed")
    assert "missing.safetensors" in job.failure and "volume" in job.failure
    assert "Traceback" not in job.failure and "{" not in job.failure
    assert job.error == fr.ERROR_VALIDATION
    assert job_id not in delivery.delivered


@pytest.mark.parametrize(
    ("outcome", "state"),
    [
        (Outcome(status="TIMED_OUT"), "timed_out"),
        (Outcome(output_format="no_images"), "failed"),
        (Outcome(output_format="legacy_error"), "failed"),
        (Outcome(status="FAILED", error=fr.ERROR_JOB_PROCESSING), "failed"),
    ],
)
async def test_every_bad_ending_is_reported(
    services: Services,
    delivery: RecordingDelivery,
    fake_runpod: FakeRunPod,
    outcome: Outcome,
    state: str,
) -> None:
    fake_runpod.script(outcome)
    await services.jobs.start(delivery)
    job_id = await _submit(services, _job(services))
    await delivery.wait(job_id)
    job = await wait_for_state(services, job_id, state)
    assert job.failure and delivery.notified[job_id]


async def test_member_cancel_while_queued_at_runpod(
    services: Services, delivery: RecordingDelivery, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(status="HANG"))
    await services.jobs.start(delivery)
    job_id = await _submit(services, _job(services))
    await wait_for_state(services, job_id, "submitted")
    cancelled = await services.jobs.cancel(job_id, by_user=1)
    assert cancelled.state is JobState.CANCELLED
    assert len(fake_runpod.requests_for("cancel")) == 1
    assert fake_runpod.jobs[cancelled.backend_id].status == "CANCELLED"


async def test_only_the_owner_or_a_moderator_may_cancel(
    services: Services, delivery: RecordingDelivery
) -> None:
    job = await services.jobs.accept(_job(services, user=1))
    with pytest.raises(JobError, match="still starting"):
        await services.jobs.cancel(job.id, by_user=1)  # its message is being posted right now
    await services.jobs.attach_message(job.id, 100, 500)
    with pytest.raises(NotYourJob):
        await services.jobs.cancel(job.id, by_user=2)
    cancelled = await services.jobs.cancel(job.id, by_user=2, moderator=True)
    assert cancelled.state is JobState.CANCELLED and cancelled.failure == "Stopped by a moderator."


async def test_status_404_means_expired(
    services: Services, delivery: RecordingDelivery, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(status="HANG"))
    await services.jobs.start(delivery)
    job_id = await _submit(services, _job(services))
    job = await wait_for_state(services, job_id, "submitted")
    del fake_runpod.jobs[job.backend_id]
    expired = await wait_for_state(services, job_id, "expired")
    assert "30 minutes" in expired.failure
    await delivery.wait(job_id)
    assert delivery.notified[job_id][0].state is JobState.EXPIRED
    assert await _hold_state(services, job_id) == "refunded"


async def test_an_uncertain_submission_is_not_resent(
    services: Services, delivery: RecordingDelivery, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.inject("run", fr.reset_after_processing())
    await services.jobs.start(delivery)
    job_id = await _submit(services, _job(services))
    job = await wait_for_state(services, job_id, "failed")
    assert len(fake_runpod.requests_for("run")) == 1
    assert "not resent" in job.failure


async def test_a_refused_submission_waits_and_tries_again(
    services: Services, delivery: RecordingDelivery, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.inject("run", *[fr.http(503)] * 4)
    await services.jobs.start(delivery)
    job_id = await _submit(services, _job(services))
    await wait_for_state(services, job_id, "done")
    assert len(fake_runpod.jobs) == 1


async def test_a_wrong_key_fails_jobs_with_an_operator_hint(
    tmp_path: Path,
    fake_runpod: FakeRunPod,
    open_services: OpenServices,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(tmp_path, fake_runpod, RUNPOD_API_KEY="not-the-key")
    services = await open_services(settings, runpod=None)
    delivery = RecordingDelivery()
    await services.jobs.start(delivery)
    job_id = await _submit(services, _job(services))
    job = await wait_for_state(services, job_id, "failed")
    assert "refused the bot's key" in job.failure and "operator" in job.failure
    assert "set a valid RUNPOD_API_KEY" in caplog.text, "the operator's hint goes to the log"
    assert "not-the-key" not in job.failure + (job.error or "") + caplog.text
    await services.close()


async def test_round_robin_keeps_one_member_from_starving_another(
    services: Services, delivery: RecordingDelivery, fake_runpod: FakeRunPod
) -> None:
    services.jobs.limits = Limits(max_in_flight=1, member_max_in_flight=1, member_max_queued=10)
    fake_runpod.default_outcome = Outcome(run_delay=0.02)
    a_jobs = [await _submit(services, _job(services, user=1)) for _ in range(4)]
    b_job = await _submit(services, _job(services, user=2))
    assert services.jobs.position(b_job) is None  # not started: positions come from the scheduler
    await services.jobs.start(delivery)
    await asyncio.sleep(0)
    assert services.jobs.position(b_job) in (1, 2)
    for job_id in (*a_jobs, b_job):
        await delivery.wait(job_id)
    rows = await services.db.fetchall(
        "SELECT job_id FROM job_events WHERE to_state = 'submitting' ORDER BY id"
    )
    order = [row["job_id"] for row in rows]
    assert len(fake_runpod.requests_for("run")) == 5
    assert order.index(b_job) == 1, "the second member's job runs right after the first job"


async def test_queue_deadline_cancels_at_runpod(
    fake_runpod: FakeRunPod, delivery: RecordingDelivery, open_services: OpenServices
) -> None:
    services = await open_services(timing=dataclasses.replace(FAST, queue_timeout=0.1))
    fake_runpod.script(Outcome(status="HANG"))
    await services.jobs.start(delivery)
    job_id = await _submit(services, _job(services))
    job = await wait_for_state(services, job_id, "timed_out")
    assert "No GPU became free" in job.failure
    assert len(fake_runpod.requests_for("cancel")) == 1
    await services.close()


async def test_restart_resumes_jobs_in_every_state(
    fake_runpod: FakeRunPod, open_services: OpenServices
) -> None:
    first = await open_services()
    fake_runpod.default_outcome = Outcome(status="HANG")
    await first.jobs.start(RecordingDelivery())
    at_runpod = await _submit(first, _job(first))
    runpod_id = (await wait_for_state(first, at_runpod, "submitted")).backend_id
    await first.jobs.stop()
    never_attached = (await first.jobs.accept(_job(first, user=2))).id
    queued = (await first.jobs.accept(_job(first, user=3))).id
    await first.jobs.attach_message(queued, 100, 501)
    await first.close()

    fake_runpod.default_outcome = Outcome()
    fake_runpod.finish(runpod_id)
    second = await open_services()
    delivery = RecordingDelivery()
    await second.jobs.start(delivery)
    for job_id in (at_runpod, never_attached, queued):
        await delivery.wait(job_id)
        assert (await second.jobs.get(job_id)).state is JobState.DONE
    assert len(fake_runpod.requests_for("run")) == 3
    await second.close()


async def test_a_job_killed_inside_run_is_failed_not_resent(
    fake_runpod: FakeRunPod, open_services: OpenServices
) -> None:
    services = await open_services()
    job = await services.jobs.accept(_job(services))
    await services.jobs.attach_message(job.id, 100, 500)
    # What a process killed between "submitting" and RunPod's answer leaves behind.
    await services.jobs._transition(job.id, {JobState.QUEUED}, JobState.SUBMITTING)
    delivery = RecordingDelivery()
    await services.jobs.start(delivery)
    await delivery.wait(job.id)
    ended = await services.jobs.get(job.id)
    assert ended.state is JobState.FAILED and "restarted" in ended.failure
    assert fake_runpod.requests_for("run") == []
    await services.close()


async def test_a_member_cannot_queue_more_than_the_cap(services: Services) -> None:
    services.jobs.limits = Limits(member_max_queued=2)
    await services.jobs.accept(_job(services))
    await services.jobs.accept(_job(services))
    with pytest.raises(MemberBusy):
        await services.jobs.accept(_job(services))
    assert (await services.db.fetchone("SELECT COUNT(*) FROM jobs"))[0] == 2


def test_manager_is_constructible_without_running(services: Services) -> None:
    assert isinstance(services.jobs, JobManager) and not services.jobs.running


async def test_a_job_cancelled_at_runpod_is_reported_and_refunded(
    services: Services, delivery: RecordingDelivery, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(status="HANG"))
    await services.jobs.start(delivery)
    job_id = await _submit(services, _job(services))
    job = await wait_for_state(services, job_id, "submitted")
    fake_runpod.jobs[job.backend_id].cancelled = True  # someone cancelled it in the RunPod console
    fake_runpod.finish(job.backend_id, Outcome(status="HANG"))
    fake_runpod.jobs[job.backend_id].final_status = "CANCELLED"
    ended = await wait_for_state(services, job_id, "cancelled")
    assert "cancelled at RunPod" in ended.failure
    await delivery.wait(job_id)


async def test_progress_output_and_unknown_statuses_do_not_end_a_job(
    services: Services, delivery: RecordingDelivery, fake_runpod: FakeRunPod
) -> None:
    watcher = Watcher(services.jobs)
    # Neither finishes on its own: each phase lasts until the bot has seen it.
    fake_runpod.script(
        Outcome(status="STUCK", queue_delay=0, progress_output={"progress": 0.4}),
        Outcome(status="STUCK", queue_delay=0, unknown_status="THROTTLED"),
    )
    await services.jobs.start(delivery)
    first = await _submit(services, _job(services, user=1))
    second = await _submit(services, _job(services, user=2))
    await watcher.until(lambda u: u.kind == "running" and u.job.id == first)
    throttled = (await wait_for_state(services, second, "submitted", "running")).backend_id
    async with asyncio.timeout(HANG_GUARD):
        while fake_runpod.jobs[throttled].status_reads < 2:
            await asyncio.sleep(0.005)
    assert not (await services.jobs.get(second)).terminal, "THROTTLED twice did not end it"
    for job_id in (first, second):
        fake_runpod.finish((await services.jobs.get(job_id)).backend_id)
        await delivery.wait(job_id)
        assert (await services.jobs.get(job_id)).state is JobState.DONE


async def test_execution_deadline_cancels_a_stuck_job(
    fake_runpod: FakeRunPod, delivery: RecordingDelivery, open_services: OpenServices
) -> None:
    timing = dataclasses.replace(FAST, execution_timeout=0.05, execution_grace=0.05)
    services = await open_services(timing=timing)
    fake_runpod.script(Outcome(status="STUCK"))
    await services.jobs.start(delivery)
    job_id = await _submit(services, _job(services))
    job = await wait_for_state(services, job_id, "timed_out")
    assert "time limit" in job.failure
    assert len(fake_runpod.requests_for("cancel")) == 1
    assert fake_runpod.requests_for("run")[0].json["policy"]["executionTimeout"] == 5000
    await services.close()


async def test_a_cold_endpoint_says_waiting_for_a_gpu_worker(
    services: Services, delivery: RecordingDelivery, fake_runpod: FakeRunPod
) -> None:
    watcher = Watcher(services.jobs)
    fake_runpod.workers = {"idle": 0, "ready": 0, "running": 0, "initializing": 1}
    fake_runpod.script(Outcome(status="HANG"))
    await services.jobs.start(delivery)
    job_id = await _submit(services, _job(services))
    cold = await watcher.until(lambda u: u.kind == "waiting" and u.cold)
    assert cold.job.id == job_id and not cold.no_workers
    fake_runpod.workers = {"idle": 0, "ready": 0, "running": 0}
    await watcher.until(lambda u: u.kind == "waiting" and u.no_workers)


async def test_a_warm_endpoint_shows_the_queue_not_a_cold_start(
    services: Services, delivery: RecordingDelivery, fake_runpod: FakeRunPod
) -> None:
    updates: list[JobUpdate] = []
    services.jobs.subscribe(updates.append)
    fake_runpod.workers = {"idle": 0, "ready": 0, "running": 2}
    fake_runpod.script(Outcome(queue_delay=0.3))
    await services.jobs.start(delivery)
    job_id = await _submit(services, _job(services))
    await delivery.wait(job_id)
    waiting = [u for u in updates if u.kind == "waiting"]
    assert waiting and not any(u.cold or u.no_workers for u in waiting)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "fault", [fr.http(429, retry_after=0.01), fr.http(502), fr.reset(), fr.delay(5)]
)
async def test_status_faults_are_ridden_out(
    tmp_path: Path,
    fake_runpod: FakeRunPod,
    delivery: RecordingDelivery,
    open_services: OpenServices,
    fault,
    mode: str,
) -> None:
    client = make_client(fake_runpod, http=httpx.AsyncClient(timeout=httpx.Timeout(0.1)))
    settings = make_settings(tmp_path, fake_runpod, **mode_settings(mode))
    services = await open_services(settings, runpod=client)
    fake_runpod.inject("status", *[fault] * 6)
    fake_runpod.inject("status-sync", *[fault] * 6)
    fake_runpod.inject_webhook("drop")
    await services.jobs.start(delivery)
    job_id = await _submit(services, _job(services))
    await delivery.wait(job_id)
    assert (await services.jobs.get(job_id)).state is JobState.DONE
    assert len(fake_runpod.requests_for("run")) == 1
    await services.close()


async def test_discord_being_down_delays_delivery_but_never_loses_it(
    services: Services, delivery: RecordingDelivery
) -> None:
    outage = [DeliveryError("Discord could not be reached (ServerDisconnectedError)")] * 12
    delivery.fail_next = list(outage)
    await services.jobs.start(delivery)
    job_id = await _submit(services, _job(services, user=1))
    await delivery.wait(job_id)
    assert (await services.jobs.get(job_id)).state is JobState.DONE
    assert delivery.fail_next == [] and len(outage) > services.jobs.timing.max_delivery_attempts
    assert await _hold_state(services, job_id) == "captured"


async def test_a_delivery_that_can_never_happen_is_refunded_and_its_images_dropped(
    services: Services, delivery: RecordingDelivery
) -> None:
    await services.jobs.start(delivery)
    delivery.fail_next = [DeliveryError("no channel, no DMs", permanent=True)]
    permanent = await _submit(services, _job(services, user=2))
    job = await wait_for_state(services, permanent, "failed")
    assert "could not be posted" in job.failure
    delivery.fail_next = [
        RuntimeError("a bug in rendering")
    ] * services.jobs.timing.max_delivery_attempts
    crashing = await _submit(services, _job(services, user=3))
    await wait_for_state(services, crashing, "failed")
    for job_id in (permanent, crashing):
        assert await _hold_state(services, job_id) == "refunded"
        assert (
            await services.db.fetchone("SELECT 1 FROM job_outputs WHERE job_id = ?", (job_id,))
            is None
        )


async def _hold_state(services: Services, job_id: int) -> str:
    row = await services.db.fetchone("SELECT state FROM quota_holds WHERE job_id = ?", (job_id,))
    return row["state"]


async def test_a_crash_inside_submit_fails_that_job_and_frees_its_slot(
    fake_runpod: FakeRunPod, delivery: RecordingDelivery, open_services: OpenServices
) -> None:
    # httpx cannot put this key in a header: an error no handler expects, inside /run.
    client = make_client(fake_runpod)
    client._key = Secret("clé-non-ascii")
    services = await open_services(runpod=client)
    services.jobs.limits = Limits(max_in_flight=1, member_max_in_flight=1, member_max_queued=5)
    await services.jobs.start(delivery)
    first = await _submit(services, _job(services, user=1))
    second = await _submit(services, _job(services, user=2))
    for job_id in (first, second):
        job = await wait_for_state(services, job_id, "failed")
        assert "not resent" in job.failure and await _hold_state(services, job_id) == "refunded"
    assert services.jobs._queue.out == 0


async def test_restart_delivers_what_was_being_delivered_and_tells_what_ended_untold(
    fake_runpod: FakeRunPod, open_services: OpenServices
) -> None:
    first = await open_services()
    first_delivery = RecordingDelivery()
    await first.jobs.start(first_delivery)
    delivering = await _submit(first, _job(first, user=1))
    await wait_for_state(first, delivering, "done")
    await first.jobs.stop()
    # What a crash between fetching the images and showing them leaves behind:
    async with first.db.transaction() as tx:
        await tx.execute(
            "UPDATE jobs SET state = 'delivering', delivered_at = NULL WHERE id = ?", (delivering,)
        )
        await tx.execute(
            "INSERT INTO job_outputs (job_id, idx, filename, mime, data) VALUES (?, 0, 'a.png', 'image/png', ?)",
            (delivering, b"\x89PNG\r\n\x1a\n"),
        )
        await tx.execute("UPDATE quota_holds SET state = 'held' WHERE job_id = ?", (delivering,))
    untold = (await first.jobs.accept(_job(first, user=2))).id
    await first.jobs.attach_message(untold, 100, 600)
    await first.jobs.cancel(untold, by_user=2)
    await first_delivery.wait(untold)
    # ...and as if the process had died before saying so:
    async with first.db.transaction() as tx:
        await tx.execute("UPDATE jobs SET delivered_at = NULL WHERE id = ?", (untold,))
    await first.close()

    second = await open_services()
    delivery = RecordingDelivery()
    await second.jobs.start(delivery)
    await delivery.wait(delivering)
    await delivery.wait(untold)
    assert (
        len(delivery.delivered[delivering]) == 1
        and (await second.jobs.get(delivering)).state is JobState.DONE
    )
    assert await _hold_state(second, delivering) == "captured"
    assert delivery.notified[untold][0].failure == "Stopped by the member who asked for it."
