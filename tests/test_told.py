"""Told, not asking: the job manager with long-polls and webhooks against the fake RunPod."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bot.jobs import JobState, NewJob
from bot.services import Services
from tests.conftest import (
    FAST,
    OpenServices,
    RecordingDelivery,
    make_settings,
    wait_for_state,
)
from tests.fakes.fake_runpod import FakeRunPod, Outcome
from tests.told_modes import MODES, mode_settings

# A job that runs a while: long enough to be seen running before it ends.
RUNNING = Outcome(queue_delay=0.0, run_delay=0.3)


def _job(services: Services, user: int = 1) -> NewJob:
    return services.prepare(
        "a pony --workflow test-pattern", user_id=user, guild_id=10, channel_id=100
    )


async def _submit(services: Services, new: NewJob) -> int:
    job = await services.jobs.accept(new)
    await services.jobs.attach_message(job.id, new.channel_id, 500 + job.id)
    return job.id


async def _open(open_services: OpenServices, tmp_path: Path, fake: FakeRunPod, mode: str):
    return await open_services(make_settings(tmp_path, fake, **mode_settings(mode)))


async def test_a_running_job_is_long_polled_and_delivered(
    tmp_path: Path,
    fake_runpod: FakeRunPod,
    open_services: OpenServices,
    delivery: RecordingDelivery,
) -> None:
    fake_runpod.status_sync_time_scale = 60.0  # a hold outlasts the test: only the end answers
    fake_runpod.script(Outcome(status="STUCK"))
    services = await _open(open_services, tmp_path, fake_runpod, "long_poll")
    await services.jobs.start(delivery)
    job_id = await _submit(services, _job(services))
    await fake_runpod.wait_for_requests("status-sync", 1)
    polls_before = len(fake_runpod.requests_for("status"))
    job = await services.jobs.get(job_id)
    fake_runpod.finish(job.backend_id)
    await delivery.wait(job_id)
    assert (await services.jobs.get(job_id)).state is JobState.DONE
    assert len(fake_runpod.requests_for("status")) == polls_before, "no poll while long-polled"
    assert len(fake_runpod.requests_for("status-sync")) == 1


async def test_more_running_jobs_than_long_polls_are_polled(
    tmp_path: Path,
    fake_runpod: FakeRunPod,
    open_services: OpenServices,
    delivery: RecordingDelivery,
) -> None:
    fake_runpod.status_sync_time_scale = 60.0
    fake_runpod.script(*[Outcome(status="STUCK")] * 3)
    settings = make_settings(tmp_path, fake_runpod, RUNPOD_LONG_POLLS="1", MAX_JOBS_IN_FLIGHT="3")
    services = await open_services(settings)
    await services.jobs.start(delivery)
    ids = [await _submit(services, _job(services, user=n)) for n in range(3)]
    for job_id in ids:
        await wait_for_state(services, job_id, "running")
    await fake_runpod.wait_for_requests("status-sync", 1)
    polls = len(fake_runpod.requests_for("status"))
    await fake_runpod.wait_for_requests("status", polls + 4)  # the other two go on being polled
    assert (
        len(fake_runpod.requests_for("status-sync")) == 1 and services.jobs.told.long_polled() == 1
    )
    for job_id in ids:
        fake_runpod.finish((await services.jobs.get(job_id)).backend_id)
    for job_id in ids:
        await delivery.wait(job_id)


async def test_an_endpoint_without_long_polls_is_polled_instead(
    tmp_path: Path,
    fake_runpod: FakeRunPod,
    open_services: OpenServices,
    delivery: RecordingDelivery,
) -> None:
    fake_runpod.switch_off_status_sync()
    fake_runpod.script(RUNNING, RUNNING)
    services = await _open(open_services, tmp_path, fake_runpod, "long_poll")
    await services.jobs.start(delivery)
    for user in (1, 2):
        job_id = await _submit(services, _job(services, user=user))
        await delivery.wait(job_id)
        assert (await services.jobs.get(job_id)).state is JobState.DONE
    assert len(fake_runpod.requests_for("status-sync")) == 1, "absence is learned once"


async def test_stop_cancels_held_long_polls_and_a_restart_finishes_the_job(
    tmp_path: Path,
    fake_runpod: FakeRunPod,
    open_services: OpenServices,
    delivery: RecordingDelivery,
) -> None:
    fake_runpod.status_sync_time_scale = 60.0
    fake_runpod.script(Outcome(status="STUCK"))
    services = await _open(open_services, tmp_path, fake_runpod, "long_poll")
    await services.jobs.start(delivery)
    job_id = await _submit(services, _job(services))
    await fake_runpod.wait_for_requests("status-sync", 1)
    await services.close()
    again = await _open(open_services, tmp_path, fake_runpod, "long_poll")
    assert (await again.jobs.get(job_id)).state is JobState.RUNNING
    await again.jobs.start(delivery)
    await fake_runpod.wait_for_requests("status-sync", 2)
    fake_runpod.finish((await again.jobs.get(job_id)).backend_id)
    await delivery.wait(job_id)
    assert len(delivery.delivered[job_id]) == 1


async def test_the_execution_deadline_holds_while_long_polled(
    tmp_path: Path,
    fake_runpod: FakeRunPod,
    open_services: OpenServices,
    delivery: RecordingDelivery,
) -> None:
    fake_runpod.status_sync_time_scale = 0.01  # the 1 s shortest hold lasts 10 ms
    fake_runpod.script(Outcome(status="STUCK"))
    timing = dataclasses.replace(FAST, execution_timeout=0.05, execution_grace=0.05)
    settings = make_settings(tmp_path, fake_runpod, **mode_settings("long_poll"))
    services = await open_services(settings, timing=timing)
    await services.jobs.start(delivery)
    job_id = await _submit(services, _job(services))
    job = await wait_for_state(services, job_id, "timed_out")
    assert "time limit" in job.failure
    assert fake_runpod.requests_for("status-sync"), "it was long-polled"
    assert len(fake_runpod.requests_for("cancel")) == 1


async def test_a_webhook_tells_the_end_and_the_job_is_delivered(
    tmp_path: Path,
    fake_runpod: FakeRunPod,
    open_services: OpenServices,
    delivery: RecordingDelivery,
) -> None:
    fake_runpod.script(Outcome(status="STUCK"))
    services = await _open(open_services, tmp_path, fake_runpod, "webhook")
    await services.jobs.start(delivery)
    job_id = await _submit(services, _job(services))
    await wait_for_state(services, job_id, "running")
    polls = len(fake_runpod.requests_for("status"))
    fake_runpod.finish((await services.jobs.get(job_id)).backend_id)
    await delivery.wait(job_id)
    assert [call.answer for call in fake_runpod.webhook_calls] == [200]
    assert len(fake_runpod.requests_for("status")) == polls, "told, not polled"
    assert fake_runpod.requests_for("run")[0].json["webhook"].startswith("http://127.0.0.1:")


async def test_a_job_whose_webhook_never_comes_is_found_by_polling(
    tmp_path: Path,
    fake_runpod: FakeRunPod,
    open_services: OpenServices,
    delivery: RecordingDelivery,
) -> None:
    fake_runpod.inject_webhook("never")
    fake_runpod.script(RUNNING)
    settings = make_settings(tmp_path, fake_runpod, **mode_settings("webhook"))
    services = await open_services(settings, timing=dataclasses.replace(FAST, webhook_grace=0.05))
    new = _job(services)
    services.jobs.durations.observe(new.request, 300)  # past runs: it should end after 0.3 s
    await services.jobs.start(delivery)
    job_id = await _submit(services, new)
    await delivery.wait(job_id)
    assert (await services.jobs.get(job_id)).state is JobState.DONE
    assert fake_runpod.webhook_calls == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("outcome", "state"),
    [
        (Outcome(status="FAILED", error="boom", run_delay=0.1), "failed"),
        (Outcome(status="TIMED_OUT", run_delay=0.1), "timed_out"),
        (Outcome(run_delay=0.1, output_format="no_images"), "failed"),
    ],
)
async def test_every_ending_is_told_the_same_way_in_each_mode(
    tmp_path: Path,
    fake_runpod: FakeRunPod,
    open_services: OpenServices,
    delivery: RecordingDelivery,
    mode: str,
    outcome: Outcome,
    state: str,
) -> None:
    fake_runpod.script(outcome)
    services = await _open(open_services, tmp_path, fake_runpod, mode)
    await services.jobs.start(delivery)
    job_id = await _submit(services, _job(services))
    ended = await wait_for_state(services, job_id, state)
    assert ended.failure
    await delivery.wait(job_id)
    assert len(delivery.notified[job_id]) == 1


async def test_cancelling_a_long_polled_job_lets_go_of_its_long_poll(
    tmp_path: Path,
    fake_runpod: FakeRunPod,
    open_services: OpenServices,
    delivery: RecordingDelivery,
) -> None:
    fake_runpod.status_sync_time_scale = 60.0
    fake_runpod.script(Outcome(status="STUCK"))
    services = await _open(open_services, tmp_path, fake_runpod, "long_poll")
    await services.jobs.start(delivery)
    job_id = await _submit(services, _job(services))
    await fake_runpod.wait_for_requests("status-sync", 1)
    assert services.jobs.told.long_polled() == 1
    cancelled = await services.jobs.cancel(job_id, by_user=1)
    assert cancelled.state is JobState.CANCELLED
    assert services.jobs.told.long_polled() == 0
    assert len(fake_runpod.requests_for("cancel")) == 1
