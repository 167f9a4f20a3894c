"""The completion watcher: long-polls held against the fake RunPod, bounded, re-armed, stopped."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from bot.completion import CompletionWatcher
from bot.runpod import JobStatus, RunPodAuthError, RunPodClient, RunPodMalformed, RunPodNotFound
from tests.conftest import make_client
from tests.fakes import HANG_GUARD
from tests.fakes import fake_runpod as fr
from tests.fakes.fake_runpod import FakeRunPod, Outcome

WORKFLOW = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48}}}


@dataclass
class Seen:
    """What the watcher called back with, and a way to wait for it."""

    statuses: list[tuple[str, str]] = field(default_factory=list)
    faults: list[tuple[str, Exception]] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    fail_handling: bool = False

    async def on_status(self, job_id: str, status: JobStatus) -> None:
        self.statuses.append((job_id, status.status))
        self.changed.set()
        if self.fail_handling:
            raise RuntimeError("the database is locked")

    async def on_fault(self, job_id: str, exc: Exception) -> None:
        self.faults.append((job_id, exc))
        self.changed.set()

    async def on_release(self, job_id: str) -> None:
        self.released.append(job_id)
        self.changed.set()

    async def until(self, check) -> None:
        async with asyncio.timeout(HANG_GUARD):
            while not check():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def client(fake_runpod: FakeRunPod) -> AsyncIterator[RunPodClient]:
    fake_runpod.status_sync_time_scale = 0.005  # a 1 s hold lasts 5 ms
    runpod = make_client(fake_runpod)
    yield runpod
    await runpod.aclose()


def watcher(client: RunPodClient, seen: Seen, *, slots: int = 4) -> CompletionWatcher[JobStatus]:
    return CompletionWatcher(
        lambda job_id, wait: client.status_sync(job_id, wait_ms=round(wait * 1000)),
        ended=lambda status: status.terminal,
        on_status=seen.on_status,
        on_fault=seen.on_fault,
        on_release=seen.on_release,
        slots=slots,
        wait=1.0,
        available=lambda: client.status_sync_available is not False,
    )


async def _stuck_jobs(fake: FakeRunPod, client: RunPodClient, count: int) -> list[str]:
    fake.script(*[Outcome(status="STUCK")] * count)
    return [(await client.run({"workflow": WORKFLOW})).id for _ in range(count)]


async def test_a_watched_job_is_seen_finished_with_its_validated_status(
    fake_runpod: FakeRunPod, client: RunPodClient
) -> None:
    fake_runpod.status_sync_time_scale = 60.0  # holds far longer than the test
    seen = Seen()
    watch = watcher(client, seen)
    jobs = await _stuck_jobs(fake_runpod, client, 2)
    assert all(watch.watch(job_id) for job_id in jobs)
    await fake_runpod.wait_for_requests("status-sync", 2)
    for job_id in jobs:
        fake_runpod.finish(job_id)
    await seen.until(lambda: len(seen.statuses) == 2)
    assert sorted(seen.statuses) == sorted((job_id, "COMPLETED") for job_id in jobs)
    assert len(fake_runpod.requests_for("status-sync")) == 2, "one request per job"
    assert fake_runpod.requests_for("status") == []
    await seen.until(lambda: len(watch) == 0)
    await watch.stop()


async def test_no_more_long_polls_than_slots_the_rest_left_to_the_poller(
    fake_runpod: FakeRunPod, client: RunPodClient
) -> None:
    fake_runpod.status_sync_time_scale = 60.0
    watch = watcher(client, Seen(), slots=2)
    jobs = await _stuck_jobs(fake_runpod, client, 3)
    assert [watch.watch(job_id) for job_id in jobs] == [True, True, False]
    await fake_runpod.wait_for_requests("status-sync", 2)
    assert len(watch) == 2 and not watch.watching(jobs[2])
    assert watch.watch(jobs[0]), "a job already watched stays watched"
    watch.forget(jobs[0])
    assert watch.watch(jobs[2]), "a freed slot takes the next job"
    await fake_runpod.wait_for_requests("status-sync", 3)
    await watch.stop()


async def test_a_long_poll_that_runs_out_is_re_armed_until_the_job_ends(
    fake_runpod: FakeRunPod, client: RunPodClient
) -> None:
    seen = Seen()
    watch = watcher(client, seen)
    [job_id] = await _stuck_jobs(fake_runpod, client, 1)
    watch.watch(job_id)
    await fake_runpod.wait_for_requests("status-sync", 3)
    fake_runpod.finish(job_id)
    await seen.until(lambda: (job_id, "COMPLETED") in seen.statuses)
    await seen.until(lambda: not watch.watching(job_id))
    assert set(seen.statuses[:-1]) == {(job_id, "IN_PROGRESS")}
    assert seen.statuses[-1] == (job_id, "COMPLETED")
    held = len(fake_runpod.requests_for("status-sync"))
    assert held == len(seen.statuses), "one answer per request, none after the end"
    await watch.stop()


async def test_stop_cancels_held_long_polls_and_the_client_still_works(
    fake_runpod: FakeRunPod, client: RunPodClient
) -> None:
    fake_runpod.status_sync_time_scale = 60.0
    seen = Seen()
    watch = watcher(client, seen)
    jobs = await _stuck_jobs(fake_runpod, client, 3)
    for job_id in jobs:
        watch.watch(job_id)
    await fake_runpod.wait_for_requests("status-sync", 3)
    await watch.stop()
    assert len(watch) == 0 and seen == Seen(changed=seen.changed), "no callback on a stop"
    assert not watch.watch(jobs[0]), "a stopped watcher takes no job"
    assert (await client.status(jobs[0])).status == "IN_PROGRESS"


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (fr.http(401), RunPodAuthError),
        (fr.http(200, body={"id": "someone-else", "status": "COMPLETED"}), RunPodMalformed),
    ],
)
async def test_a_failed_long_poll_is_handed_over_like_a_failed_poll(
    fake_runpod: FakeRunPod, client: RunPodClient, fault: fr.Fault, error: type[Exception]
) -> None:
    seen = Seen()
    watch = watcher(client, seen)
    [job_id] = await _stuck_jobs(fake_runpod, client, 1)
    fake_runpod.inject("status-sync", fault)
    watch.watch(job_id)
    await seen.until(lambda: bool(seen.faults))
    assert [(j, type(e)) for j, e in seen.faults] == [(job_id, error)]
    await seen.until(lambda: not watch.watching(job_id))
    assert seen.statuses == [] and seen.released == []
    await watch.stop()


async def test_an_expired_job_surfaces_as_not_found(
    fake_runpod: FakeRunPod, client: RunPodClient
) -> None:
    seen = Seen()
    watch = watcher(client, seen)
    [job_id] = await _stuck_jobs(fake_runpod, client, 1)
    await client.status_sync(job_id, wait_ms=1000)
    fake_runpod.jobs[job_id].submitted_at -= fake_runpod.jobs[job_id].ttl + 1
    watch.watch(job_id)
    await seen.until(lambda: bool(seen.faults))
    assert isinstance(seen.faults[0][1], RunPodNotFound)
    await watch.stop()


async def test_without_status_sync_the_jobs_go_back_to_the_poller(
    fake_runpod: FakeRunPod, client: RunPodClient
) -> None:
    fake_runpod.switch_off_status_sync()
    seen = Seen()
    watch = watcher(client, seen)
    [running] = await _stuck_jobs(fake_runpod, client, 1)
    watch.watch(running)
    await seen.until(lambda: bool(seen.released))
    assert seen.statuses == [(running, "IN_PROGRESS")] and seen.released == [running]
    assert not watch.watch(running), "long-polls are off for this endpoint now"
    assert len(fake_runpod.requests_for("status-sync")) == 1
    await watch.stop()


async def test_a_callback_that_fails_hands_the_job_back_to_the_poller(
    fake_runpod: FakeRunPod, client: RunPodClient
) -> None:
    seen = Seen(fail_handling=True)
    watch = watcher(client, seen)
    [job_id] = await _stuck_jobs(fake_runpod, client, 1)
    watch.watch(job_id)
    await seen.until(lambda: bool(seen.released))
    assert seen.released == [job_id] and not watch.watching(job_id)
    await watch.stop()


async def test_held_long_polls_stay_within_the_connection_pool(
    fake_runpod: FakeRunPod,
) -> None:
    fake_runpod.status_sync_time_scale = 60.0
    pool = httpx.AsyncClient(limits=httpx.Limits(max_connections=3), timeout=HANG_GUARD)
    client = make_client(fake_runpod, http=pool)
    watch = watcher(client, Seen(), slots=2)
    jobs = await _stuck_jobs(fake_runpod, client, 2)
    for job_id in jobs:
        watch.watch(job_id)
    await fake_runpod.wait_for_requests("status-sync", 2)
    assert (await client.status(jobs[0])).status == "IN_PROGRESS", "a connection is left free"
    await watch.stop()
    await client.aclose()
