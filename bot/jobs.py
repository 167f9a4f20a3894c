"""The durable job manager: accept, schedule fairly, submit, poll, deliver, recover, cancel."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import heapq
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from bot import failures, polling
from bot.db import Database, Transaction, is_transient
from bot.estimates import DurationModel, Estimate
from bot.failures import Failure
from bot.fairqueue import Caps, FairQueue
from bot.images import ImageFile
from bot.polling import Timing
from bot.prompt import GenerationRequest
from bot.runpod import (
    Health,
    JobStatus,
    OutputError,
    RunPodAuthError,
    RunPodClient,
    RunPodError,
    RunPodNotFound,
    RunPodRejected,
    decode_output,
    provably_not_created,
)
from bot.supervisor import Loop, Supervisor

log = logging.getLogger(__name__)
T = TypeVar("T")


class JobState(StrEnum):
    ACCEPTED = "accepted"  # stored and charged, its progress message not yet posted
    QUEUED = "queued"  # waiting here for a free slot
    SUBMITTING = "submitting"  # /run is being sent
    SUBMITTED = "submitted"  # RunPod has it, in its queue
    RUNNING = "running"  # a worker is generating
    DELIVERING = "delivering"  # images fetched, being posted
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    EXPIRED = "expired"


TERMINAL = frozenset(
    {JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT, JobState.EXPIRED}
)
AT_RUNPOD = frozenset({JobState.SUBMITTED, JobState.RUNNING})
IN_FLIGHT = frozenset({JobState.SUBMITTING, JobState.SUBMITTED, JobState.RUNNING})
FAILURE_STATES = {
    "timed_out": JobState.TIMED_OUT,
    "queue_timeout": JobState.TIMED_OUT,
    "expired": JobState.EXPIRED,
    "cancelled": JobState.CANCELLED,
}


class Settlement(StrEnum):
    """What happens to a job's held credits when it ends."""

    CAPTURE = "capture"  # it delivered its images: charge them
    REFUND = "refund"  # it ended without images: give them back


class JobError(Exception):
    """A request about a job that cannot be carried out, with a member-facing message."""


class MemberBusy(JobError):
    """The member already has as many jobs waiting as allowed."""


class NotYourJob(JobError):
    """Only the requester or a moderator may do that."""


class AlreadyFinished(JobError):
    """The job has ended (or is being delivered) and can no longer be cancelled."""


class DatabaseBusy(JobError):
    """The database kept refusing for a passing reason (locked, full); nothing was changed."""

    def __init__(self) -> None:
        super().__init__(
            "The bot's database is busy right now, so nothing was changed. "
            "Please try again in a moment."
        )


