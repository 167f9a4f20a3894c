"""The scheduler: the fair local queue, the slots at the backend, dispatch, positions, submission."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bot import failures, polling
from bot.backend import (
    BackendAuthError,
    BackendError,
    BackendNotFound,
    BackendRejected,
    BackendUnavailable,
)
from bot.db import is_transient
from bot.estimates import expected_wait
from bot.jobs.core import JobCore
from bot.jobs.model import Job, JobState, JobUpdate, UpdateKind
from bot.ratelimit import Turn
from bot.supervisor import Loop

log = logging.getLogger(__name__)


class Scheduler:
    """Hands waiting jobs to the backend in member rotation, within the in-flight caps."""

    def __init__(self, core: JobCore) -> None:
        self.core = core
        self._last_positions: dict[int, int] = {}
        # On a shared database: every queued job's place in the shared table, and how many jobs
        # every process has in flight, as last read.
        self._shared_positions: dict[int, int] = {}
        self._shared_in_flight = 0

    def enqueue(self, job: Job, *, not_before: float | None = None) -> None:
        self.core.queue.add(job.id, job.user_id, job, not_before=not_before, group=job.endpoint)
        self.core.wake_dispatch.set()
        self.core.positions_dirty.set()

    def position(self, job_id: int) -> int | None:
        """1-based place among the waiting jobs, or None if the job is not waiting: in the local
        queue, or on a shared database in the shared table as `position_loop` last read it."""
        if self.core.leases.shared:
            return self._shared_positions.get(job_id)
        return self.core.queue.positions().get(job_id)

    async def dispatch_loop(self, loop: Loop) -> None:
        core = self.core
        while True:
            loop.beat()
            now = time.monotonic()
            ready_at = core.queue.next_ready_at(now)
            timeout = None if ready_at is None else ready_at - now
            if core.leases.shared:
                # Jobs other processes queue wake nobody here: look again every claim interval.
                interval = core.timing.claim_interval
                timeout = interval if timeout is None else min(timeout, interval)
            await loop.idle(core.wake_dispatch, timeout)
            core.wake_dispatch.clear()
            if core.leases.shared:
                await self._claim_shared()
                continue
            while (taken := core.queue.take_next(time.monotonic())) is not None:
                job = taken[1]
                core.positions_dirty.set()
                core.own(job.id, core.spawn_finishing(self.submit(job), f"submit-{job.id}"))

    async def _claim_shared(self) -> None:
        """Send the globally next jobs from the shared table while this process has room."""
        core = self.core
        while core.queue.out < core.queue.caps.total:
            # The claim moves a job to submitting: first wait for the rate limit, as `submit` does.
            # Which endpoint's job comes next is known only after the claim, so each takes a turn.
            turns: dict[str, Turn] = {}
            job: Job | None = None
            try:
                for name, backend in core.backends.items():
                    turns[name] = await backend.ready_to_submit()
                job = await core.leases.claim_next(skip=core.queue.delayed(time.monotonic()))
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("claiming a queued job: the database refused (%s); trying later", exc)
                return
            finally:
                for name, turn in turns.items():
                    if job is None or name != job.endpoint:
                        turn.give_back()
            if job is None:
                return
            core.queue.remove(job.id)
            core.queue.hold(job.id, job.user_id, job.endpoint)
            core.positions_dirty.set()
            send = self._send_held(job, turns[job.endpoint])
            core.own(job.id, core.spawn_finishing(send, f"submit-{job.id}"))

    async def position_loop(self, loop: Loop) -> None:
        """Tell waiting jobs where they stand, at most once per `position_interval`."""
        core = self.core
        while True:
            loop.beat()
            if core.leases.shared:
                # Jobs other processes accept and claim move places without a word to this one.
                await self._read_shared_positions()
            else:
                await loop.idle(core.positions_dirty)
            core.positions_dirty.clear()
            positions = self._shared_positions if core.leases.shared else core.queue.positions()
            starts = self.expected_starts(positions)
            for job_id, place in positions.items():
                job = core.queue.waiting(job_id)
                if job is not None and self._last_positions.get(job_id) != place:
                    core.emit(
                        JobUpdate(job, UpdateKind.QUEUED, position=place, starts_at=starts[job_id])
                    )
            self._last_positions = positions
            await loop.sleep(core.timing.position_interval)

    async def _read_shared_positions(self) -> None:
        try:
            self._shared_positions = await self.core.leases.queue_positions()
            self._shared_in_flight = await self.core.leases.in_flight()
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("reading queue positions: the database refused (%s); trying later", exc)

    def expected_starts(self, positions: dict[int, int]) -> dict[int, float]:
        """When each waiting job should get a slot (wall clock), in the order they will get one.

        From the expected time left of the jobs holding slots and the expected time of each job
        ahead; members' own caps are left out, so it is an estimate, and said to be one.
        """
        core = self.core
        now = time.monotonic()
        in_flight_left = []
        for job_id in core.queue.holders():
            tracked = core.poller.tracked.get(job_id)
            if tracked is None:
                continue  # being sent or delivered: its slot frees any moment
            expected = core.estimate(tracked.job).seconds
            ran = now - tracked.started if tracked.started is not None else 0.0
            in_flight_left.append(expected - ran)
        # Other processes' jobs in flight hold slots too; known here only by their number, each
        # counts as half done (the job being estimated standing for their length).
        holders = len(core.queue.holders())
        elsewhere = max(0, self._shared_in_flight - holders) if core.leases.shared else 0
        wall = core.clock()
        starts: dict[int, float] = {}
        # Another process's job ahead (a shared database) is known here only by its place: it
        # counts as long as the job whose start is being estimated.
        ahead: list[float | None] = []
        for job_id in sorted(positions, key=positions.__getitem__):
            job = core.queue.waiting(job_id)
            if job is None:
                ahead.append(None)
                continue
            own = core.estimate(job).seconds
            before = [own if seconds is None else seconds for seconds in ahead]
            left = in_flight_left + [own / 2] * elsewhere
            starts[job_id] = wall + expected_wait(core.limits.max_in_flight, left, before)
            ahead.append(own)
        return starts

    async def submit(self, job: Job) -> None:
        # Still queued while it waits for the backend's rate limit: a stop now sends it later.
        turn = await self.core.backend(job).ready_to_submit()
        try:
            await self._start(job, turn)
        finally:
            turn.give_back()  # unless its /run used it

    async def _start(self, job: Job, turn: Turn) -> None:
        """Move a job holding a slot to submitting, then send it."""
        core = self.core
        try:
            submitting = await core.transition(job.id, {JobState.QUEUED}, JobState.SUBMITTING)
        except Exception as exc:
            core.release_slot(job.id)
            if not is_transient(exc):
                raise  # it stays queued in the database: the reconciler adopts it again
            log.warning("job %d: the database refused to start it (%s); it waits", job.id, exc)
            self.enqueue(job, not_before=time.monotonic() + core.timing.submit_retry_delay)
            return
        if submitting is None:
            core.release_slot(job.id)
            return
        await self._send_held(submitting, turn)

    async def _send_held(self, submitting: Job, turn: Turn) -> None:
        """Send a job moved to submitting whose slot is held here, on its `turn` (given back if
        unused); the slot is let go unless the backend has the job or its next step is not saved."""
        core = self.core
        try:
            await self._send(submitting, turn)
        except Exception as exc:
            # Whether the backend got it is unknown, so it is not sent again (see "submitting").
            log.exception("job %d: submitting it crashed", submitting.id)
            await core.save_or_defer(
                submitting.id,
                functools.partial(
                    core.fail,
                    submitting,
                    failures.SUBMIT_UNCERTAIN,
                    raw=f"{type(exc).__name__}: {exc}",
                ),
            )
        finally:
            turn.give_back()
            # A job the backend has keeps its slot, and so does one whose next step is not saved.
            if not core.poller.follows(submitting.id) and submitting.id not in core.unsaved:
                core.release_slot(submitting.id)

    async def _send(self, submitting: Job, turn: Turn) -> None:
        """Submit, then record the backend's id at once; only a provably unsent job is tried again."""
        core = self.core
        try:
            attempt = await core.store.submit_attempts(submitting.id)
            images = await core.store.inputs(submitting.id)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("job %d: the database refused (%s); it is sent later", submitting.id, exc)
            await core.save_or_defer(
                submitting.id,
                functools.partial(self._requeue, submitting, core.timing.submit_retry_delay, exc),
            )
            return
        step: Callable[[], Awaitable[Any]]
        try:
            answer = await core.backend(submitting).submit(
                submitting.workflow,
                images,
                execution_timeout_ms=max(5000, int(core.execution_limit(submitting) * 1000)),
                ttl_ms=int(polling.time_to_live(core.timing, core.estimate(submitting)) * 1000),
                turn=turn,
            )
        except BackendAuthError as exc:
            core.poller.report_auth(exc)
            step = functools.partial(core.fail, submitting, failures.AUTH, raw=str(exc))
        except BackendNotFound as exc:
            step = functools.partial(core.fail, submitting, failures.ENDPOINT, raw=str(exc))
        except BackendRejected as exc:
            step = functools.partial(core.fail, submitting, failures.REJECTED, raw=str(exc))
        except BackendUnavailable as exc:
            step = functools.partial(self._requeue_or_fail, submitting, attempt, exc)
        except BackendError as exc:
            step = functools.partial(core.fail, submitting, failures.SUBMIT_UNCERTAIN, raw=str(exc))
        else:
            step = functools.partial(self._submitted, submitting, answer.id, time.monotonic())
        await core.save_or_defer(submitting.id, step)

    async def _submitted(self, submitting: Job, backend_id: str, answered: float) -> None:
        """Store the backend's id and start following the job; `answered` is when it answered."""
        core = self.core
        submitted = await core.transition(
            submitting.id,
            {JobState.SUBMITTING},
            JobState.SUBMITTED,
            fields={
                "backend_id": backend_id,
                "submitted_at": core.clock() - (time.monotonic() - answered),
            },
            detail=f"backend id {backend_id}",
        )
        if submitted is None:
            return
        core.poller.track(submitted, delay=core.timing.first_poll, submitted=answered)
        if submitted.id in core.cancel_requested:
            await core.poller.cancel_at_backend(submitted)
            await core.finish(
                submitted,
                JobState.CANCELLED,
                core.cancel_requested[submitted.id],
                detail="cancelled while submitting",
            )
            return
        core.emit(JobUpdate(submitted, UpdateKind.WAITING, cold=core.poller.cold(submitted)))

    async def _requeue_or_fail(self, job: Job, attempt: int, exc: BackendError) -> None:
        """The backend provably never got the job (unreachable, rate limited): try again later."""
        core = self.core
        if attempt >= core.timing.max_submit_attempts:
            await core.fail(job, failures.UNAVAILABLE, raw=str(exc))
            return
        if job.id in core.cancel_requested:
            await core.finish(
                job,
                JobState.CANCELLED,
                core.cancel_requested[job.id],
                detail="cancelled while submitting",
            )
            return
        await self._requeue(
            job, core.timing.submit_retry_delay * core.timing.growth ** (attempt - 1), exc
        )

    async def _requeue(self, job: Job, delay: float, reason: Exception) -> None:
        """Put a job the backend never got back in the queue, to be sent after `delay`.

        The delay is stored with the job: on a shared database any process may claim it next."""
        requeued = await self.core.transition(
            job.id,
            {JobState.SUBMITTING},
            JobState.QUEUED,
            fields={"not_before": self.core.clock() + delay},
            detail=f"not accepted, will retry: {reason}",
        )
        self.core.release_slot(job.id)
        if requeued is not None:
            self.enqueue(requeued, not_before=time.monotonic() + delay)
