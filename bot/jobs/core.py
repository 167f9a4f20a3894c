"""What every room of the job manager shares: memory of the jobs under way and the one way a
job's state changes (a compare-and-set that settles credits and tells subscribers)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from bot import polling
from bot.backend import GpuBackend
from bot.db import Database, Transaction, is_transient
from bot.estimates import DurationModel, Estimate
from bot.failures import Failure
from bot.fairqueue import Caps, FairQueue
from bot.jobs.model import (
    FAILURE_STATES,
    TERMINAL,
    Accounting,
    DatabaseBusy,
    Deliverer,
    Job,
    JobState,
    JobUpdate,
    Limits,
    Settlement,
    UpdateKind,
)
from bot.polling import Timing
from bot.supervisor import Loop

if TYPE_CHECKING:
    from bot.jobs.delivery import Delivery
    from bot.jobs.leases import Leases
    from bot.jobs.poller import Poller
    from bot.jobs.scheduler import Scheduler
    from bot.jobs.told import Told
    from bot.store.jobs import JobStore

log = logging.getLogger(__name__)


async def every(
    loop: Loop, interval: Callable[[], float], step: Callable[[], Awaitable[object]], doing: str
) -> None:
    """A supervised loop's body: `step` every `interval()` seconds (read each time: tests change
    the timing). A refusal the database may get over is a warning, anything else a logged bug;
    either way the loop goes on."""
    while True:
        loop.beat()
        await loop.sleep(interval())
        try:
            await step()
        except Exception as exc:
            if is_transient(exc):
                log.warning("%s: the database refused (%s); trying next time", doing, exc)
            else:
                log.exception("%s failed; trying next time", doing)


T = TypeVar("T")


class JobCore:
    """The jobs' shared memory and state changes; each room holds it and reaches the others here."""

    scheduler: Scheduler
    poller: Poller
    told: Told
    delivery: Delivery
    leases: Leases

    def __init__(
        self,
        db: Database,
        store: JobStore,
        backends: Mapping[str, GpuBackend],
        *,
        accounting: Accounting,
        timing: Timing,
        limits: Limits,
        durations: DurationModel,
        clock: Callable[[], float],
    ) -> None:
        self.db = db
        self.store = store
        self.backends = dict(backends)
        self.accounting = accounting
        self.timing = timing
        self.durations = durations
        self.clock = clock
        self.deliverer: Deliverer | None = None
        self.subscribers: list[Callable[[JobUpdate], None]] = []
        self.queue: FairQueue[Job] = FairQueue(Caps(0, 0))
        self.cancel_requested: dict[int, Failure] = {}
        # A step whose database write was refused for a passing reason, kept for the reconciler.
        self.unsaved: dict[int, Callable[[], Awaitable[Any]]] = {}
        # The task submitting or delivering a job: while it runs, that job needs no adopting.
        self.owners: dict[int, asyncio.Task[Any]] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        # Work a shutdown lets finish (briefly): a submission under way, a delivery under way.
        self.finishing: set[asyncio.Task[Any]] = set()
        self.wake_dispatch = asyncio.Event()
        self.positions_dirty = asyncio.Event()
        self.running = False
        self.limits = limits

    @property
    def limits(self) -> Limits:
        return self._limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self._limits = limits
        # Each endpoint has its own slots, so one with no workers holds back only its own jobs.
        per_endpoint = {name: limits.in_flight_on(name) for name in self.backends}
        self.queue.caps = Caps(
            sum(per_endpoint.values()), limits.member_max_in_flight, per_group=per_endpoint
        )
        self.wake_dispatch.set()

    def backend(self, job: Job) -> GpuBackend:
        return self.backends[job.endpoint]

    async def transition(
        self,
        job_id: int,
        from_states: Iterable[JobState],
        to_state: JobState,
        *,
        fields: dict[str, Any] | None = None,
        detail: str | None = None,
        settle: Settlement | None = None,
        after: Callable[[Transaction], Awaitable[None]] | None = None,
        guard: Callable[[Transaction], Awaitable[bool]] | None = None,
    ) -> Job | None:
        """Compare-and-set the state (plus `fields`) and append the event; None if it lost the race
        (or `guard`, asked first in the same transaction, said no)."""
        now = self.clock()
        allowed = frozenset(from_states)

        async def change(tx: Transaction) -> tuple[JobState, Job] | None:
            if guard is not None and not await guard(tx):
                return None
            changed = await self.store.change_state(
                tx, job_id, allowed, to_state, fields=fields or {}, at=now, detail=detail
            )
            if changed is None:
                return None
            job = changed[1]
            if settle is Settlement.REFUND:
                await self.accounting.refund(tx, job)
            elif settle is Settlement.CAPTURE:
                await self.accounting.capture(tx, job)
            if to_state in TERMINAL:
                await self.store.drop_inputs(tx, job_id)
            if after is not None:
                await after(tx)
            return changed

        changed = await self.db.write(change)
        if changed is None:
            return None
        from_state, job = changed
        log.info(
            "job %d %s -> %s (guild=%s user=%s)%s",
            job_id,
            from_state.value,
            to_state.value,
            job.guild_id,
            job.user_id,
            f": {detail}" if detail else "",
        )
        return job

    async def finish(
        self,
        job: Job,
        state: JobState,
        failure: Failure,
        *,
        raw: str | None = None,
        detail: str | None = None,
        from_states: Iterable[JobState] | None = None,
    ) -> Job | None:
        """End a job without images: refund it, forget it, tell the member."""
        ended = await self.transition(
            job.id,
            from_states or (set(JobState) - TERMINAL - {JobState.DELIVERING}),
            state,
            fields={"failure": failure.message, "error": raw, "finished_at": self.clock()},
            detail=detail or failure.kind,
            settle=Settlement.REFUND,
        )
        if ended is None:
            return None
        if raw:
            log.warning(
                "job %d failed (%s): %s", job.id, failure.kind, " ⏎ ".join(raw[:2000].splitlines())
            )
        self.forget(job.id)
        self.emit(JobUpdate(ended, UpdateKind.ending(state)))
        self.spawn(self.delivery.notify(ended), f"notify-{job.id}")
        return ended

    async def fail(self, job: Job, failure: Failure, raw: str | None = None) -> Job | None:
        state = FAILURE_STATES.get(failure.kind, JobState.FAILED)
        return await self.finish(job, state, failure, raw=raw)

    def forget(self, job_id: int) -> None:
        self.poller.untrack(job_id)
        self.cancel_requested.pop(job_id, None)
        self.unsaved.pop(job_id, None)
        self.queue.remove(job_id)
        self.release_slot(job_id)
        self.positions_dirty.set()

    def release_slot(self, job_id: int) -> None:
        if self.queue.release(job_id):
            self.wake_dispatch.set()

    async def save_or_defer(self, job_id: int, step: Callable[[], Awaitable[T]]) -> T | None:
        """Take a step that writes a job's state; if the database refuses for a passing reason,
        keep the step for the reconciler (the job keeps its slot meanwhile) and return None."""
        self.unsaved.pop(job_id, None)
        try:
            return await step()
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning(
                "job %d: the database refused (%s); the change is kept and retried", job_id, exc
            )
            self.unsaved[job_id] = step
            return None

    def estimate(self, job: Job) -> Estimate:
        return self.durations.expect(job.request, job.endpoint)

    def execution_limit(self, job: Job) -> float:
        return polling.execution_limit(self.timing, self.estimate(job))

    def emit(self, update: JobUpdate) -> None:
        for listener in self.subscribers:
            try:
                listener(update)
            except Exception:
                log.exception("a job update listener failed")

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def spawn_finishing(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = self.spawn(coro, name)
        self.finishing.add(task)
        task.add_done_callback(self.finishing.discard)
        return task

    def own(self, job_id: int, task: asyncio.Task[Any]) -> None:
        """Record `task` as the one carrying `job_id` forward (submitting or delivering it)."""
        self.owners[job_id] = task

        def disown(done: asyncio.Task[Any]) -> None:
            if self.owners.get(job_id) is done:
                del self.owners[job_id]

        task.add_done_callback(disown)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())


@contextlib.contextmanager
def busy_is_member_facing() -> Iterator[None]:
    """A database that keeps refusing for a passing reason becomes a sentence for the member."""
    try:
        yield
    except Exception as exc:
        if is_transient(exc):
            raise DatabaseBusy() from exc
        raise