@dataclass(frozen=True)
class NewJob:
    """A parsed, rendered, costed request about to be accepted."""

    user_id: int
    guild_id: int | None
    channel_id: int | None
    request: GenerationRequest
    workflow: dict[str, Any]
    cost: int = 0
    filesize_limit: int | None = None
    input_images: tuple[tuple[str, bytes], ...] = ()
    role_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Job:
    """One row of `jobs`."""

    id: int
    user_id: int
    guild_id: int | None
    channel_id: int | None
    message_id: int | None
    state: JobState
    template: str
    request: GenerationRequest
    workflow_json: str
    cost: int
    filesize_limit: int | None
    runpod_id: str | None
    created_at: float
    submitted_at: float | None
    started_at: float | None
    finished_at: float | None
    delay_ms: int | None
    execution_ms: int | None
    failure: str | None
    error: str | None
    delivered_at: float | None
    role_ids: tuple[int, ...] = ()

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def workflow(self) -> dict[str, Any]:
        return json.loads(self.workflow_json)

    @classmethod
    def from_row(cls, row: Any) -> Job:
        return cls(
            id=row["id"],
            user_id=row["user_id"],
            guild_id=row["guild_id"],
            channel_id=row["channel_id"],
            message_id=row["message_id"],
            state=JobState(row["state"]),
            template=row["template"],
            request=GenerationRequest.from_json(row["request"]),
            workflow_json=row["workflow"],
            cost=row["cost"],
            filesize_limit=row["filesize_limit"],
            runpod_id=row["runpod_id"],
            created_at=row["created_at"],
            submitted_at=row["submitted_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            delay_ms=row["delay_ms"],
            execution_ms=row["execution_ms"],
            failure=row["failure"],
            error=row["error"],
            delivered_at=row["delivered_at"],
            role_ids=tuple(json.loads(row["role_ids"])),
        )


@dataclass(frozen=True)
class JobUpdate:
    """What subscribers hear: a job and what just happened to it."""

    job: Job
    kind: str  # queued | waiting | running | delivering | done | failed | cancelled | timed_out | expired
    position: int | None = None
    cold: bool = False
    no_workers: bool = False
    elapsed: float | None = None


class DeliveryError(Exception):
    """A delivery that did not happen; `permanent` means retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Deliverer(Protocol):
    """Shows a job's outcome to its member (Discord, or files for the command line)."""

    async def deliver(self, job: Job, images: Sequence[ImageFile]) -> None: ...

    async def notify(self, job: Job) -> None: ...


class Accounting(Protocol):
    """Credits: held when a job is accepted, captured on delivery, refunded otherwise."""

    async def reserve(self, tx: Transaction, job_id: int, new: NewJob) -> None: ...

    async def capture(self, tx: Transaction, job: Job) -> None: ...

    async def refund(self, tx: Transaction, job: Job) -> None: ...

    async def held_job_ids(self, tx: Transaction) -> list[int]:
        """Jobs whose credits are still held (neither captured nor refunded)."""
        ...


class FreeAccounting:
    """No quotas: every job is free."""

    async def reserve(self, tx: Transaction, job_id: int, new: NewJob) -> None:
        return None

    async def capture(self, tx: Transaction, job: Job) -> None:
        return None

    async def refund(self, tx: Transaction, job: Job) -> None:
        return None

    async def held_job_ids(self, tx: Transaction) -> list[int]:
        return []


@dataclass(frozen=True)
class Limits:
    """How many jobs may be in flight at RunPod, overall and per member."""

    max_in_flight: int = 4
    member_max_in_flight: int = 1
    member_max_queued: int = 4
    poll_concurrency: int = 32


@dataclass
class _Tracked:
    """In-memory polling state of a job that RunPod has; times are `time.monotonic()` values.

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


class JobManager:
    """Owns every job from acceptance to its outcome; every state change a compare-and-set."""

    def __init__(
        self,
        db: Database,
        runpod: RunPodClient,
        *,
        accounting: Accounting | None = None,
        timing: Timing | None = None,
        limits: Limits | None = None,
        durations: DurationModel | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.runpod = runpod
        self.accounting = accounting or FreeAccounting()
        self.timing = timing or Timing()
        self.durations = durations or DurationModel()
        self._clock = clock
        self._deliverer: Deliverer | None = None
        self._subscribers: list[Callable[[JobUpdate], None]] = []
        self._queue: FairQueue[Job] = FairQueue(Caps(0, 0))
        self._tracked: dict[int, _Tracked] = {}
        self._cancel_requested: dict[int, Failure] = {}
        # A step whose database write was refused for a passing reason, kept for the reconciler.
        self._unsaved: dict[int, Callable[[], Awaitable[Any]]] = {}
        # The task submitting or delivering a job: while it runs, that job needs no adopting.
        self._owners: dict[int, asyncio.Task[Any]] = {}
        # When the reconciler first saw each accepted job whose progress message is not recorded.
        self._accepted_seen: dict[int, float] = {}
        self._due: list[_Due] = []
        self._seq = itertools.count()
        self._tasks: set[asyncio.Task[Any]] = set()
        # Work a shutdown lets finish (briefly): a /run under way, a delivery under way.
        self._finishing: set[asyncio.Task[Any]] = set()
        self._loops: list[Loop] = []
        self._wake_dispatch = asyncio.Event()
        self.limits = limits or Limits()
        self._wake_poll = asyncio.Event()
        self._positions_dirty = asyncio.Event()
        self._last_positions: dict[int, int] = {}
        self._health: Health | None = None
        self._auth_reported = False
        self._running = False
        self._poll_slots = asyncio.Semaphore(self.limits.poll_concurrency)

    # ----- public API -------------------------------------------------------------------

    def subscribe(self, listener: Callable[[JobUpdate], None]) -> None:
        """Call `listener` (synchronously; it must not block) on every job update."""
        self._subscribers.append(listener)

    async def accept(self, new: NewJob) -> Job:
        """Store the job and reserve its cost in one transaction; refusals store nothing."""
        now = self._clock()

        async def store(tx: Transaction) -> Job:
            # One person, one set of limits: jobs in every server count.
            row = await tx.fetchone(
                f"SELECT COUNT(*) FROM jobs WHERE user_id = ? AND {_UNFINISHED}", (new.user_id,)
            )
            if row[0] >= self.limits.member_max_queued:
                raise MemberBusy(
                    f"You already have {row[0]} jobs waiting or running (in all servers "
                    f"together); the limit is {self.limits.member_max_queued}. Wait for one to "
                    "finish or `/cancel` one."
                )
            job_id = await tx.insert(
                "INSERT INTO jobs (guild_id, channel_id, user_id, state, template, request, workflow,"
                " cost, filesize_limit, created_at, updated_at, role_ids)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    new.guild_id,
                    new.channel_id,
                    new.user_id,
                    JobState.ACCEPTED,
                    new.request.template,
                    new.request.to_json(),
                    json.dumps(new.workflow, separators=(",", ":"), ensure_ascii=False),
                    new.cost,
                    new.filesize_limit,
                    now,
                    now,
                    json.dumps(list(new.role_ids)),
                ),
            )
            await tx.executemany(
                "INSERT INTO job_inputs (job_id, name, data) VALUES (?, ?, ?)",
                [(job_id, name, data) for name, data in new.input_images],
            )
            await _record_event(tx, job_id, now, None, JobState.ACCEPTED, None)
            await self.accounting.reserve(tx, job_id, new)
            return Job.from_row(await tx.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,)))

        with _busy_is_member_facing():
            job = await self.db.write(store)
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

        async def attach() -> Job | None:
            job = await self._transition(
                job_id,
                {JobState.ACCEPTED},
                JobState.QUEUED,
                fields={"channel_id": channel_id, "message_id": message_id},
            )
            if job is not None and self._running:
                self._enqueue_local(job)
            return job

        return await self._save_or_defer(job_id, attach)

    async def abandon(self, job_id: int, reason: str) -> None:
        """Withdraw an accepted job whose progress message could not be posted; refund it."""
        await self._save_or_defer(
            job_id,
            functools.partial(
                self._transition,
                job_id,
                {JobState.ACCEPTED},
                JobState.CANCELLED,
                fields={
                    "failure": failures.CANCELLED.message,
                    "error": reason,
                    "delivered_at": self._clock(),
                },
                settle=Settlement.REFUND,
            ),
        )

    async def relocate(self, job_id: int, channel_id: int, message_id: int) -> None:
        """Record a fresh message (the old one was deleted) at once, so it is never posted twice."""
        now = self._clock()

        async def record(tx: Transaction) -> None:
            row = await tx.fetchone("SELECT state FROM jobs WHERE id = ?", (job_id,))
            if row is None:
                return
            await tx.execute(
                "UPDATE jobs SET channel_id = ?, message_id = ?, updated_at = ? WHERE id = ?",
                (channel_id, message_id, now, job_id),
            )
            await _record_event(
                tx,
                job_id,
                now,
                row["state"],
                row["state"],
                f"message moved to channel={channel_id} message={message_id}",
            )

        await self.db.write(record)

    async def get(self, job_id: int) -> Job | None:
        row = await self.db.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return Job.from_row(row) if row else None

    async def events(self, job_id: int) -> list[tuple[str | None, str, str | None]]:
        rows = await self.db.fetchall(
            "SELECT from_state, to_state, detail FROM job_events WHERE job_id = ? ORDER BY id",
            (job_id,),
        )
        return [(r["from_state"], r["to_state"], r["detail"]) for r in rows]

    async def recent(self, guild_id: int | None, user_id: int, limit: int = 10) -> list[Job]:
        rows = await self.db.fetchall(
            "SELECT * FROM jobs WHERE guild_id IS ? AND user_id = ? ORDER BY id DESC LIMIT ?",
            (guild_id, user_id, limit),
        )
        return [Job.from_row(r) for r in rows]

    async def active(self, guild_id: int | None, user_id: int | None = None) -> list[Job]:
        sql = (
            f"SELECT * FROM jobs WHERE guild_id IS ? AND state IN ({_placeholders(_ACTIVE_STATES)})"
        )
        params: list[Any] = [guild_id, *_ACTIVE_STATES]
        if user_id is not None:
            sql += " AND user_id = ?"
            params.append(user_id)
        rows = await self.db.fetchall(sql + " ORDER BY id", params)
        return [Job.from_row(r) for r in rows]

    def position(self, job_id: int) -> int | None:
        """1-based place in the local queue, or None if the job is not waiting here."""
        return self._queue.positions().get(job_id)

    async def cancel(self, job_id: int, *, by_user: int, moderator: bool = False) -> Job:
        """Cancel a member's job wherever it is; the credits return. Raises `JobError`."""
        with _busy_is_member_facing():
            return await self._cancel(job_id, by_user=by_user, moderator=moderator)

    async def _cancel(self, job_id: int, *, by_user: int, moderator: bool) -> Job:
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
            self._cancel_requested[job_id] = failures.cancelled(by_moderator=by_moderator)
            log.info("job %d cancel requested while submitting (%s)", job_id, detail)
            return job
        # Ours first: if a poll saw the job finish meanwhile, the compare-and-set says so.
        cancelled = await self._finish(
            job,
            JobState.CANCELLED,
            failures.cancelled(by_moderator=by_moderator),
            detail=detail,
            from_states={JobState.QUEUED, *AT_RUNPOD},
        )
        if cancelled is None:
            raise AlreadyFinished(f"Job #{job_id} finished before it could be cancelled.")
        # The row, not the earlier read: dispatch may have sent it to RunPod in between.
        if cancelled.runpod_id:
            await self._cancel_at_runpod(cancelled)
        return cancelled

    async def start(self, deliverer: Deliverer, *, supervisor: Supervisor | None = None) -> None:
        """Resume every unfinished job, then start scheduling and polling (supervised loops)."""
        if self._running:
            return
        self._deliverer = deliverer
        await self._load_history()
        self._running = True
        await self._resume()
        supervisor = supervisor or Supervisor()
        self._loops = [
            supervisor.start("jobs-dispatch", self._dispatch_loop),
            supervisor.start("jobs-poll", self._poll_loop),
            supervisor.start("jobs-positions", self._position_loop),
            supervisor.start("jobs-health", self._health_loop),
            supervisor.start("jobs-reconcile", self._reconcile_loop),
        ]
        self._wake_dispatch.set()
        self._wake_poll.set()

    async def stop(self) -> None:
        """Stop taking work; let `/run` calls under way finish briefly; leave the rest in the DB."""
        if not self._running:
            return
        self._running = False
        await asyncio.gather(*(loop.stop() for loop in self._loops))
        if self._finishing:
            await asyncio.wait(self._finishing, timeout=self.timing.shutdown_grace)
        pending = [t for t in self._tasks if not t.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._loops.clear()

    @property
    def limits(self) -> Limits:
        return self._limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self._limits = limits
        self._queue.caps = Caps(limits.max_in_flight, limits.member_max_in_flight)
        self._wake_dispatch.set()

    @property
    def running(self) -> bool:
        return self._running

    @property
    def task_count(self) -> int:
        return len(self._tasks) + len(self._loops)

    @property
    def slots_in_use(self) -> int:
        """RunPod slots counted as taken (each should belong to a job in flight)."""
        return self._queue.out

    @property
    def in_progress(self) -> int:
        """Jobs waiting here for a slot plus jobs RunPod has."""
        return len(self._queue) + len(self._tracked)

    # ----- state transitions --------------------------------------------------------------

    async def _transition(
        self,
        job_id: int,
        from_states: Iterable[JobState],
        to_state: JobState,
        *,
        fields: dict[str, Any] | None = None,
        detail: str | None = None,
        settle: Settlement | None = None,
        after: Callable[[Transaction], Awaitable[None]] | None = None,
    ) -> Job | None:
        """Compare-and-set the state (plus `fields`) and append the event; None if it lost the race."""
        now = self._clock()
        fields = dict(fields or {})
        fields["updated_at"] = now
        allowed = [s.value for s in from_states]

        async def change(tx: Transaction) -> tuple[str, Job] | None:
            row = await tx.fetchone("SELECT state FROM jobs WHERE id = ?", (job_id,))
            if row is None or row["state"] not in allowed:
                return None
            assignments = ", ".join(f"{name} = ?" for name in fields)
            changed = await tx.execute(
                f"UPDATE jobs SET state = ?, {assignments} WHERE id = ? AND state = ?",
                (to_state.value, *fields.values(), job_id, row["state"]),
            )
            if changed != 1:
                return None
            await _record_event(tx, job_id, now, row["state"], to_state, detail)
            job = Job.from_row(await tx.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,)))
            if settle is Settlement.REFUND:
                await self.accounting.refund(tx, job)
            elif settle is Settlement.CAPTURE:
                await self.accounting.capture(tx, job)
            if to_state in TERMINAL:
                await tx.execute("DELETE FROM job_inputs WHERE job_id = ?", (job_id,))
            if after is not None:
                await after(tx)
            return row["state"], job

        changed = await self.db.write(change)
        if changed is None:
            return None
        from_state, job = changed
        log.info(
            "job %d %s -> %s (guild=%s user=%s)%s",
            job_id,
            from_state,
            to_state.value,
            job.guild_id,
            job.user_id,
            f": {detail}" if detail else "",
        )
        return job

    async def _finish(
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
        ended = await self._transition(
            job.id,
            from_states or (set(JobState) - TERMINAL - {JobState.DELIVERING}),
            state,
            fields={"failure": failure.message, "error": raw, "finished_at": self._clock()},
            detail=detail or failure.kind,
            settle=Settlement.REFUND,
        )
        if ended is None:
            return None
        if raw:
            log.warning(
                "job %d failed (%s): %s", job.id, failure.kind, " ⏎ ".join(raw[:2000].splitlines())
            )
        self._forget(job.id)
        self._emit(JobUpdate(ended, state.value if state is not JobState.FAILED else "failed"))
        self._spawn(self._notify(ended), f"notify-{job.id}")
        return ended

    async def _fail(self, job: Job, failure: Failure, raw: str | None = None) -> Job | None:
        state = FAILURE_STATES.get(failure.kind, JobState.FAILED)
        return await self._finish(job, state, failure, raw=raw)

    def _forget(self, job_id: int) -> None:
        self._tracked.pop(job_id, None)
        self._cancel_requested.pop(job_id, None)
        self._unsaved.pop(job_id, None)
        self._queue.remove(job_id)
        self._release_slot(job_id)
        self._positions_dirty.set()

    def _release_slot(self, job_id: int) -> None:
        if self._queue.release(job_id):
            self._wake_dispatch.set()

    # ----- recovery -------------------------------------------------------------------------

    async def _load_history(self) -> None:
        rows = await self.db.fetchall(
            "SELECT request, execution_ms FROM jobs WHERE execution_ms IS NOT NULL "
            "ORDER BY id DESC LIMIT 500"
        )
        for row in reversed(rows):
            self.durations.observe(GenerationRequest.from_json(row["request"]), row["execution_ms"])

    async def _resume(self) -> None:
        """On start memory is empty: every unfinished job in the database is adopted."""
        await self._reconcile(at_start=True)

    async def _reconcile_loop(self, loop: Loop) -> None:
        """Heal whatever a fault left behind, every `reconcile_interval`."""
        while True:
            loop.beat()
            await loop.sleep(self.timing.reconcile_interval)
            try:
                await self._reconcile()
            except Exception as exc:
                if is_transient(exc):
                    log.warning(
                        "reconciling jobs: the database refused (%s); trying next time", exc
                    )
                else:
                    log.exception("reconciling jobs failed; trying next time")

    async def _reconcile(self, *, at_start: bool = False) -> None:
        """Make memory agree with the database, then settle the credits of ended jobs.

        Steps the database refused are taken again; slots no live job holds are freed; jobs the
        database has but memory lost are adopted. A job counts as lost only if it was missing
        both before and after the database was read, since a job's state in memory always
        follows its committed state without an await in between.
        """
        await self._replay_unsaved()
        self._free_leaked_slots()
        live = self._live_ids()
        terminal = _placeholders(TERMINAL)
        rows = await self.db.fetchall(
            f"SELECT * FROM jobs WHERE state NOT IN ({terminal})"
            + (" OR delivered_at IS NULL" if at_start else "")
            + " ORDER BY id",
            tuple(TERMINAL),
        )
        live |= self._live_ids()
        adopted = 0
        for row in rows:
            job = Job.from_row(row)
            if job.id in live:
                continue
            try:
                adopted += await self._adopt(job, at_start=at_start)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("job %d: the database refused (%s); adopting it later", job.id, exc)
        accepted = {r["id"] for r in rows if r["state"] == JobState.ACCEPTED.value}
        for job_id in set(self._accepted_seen) - accepted:
            del self._accepted_seen[job_id]
        if at_start and rows:
            log.info("resumed %d unfinished job(s)", len(rows))
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
        if job.state is JobState.ACCEPTED:
            now = time.monotonic()
            seen = self._accepted_seen.setdefault(job.id, now)
            if not at_start and now - seen < self.timing.accept_grace:
                return False
            # Its progress message was never recorded: it will be delivered as a fresh post.
            queued = await self._transition(
                job.id,
                {JobState.ACCEPTED},
                JobState.QUEUED,
                detail="resumed without a progress message",
            )
            if queued is None:
                return False
            job = queued
        if job.state is JobState.QUEUED:
            self._enqueue_local(job)
        elif job.state is JobState.SUBMITTING:
            log.warning(
                "job %d was interrupted inside its /run request: RunPod may or may not have it, "
                "and resending could run it twice, so it is failed and refunded",
                job.id,
            )
            if at_start:
                await self._fail(job, failures.INTERRUPTED, raw="process ended during /run")
            else:
                await self._fail(job, failures.SUBMIT_UNCERTAIN, raw="its /run task was lost")
        elif job.state in AT_RUNPOD:
            self._queue.hold(job.id, job.user_id)
            submitted, started = self._stored_clocks(job)
            self._track(job, delay=0.0, submitted=submitted, started=started)
        elif job.state is JobState.DELIVERING:
            self._own(job.id, self._spawn_finishing(self._deliver(job), f"deliver-{job.id}"))
        elif job.terminal and job.delivered_at is None:
            self._spawn(self._notify(job), f"notify-{job.id}")
        return True

    def _stored_clocks(self, job: Job) -> tuple[float, float | None]:
        """Monotonic `submitted` and `started` for a job known only from its stored times."""
        now_wall, now = self._clock(), time.monotonic()
        plausible = polling.time_to_live(self.timing, self._estimate(job))

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
        for job_id, step in sorted(self._unsaved.items()):
            if self._unsaved.get(job_id) is not step:
                continue
            try:
                await self._save_or_defer(job_id, step)
            except Exception:
                # It would fail the same way again; the job is adopted like any lost one.
                log.exception("job %d: a kept change failed for good", job_id)

    async def _save_or_defer(self, job_id: int, step: Callable[[], Awaitable[T]]) -> T | None:
        """Take a step that writes a job's state; if the database refuses for a passing reason,
        keep the step for the reconciler (the job keeps its slot meanwhile) and return None."""
        self._unsaved.pop(job_id, None)
        try:
            return await step()
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning(
                "job %d: the database refused (%s); the change is kept and retried", job_id, exc
            )
            self._unsaved[job_id] = step
            return None

    def _live_ids(self) -> set[int]:
        """Jobs that memory is carrying forward: waiting, followed, owned by a task, or unsaved."""
        owned = {job_id for job_id, task in self._owners.items() if not task.done()}
        return self._queue.waiting_keys() | set(self._tracked) | owned | set(self._unsaved)

    def _free_leaked_slots(self) -> None:
        for job_id in self._queue.holders() - self._live_ids():
            log.warning("job %d held a slot without being followed; the slot is freed", job_id)
            self._release_slot(job_id)

    async def _settle_ended_holds(self) -> None:
        """Credits still held for a job that has ended: captured if it was delivered, else refunded."""

        async def settle(tx: Transaction) -> list[tuple[int, Settlement]]:
            held = await self.accounting.held_job_ids(tx)
            settled = []
            for chunk in (held[i : i + 500] for i in range(0, len(held), 500)):
                rows = await tx.fetchall(
                    f"SELECT * FROM jobs WHERE id IN ({_placeholders(chunk)}) "
                    f"AND state IN ({_placeholders(TERMINAL)})",
                    (*chunk, *TERMINAL),
                )
                for row in rows:
                    job = Job.from_row(row)
                    if job.state is JobState.DONE:
                        await self.accounting.capture(tx, job)
                        settled.append((job.id, Settlement.CAPTURE))
                    else:
                        await self.accounting.refund(tx, job)
                        settled.append((job.id, Settlement.REFUND))
            return settled

        for job_id, how in await self.db.write(settle):
            log.warning("job %d had ended with its credits still held; settled: %s", job_id, how)

    # ----- local queue and fair dispatch ---------------------------------------------------

    def _enqueue_local(self, job: Job, *, not_before: float | None = None) -> None:
        self._queue.add(job.id, job.user_id, job, not_before=not_before)
        self._wake_dispatch.set()
        self._positions_dirty.set()

    async def _dispatch_loop(self, loop: Loop) -> None:
        while True:
            loop.beat()
            now = time.monotonic()
            ready_at = self._queue.next_ready_at(now)
            timeout = None if ready_at is None else ready_at - now
            await loop.idle(self._wake_dispatch, timeout)
            self._wake_dispatch.clear()
            while (taken := self._queue.take_next(time.monotonic())) is not None:
                job = taken[1]
                self._positions_dirty.set()
                self._own(job.id, self._spawn_finishing(self._submit(job), f"submit-{job.id}"))

    async def _position_loop(self, loop: Loop) -> None:
        """Tell waiting jobs where they stand, at most once per `position_interval`."""
        while True:
            loop.beat()
            await loop.idle(self._positions_dirty)
            self._positions_dirty.clear()
            positions = self._queue.positions()
            for job_id, place in positions.items():
                job = self._queue.waiting(job_id)
                if job is not None and self._last_positions.get(job_id) != place:
                    self._emit(JobUpdate(job, "queued", position=place))
            self._last_positions = positions
            await loop.sleep(self.timing.position_interval)

    # ----- submission ----------------------------------------------------------------------

    async def _submit(self, job: Job) -> None:
        try:
            submitting = await self._transition(job.id, {JobState.QUEUED}, JobState.SUBMITTING)
        except Exception as exc:
            self._release_slot(job.id)
            if not is_transient(exc):
                raise  # it stays queued in the database: the reconciler adopts it again
            log.warning("job %d: the database refused to start it (%s); it waits", job.id, exc)
            self._enqueue_local(job, not_before=time.monotonic() + self.timing.submit_retry_delay)
            return
        if submitting is None:
            self._release_slot(job.id)
            return
        try:
            await self._send(submitting)
        except Exception as exc:
            # Whether RunPod got it is unknown, so it is not sent again (see "submitting").
            log.exception("job %d: submitting it crashed", job.id)
            await self._save_or_defer(
                job.id,
                functools.partial(
                    self._fail,
                    submitting,
                    failures.SUBMIT_UNCERTAIN,
                    raw=f"{type(exc).__name__}: {exc}",
                ),
            )
        finally:
            # A job RunPod has keeps its slot, and so does one whose next step is not saved yet.
            if job.id not in self._tracked and job.id not in self._unsaved:
                self._release_slot(job.id)

    async def _send(self, submitting: Job) -> None:
        """`/run`, then record RunPod's id at once; only a provably unsent job is tried again."""
        try:
            attempt = await self._attempts(submitting.id)
            job_input = await self._job_input(submitting)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("job %d: the database refused (%s); it is sent later", submitting.id, exc)
            await self._save_or_defer(
                submitting.id,
                functools.partial(self._requeue, submitting, self.timing.submit_retry_delay, exc),
            )
            return
        step: Callable[[], Awaitable[Any]]
        try:
            status = await self.runpod.run(
                job_input,
                execution_timeout_ms=max(5000, int(self._execution_limit(submitting) * 1000)),
                ttl_ms=int(polling.time_to_live(self.timing, self._estimate(submitting)) * 1000),
            )
        except RunPodAuthError as exc:
            self._report_auth(exc)
            step = functools.partial(self._fail, submitting, failures.AUTH, raw=str(exc))
        except RunPodNotFound as exc:
            log.error("RunPod answered 404 to /run: RUNPOD_ENDPOINT_ID is wrong")
            step = functools.partial(self._fail, submitting, failures.ENDPOINT, raw=str(exc))
        except RunPodRejected as exc:
            step = functools.partial(self._fail, submitting, failures.REJECTED, raw=str(exc))
        except RunPodError as exc:
            if provably_not_created(exc):
                step = functools.partial(self._requeue_or_fail, submitting, attempt, exc)
            else:
                step = functools.partial(
                    self._fail, submitting, failures.SUBMIT_UNCERTAIN, raw=str(exc)
                )
        else:
            step = functools.partial(
                self._record_submitted, submitting, status.id, time.monotonic()
            )
        await self._save_or_defer(submitting.id, step)

    async def _record_submitted(self, submitting: Job, runpod_id: str, answered: float) -> None:
        """Store RunPod's id and start following the job; `answered` is when /run returned."""
        submitted = await self._transition(
            submitting.id,
            {JobState.SUBMITTING},
            JobState.SUBMITTED,
            fields={
                "runpod_id": runpod_id,
                "submitted_at": self._clock() - (time.monotonic() - answered),
            },
            detail=f"runpod id {runpod_id}",
        )
        if submitted is None:
            return
        self._track(submitted, delay=self.timing.first_poll, submitted=answered)
        if submitted.id in self._cancel_requested:
            await self._cancel_at_runpod(submitted)
            await self._finish(
                submitted,
                JobState.CANCELLED,
                self._cancel_requested[submitted.id],
                detail="cancelled while submitting",
            )
            return
        self._emit(JobUpdate(submitted, "waiting", cold=self._cold()))

    async def _attempts(self, job_id: int) -> int:
        row = await self.db.fetchone(
            "SELECT COUNT(*) FROM job_events WHERE job_id = ? AND to_state = ?",
            (job_id, JobState.SUBMITTING.value),
        )
        return int(row[0]) if row else 1

    async def _requeue_or_fail(self, job: Job, attempt: int, exc: RunPodError) -> None:
        """RunPod provably never got the job (connect error, 429, 503): try again later."""
        if attempt >= self.timing.max_submit_attempts:
            await self._fail(job, failures.UNAVAILABLE, raw=str(exc))
            return
        if job.id in self._cancel_requested:
            await self._finish(
                job,
                JobState.CANCELLED,
                self._cancel_requested[job.id],
                detail="cancelled while submitting",
            )
            return
        await self._requeue(
            job, self.timing.submit_retry_delay * self.timing.growth ** (attempt - 1), exc
        )

    async def _requeue(self, job: Job, delay: float, reason: Exception) -> None:
        """Put a job RunPod never got back in the queue, to be sent after `delay`."""
        requeued = await self._transition(
            job.id,
            {JobState.SUBMITTING},
            JobState.QUEUED,
            detail=f"not accepted, will retry: {reason}",
        )
        self._release_slot(job.id)
        if requeued is not None:
            self._enqueue_local(requeued, not_before=time.monotonic() + delay)

    async def _job_input(self, job: Job) -> dict[str, Any]:
        rows = await self.db.fetchall(
            "SELECT name, data FROM job_inputs WHERE job_id = ?", (job.id,)
        )
        job_input: dict[str, Any] = {"workflow": job.workflow}
        if rows:
            job_input["images"] = [
                {"name": r["name"], "image": base64.b64encode(r["data"]).decode("ascii")}
                for r in rows
            ]
        return job_input

    def _estimate(self, job: Job) -> Estimate:
        return self.durations.expect(job.request)

    def _execution_limit(self, job: Job) -> float:
        return polling.execution_limit(self.timing, self._estimate(job))

    # ----- polling -------------------------------------------------------------------------

    def _track(
        self, job: Job, *, delay: float, submitted: float, started: float | None = None
    ) -> _Tracked:
        """Follow a job RunPod has; `submitted` and `started` are monotonic times."""
        tracked = self._tracked.get(job.id)
        if tracked is None:
            tracked = self._tracked[job.id] = _Tracked(job, submitted=submitted)
        tracked.job = job
        tracked.submitted, tracked.started = submitted, started
        tracked.queued_polls = 0
        self._schedule(job.id, delay)
        return tracked

    def _schedule(self, job_id: int, delay: float) -> None:
        heapq.heappush(self._due, _Due(time.monotonic() + max(0.0, delay), next(self._seq), job_id))
        self._wake_poll.set()

    async def _poll_loop(self, loop: Loop) -> None:
        while True:
            loop.beat()
            now = time.monotonic()
            while self._due and self._due[0].at <= now:
                due = heapq.heappop(self._due)
                if due.job_id not in self._tracked:
                    continue
                await self._poll_slots.acquire()
                self._spawn(self._poll_guarded(due.job_id), f"poll-{due.job_id}")
                now = time.monotonic()
            self._wake_poll.clear()
            timeout = self._due[0].at - time.monotonic() if self._due else None
            await loop.idle(self._wake_poll, timeout)

    async def _poll_guarded(self, job_id: int) -> None:
        try:
            await self._poll(job_id)
        except Exception as exc:
            await self._poll_crashed(job_id, exc)
        else:
            if (tracked := self._tracked.get(job_id)) is not None:
                tracked.crashes = 0
        finally:
            self._poll_slots.release()

    async def _poll_crashed(self, job_id: int, exc: Exception) -> None:
        """A refusing database only delays the job; anything else, again and again, ends it."""
        tracked = self._tracked.get(job_id)
        if tracked is None:
            log.error("job %d: handling a poll failed", job_id, exc_info=exc)
            return
        if is_transient(exc):
            delay = self._next_backoff(tracked)
            log.warning(
                "job %d: the database refused (%s); polling again in %.1fs", job_id, exc, delay
            )
            self._schedule(job_id, delay)
            return
        tracked.crashes += 1
        log.error(
            "job %d: handling RunPod's answer crashed (%d of %d in a row)",
            job_id,
            tracked.crashes,
            self.timing.max_poll_crashes,
            exc_info=exc,
        )
        if tracked.crashes < self.timing.max_poll_crashes:
            self._schedule(job_id, self._next_backoff(tracked))
            return
        try:
            await self._fail(tracked.job, failures.INTERNAL, raw=f"{type(exc).__name__}: {exc}")
        except Exception as second:
            log.warning("job %d: could not be failed yet (%s); polling again", job_id, second)
            if job_id in self._tracked:
                self._schedule(job_id, self._next_backoff(tracked))

    def _next_backoff(self, tracked: _Tracked) -> float:
        tracked.backoff = min(
            self.timing.queue_max_interval,
            max(self.timing.retry_delay, tracked.backoff * self.timing.growth),
        )
        return tracked.backoff

    async def _poll(self, job_id: int) -> None:
        tracked = self._tracked.get(job_id)
        if tracked is None:
            return
        job = tracked.job
        assert job.runpod_id is not None
        status: JobStatus | None = None
        error: RunPodError | None = None
        try:
            status = await self.runpod.status(job.runpod_id)
        except RunPodError as exc:
            error = exc
        if self._tracked.get(job_id) is not tracked:
            return  # cancelled or ended while this request was out: its answer is old news
        if isinstance(error, RunPodNotFound):
            await self._fail(job, failures.EXPIRED, raw=str(error))
        elif error is not None and await self._enforce_deadlines(tracked):
            return  # deadlines hold whatever RunPod answers: garbage, an outage, a refused key
        elif isinstance(error, RunPodAuthError):
            self._report_auth(error)
            self._schedule(job_id, self.timing.auth_backoff)
        elif error is not None:
            delay = self._next_backoff(tracked)
            log.info("job %d: status poll failed (%s); next in %.1fs", job_id, error, delay)
            self._schedule(job_id, delay)
        elif status is not None:
            tracked.backoff = 0.0
            previous_poll, tracked.last_poll = tracked.last_poll, time.monotonic()
            await self._handle_status(tracked, status, previous_poll)

    async def _handle_status(
        self, tracked: _Tracked, status: JobStatus, previous_poll: float | None
    ) -> None:
        job = tracked.job
        if status.status == "COMPLETED":
            await self._completed(job, status)
        elif status.status == "FAILED":
            explained = failures.explain_failed_job(status.error, status.output)
            await self._fail(job, explained.failure, raw=explained.raw)
        elif status.status == "TIMED_OUT":
            await self._fail(job, failures.TIMED_OUT, raw="RunPod: TIMED_OUT")
        elif status.status == "CANCELLED":
            await self._finish(
                job,
                JobState.CANCELLED,
                Failure("cancelled", "The job was cancelled at RunPod."),
                raw="RunPod: CANCELLED",
            )
        elif status.status in ("IN_PROGRESS", "RUNNING"):
            await self._running_status(tracked, status, previous_poll)
        else:
            if status.status != "IN_QUEUE":
                # Unknown values are not terminal: keep polling, bounded by our own deadlines.
                log.info("job %d: unknown RunPod status %r", job.id, status.status)
            if job.state is JobState.RUNNING:
                await self._running_status(tracked, status, previous_poll)
            else:
                await self._queued_status(tracked)

    async def _queued_status(self, tracked: _Tracked) -> None:
        job = tracked.job
        if await self._enforce_deadlines(tracked):
            return
        waited = time.monotonic() - tracked.submitted
        no_workers = (
            self._health is not None
            and self._health.total_workers == 0
            and waited > self.timing.no_worker_notice
        )
        self._emit(JobUpdate(job, "waiting", cold=self._cold(), no_workers=no_workers))
        interval = polling.queued_interval(self.timing, self._estimate(job), tracked.queued_polls)
        tracked.queued_polls += 1
        self._schedule(job.id, interval)

    async def _running_status(
        self, tracked: _Tracked, status: JobStatus, previous_poll: float | None
    ) -> None:
        job = tracked.job
        now = time.monotonic()
        if job.state is JobState.SUBMITTED:
            started = now
            if status.delay_ms is not None:
                started = min(
                    now, max(tracked.submitted, tracked.submitted + status.delay_ms / 1000)
                )
            elif previous_poll is not None:
                started = now - (now - previous_poll) / 2
            running = await self._transition(
                job.id,
                {JobState.SUBMITTED},
                JobState.RUNNING,
                fields={
                    "started_at": self._clock() - (time.monotonic() - started),
                    "delay_ms": status.delay_ms,
                },
            )
            if running is None:
                return
            tracked.job = job = running
            tracked.started = started
        if tracked.started is None:
            tracked.started = now  # RunPod went back to its queue and out again: count from here
        if await self._enforce_deadlines(tracked):
            return
        elapsed = time.monotonic() - tracked.started
        self._emit(JobUpdate(job, "running", elapsed=elapsed))
        self._schedule(job.id, polling.running_interval(self.timing, self._estimate(job), elapsed))

    async def _enforce_deadlines(self, tracked: _Tracked) -> bool:
        """End the job if its queue or execution deadline has passed; True if it did.

        Both count on the monotonic clock from when this process saw the job go out or start.
        """
        job = tracked.job
        now = time.monotonic()
        if tracked.started is None:
            if now - tracked.submitted <= self.timing.queue_timeout:
                return False
            failure, raw = failures.QUEUE_TIMEOUT, "queue deadline passed"
        else:
            limit = self._execution_limit(job) + self.timing.execution_grace
            if now - tracked.started <= limit:
                return False
            failure, raw = failures.TIMED_OUT, "execution deadline passed"
        await self._cancel_at_runpod(job)
        await self._fail(job, failure, raw=raw)
        return True

    async def _cancel_at_runpod(self, job: Job) -> None:
        if not job.runpod_id:
            return
        try:
            await self.runpod.cancel(job.runpod_id)
        except RunPodError as exc:
            log.warning("job %d: cancel at RunPod failed (%s); it may still run there", job.id, exc)

    async def _health_loop(self, loop: Loop) -> None:
        """While jobs wait in RunPod's queue, watch the workers to tell a cold start from a queue."""
        while True:
            loop.beat()
            if any(t.job.state is JobState.SUBMITTED for t in self._tracked.values()):
                try:
                    self._health = await self.runpod.health()
                except RunPodError as exc:
                    log.info("RunPod /health failed: %s", exc)
            await loop.sleep(self.timing.health_interval)

    def _cold(self) -> bool:
        return self._health is not None and self._health.cold

    def _report_auth(self, exc: RunPodError) -> None:
        if not self._auth_reported:
            self._auth_reported = True
            log.error(
                "RunPod refused the API key (401): set a valid RUNPOD_API_KEY and restart (%s)", exc
            )

    # ----- completion and delivery ------------------------------------------------------------

    async def _completed(self, job: Job, status: JobStatus) -> None:
        try:
            images = await decode_output(
                status.output, expected=job.request.count, fetch=self.runpod.download
            )
        except OutputError as exc:
            failure = {
                "no_images": failures.NO_IMAGES,
                "worker": failures.explain_worker_error(str(exc)),
                "forbidden_url": failures.FORBIDDEN_OUTPUT_URL,
            }.get(exc.kind, Failure(exc.kind, f"The GPU worker returned no usable image ({exc})."))
            await self._fail(job, failure, raw=f"{exc}; output={_shorten(status.output)}")
            return
        except RunPodError as exc:
            await self._fail(
                job,
                Failure("download", "The finished images could not be downloaded."),
                raw=f"{exc}; output={_shorten(status.output)}",
            )
            return
        except Exception as exc:
            # Reading the same output again would fail the same way: fail once, never loop.
            await self._unusable(job, status, exc)
            return

        async def store(tx: Transaction) -> None:
            await tx.executemany(
                "INSERT INTO job_outputs (job_id, idx, filename, mime, data) VALUES (?, ?, ?, ?, ?)",
                [(job.id, i, img.filename, img.mime, img.data) for i, img in enumerate(images)],
            )

        now = self._clock()
        try:
            delivering = await self._transition(
                job.id,
                AT_RUNPOD,
                JobState.DELIVERING,
                fields={
                    "delay_ms": status.delay_ms if status.delay_ms is not None else job.delay_ms,
                    "execution_ms": status.execution_ms,
                    "finished_at": now,
                    "started_at": job.started_at or now,
                },
                detail=f"{len(images)} image{'s' if len(images) != 1 else ''}",
                after=store,
            )
        except Exception as exc:
            if is_transient(exc):
                raise  # the next poll finds it COMPLETED again
            await self._unusable(job, status, exc)
            return
        if delivering is None:
            return
        self._tracked.pop(job.id, None)
        self._release_slot(job.id)
        if status.execution_ms is not None:
            self.durations.observe(job.request, status.execution_ms)
        self._emit(JobUpdate(delivering, "delivering"))
        self._own(job.id, self._spawn_finishing(self._deliver(delivering), f"deliver-{job.id}"))

    async def _unusable(self, job: Job, status: JobStatus, exc: Exception) -> None:
        log.error("job %d: its COMPLETED answer cannot be used", job.id, exc_info=exc)
        await self._fail(
            job,
            failures.UNUSABLE_OUTPUT,
            raw=f"{type(exc).__name__}: {exc}; answer={_shorten(asdict(status), 2000)}",
        )

    async def _deliver(self, job: Job) -> None:
        """Show the images; Discord being down or the database refusing only delays this."""
        assert self._deliverer is not None
        images: list[ImageFile] | None = None
        shown = False
        refusal: str | None = None  # why the images can never be shown, once that is known
        crashes = 0
        for attempt in itertools.count():
            if attempt:
                delay = self.timing.delivery_retry_delay * self.timing.growth ** min(
                    attempt - 1, 10
                )
                await asyncio.sleep(min(delay, self.timing.delivery_max_backoff))
            try:
                current = await self.get(job.id)
                if current is None or current.state is not JobState.DELIVERING:
                    return
                if refusal is not None:
                    await self._undeliverable(current, refusal)
                    return
                if not shown:
                    images = images if images is not None else await self._outputs(job.id)
                    await self._deliverer.deliver(current, images)
                    shown = True
                await self._delivered(job.id)
                return
            except DeliveryError as exc:
                if exc.permanent:
                    refusal = str(exc)
                else:
                    log.info("job %d: delivery failed (%s); retrying", job.id, exc)
            except Exception as exc:
                if is_transient(exc):
                    log.warning("job %d: the database refused during delivery (%s)", job.id, exc)
                    continue
                # A bug, not an outage: retrying a few times is enough to be sure.
                crashes += 1
                log.exception("job %d: delivery crashed", job.id)
                if crashes >= self.timing.max_delivery_attempts:
                    refusal = f"{type(exc).__name__}: {exc}"

    async def _outputs(self, job_id: int) -> list[ImageFile]:
        rows = await self.db.fetchall(
            "SELECT filename, mime, data FROM job_outputs WHERE job_id = ? ORDER BY idx", (job_id,)
        )
        return [ImageFile(r["filename"], r["mime"], r["data"]) for r in rows]

    async def _delivered(self, job_id: int) -> None:
        done = await self._transition(
            job_id,
            {JobState.DELIVERING},
            JobState.DONE,
            fields={"delivered_at": self._clock()},
            settle=Settlement.CAPTURE,
            after=_drop_outputs(job_id),
        )
        if done is not None:
            self._emit(JobUpdate(done, "done"))

    async def _undeliverable(self, job: Job, reason: str) -> None:
        ended = await self._transition(
            job.id,
            {JobState.DELIVERING},
            JobState.FAILED,
            fields={
                "failure": failures.UNDELIVERABLE.message,
                "error": reason,
                "delivered_at": self._clock(),
            },
            detail="undeliverable",
            settle=Settlement.REFUND,
            after=_drop_outputs(job.id),
        )
        log.warning("job %d could not be delivered: %s", job.id, reason)
        if ended is not None:
            self._emit(JobUpdate(ended, "failed"))

    async def _notify(self, job: Job) -> None:
        """Show the member how a job ended, once; what still fails is retried on the next start."""
        assert self._deliverer is not None
        for attempt in range(self.timing.max_delivery_attempts):
            try:
                await self._deliverer.notify(job)
            except DeliveryError as exc:
                if exc.permanent:
                    log.warning("job %d: the member cannot be reached (%s)", job.id, exc)
                    await self._mark_notified(job.id)
                    return
                log.info("job %d: could not tell the member yet (%s)", job.id, exc)
                await asyncio.sleep(self.timing.delivery_retry_delay * self.timing.growth**attempt)
                continue
            except Exception:
                log.exception("job %d: telling the member crashed", job.id)
                break
            await self._mark_notified(job.id)
            return
        log.warning("job %d: the member could not be told how it ended", job.id)

    async def _mark_notified(self, job_id: int) -> None:
        now = self._clock()

        async def mark(tx: Transaction) -> None:
            await tx.execute(
                "UPDATE jobs SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL",
                (now, job_id),
            )

        await self.db.write(mark)

    # ----- plumbing --------------------------------------------------------------------------

    def _emit(self, update: JobUpdate) -> None:
        for listener in self._subscribers:
            try:
                listener(update)
            except Exception:
                log.exception("a job update listener failed")

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _spawn_finishing(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = self._spawn(coro, name)
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        return task

    def _own(self, job_id: int, task: asyncio.Task[Any]) -> None:
        """Record `task` as the one carrying `job_id` forward (submitting or delivering it)."""
        self._owners[job_id] = task

        def disown(done: asyncio.Task[Any]) -> None:
            if self._owners.get(job_id) is done:
                del self._owners[job_id]

        task.add_done_callback(disown)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())


_ACTIVE_STATES = tuple(s.value for s in JobState if s not in TERMINAL)
# Word for word the condition of the partial index `jobs_active`, so SQLite uses that index.
_UNFINISHED = "state NOT IN ({})".format(
    ", ".join(
        f"'{s.value}'"
        for s in (
            JobState.DONE,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.TIMED_OUT,
            JobState.EXPIRED,
        )
    )
)


@contextlib.contextmanager
def _busy_is_member_facing() -> Iterator[None]:
    """A database that keeps refusing for a passing reason becomes a sentence for the member."""
    try:
        yield
    except Exception as exc:
        if is_transient(exc):
            raise DatabaseBusy() from exc
        raise


def _placeholders(values: Iterable[Any]) -> str:
    return ", ".join("?" for _ in values)


async def _record_event(
    tx: Transaction,
    job_id: int,
    at: float,
    from_state: str | None,
    to_state: str,
    detail: str | None,
) -> None:
    await tx.insert(
        "INSERT INTO job_events (job_id, at, from_state, to_state, detail) VALUES (?, ?, ?, ?, ?)",
        (job_id, at, from_state, str(to_state), detail),
    )


def _drop_outputs(job_id: int) -> Callable[[Transaction], Awaitable[None]]:
    """The images kept for delivery go once the job has ended."""

    async def drop(tx: Transaction) -> None:
        await tx.execute("DELETE FROM job_outputs WHERE job_id = ?", (job_id,))

    return drop


def _shorten(value: Any, limit: int = 500) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "…"
