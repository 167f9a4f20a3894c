"""One bot process of the process-scale benchmark: the real job manager on a (shared) database.

    python -m bench.fleet_process --outcomes FILE [--lease-ttl S] NAME=VALUE ...

The NAME=VALUE pairs are the bot's settings. Once its jobs run, the process prints `READY` and
answers commands read on stdin, one line each:
    accept MEMBERS N...          accept jobs numbered N..., job n from member 1 + n % MEMBERS
    processes                    how many processes this one counts (its budget share is 1/that)
    report                       print this process's figures as one JSON line
Each delivery or notice is appended to the outcomes file as `deliver|notify JOB_ID WALL_TIME`,
flushed at once, so the lines of a process that is killed are kept.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from bench.harness import LoopLag, peak_rss_mb, percentile, services_on
from bot.heartbeat import rss_mb
from bot.images import ImageFile
from bot.jobs import Job
from bot.polling import Timing
from bot.runpod.budget import CallStats
from bot.services import Services

PROMPT = "a pony in a field --seed 3"


class TimedCallStats(CallStats):
    """Call counts, and when each call went out (the system-wide monotonic clock, which every
    process on the machine reads alike), so the driver can count the whole fleet's busiest second."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def count(self, op: str) -> None:
        super().count(op)
        self.times.append(time.monotonic())


class OutcomeFile:
    """A deliverer that writes one line per job reaching its member (or told it failed)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def _write(self, kind: str, job: Job) -> None:
        self.out.write(f"{kind} {job.id} {time.time():.4f}\n")
        self.out.flush()

    async def deliver(self, job: Job, images: Sequence[ImageFile]) -> None:
        self._write("deliver", job)

    async def notify(self, job: Job) -> None:
        self._write("notify", job)


async def accept(services: Services, members: int, numbers: Sequence[int]) -> None:
    for n in numbers:
        new = services.prepare(PROMPT, user_id=1 + n % members, guild_id=1, channel_id=1)
        job = await services.jobs.accept(new)
        await services.jobs.attach_message(job.id, None, None)


def figures(services: Services, lag: LoopLag, stats: TimedCallStats) -> dict[str, Any]:
    lags_ms = [s * 1000 for s in lag.samples]
    lag.samples.clear()
    sent, stats.times = stats.times, []
    return {
        "pid": os.getpid(),
        "loop_lag_p50_ms": round(percentile(lags_ms, 50), 2),
        "loop_lag_p99_ms": round(percentile(lags_ms, 99), 2),
        "loop_lag_max_ms": round(max(lags_ms, default=0.0), 2),
        "rss_mb": round(rss_mb(), 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "requests": dict(stats.calls),
        "request_times": [round(t, 4) for t in sent],
        "processes_counted": services.jobs.leases.processes,
    }


async def serve(services: Services, lag: LoopLag, stats: TimedCallStats) -> None:
    """Answer the driver's commands until stdin closes."""
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        command, *args = line.split()
        if command == "accept":
            members, *numbers = (int(a) for a in args)
            await accept(services, members, numbers)
            answer: Any = {"accepted": len(numbers)}
        elif command == "processes":
            answer = {"processes": services.jobs.leases.processes}
        elif command == "report":
            answer = figures(services, lag, stats)
        else:
            answer = {"error": f"unknown command {command!r}"}
        print(json.dumps(answer), flush=True)


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_process")
    parser.add_argument("--outcomes", type=Path, required=True)
    parser.add_argument("--lease-ttl", type=float, default=Timing.lease_ttl)
    parser.add_argument("settings", nargs="*", help="NAME=VALUE")
    args = parser.parse_args(argv)
    environ = dict(setting.split("=", 1) for setting in args.settings)
    timing = dataclasses.replace(Timing(), lease_ttl=args.lease_ttl)
    lag = LoopLag()
    lag.start()
    with args.outcomes.open("a") as out:
        async with services_on(environ, timing=timing) as services:
            stats = TimedCallStats()
            services.runpod.stats = stats
            await services.jobs.start(OutcomeFile(out))
            print("READY", flush=True)
            await serve(services, lag, stats)
    await lag.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
