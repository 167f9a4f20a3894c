"""The job manager: wires the rooms together and is the one object the rest of the bot talks to."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bot import failures

# Modules, not their names: bot.store.jobs reads this package's model while it loads.
from bot import store as engines
from bot.backend import BackendJob, GpuBackend
from bot.db import Database, Transaction
from bot.estimates import DurationModel
from bot.jobs.core import JobCore, busy_is_member_facing
from bot.jobs.delivery import Delivery
from bot.jobs.leases import Leases, process_name
from bot.jobs.model import (
    AT_BACKEND,
    DEFAULT_ENDPOINT,
    TERMINAL,
    Accounting,
    AlreadyFinished,
    Deliverer,
    FreeAccounting,
    Job,
    JobError,
    JobState,
    JobUpdate,
    Limits,
    MemberBusy,
    NewJob,
    NotYourJob,
    Settlement,
)
from bot.jobs.poller import Poller, Tracked
from bot.jobs.recovery import Recovery
from bot.jobs.scheduler import Scheduler
from bot.jobs.told import Told
from bot.polling import Timing
from bot.ratelimit import TokenBucket
from bot.store import jobs as job_store
from bot.supervisor import Loop, Supervisor
from bot.webhooks import WebhookReceiver

log = logging.getLogger(__name__)


class JobManager:
    """Owns every job from acceptance to its outcome; every state change a compare-and-set."""

    def __init__(
        self,
        db: Database,
        backend: GpuBackend | Mapping[str, GpuBackend],
        *,
        accounting: Accounting | None = None,
        timing: Timing | None = None,
        limits: Limits | None = None,
        durations: DurationModel | None = None,
        clock: Callable[[], float] = time.time,
        store: job_store.JobStore | None = None,
        process: str | None = None,
        long_polls: int = 0,
        webhooks: WebhookReceiver[BackendJob] | None = None,
        budgets: Sequence[TokenBucket] = (),
    ) -> None:
        backends = backend if isinstance(backend, Mapping) else {DEFAULT_ENDPOINT: backend}
        stores = engines.stores_for(db)
        store = store or stores.jobs
        self._core = core = JobCore(
            db,
            store,
            backends,
            accounting=accounting or FreeAccounting(),
            timing=timing or Timing(),
            limits=limits or Limits(),
            durations=durations or DurationModel(),
            clock=clock,
        )
        self.scheduler = core.scheduler = Scheduler(core)
        self.poller = core.poller = Poller(core)
        self.told = core.told = Told(self.poller, long_polls=long_polls, webhooks=webhooks)
        self.delivery = core.delivery = Delivery(core)
        self.leases = core.leases = Leases(
            core, stores.leases, process or process_name(), budgets=budgets
        )
        self.recovery = Recovery(core)
        self._loops: list[Loop] = []

    @property
    def db(self) -> Database:
        return self._core.db

    @property
    def timing(self) -> Timing:
        return self._core.timing

    @timing.setter
    def timing(self, timing: Timing) -> None:
        self._core.timing = timing

    @property
    def durations(self) -> DurationModel:
        return self._core.durations

    @property
    def accounting(self) -> Accounting:
        return self._core.accounting

    @property
    def backends(self) -> Mapping[str, GpuBackend]:
        return self._core.backends

    # ----- public API -------------------------------------------------------------------

    def subscribe(self, listener: Callable[[JobUpdate], None]) -> None:
        """Call `listener` (synchronously; it must not block) on every job update."""
        self._core.subscribers.append(listener)

    async def accept(self, new: NewJob) -> Job:
        """Store the job and reserve its cost in one transaction; refusals store nothing."""
        core = self._core
        if new.endpoint not in core.backends:
            raise JobError(f"The endpoint {new.endpoint!r} is not configured.")
        now = core.clock()

        async def store(tx: Transaction) -> Job:
            # One person, one set of limits: jobs in every server count.
            unfinished = await core.store.unfinished_count(tx, new.user_id)
            if unfinished >= core.limits.member_max_queued:
                raise MemberBusy(
                    f"You already have {unfinished} jobs waiting or running (in all servers "
                    f"together); the limit is {core.limits.member_max_queued}. Wait for one to "
                    "finish or `/cancel` one."
                )
            job = await core.store.add(tx, new, at=now)
            await core.leases.take(tx, job.id)
            await core.accounting.reserve(tx, job.id, new)
            return job

        with busy_is_member_facing():
            job = await core.db.write(store)
        log.info(
            "job %d accepted (guild=%s user=%s template=%s cost=%d)",
            job.id,
            job.guild_id,
            job.user_id,
            job.template,
            job.cost,
        )
        return job

    async def attach_message(
        self, job_id: int, channel_id: int | None, message_id: int | None
    ) -> Job | None:
        """Record the job's progress message and let the scheduler take it.

        None if the job is no longer waiting for it, or if the database refused for now (the
        reconciler records it later).
        """
        core = self._core

        async def attach() -> Job | None:
            job = await core.transition(
                job_id,
                {JobState.ACCEPTED},
                JobState.QUEUED,
                fields={"channel_id": channel_id, "message_id": message_id},
            )
            if job is not None and core.running:
                self.scheduler.enqueue(job)
            return job

        return await core.save_or_defer(job_id, attach)

    async def abandon(self, job_id: int, reason: str) -> None:
        """Withdraw an accepted job whose progress message could not be posted; refund it."""
        core = self._core
        await core.save_or_defer(
            job_id,
            functools.partial(
                core.transition,
                job_id,
                {JobState.ACCEPTED},
                JobState.CANCELLED,
                fields={
                    "failure": failures.CANCELLED.message,
                    "error": reason,
                    "delivered_at": core.clock(),
                },
                settle=Settlement.REFUND,
            ),
        )

    async def relocate(self, job_id: int, channel_id: int, message_id: int) -> None:
        """Record a fresh message (the old one was deleted) at once, so it is never posted twice."""
        core = self._core
        now = core.clock()
        await core.db.write(
            lambda tx: core.store.relocate(tx, job_id, channel_id, message_id, at=now)
        )

    async def get(self, job_id: int) -> Job | None:
        return await self._core.store.get(job_id)

    async def events(self, job_id: int) -> list[job_store.Event]:
        return await self._core.store.events(job_id)

    async def recent(
        self, guild_id: int | None, user_id: int | None, limit: int = 10, offset: int = 0
    ) -> list[Job]:
        """A server's jobs, newest first: one member's, or everyone's (`user_id` None)."""
        return await self._core.store.recent(guild_id, user_id, limit, offset)

    async def active(self, guild_id: int | None, user_id: int | None = None) -> list[Job]:
        return await self._core.store.active(guild_id, user_id)

    def position(self, job_id: int) -> int | None:
        """1-based place in the local queue, or None if the job is not waiting here."""
        return self.scheduler.position(job_id)

    async def cancel(self, job_id: int, *, by_user: int, moderator: bool = False) -> Job:
        """Cancel a member's job wherever it is; the credits return. Raises `JobError`."""
        with busy_is_member_facing():
            return await self._cancel(job_id, by_user=by_user, moderator=moderator)

    async def _cancel(self, job_id: int, *, by_user: int, moderator: bool) -> Job:
        core = self._core
        job = await self.get(job_id)
        if job is None:
            raise JobError(f"There is no job #{job_id}.")
        if job.user_id != by_user and not moderator:
            raise NotYourJob("Only the member who started a job, or a moderator, can cancel it.")
        if job.state in TERMINAL or job.state is JobState.DELIVERING:
            raise AlreadyFinished(f"Job #{job_id} has already finished ({job.state.value}).")
        if job.state is JobState.ACCEPTED:
            raise JobError(f"Job #{job_id} is still starting; try again in a moment.")
        detail = f"by user {by_user}" + (
            " (moderator)" if moderator and job.user_id != by_user else ""
        )
        by_moderator = moderator and job.user_id != by_user
        if job.state is JobState.SUBMITTING:
            core.cancel_requested[job_id] = failures.cancelled(by_moderator=by_moderator)
            log.info("job %d cancel requested while submitting (%s)", job_id, detail)
            return job
        # Ours first: if a poll saw the job finish meanwhile, the compare-and-set says so.
        cancelled = await core.finish(
            job,
            JobState.CANCELLED,
            failures.cancelled(by_moderator=by_moderator),
            detail=detail,
            from_states={JobState.QUEUED, *AT_BACKEND},
        )
        if cancelled is None:
            raise AlreadyFinished(f"Job #{job_id} finished before it could be cancelled.")
        # The row, not the earlier read: dispatch may have sent it to the backend in between.
        if cancelled.backend_id:
            await self.poller.cancel_at_backend(cancelled)
        return cancelled

    async def start(self, deliverer: Deliverer, *, supervisor: Supervisor | None = None) -> None:
        """Resume every unfinished job, then start scheduling and polling (supervised loops)."""
        core = self._core
        if core.running:
            return
        core.deliverer = deliverer
        if self.leases.shared:
            # Its share before its first request, not one recount later.
            await self.leases.share_budgets()
        await self.recovery.load_history()
        await self.told.start()
        core.running = True
        # On start memory is empty: every unfinished job in the database is adopted.
        await self.recovery.reconcile(at_start=True)
        supervisor = supervisor or Supervisor()
        self._loops = [
            supervisor.start("jobs-dispatch", self.scheduler.dispatch_loop),
            supervisor.start("jobs-poll", self.poller.poll_loop),
            supervisor.start("jobs-positions", self.scheduler.position_loop),
            supervisor.start("jobs-health", self.poller.health_loop),
            supervisor.start("jobs-reconcile", self.recovery.reconcile_loop),
        ]
        if self.leases.shared:
            self._loops.append(supervisor.start("jobs-leases", self.leases.renew_loop))
            self._loops.append(supervisor.start("jobs-budget", self.leases.budget_loop))
            self._loops.append(supervisor.start("jobs-takeover", self.recovery.takeover_loop))
        core.wake_dispatch.set()
        self.poller.wake()

    async def stop(self) -> None:
        """Stop taking work; let submissions under way finish briefly; leave the rest in the DB."""
        core = self._core
        if not core.running:
            return
        core.running = False
        await asyncio.gather(*(loop.stop() for loop in self._loops))
        await self.told.stop()
        if core.finishing:
            await asyncio.wait(core.finishing, timeout=core.timing.shutdown_grace)
        pending = [t for t in core.tasks if not t.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._loops.clear()

    @property
    def limits(self) -> Limits:
        return self._core.limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self._core.limits = limits

    @property
    def running(self) -> bool:
        return self._core.running

    @property
    def task_count(self) -> int:
        return len(self._core.tasks) + len(self._loops)

    @property
    def slots_in_use(self) -> int:
        """Backend slots counted as taken (each should belong to a job in flight)."""
        return self._core.queue.out

    @property
    def in_progress(self) -> int:
        """Jobs waiting here for a slot plus jobs the backend has."""
        return len(self._core.queue) + len(self.poller.tracked)

    # ----- for tests and benchmarks that look inside ----------------------------------------

    @property
    def _queue(self) -> Any:
        return self._core.queue

    @property
    def _tracked(self) -> dict[int, Tracked]:
        return self.poller.tracked

    @property
    def _transition(self) -> Any:
        return self._core.transition

    async def _reconcile(self) -> None:
        await self.recovery.reconcile()
