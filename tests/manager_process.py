"""A job manager in a process of its own, for crash tests: kill it, start another, compare.

    python -m tests.manager_process --db PATH --api-base URL --endpoint ID --key KEY
        [--submit N] [--outcomes FILE] [--exit-when-done] [--setting NAME=VALUE]
        [--timing FIELD=SECONDS]

Deliveries are appended to `--outcomes` (one line per delivery or notice, flushed and synced),
so a test can count how often each job reached its member across processes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.config import Secret, load_settings
from bot.images import ImageFile
from bot.jobs import Job, Limits
from bot.runpod import RetryPolicy, RunPodClient
from bot.services import Services
from tests.conftest import FAST


class OutcomeLog:
    """A deliverer that writes one durable line per delivery and per notice."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _write(self, line: str) -> None:
        with self.path.open("a") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())

    async def deliver(self, job: Job, images: Sequence[ImageFile]) -> None:
        self._write(f"deliver {job.id} {len(images)}")

    async def notify(self, job: Job) -> None:
        self._write(f"notify {job.id} {job.state.value}")


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--outcomes", required=True)
    parser.add_argument("--submit", type=int, default=0)
    parser.add_argument("--exit-when-done", action="store_true")
    parser.add_argument("--setting", action="append", default=[], help="NAME=VALUE, repeatable")
    parser.add_argument(
        "--timing", action="append", default=[], help="a Timing field=seconds, repeatable"
    )
    args = parser.parse_args(argv)

    settings = load_settings(
        environ={
            "RUNPOD_API_KEY": args.key,
            "RUNPOD_ENDPOINT_ID": args.endpoint,
            "RUNPOD_API_BASE": args.api_base,
            "DATABASE_PATH": args.db,
            **dict(setting.split("=", 1) for setting in args.setting),
        },
        dotenv_path=None,
    )
    client = RunPodClient(
        api_base=args.api_base,
        endpoint_id=args.endpoint,
        api_key=Secret(args.key),
        retry=RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05),
    )
    timing = dataclasses.replace(
        FAST, **{name: float(value) for name, value in (t.split("=", 1) for t in args.timing)}
    )
    services = await Services.open(settings, timing=timing, runpod=client)
    services.jobs.limits = dataclasses.replace(Limits(), max_in_flight=100, member_max_queued=100)
    for user in range(args.submit):
        new = services.prepare(
            "crash test --workflow test-pattern", user_id=user, guild_id=1, channel_id=2
        )
        job = await services.jobs.accept(new)
        await services.jobs.attach_message(job.id, 2, 1000 + job.id)
    await services.jobs.start(OutcomeLog(Path(args.outcomes)))
    print("READY", flush=True)
    try:
        while not args.exit_when_done or await _unfinished(services):
            await asyncio.sleep(0.02)
    finally:
        await services.close()
    return 0


async def _unfinished(services: Services) -> int:
    row = await services.db.fetchone(
        "SELECT COUNT(*) FROM jobs WHERE state NOT IN ('done','failed','cancelled','timed_out','expired') "
        "OR delivered_at IS NULL"
    )
    return int(row[0])


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
