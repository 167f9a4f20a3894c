"""The poller: follows every job the backend has, within deadlines, with backoff on failures."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from dataclasses import dataclass, field

from bot import failures, polling
from bot.backend import (
    BackendAuthError,
    BackendError,
    BackendHealth,
    BackendJob,
    BackendNotFound,
    BackendStatus,
)
from bot.db import is_transient
from bot.failures import Failure
from bot.jobs.core import JobCore
from bot.jobs.model import Job, JobState, JobUpdate, UpdateKind
from bot.supervisor import Loop

log = logging.getLogger(__name__)


@dataclass
class Tracked:
    """In-memory polling state of a job the backend has; times are `time.monotonic()` values.

    Deadlines count from `submitted` and `started`, so a step of the wall clock cannot end a job.
    """

    job: Job
    submitted: float
    started: float | None = None
    backoff: float = 0.0
    queued_polls: int = 0
    last_poll: float | None = None
    crashes: int = 0


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    job_id: int = field(compare=False)


class Poller:
    """Polls each followed job when it is due, a bounded number at a time."""

    def __init__(self, core: JobCore) -> None:
        self.core = core
        self.tracked: dict[int, Tracked] = {}
        self.health: dict[str, BackendHealth] = {}
        self._due: list[_Due] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(core.limits.poll_concurrency)
        self._auth_reported = False

    def follows(self, job_id: int) -> bool:
        return job_id in self.tracked

    def wake(self) -> None:
        self._wake.set()

    def track(
        self, job: Job, *, delay: float, submitted: float, started: float | None = None
    ) -> Tracked:
        """Follow a job the backend has; `submitted` and `started` are monotonic times."""
        tracked = self.tracked.get(job.id)
        if tracked is None:
            tracked = self.tracked[job.id] = Tracked(job, submitted=submitted)
        tracked.job = job
        tracked.submitted, tracked.started = submitted, started
        tracked.queued_polls = 0
        self._schedule(job.id, delay)
        return tracked

    def untrack(self, job_id: int) -> None:
        tracked = self.tracked.pop(job_id, None)
        if tracked is not None:
            self.core.told.forget(tracked)

    def poll_soon(self, job_id: int) -> None:
        if job_id in self.tracked:
            self._schedule(job_id, 0.0)

    def _schedule(self, job_id: int, delay: float) -> None:
        heapq.heappush(self._due, _Due(time.monotonic() + max(0.0, delay), next(self._seq), job_id))
        self._wake.set()

    async def poll_loop(self, loop: Loop) -> None:
        while True:
            loop.beat()
            now = time.monotonic()
            while self._due and self._due[0].at <= now:
                due = heapq.heappop(self._due)
                if due.job_id not in self.tracked:
                    continue
                await self._slots.acquire()
                self.core.spawn(self._poll_guarded(due.job_id), f"poll-{due.job_id}")
                now = time.monotonic()
            self._wake.clear()
            timeout = self._due[0].at - time.monotonic() if self._due else None
            await loop.idle(self._wake, timeout)

    async def _poll_guarded(self, job_id: int) -> None:
        try:
            await self._poll(job_id)
        except Exception as exc:
            await self.crashed(job_id, exc)
        else:
            if (tracked := self.tracked.get(job_id)) is not None:
                tracked.crashes = 0
        finally:
            self._slots.release()

    async def crashed(self, job_id: int, exc: Exception) -> None:
        """A refusing database only delays the job; anything else, again and again, ends it."""
        tracked = self.tracked.get(job_id)
        if tracked is None:
            log.error("job %d: handling a poll failed", job_id, exc_info=exc)
            return
        timing = self.core.timing
        if is_transient(exc):
            delay = self._next_backoff(tracked)
            log.warning(
                "job %d: the database refused (%s); polling again in %.1fs", job_id, exc, delay
            )
            self._schedule(job_id, delay)
            return
        tracked.crashes += 1
        log.error(
            "job %d: handling the backend's answer crashed (%d of %d in a row)",
            job_id,
            tracked.crashes,
            timing.max_poll_crashes,
            exc_info=exc,
        )
        if tracked.crashes < timing.max_poll_crashes:
            self._schedule(job_id, self._next_backoff(tracked))
            return
        try:
            await self.core.fail(tracked.job, failures.INTERNAL, raw=f"{type(exc).__name__}: {exc}")
        except Exception as second:
            log.warning("job %d: could not be failed yet (%s); polling again", job_id, second)
            if job_id in self.tracked:
                self._schedule(job_id, self._next_backoff(tracked))

    def _next_backoff(self, tracked: Tracked) -> float:
        timing = self.core.timing
        tracked.backoff = min(
            timing.queue_max_interval, max(timing.retry_delay, tracked.backoff * timing.growth)
        )
        return tracked.backoff

    async def _poll(self, job_id: int) -> None:
        tracked = self.tracked.get(job_id)
        if tracked is None:
            return
        job = tracked.job
        assert job.backend_id is not None
        answer: BackendJob | None = None
        error: BackendError | None = None
        try:
            answer = await self.core.backend(job).status(job.backend_id)
        except BackendError as exc:
            error = exc
        if self.tracked.get(job_id) is not tracked:
            return  # cancelled or ended while this request was out: its answer is old news
        await self.answered(tracked, answer, error)

    async def answered(
        self, tracked: Tracked, answer: BackendJob | None, error: BackendError | None
    ) -> None:
        """Act on one answer about a job, or on the error instead: a poll's or a long-poll's."""
        job, job_id = tracked.job, tracked.job.id
        if isinstance(error, BackendNotFound):
            await self.core.fail(job, failures.EXPIRED, raw=str(error))
        elif error is not None and await self._enforce_deadlines(tracked):
            return  # deadlines hold whatever the backend answers: garbage, an outage, a refused key
        elif isinstance(error, BackendAuthError):
            self.report_auth(error)
            self._schedule(job_id, self.core.timing.auth_backoff)
        elif error is not None:
            delay = self._next_backoff(tracked)
            log.info("job %d: status poll failed (%s); next in %.1fs", job_id, error, delay)
            self._schedule(job_id, delay)
        elif answer is not None:
            tracked.backoff = 0.0
            previous_poll, tracked.last_poll = tracked.last_poll, time.monotonic()
            await self._handle(tracked, answer, previous_poll)

    async def _handle(
        self, tracked: Tracked, answer: BackendJob, previous_poll: float | None
    ) -> None:
        job, core = tracked.job, self.core
        status = answer.status
        if status is BackendStatus.COMPLETED:
            await core.delivery.completed(job, answer)
        elif status is BackendStatus.FAILED:
            explained = failures.explain_failed_job(answer.error, answer.output)
            await core.fail(job, explained.failure, raw=explained.raw)
        elif status is BackendStatus.TIMED_OUT:
            await core.fail(job, failures.TIMED_OUT, raw="the backend timed it out")
        elif status is BackendStatus.CANCELLED:
            await core.finish(
                job,
                JobState.CANCELLED,
                Failure("cancelled", "The job was cancelled at RunPod."),
                raw="the backend cancelled it",
            )
        elif status is BackendStatus.RUNNING or job.state is JobState.RUNNING:
            # A queued or unknown answer after it started: it keeps its running deadline.
            await self._running(tracked, answer, previous_poll)
        else:
            await self._queued(tracked)

    async def _queued(self, tracked: Tracked) -> None:
        job, core = tracked.job, self.core
        if await self._enforce_deadlines(tracked):
            return
        waited = time.monotonic() - tracked.submitted
        health = self.health.get(job.endpoint)
        no_workers = (
            health is not None
            and health.total_workers == 0
            and waited > core.timing.no_worker_notice
        )
        core.emit(JobUpdate(job, UpdateKind.WAITING, cold=self.cold(job), no_workers=no_workers))
        interval = polling.queued_interval(core.timing, core.estimate(job), tracked.queued_polls)
        tracked.queued_polls += 1
        self._schedule(job.id, interval)

    async def _running(
        self, tracked: Tracked, answer: BackendJob, previous_poll: float | None
    ) -> None:
        job, core = tracked.job, self.core
        now = time.monotonic()
        if job.state is JobState.SUBMITTED:
            started = now
            if answer.delay_ms is not None:
                started = min(
                    now, max(tracked.submitted, tracked.submitted + answer.delay_ms / 1000)
                )
            elif previous_poll is not None:
                started = now - (now - previous_poll) / 2
            running = await core.transition(
                job.id,
                {JobState.SUBMITTED},
                JobState.RUNNING,
                fields={
                    "started_at": core.clock() - (time.monotonic() - started),
                    "delay_ms": answer.delay_ms,
                },
            )
            if running is None:
                return
            tracked.job = job = running
            tracked.started = started
        if tracked.started is None:
            tracked.started = now  # it went back to the backend's queue and out again
        if await self._enforce_deadlines(tracked):
            return
        elapsed = time.monotonic() - tracked.started
        core.emit(JobUpdate(job, UpdateKind.RUNNING, elapsed=elapsed))
        interval = polling.running_interval(core.timing, core.estimate(job), elapsed)
        delay = core.told.next_running(tracked, interval)
        if delay is not None:  # None: a long-poll follows it
            self._schedule(job.id, delay)

    async def _enforce_deadlines(self, tracked: Tracked) -> bool:
        """End the job if its queue or execution deadline has passed; True if it did.

        Both count on the monotonic clock from when this process saw the job go out or start.
        """
        job, timing = tracked.job, self.core.timing
        now = time.monotonic()
        if tracked.started is None:
            if now - tracked.submitted <= timing.queue_timeout:
                return False
            failure, raw = failures.QUEUE_TIMEOUT, "queue deadline passed"
        else:
            limit = self.core.execution_limit(job) + timing.execution_grace
            if now - tracked.started <= limit:
                return False
            failure, raw = failures.TIMED_OUT, "execution deadline passed"
        await self.cancel_at_backend(job)
        await self.core.fail(job, failure, raw=raw)
        return True

    async def cancel_at_backend(self, job: Job) -> None:
        if not job.backend_id:
            return
        try:
            await self.core.backend(job).cancel(job.backend_id)
        except BackendError as exc:
            log.warning(
                "job %d: cancel at the backend failed (%s); it may still run there", job.id, exc
            )

    async def health_loop(self, loop: Loop) -> None:
        """While jobs wait in a backend's queue, watch its workers: a cold start or a queue?"""
        while True:
            loop.beat()
            waiting = {
                t.job.endpoint for t in self.tracked.values() if t.job.state is JobState.SUBMITTED
            }
            for endpoint in sorted(waiting):
                try:
                    self.health[endpoint] = await self.core.backends[endpoint].health()
                except BackendError as exc:
                    log.info("endpoint %s: health check failed: %s", endpoint, exc)
            await loop.sleep(self.core.timing.health_interval)

    def cold(self, job: Job) -> bool:
        health = self.health.get(job.endpoint)
        return health is not None and health.cold

    def report_auth(self, exc: BackendError) -> None:
        if not self._auth_reported:
            self._auth_reported = True
            log.error(
                "the backend refused the API key (401): set a valid RUNPOD_API_KEY and restart (%s)",
                exc,
            )
