"""Races and edges of a job's life that a member would notice: cancels, refunds, inputs, attempts."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import itertools
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest
from PIL import Image

from bot.images import ImageFile, prepare_input_image
from bot.jobs import AlreadyFinished, Job, JobError, JobManager, JobState, Limits
from bot.runpod import RetryPolicy
from bot.services import Services
from bot.supervisor import Supervisor
from tests.conftest import (
    FAST,
    OpenServices,
    RecordingDelivery,
    make_client,
    make_settings,
    wait_for_state,
)
from tests.fakes import fake_runpod as fr
from tests.fakes.fake_runpod import FakeRunPod, Outcome

GUILD, MEMBER = 10, 1


def _new(services: Services, text: str = "a pony --workflow test-pattern", **kwargs):
    return services.prepare(text, user_id=MEMBER, guild_id=GUILD, channel_id=100, **kwargs)


async def _queue(services: Services, text: str = "a pony --workflow test-pattern", **kw) -> int:
    job = await services.jobs.accept(_new(services, text, **kw))
    await services.jobs.attach_message(job.id, 100, 500 + job.id)
    return job.id


async def _hold_state(services: Services, job_id: int) -> str:
    row = await services.db.fetchone("SELECT state FROM quota_holds WHERE job_id = ?", (job_id,))
    return row["state"]


async def _start(services: Services, deliverer: RecordingDelivery) -> Supervisor:
    """Start the manager under a supervisor that can tell how many loops it keeps."""
    supervisor = Supervisor()
    await services.jobs.start(deliverer, supervisor=supervisor)
    return supervisor


async def _idle(jobs: JobManager, supervisor: Supervisor) -> None:
    """Until the manager has no poll, submission, delivery or notice left under way."""
    async with asyncio.timeout(10):
        while jobs.task_count > len(supervisor.statuses()):
            await asyncio.sleep(0.005)


async def _with_local_bucket(open_services: OpenServices, fake_runpod: FakeRunPod) -> Services:
    """Services whose client may fetch `s3_url` images from the fake's plain-http bucket."""
    return await open_services(
        runpod=make_client(fake_runpod, output_http_hosts=[fake_runpod.host])
    )


