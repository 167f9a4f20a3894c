"""A heartbeat file next to the database: proof of life for `python -m bot health`, and figures."""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from bot.supervisor import Loop, LoopStatus, Supervision

STALE_AFTER_BEATS = 3


@dataclass(frozen=True)
class LoopBeat:
    """One background loop at the moment the heartbeat was written."""

    name: str
    beat_at: float  # wall-clock time of its last beat (derived from the monotonic clock)
    dead: bool
    crashes: int
    restarts: int
    last_error: str | None

    @classmethod
    def of(cls, status: LoopStatus, at: float) -> LoopBeat:
        return cls(
            status.name,
            at - status.age,
            status.dead,
            status.crashes,
            status.restarts,
            status.last_error,
        )


@dataclass(frozen=True)
class Beat:
    """What the running bot last reported about itself."""

    at: float
    interval: float
    connected: bool
    tasks: int
    rss_mb: float
    active_jobs: int
    pid: int = 0
    slots_in_use: int = 0  # RunPod slots the job manager counts as taken
    stuck_after: float = Supervision.stuck_after
    loops: tuple[LoopBeat, ...] = ()
    # On a database several processes share: jobs leased to this process, and when it last claimed
    # one (sent a queued job, or took one over from a process that stopped). Absent on SQLite.
    leases_held: int | None = None
    last_claim: float | None = None


def heartbeat_path(database_path: Path) -> Path:
    return Path(f"{database_path}.heartbeat")


def rss_mb() -> float:
    """Resident memory now (Linux), else the peak so far."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write(path: Path, beat: Beat) -> None:
    """Replace the file atomically, so a reader never sees half a beat."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(asdict(beat)))
    partial.replace(path)


def read(path: Path) -> Beat | None:
    try:
        data = json.loads(path.read_text())
        loops = tuple(LoopBeat(**loop) for loop in data.pop("loops", []))
        return Beat(**data, loops=loops)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def loop_problems(beat: Beat, stuck_after: float | None = None) -> dict[str, str]:
    """Each dead or stuck loop's name and what is wrong with it, dead ones first.

    A loop's age is taken when the beat was written (both times come from one clock reading),
    so a wall-clock step between writing and reading cannot make a loop look stuck.
    """
    limit = beat.stuck_after if stuck_after is None else stuck_after
    dead = {
        loop.name: (
            f"loop {loop.name} is dead: {loop.crashes} crashes in a row (last: {loop.last_error})"
            if loop.crashes
            else f"loop {loop.name} has ended and is not restarted"
        )
        for loop in beat.loops
        if loop.dead
    }
    stuck = sorted(
        ((beat.at - loop.beat_at, loop.name) for loop in beat.loops if not loop.dead),
        reverse=True,
    )
    return dead | {
        name: f"loop {name} is stuck: no beat for {age:.0f} s (the limit is {limit:g} s)"
        for age, name in stuck
        if age > limit
    }


def check(
    path: Path, *, now: float | None = None, stuck_after: float | None = None
) -> tuple[bool, str]:
    """Healthy when the bot wrote a beat recently, every loop beats, and Discord is connected."""
    beat = read(path)
    if beat is None:
        return False, f"no heartbeat at {path}: the bot is not running (or has not started yet)"
    age = (now if now is not None else time.time()) - beat.at
    if age > STALE_AFTER_BEATS * beat.interval:
        return False, f"the last heartbeat is {age:.0f} s old: the bot is stuck or stopped"
    problems = loop_problems(beat, stuck_after)
    if problems:
        return False, next(iter(problems.values()))
    if not beat.connected:
        return False, "the bot runs but is not connected to Discord"
    return True, (
        f"alive: {beat.active_jobs} active jobs, {beat.tasks} tasks, {beat.rss_mb:.0f} MB, "
        f"{len(beat.loops)} loops beating{_leases(beat)}"
    )


def _leases(beat: Beat) -> str:
    if beat.leases_held is None:
        return ""
    claim = "never" if beat.last_claim is None else f"{beat.at - beat.last_claim:.0f} s ago"
    return f"; {beat.leases_held} job leases held, last claim {claim}"


async def beat_forever(
    path: Path, interval: float, describe: Callable[[], Beat], loop: Loop
) -> None:
    """Write a beat every `interval` seconds (a supervised loop's body)."""
    while True:
        loop.beat()
        write(path, describe())
        await loop.sleep(interval)
