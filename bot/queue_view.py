"""What runs and what waits on a server, with places and expected starts, for `/queue`.

Expected starts come from the duration estimates: each GPU slot is busy until its job's expected
end, and waiting jobs take the slot that frees first, in their queue order. Whether a prompt may be
shown is decided here too, from the age restriction of the channel it came from and of the one
asking; the cogs find those out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from bot.jobs import Job, JobState


class Stage(StrEnum):
    RUNNING = "running"  # generating on a GPU, or its images being posted
    AT_GPU = "at the GPU"  # sent to RunPod, waiting there for a worker
    WAITING = "waiting"  # waiting here for a free slot


@dataclass(frozen=True)
class QueueEntry:
    job_id: int
    user_id: int
    channel_id: int | None
    template: str
    prompt: str
    stage: Stage
    position: int | None  # 1-based place among the jobs waiting here
    since: float  # when it was accepted
    expected_start: float | None  # for waiting jobs; None when nothing can be said
    expected_end: float | None


@dataclass(frozen=True)
class QueueView:
    running: tuple[QueueEntry, ...]
    waiting: tuple[QueueEntry, ...]
    slots: int

    @property
    def empty(self) -> bool:
        return not self.running and not self.waiting


_RUNNING = {JobState.RUNNING, JobState.DELIVERING}
_AT_GPU = {JobState.SUBMITTING, JobState.SUBMITTED}


def queue_view(
    jobs: Sequence[Job],
    positions: Mapping[int, int | None],
    expected_seconds: Callable[[Job], float],
    *,
    slots: int,
    now: float,
) -> QueueView:
    """`jobs` as the manager's `active()` lists them; `positions` from its `position()`."""
    running, waiting = [], []
    frees: list[float] = []
    for job in jobs:
        if job.state in _RUNNING or job.state in _AT_GPU:
            started = job.started_at if job.state in _RUNNING else None
            end = (started or now) + expected_seconds(job)
            frees.append(max(end, now))
            stage = Stage.RUNNING if job.state in _RUNNING else Stage.AT_GPU
            running.append(_entry(job, stage, None, started, end))
    ordered = sorted(
        (job for job in jobs if job.state not in _RUNNING | _AT_GPU),
        key=lambda job: (positions.get(job.id) or 10**9, job.id),
    )
    # Slots nobody uses free now; each waiting job takes the earliest free slot.
    frees += [now] * max(0, slots - len(frees))
    frees.sort()
    for job in ordered:
        start = frees.pop(0) if frees else None
        end = start + expected_seconds(job) if start is not None else None
        if end is not None:
            frees.append(end)
            frees.sort()
        waiting.append(_entry(job, Stage.WAITING, positions.get(job.id), start, end))
    return QueueView(tuple(running), tuple(waiting), slots)


def _entry(
    job: Job, stage: Stage, position: int | None, start: float | None, end: float | None
) -> QueueEntry:
    return QueueEntry(
        job_id=job.id,
        user_id=job.user_id,
        channel_id=job.channel_id,
        template=job.template,
        prompt=job.request.prompt,
        stage=stage,
        position=position,
        since=job.created_at,
        expected_start=start,
        expected_end=end,
    )


def prompt_may_show(source_age_restricted: bool | None, here_age_restricted: bool) -> bool:
    """A prompt from an age-restricted channel shows only in another; unknown sources never show."""
    if source_age_restricted is None:
        return False
    return here_age_restricted or not source_age_restricted
