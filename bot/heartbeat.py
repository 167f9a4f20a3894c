"""A heartbeat file next to the database: proof of life for `python -m bot health`, and figures."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

STALE_AFTER_BEATS = 3


@dataclass(frozen=True)
class Beat:
    """What the running bot last reported about itself."""

    at: float
    interval: float
    connected: bool
    tasks: int
    rss_mb: float
    active_jobs: int


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
        return Beat(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def check(path: Path, *, now: float | None = None) -> tuple[bool, str]:
    """Healthy when the bot wrote a beat recently and is connected to Discord."""
    beat = read(path)
    if beat is None:
        return False, f"no heartbeat at {path}: the bot is not running (or has not started yet)"
    age = (now if now is not None else time.time()) - beat.at
    if age > STALE_AFTER_BEATS * beat.interval:
        return False, f"the last heartbeat is {age:.0f} s old: the bot is stuck or stopped"
    if not beat.connected:
        return False, "the bot runs but is not connected to Discord"
    return True, f"alive: {beat.active_jobs} active jobs, {beat.tasks} tasks, {beat.rss_mb:.0f} MB"


async def beat_forever(path: Path, interval: float, describe: Callable[[], Beat]) -> None:
    """Write a beat every `interval` seconds until cancelled."""
    while True:
        write(path, describe())
        await asyncio.sleep(interval)
