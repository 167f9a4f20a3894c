"""What every benchmark needs: the fake RunPod in its own process, the bot's services, measures."""

from __future__ import annotations

import asyncio
import json
import math
import os
import resource
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bot.config import load_settings
from bot.images import ImageFile
from bot.jobs import Job
from bot.polling import Timing
from bot.services import Services, runpod_client

ROOT = Path(__file__).resolve().parent.parent
# The bot's connection pool to RunPod in the benchmarks.
POOL_CONNECTIONS = 64


@dataclass
class FakeProcess:
    """`python -m tests.fakes.fake_runpod` in a separate process, so its CPU and memory are not ours."""

    process: asyncio.subprocess.Process
    api_base: str
    endpoint_id: str
    api_key: str

    async def state(self) -> dict[str, Any]:
        base = self.api_base.removesuffix("/v2")
        async with httpx.AsyncClient(timeout=30) as client:
            return (await client.get(f"{base}/_fake/state")).json()

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), 10)


@asynccontextmanager
async def fake_runpod_process(*args: str) -> AsyncIterator[FakeProcess]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.fake_runpod",
        "--no-record",
        *args,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    ready = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().split()
    if not ready or ready[0] != "READY":
        raise RuntimeError(f"the fake RunPod did not start: {ready}")
    fake = FakeProcess(process, ready[1], ready[2], ready[3])
    try:
        yield fake
    finally:
        await fake.stop()


def fake_environ(api_base: str, endpoint_id: str, api_key: str) -> dict[str, str]:
    """The settings that point the bot at a fake RunPod."""
    return {
        "RUNPOD_API_KEY": api_key,
        "RUNPOD_ENDPOINT_ID": endpoint_id,
        "RUNPOD_API_BASE": api_base,
    }


@asynccontextmanager
async def services_on(
    environ: dict[str, str], *, timing: Timing | None = None
) -> AsyncIterator[Services]:
    """The bot's real services (database, client, templates, manager) from these settings."""
    settings = load_settings(environ=environ, dotenv_path=None)
    client = runpod_client(
        settings,
        http=httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, connect=10.0),
            limits=httpx.Limits(
                max_connections=POOL_CONNECTIONS, max_keepalive_connections=POOL_CONNECTIONS
            ),
        ),
    )
    services = await Services.open(settings, runpod=client, timing=timing)
    try:
        yield services
    finally:
        await services.close()


@asynccontextmanager
async def bot_services(
    fake: FakeProcess, *, requests_per_second: int | None = None, **env: str
) -> AsyncIterator[Services]:
    """The bot's real services on the fake, with a database file of their own."""
    with tempfile.TemporaryDirectory(prefix="stablehand-bench-") as scratch:
        environ = {
            **fake_environ(fake.api_base, fake.endpoint_id, fake.api_key),
            "DATABASE_PATH": str(Path(scratch) / "bench.db"),
            **env,
        }
        if requests_per_second is not None:
            environ["RUNPOD_REQUESTS_PER_SECOND"] = str(requests_per_second)
        async with services_on(environ) as services:
            yield services


@dataclass
class CountingDelivery:
    """A deliverer that only counts, and remembers when each job reached it."""

    delivered: dict[int, int] = field(default_factory=dict)
    notified: dict[int, str] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 0

    async def deliver(self, job: Job, images: Sequence[ImageFile]) -> None:
        self.delivered[job.id] = self.delivered.get(job.id, 0) + 1
        self._check()

    async def notify(self, job: Job) -> None:
        self.notified[job.id] = job.state.value
        self._check()

    def _check(self) -> None:
        if len(self.delivered) + len(self.notified) >= self.expected:
            self.done.set()


class LoopLag:
    """Samples how late the event loop wakes a sleeper: its lag percentiles are responsiveness."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.samples.append(time.perf_counter() - before - self.interval)


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[index]


def peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's `ru_maxrss` survives fork and exec (a child
    would report its parent's peak), so the kernel's high-water mark of this image comes first."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * width for width in widths))


def print_result(result: dict[str, Any]) -> None:
    print(json.dumps(result, sort_keys=True))
