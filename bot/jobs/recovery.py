"""Recovery: on start and every `reconcile_interval`, memory is made to agree with the database."""

from __future__ import annotations

import asyncio
import logging
import time

from bot import failures, polling
from bot.db import Transaction, is_transient
from bot.jobs.core import JobCore, every
from bot.jobs.model import AT_BACKEND, Job, JobState, Settlement
from bot.supervisor import Loop

log = logging.getLogger(__name__)
NEEDS_ITS_ENDPOINT = frozenset({JobState.ACCEPTED, JobState.QUEUED, *AT_BACKEND})


class Recovery:
    """Replays refused steps, frees leaked slots, adopts lost jobs and settles forgotten credits."""

    def __init__(self, core: JobCore) -> None:
        self.core = core
        # When the reconciler first saw each accepted job whose progress message is not recorded.
        self._accepted_seen: dict[int, float] = {}
        # One reconcile at a time (the loop, the takeover sweep, a test): two could each adopt
        # the same job while the other awaits, and deliver it twice.
        self._reconciling = asyncio.Lock()

    async def load_history(self) -> None:
        for request, endpoint, execution_ms in await self.core.store.durations(500):
            self.core.durations.observe(request, execution_ms, endpoint)

    async def reconcile_loop(self, loop: Loop) -> None:
        """Heal whatever a fault left behind, every `reconcile_interval`."""
        await every(
            loop, lambda: self.core.timing.reconcile_interval, self.reconcile, "reconciling jobs"
        )

    async def takeover_loop(self, loop: Loop) -> None:
        """On a shared database, reconcile as soon as another process's leases run out, rather
        than at the next `reconcile_interval`: its jobs are taken over within seconds."""

        async def take_over_lapsed() -> None:
            if await self.core.leases.lapsed():
                await self.reconcile()

        await every(
            loop, lambda: self.core.timing.takeover_interval, take_over_lapsed, "taking over jobs"
        )

    async def reconcile(self, *, at_start: bool = False) -> None:
        """Make memory agree with the database, then settle the credits of ended jobs.

        Steps the database refused are taken again; slots no live job holds are freed; jobs the
        database has but memory lost are adopted. A job counts as lost only if it was missing
        both before and after the database was read, since a job's state in memory always
        follows its committed state without an await in between.
        """
        async with self._reconciling:
            await self._reconcile(at_start=at_start)

    async def _reconcile(self, *, at_start: bool) -> None:
        await self._replay_unsaved()
        self._free_leaked_slots()
        live = self._live_ids()
        jobs = await self.core.store.unfinished(undelivered=at_start)
        live |= self._live_ids()
        adopted = 0
        for job in jobs:
            # Adopting awaits the database: a job another step took up meanwhile is left to it.
            if job.id in live or job.id in self._live_ids():
                continue
            try:
                adopted += await self._adopt(job, at_start=at_start)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("job %d: the database refused (%s); adopting it later", job.id, exc)
        accepted = {job.id for job in jobs if job.state is JobState.ACCEPTED}
        for job_id in set(self._accepted_seen) - accepted:
            del self._accepted_seen[job_id]
        if at_start and jobs:
            log.info("resumed %d unfinished job(s)", len(jobs))
        elif adopted:
            log.warning("adopted %d job(s) the job manager had lost track of", adopted)
        try:
            await self._settle_ended_holds()
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("settling held credits: the database refused (%s); trying later", exc)

    async def _adopt(self, job: Job, *, at_start: bool) -> bool:
        """Take back a job memory does not know; True if anything was done with it."""
        core = self.core
        if not await core.leases.take_over(job):
            return False  # another living process carries it
        if job.endpoint not in core.backends and job.state in NEEDS_ITS_ENDPOINT:
            # The operator took its endpoint out of the settings: nothing can run or follow it.
            raw = f"its endpoint {job.endpoint!r} is no longer configured"
            await core.fail(job, failures.ENDPOINT, raw=raw)
            return True
        if job.state is JobState.ACCEPTED:
            now = time.monotonic()
            seen = self._accepted_seen.setdefault(job.id, now)
            if not at_start and now - seen < core.timing.accept_grace:
                return False
            # Its progress message was never recorded: it will be delivered as a fresh post.
            queued = await core.transition(
                job.id,
                {JobState.ACCEPTED},
                JobState.QUEUED,
                detail="resumed without a progress message",
            )
            if queued is None:
                return False
            job = queued
        if job.state is JobState.QUEUED:
            core.scheduler.enqueue(job)
        elif job.state is JobState.SUBMITTING:
            log.warning(
                "job %d was interrupted while being submitted: the backend may or may not have "
                "it, and resending could run it twice, so it is failed and refunded",
                job.id,
            )
            if at_start:
                await core.fail(job, failures.INTERRUPTED, raw="process ended during submission")
            else:
                await core.fail(job, failures.SUBMIT_UNCERTAIN, raw="its submitting task was lost")
        elif job.state in AT_BACKEND:
            core.queue.hold(job.id, job.user_id, job.endpoint)
            submitted, started = self._stored_clocks(job)
            core.poller.track(job, delay=0.0, submitted=submitted, started=started)
        elif job.state is JobState.DELIVERING:
            core.own(job.id, core.spawn_finishing(core.delivery.deliver(job), f"deliver-{job.id}"))
        elif job.terminal and job.delivered_at is None:
            core.spawn(core.delivery.notify(job), f"notify-{job.id}")
        return True

    def _stored_clocks(self, job: Job) -> tuple[float, float | None]:
        """Monotonic `submitted` and `started` for a job known only from its stored times."""
        core = self.core
        now_wall, now = core.clock(), time.monotonic()
        plausible = polling.time_to_live(core.timing, core.estimate(job))

        def since(name: str, stored: float) -> float:
            age = polling.trusted_age(stored, now_wall, plausible=plausible)
            if age is None:
                log.warning(
                    "job %d: its stored %s time is %.0fs from now, which the clock cannot have "
                    "meant; its deadline counts from now",
                    job.id,
                    name,
                    stored - now_wall,
                )
                return now
            return now - age

        submitted = since("submitted", job.submitted_at or job.created_at)
        started = None if job.started_at is None else max(submitted, since("start", job.started_at))
        return submitted, started

    async def _replay_unsaved(self) -> None:
        unsaved = self.core.unsaved
        for job_id, step in sorted(unsaved.items()):
            if unsaved.get(job_id) is not step:
                continue
            try:
                await self.core.save_or_defer(job_id, step)
            except Exception:
                # It would fail the same way again; the job is adopted like any lost one.
                log.exception("job %d: a kept change failed for good", job_id)

    def _live_ids(self) -> set[int]:
        """Jobs that memory is carrying forward: waiting, followed, owned by a task, or unsaved."""
        core = self.core
        owned = {job_id for job_id, task in core.owners.items() if not task.done()}
        return core.queue.waiting_keys() | set(core.poller.tracked) | owned | set(core.unsaved)

    def _free_leaked_slots(self) -> None:
        for job_id in self.core.queue.holders() - self._live_ids():
            log.warning("job %d held a slot without being followed; the slot is freed", job_id)
            self.core.release_slot(job_id)

    async def _settle_ended_holds(self) -> None:
        """Credits still held for a job that has ended: captured if it was delivered, else refunded."""
        core = self.core

        async def settle(tx: Transaction) -> list[tuple[int, Settlement]]:
            held = await core.accounting.held_job_ids(tx)
            settled = []
            for job in await core.store.ended_among(tx, held):
                if job.state is JobState.DONE:
                    await core.accounting.capture(tx, job)
                    settled.append((job.id, Settlement.CAPTURE))
                else:
                    await core.accounting.refund(tx, job)
                    settled.append((job.id, Settlement.REFUND))
            return settled

        for job_id, how in await core.db.write(settle):
            log.warning("job %d had ended with its credits still held; settled: %s", job_id, how)
