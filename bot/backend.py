"""The GPU backend seam: what the job manager asks of whatever runs its workflows, in its own words.

RunPod Serverless (`bot/runpod_backend.py`) is the one implementation today; its status words,
ids and errors stay there and arrive here as `BackendStatus`, `BackendJob` and `BackendError`s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from bot.images import ImageFile
from bot.ratelimit import Turn


class BackendStatus(StrEnum):
    """Where a job stands at the backend."""

    QUEUED = "queued"  # accepted, waiting for a worker
    RUNNING = "running"  # a worker is generating
    COMPLETED = "completed"  # finished; its output holds the images
    FAILED = "failed"  # the worker reported an error; `error` and `output` say which
    CANCELLED = "cancelled"  # withdrawn at the backend, by us or by someone else
    TIMED_OUT = "timed_out"  # the backend's own execution limit ended it
    UNKNOWN = "unknown"  # a word this bot does not know: not an ending, so it is followed on

    @property
    def ended(self) -> bool:
        return self in _ENDED


_ENDED = frozenset(
    {
        BackendStatus.COMPLETED,
        BackendStatus.FAILED,
        BackendStatus.CANCELLED,
        BackendStatus.TIMED_OUT,
    }
)


@dataclass(frozen=True)
class BackendJob:
    """One answer about a job: its backend id, where it stands, and what the backend reported."""

    id: str
    status: BackendStatus
    delay_ms: int | None = None  # time spent in the backend's queue
    execution_ms: int | None = None  # time spent generating
    output: Any = None  # raw: a failed job's details or a completed job's images
    error: str | None = None


@dataclass(frozen=True)
class BackendHealth:
    """How many workers the backend has and how many could take a job now."""

    total_workers: int
    ready_workers: int  # idle or warm: can start a job at once
    busy_workers: int

    @property
    def cold(self) -> bool:
        """No worker can take a job now, so a queued job waits for one to start."""
        return self.ready_workers == 0 and self.busy_workers == 0


class BackendError(Exception):
    """A call to the backend that did not succeed; passing, unless a subclass says otherwise."""


class BackendAuthError(BackendError):
    """The backend refused our credentials: a configuration error, never retried."""


class BackendNotFound(BackendError):
    """The endpoint, or the job, is unknown to the backend (a wrong id, or a result it dropped)."""


class BackendRejected(BackendError):
    """The backend refused the request itself: sending it again cannot help."""


class BackendUnavailable(BackendError):
    """The backend provably created nothing (refused, rate limited, never reached): resend later."""


class SubmitUncertain(BackendError):
    """The submission may have reached the backend without an answer: resending could run it twice."""


class OutputUnusable(BackendError):
    """A completed job whose output holds no usable images; `kind` says why, for the failure."""

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class GpuBackend(Protocol):
    """Runs rendered workflows on GPUs: submit, follow, cancel, watch its workers, read outputs."""

    async def submit(
        self,
        workflow: dict[str, Any],
        images: Sequence[tuple[str, bytes]],
        *,
        execution_timeout_ms: int,
        ttl_ms: int,
        turn: Turn | None = None,
    ) -> BackendJob:
        """Queue a workflow with its input images; raises the `BackendError` subclass that fits.
        A `turn` from `ready_to_submit` lets it go out without waiting for the rate limit."""
        ...

    async def ready_to_submit(self) -> Turn:
        """Wait until a submission may go out at once (rate limits); the turn is for `submit`,
        and whoever took it gives it back (`Turn.give_back`) when no submission used it."""
        ...

    async def status(self, job_id: str) -> BackendJob: ...

    async def cancel(self, job_id: str) -> None: ...

    async def health(self) -> BackendHealth: ...

    async def outputs(self, job: BackendJob, *, expected: int) -> list[ImageFile]:
        """A completed job's images, verified; `OutputUnusable` or `BackendError` if there are none."""
        ...
