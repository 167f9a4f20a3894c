"""RunPod's answers (`JobStatus`, `Health`), checked on entry: types, ranges and ids."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.runpod.errors import RunPodMalformed, clip

TERMINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
# Ceilings on what RunPod may report: a job runs at most a day here, and waits at most its ttl.
MAX_EXECUTION_MS = 24 * 3600 * 1000
MAX_DELAY_MS = 7 * 24 * 3600 * 1000
MAX_WORKER_COUNT = 100_000
MAX_ERROR_CHARS = 16_000
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class JobStatus:
    """One answer from `/run`, `/runsync`, `/status`, `/cancel` or `/retry`, checked on entry."""

    id: str
    status: str
    delay_ms: int | None = None
    execution_ms: int | None = None
    output: Any = None
    error: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def parse(cls, data: Any, *, op: str = "status", expected_id: str | None = None) -> JobStatus:
        """Raise `RunPodMalformed` unless `data` is a job answer (about `expected_id`, if given)."""
        if not isinstance(data, dict):
            raise RunPodMalformed(op, "not a JSON object", data)
        job_id = data.get("id")
        if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
            raise RunPodMalformed(op, "no usable job id", data)
        if expected_id is not None and job_id != expected_id:
            raise RunPodMalformed(op, f"about job {job_id}, not {expected_id}", data)
        status = data.get("status", "UNKNOWN")
        if not isinstance(status, str) or not status.isascii() or not 0 < len(status) <= 64:
            raise RunPodMalformed(op, "status is not a short string", data)
        error = data.get("error")
        if error is not None and not isinstance(error, str):
            error = json.dumps(error, default=repr)
        return cls(
            id=job_id,
            status=status.upper(),
            delay_ms=_milliseconds(op, data, "delayTime", MAX_DELAY_MS),
            execution_ms=_milliseconds(op, data, "executionTime", MAX_EXECUTION_MS),
            # Kept raw: FAILED jobs carry the worker's details here, COMPLETED ones the images.
            output=data.get("output"),
            error=error[:MAX_ERROR_CHARS] if error is not None else None,
        )


def _milliseconds(op: str, data: dict[str, Any], key: str, ceiling: int) -> int | None:
    """An optional duration: a finite number of ms from 0 up to `ceiling`."""
    value = data.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= ceiling
    ):
        raise RunPodMalformed(op, f"{key} is not a duration from 0 to {ceiling} ms", data)
    return round(value)


@dataclass(frozen=True)
class Health:
    """`/health`: job counts and an open map of worker counts."""

    jobs: Mapping[str, int]
    workers: Mapping[str, int]

    @property
    def available_workers(self) -> int:
        return self.workers.get("idle", 0) + self.workers.get("ready", 0)

    @property
    def busy_workers(self) -> int:
        return self.workers.get("running", 0)

    @property
    def total_workers(self) -> int:
        return sum(self.workers.values())

    @property
    def cold(self) -> bool:
        """No worker can take a job now, so a queued job waits for one to start."""
        return self.available_workers == 0 and self.busy_workers == 0

    @classmethod
    def parse(cls, data: Any) -> Health:
        """Raise `RunPodMalformed` unless `data` holds sane counts."""
        if not isinstance(data, dict):
            raise RunPodMalformed("health", "not a JSON object", data)
        return cls(_counts(data, "jobs"), _counts(data, "workers"))


def _counts(data: dict[str, Any], key: str) -> dict[str, int]:
    """An open map of counts: every number in it must be a whole count from 0 to a sane cap."""
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise RunPodMalformed("health", f"{key} is not an object", data)
    counts = {}
    for name, count in value.items():
        if isinstance(count, bool) or not isinstance(count, int | float):
            continue  # an open map: a field of another kind is someone else's news
        if not (isinstance(count, int) and 0 <= count <= MAX_WORKER_COUNT):
            raise RunPodMalformed("health", f"{key}.{clip(name, 40)} is not a count", data)
        counts[str(name)] = count
    return counts
