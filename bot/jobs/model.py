"""The job model: its states, what subscribers hear, what it settles to, and the errors it raises."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from bot.config import DEFAULT_ENDPOINT
from bot.db import Transaction
from bot.images import ImageFile
from bot.prompt import GenerationRequest


class JobState(StrEnum):
    ACCEPTED = "accepted"  # stored and charged, its progress message not yet posted
    QUEUED = "queued"  # waiting here for a free slot
    SUBMITTING = "submitting"  # the backend is being sent it
    SUBMITTED = "submitted"  # the backend has it, in its queue
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
AT_BACKEND = frozenset({JobState.SUBMITTED, JobState.RUNNING})
IN_FLIGHT = frozenset({JobState.SUBMITTING, JobState.SUBMITTED, JobState.RUNNING})
FAILURE_STATES = {
    "timed_out": JobState.TIMED_OUT,
    "queue_timeout": JobState.TIMED_OUT,
    "expired": JobState.EXPIRED,
    "cancelled": JobState.CANCELLED,
}


class UpdateKind(StrEnum):
    """What just happened to a job, as its subscribers hear it."""

    QUEUED = "queued"  # waiting here for a slot; `position` says where
    WAITING = "waiting"  # the backend has it in its queue; `cold` and `no_workers` say why
    RUNNING = "running"  # a worker is generating; `elapsed` says for how long
    DELIVERING = "delivering"  # the images are fetched and being posted
    DONE = "done"  # delivered
    FAILED = "failed"  # ended without images; the job's `failure` says why
    CANCELLED = "cancelled"  # withdrawn by its member, a moderator or the backend
    TIMED_OUT = "timed_out"  # a queue or execution deadline passed
    EXPIRED = "expired"  # the backend no longer has the job or its result

    @property
    def ended(self) -> bool:
        """The job will hear nothing more: it ended one way or another."""
        return self in _ENDED_KINDS

    @classmethod
    def ending(cls, state: JobState) -> UpdateKind:
        """The kind that announces a job ending in `state`."""
        return cls(state.value)


_ENDED_KINDS = frozenset(
    {
        UpdateKind.DONE,
        UpdateKind.FAILED,
        UpdateKind.CANCELLED,
        UpdateKind.TIMED_OUT,
        UpdateKind.EXPIRED,
    }
)


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


class DeliveryError(Exception):
    """A delivery that did not happen; `permanent` means retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


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
    endpoint: str = DEFAULT_ENDPOINT


@dataclass(frozen=True)
class Job:
    """One stored job."""

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
    backend_id: str | None  # the backend's id for the job, once it has it
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
    endpoint: str = DEFAULT_ENDPOINT  # the name of the endpoint it runs on

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def workflow(self) -> dict[str, Any]:
        return json.loads(self.workflow_json)


@dataclass(frozen=True)
class JobUpdate:
    """What subscribers hear: a job and what just happened to it."""

    job: Job
    kind: UpdateKind
    position: int | None = None
    cold: bool = False
    no_workers: bool = False
    elapsed: float | None = None
    # When a queued job should get a slot (wall clock): an estimate from expected run times.
    starts_at: float | None = None

    def __post_init__(self) -> None:
        # A kind given as its word ("queued") is the enum member, and a misspelt one is refused.
        object.__setattr__(self, "kind", UpdateKind(self.kind))


@dataclass(frozen=True)
class Limits:
    """How many jobs may be in flight at the backend, per endpoint and per member."""

    max_in_flight: int = 4  # on each endpoint, unless `endpoint_max_in_flight` names it
    member_max_in_flight: int = 1
    member_max_queued: int = 4
    poll_concurrency: int = 32
    endpoint_max_in_flight: Mapping[str, int] = field(default_factory=dict)

    def in_flight_on(self, endpoint: str) -> int:
        return self.endpoint_max_in_flight.get(endpoint, self.max_in_flight)


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