class GatedDelivery(RecordingDelivery):
    """A Discord that takes its time: each delivery waits until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.gate = asyncio.Event()

    async def deliver(self, job: Job, images: Sequence[ImageFile]) -> None:
        self.started.set()
        await self.gate.wait()
        await super().deliver(job, images)


# ----- a cancel racing dispatch, completion and delivery -------------------------------------------


async def test_a_job_cancelled_as_it_is_dispatched_is_never_sent_to_runpod(
    services: Services, delivery: RecordingDelivery, fake_runpod: FakeRunPod
) -> None:
    services.jobs.limits = Limits(max_in_flight=0, member_max_queued=4)  # nothing leaves yet
    supervisor = await _start(services, delivery)
    job_id = await _queue(services)
    await asyncio.sleep(0)
    assert services.jobs.position(job_id) == 1
    cancel = asyncio.create_task(services.jobs.cancel(job_id, by_user=MEMBER))
    await asyncio.sleep(0)  # the cancel starts reading the job
    async with services.db.transaction():
        # The cancel has read the job as queued and now waits to write; a slot frees meanwhile
        # and the dispatcher takes the job from the local queue: the database decides who wins.
        services.jobs.limits = Limits(max_in_flight=1, member_max_queued=4)
        async with asyncio.timeout(10):
            while services.jobs.position(job_id) is not None:
                await asyncio.sleep(0)
    try:
        outcome: Job | Exception = await cancel
    except AlreadyFinished as exc:
        outcome = exc
    job = await wait_for_state(services, job_id, "cancelled", "done")
    await _idle(services.jobs, supervisor)
    sent = fake_runpod.requests_for("run")
    if isinstance(outcome, Job):
        assert job.state is JobState.CANCELLED and await _hold_state(services, job_id) == "refunded"
        assert sent == [], "a cancelled, refunded job was sent to RunPod"
    else:
        assert job.state is JobState.DONE and await _hold_state(services, job_id) == "captured"
        assert len(sent) == 1


async def test_cancelling_while_the_images_download_refunds_and_posts_nothing(
    open_services: OpenServices, delivery: RecordingDelivery, fake_runpod: FakeRunPod
) -> None:
    services = await _with_local_bucket(open_services, fake_runpod)
    fake_runpod.script(Outcome(status="HANG", output_format="s3_url"))
    supervisor = await _start(services, delivery)
    job_id = await _queue(services)
    job = await wait_for_state(services, job_id, "submitted")
    fake_runpod.inject("s3", fr.delay(2.0))  # far longer than a cancel takes
    fake_runpod.finish(job.backend_id)
    await fake_runpod.wait_for_requests("s3", 1)  # RunPod said COMPLETED; the download hangs
    cancelled = await services.jobs.cancel(job_id, by_user=MEMBER)
    await _idle(services.jobs, supervisor)
    assert cancelled.state is JobState.CANCELLED
    assert (await services.jobs.get(job_id)).state is JobState.CANCELLED
    assert await _hold_state(services, job_id) == "refunded"
    assert job_id not in delivery.delivered, "images of a cancelled, refunded job were posted"


async def test_a_job_being_delivered_cannot_be_cancelled_and_its_images_arrive(
    services: Services, fake_runpod: FakeRunPod
) -> None:
    delivery = GatedDelivery()
    await services.jobs.start(delivery)
    job_id = await _queue(services)
    await asyncio.wait_for(delivery.started.wait(), 10)
    with pytest.raises(AlreadyFinished):
        await services.jobs.cancel(job_id, by_user=MEMBER)
    with pytest.raises(AlreadyFinished):
        await services.jobs.cancel(job_id, by_user=2, moderator=True)
    delivery.gate.set()
    done = await wait_for_state(services, job_id, "done", "cancelled")
    assert done.state is JobState.DONE and len(delivery.delivered[job_id]) == 1
    assert await _hold_state(services, job_id) == "captured"


# ----- refunds, inputs and attempts --------------------------------------------------------------


async def test_a_job_whose_message_cannot_be_posted_gives_the_credits_back(
    services: Services, fake_runpod: FakeRunPod
) -> None:
    before = await services.quotas.balance(GUILD, MEMBER)
    job = await services.jobs.accept(_new(services))
    assert (await services.quotas.balance(GUILD, MEMBER)).remaining == before.remaining - 1
    await services.jobs.abandon(job.id, "its progress message could not be posted")
    after = await services.quotas.balance(GUILD, MEMBER)
    assert (after.remaining, after.held) == (before.remaining, 0)
    assert (await services.jobs.get(job.id)).state is JobState.CANCELLED
    supervisor = await _start(services, RecordingDelivery())
    await _idle(services.jobs, supervisor)
    assert fake_runpod.requests_for("run") == [], "an abandoned job never runs"


def _picture() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (640, 512), "teal").save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("outcome", "end"),
    [(Outcome(), "done"), (Outcome(status="FAILED"), "failed")],
    ids=["delivered", "failed"],
)
async def test_a_members_uploaded_picture_is_deleted_once_the_job_ends(
    services: Services, delivery: RecordingDelivery, fake_runpod: FakeRunPod, outcome, end
) -> None:
    fake_runpod.script(outcome)
    image = prepare_input_image(_picture(), max_pixels=1024 * 1024, max_bytes=10 * 2**20)
    job_id = await _queue(services, "make it a pony", image=image)
    stored = await services.db.fetchone(
        "SELECT COUNT(*) FROM job_inputs WHERE job_id = ?", (job_id,)
    )
    assert stored[0] == 1
    await services.jobs.start(delivery)
    await wait_for_state(services, job_id, end)
    sent = fake_runpod.requests_for("run")[0].json["input"]["images"]
    assert len(sent) == 1, "the picture reached the worker"
    left = await services.db.fetchone("SELECT COUNT(*) FROM job_inputs WHERE job_id = ?", (job_id,))
    assert left[0] == 0, "the member's picture stays in the database after the job ended"


@pytest.mark.parametrize("attempts", [1, 3])
async def test_run_is_tried_exactly_as_many_times_as_configured(
    open_services: OpenServices, fake_runpod: FakeRunPod, attempts: int
) -> None:
    one_call = RetryPolicy(attempts=1, base_delay=0.001, max_delay=0.01, max_retry_after=0.01)
    services = await open_services(
        timing=dataclasses.replace(FAST, max_submit_attempts=attempts),
        runpod=make_client(fake_runpod, retry=one_call),
    )
    fake_runpod.inject("run", *[fr.http(503)] * (attempts + 3))
    await services.jobs.start(RecordingDelivery())
    job_id = await _queue(services)
    failed = await wait_for_state(services, job_id, "failed")
    assert len(fake_runpod.requests_for("run")) == attempts
    assert failed.failure and await _hold_state(services, job_id) == "refunded"


async def test_a_cancel_while_run_is_refused_ends_cancelled_and_refunded(
    open_services: OpenServices, fake_runpod: FakeRunPod
) -> None:
    between_tries = asyncio.Event()
    go_on = asyncio.Event()

    async def sleep(seconds: float) -> None:  # the client's wait before sending /run again
        between_tries.set()
        await go_on.wait()

    two_tries = RetryPolicy(attempts=2, base_delay=0.001, max_delay=0.01, max_retry_after=0.01)
    services = await open_services(runpod=make_client(fake_runpod, retry=two_tries, sleep=sleep))
    fake_runpod.inject("run", fr.http(503), fr.http(503))  # RunPod is busy: provably not created
    await services.jobs.start(RecordingDelivery())
    job_id = await _queue(services)
    await asyncio.wait_for(between_tries.wait(), 10)
    await services.jobs.cancel(job_id, by_user=MEMBER)  # while /run is still being tried
    go_on.set()
    ended = await wait_for_state(services, job_id, "cancelled", "failed")
    assert (
        ended.state is JobState.CANCELLED
        and ended.failure == "Stopped by the member who asked for it."
    )
    assert await _hold_state(services, job_id) == "refunded"
    assert ("submitting", "cancelled", "cancelled while submitting") in await services.jobs.events(
        job_id
    )
    assert fake_runpod.jobs == {}, "nothing runs at RunPod"


async def test_a_wrong_key_is_logged_for_the_operator_once_not_per_job(
    tmp_path: Path,
    open_services: OpenServices,
    fake_runpod: FakeRunPod,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(tmp_path, fake_runpod, RUNPOD_API_KEY="not-the-key")
    services = await open_services(settings, runpod=None)
    await services.jobs.start(RecordingDelivery())
    first, second = await _queue(services), await _queue(services)
    await wait_for_state(services, first, "failed")
    await wait_for_state(services, second, "failed")
    hints = [r for r in caplog.records if "set a valid RUNPOD_API_KEY" in r.getMessage()]
    assert len(hints) == 1


async def test_cancelling_a_job_that_does_not_exist_names_the_number(services: Services) -> None:
    with pytest.raises(JobError, match=r"^There is no job #404\.$"):
        await services.jobs.cancel(404, by_user=MEMBER)


async def test_a_moderators_cancel_is_recorded_as_theirs(
    services: Services, delivery: RecordingDelivery, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(status="HANG"))
    await services.jobs.start(delivery)
    job_id = await _queue(services)
    await wait_for_state(services, job_id, "submitted")
    await services.jobs.cancel(job_id, by_user=7, moderator=True)
    details = [detail for _, to, detail in await services.jobs.events(job_id) if to == "cancelled"]
    assert details == ["by user 7 (moderator)"]


async def test_images_that_cannot_be_downloaded_fail_the_job_and_refund(
    open_services: OpenServices, delivery: RecordingDelivery, fake_runpod: FakeRunPod
) -> None:
    services = await _with_local_bucket(open_services, fake_runpod)
    fake_runpod.script(Outcome(output_format="s3_url"))
    fake_runpod.inject("s3", *[fr.reset()] * 10)  # the bucket drops every download
    await services.jobs.start(delivery)
    job_id = await _queue(services)
    failed = await wait_for_state(services, job_id, "failed")
    assert failed.failure == "The finished images could not be downloaded."
    assert await _hold_state(services, job_id) == "refunded"


async def test_an_output_that_is_no_image_fails_the_job_saying_why(
    services: Services, delivery: RecordingDelivery, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(output_format="local_path"))  # a worker without S3 set up
    await services.jobs.start(delivery)
    job_id = await _queue(services)
    failed = await wait_for_state(services, job_id, "failed")
    assert failed.failure == (
        "The GPU worker returned no usable image "
        "(the worker returned a local path instead of a URL)."
    )
    assert await _hold_state(services, job_id) == "refunded" and delivery.notified[job_id]


async def test_an_old_workers_error_message_reaches_the_operator(
    services: Services, delivery: RecordingDelivery, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(output_format="legacy_error"))  # {"status": "error", "message": ...}
    await services.jobs.start(delivery)
    job_id = await _queue(services)
    failed = await wait_for_state(services, job_id, "failed")
    assert failed.error.startswith(f"the worker reported: {fr.LEGACY_ERROR_MESSAGE}")


async def test_a_cancel_while_run_is_answered_stops_the_job_at_runpod(
    services: Services, delivery: RecordingDelivery, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(status="HANG"))
    fake_runpod.inject("run", fr.delay(0.5))  # RunPod takes the job but answers late
    await services.jobs.start(delivery)
    job_id = await _queue(services)
    await fake_runpod.wait_for_requests("run", 1)
    await services.jobs.cancel(job_id, by_user=MEMBER)
    ended = await wait_for_state(services, job_id, "cancelled")
    assert fake_runpod.jobs[ended.backend_id].status == "CANCELLED", "the GPU does not run it"
    assert await _hold_state(services, job_id) == "refunded"
    history = [(to, detail) for _, to, detail in await services.jobs.events(job_id)]
    assert history[-1] == ("cancelled", "cancelled while submitting")


async def test_a_job_cancelled_in_runpods_console_is_recorded_as_cancelled(
    services: Services, delivery: RecordingDelivery, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(status="HANG"))
    await services.jobs.start(delivery)
    job_id = await _queue(services)
    job = await wait_for_state(services, job_id, "submitted")
    async with httpx.AsyncClient() as console:  # the operator presses Cancel in RunPod's console
        await console.post(
            f"{fake_runpod.api_base}/{fake_runpod.endpoint_id}/cancel/{job.backend_id}",
            headers={"Authorization": f"Bearer {fake_runpod.api_key}"},
        )
    await wait_for_state(services, job_id, "cancelled")
    history = [(to, detail) for _, to, detail in await services.jobs.events(job_id)]
    assert history[-1] == ("cancelled", "cancelled")


async def test_during_a_runpod_outage_status_polls_back_off_to_the_cap(
    open_services: OpenServices, fake_runpod: FakeRunPod
) -> None:
    timing = dataclasses.replace(FAST, retry_delay=0.05, queue_max_interval=0.2)
    one_call = RetryPolicy(attempts=1, base_delay=0.001, max_delay=0.01, max_retry_after=0.01)
    services = await open_services(timing=timing, runpod=make_client(fake_runpod, retry=one_call))
    fake_runpod.script(Outcome(status="HANG"))
    await services.jobs.start(RecordingDelivery())
    job_id = await _queue(services)
    await wait_for_state(services, job_id, "submitted")
    before = len(fake_runpod.requests_for("status"))
    fake_runpod.inject("status", *[fr.http(503)] * 8)
    await fake_runpod.wait_for_requests("status", before + 9, timeout=20)
    polls = [r.at for r in fake_runpod.requests_for("status")[before : before + 9]]
    gaps = [later - earlier for earlier, later in itertools.pairwise(polls)]
    # 0.05, 0.075, 0.11, 0.17, then the 0.2 s cap: RunPod is not hammered while it is down.
    assert min(gaps[4:8]) >= 0.19, gaps
    assert (await services.jobs.get(job_id)).state is JobState.SUBMITTED, "an outage ends nothing"


async def test_a_run_answered_without_a_job_id_is_failed_not_resent_and_says_why(
    services: Services, delivery: RecordingDelivery, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.inject("run", fr.http(200, body={"status": "IN_QUEUE"}))
    await services.jobs.start(delivery)
    job_id = await _queue(services)
    failed = await wait_for_state(services, job_id, "failed")
    assert len(fake_runpod.requests_for("run")) == 1
    assert failed.error == (
        "/run answered without a usable job id: "
        'run: malformed answer from RunPod (no usable job id): {"status": "IN_QUEUE"}'
    )
    assert await _hold_state(services, job_id) == "refunded"


async def test_a_start_estimated_from_polls_is_never_before_the_submission(
    open_services: OpenServices, fake_runpod: FakeRunPod
) -> None:
    """Without `delayTime`, the start is put between the last two polls, not before either."""
    timing = dataclasses.replace(FAST, queue_interval=0.3, queue_max_interval=0.3)
    services = await open_services(timing=timing)
    fake_runpod.script(Outcome(status="HANG"))
    await services.jobs.start(RecordingDelivery())
    job_id = await _queue(services)
    submitted = await wait_for_state(services, job_id, "submitted")
    await fake_runpod.wait_for_requests("status", 1)  # answered IN_QUEUE
    in_progress = {"id": submitted.backend_id, "status": "IN_PROGRESS"}  # and no delayTime
    fake_runpod.inject("status", fr.http(200, body=in_progress))
    running = await wait_for_state(services, job_id, "running")
    assert running.started_at >= submitted.submitted_at, "the member would see time never spent"
