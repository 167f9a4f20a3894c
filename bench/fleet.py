"""Scale across processes: SQLite in one bot process beside PostgreSQL shared by 1, 2 and 3.

Each configuration gets a fresh fake RunPod (its own process) and a fresh database. The jobs of
member m are accepted by process m % N (as a shard would receive them), then every process
claims from the shared table. Measured per configuration: jobs per second, requests per second
against the one RunPod budget the processes share, event-loop lag and RSS of each process. With
two processes or more, one is then SIGKILLed while it follows jobs at RunPod: the takeover time
is how long until another process holds every job it held. Every job must end exactly once.

At the default budget (50 requests per second, about 3 per job) the budget bounds jobs per
second in every configuration: that is the budget being shared, not multiplied. To see what the
processes themselves can do, raise it (`--budget 200 --fleet-in-flight 200`). The budget check
covers the measured run, not the takeover after it (a killed process's call times die with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import (
    ROOT,
    FakeProcess,
    fake_environ,
    fake_runpod_process,
    print_result,
    print_table,
)
from bot.jobs.model import AT_BACKEND
from bot.polling import Timing
from bot.runpod import RequestBudget
from tests.fakes.fake_runpod import most_in_one_second

# A short run with some spread, so many jobs pass through each process in a minute.
FAKE_ARGS = ("--queue-delay", "0.3", "--run-delay", "1.5", "--run-jitter", "0.5")
STARTUP_TIMEOUT = 120.0


@dataclass(frozen=True)
class Configuration:
    engine: str  # "sqlite" or "postgresql"
    processes: int

    @property
    def name(self) -> str:
        return f"{'SQLite' if self.engine == 'sqlite' else 'PostgreSQL'} ×{self.processes}"


CONFIGURATIONS = (
    Configuration("sqlite", 1),
    Configuration("postgresql", 1),
    Configuration("postgresql", 2),
    Configuration("postgresql", 3),
)


@dataclass
class Worker:
    """One `bench.fleet_process`, driven over its stdin and stdout."""

    process: asyncio.subprocess.Process
    outcomes: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        return json.loads(await self.process.stdout.readline())

    async def stop(self) -> None:
        if self.process.returncode is not None:
            return
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()

    async def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()


@dataclass
class Outcomes:
    """Every delivery and notice written by every process, read back from their files."""

    ended: Counter[int] = field(default_factory=Counter)
    notified: set[int] = field(default_factory=set)
    last_at: float = 0.0

    @classmethod
    def read(cls, workers: list[Worker]) -> Outcomes:
        outcomes = cls()
        for worker in workers:
            for line in worker.outcomes.read_text().splitlines():
                kind, job_id, at = line.split()
                outcomes.ended[int(job_id)] += 1
                if kind == "notify":
                    outcomes.notified.add(int(job_id))
                outcomes.last_at = max(outcomes.last_at, float(at))
        return outcomes


async def _start_worker(folder: Path, n: int, environ: dict[str, str], lease_ttl: float) -> Worker:
    outcomes = folder / f"outcomes-{n}.txt"
    outcomes.touch()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.fleet_process",
        "--outcomes",
        str(outcomes),
        "--lease-ttl",
        str(lease_ttl),
        *(f"{name}={value}" for name, value in environ.items()),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=(folder / f"process-{n}.log").open("wb"),
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT)
    if line.strip() != b"READY":
        raise RuntimeError(f"bench process {n} did not start; see {folder}/process-{n}.log")
    return Worker(process, outcomes)


async def _counted(workers: list[Worker]) -> None:
    """Wait until every process has counted them all (its own recount), so each keeps its share
    of the budget: the figures are of the fleet in step, not of the seconds after a start."""
    async with asyncio.timeout(STARTUP_TIMEOUT):
        while True:
            counts = [(await worker.ask("processes"))["processes"] for worker in workers]
            if all(count == len(workers) for count in counts):
                return
            await asyncio.sleep(0.1)


async def _ended(workers: list[Worker], expected: int, timeout: float) -> Outcomes:
    async with asyncio.timeout(timeout):
        while len((outcomes := Outcomes.read(workers)).ended) < expected:
            await asyncio.sleep(0.1)
    return outcomes


async def _accept(workers: list[Worker], first: int, jobs: int, members: int) -> None:
    """Jobs first.. first+jobs-1 of members 1..members; member m's jobs go to process m % N."""
    shares: dict[int, list[int]] = {n: [] for n in range(len(workers))}
    for job in range(first, first + jobs):
        shares[(job % members) % len(workers)].append(job)
    await asyncio.gather(
        *(
            workers[n].ask(" ".join(map(str, ["accept", members, *numbers])))
            for n, numbers in shares.items()
            if numbers
        )
    )


class SharedDatabase:
    """Reads the leases of a PostgreSQL database several bench processes share, over one
    connection of its own (it is asked every 50 ms while a takeover is timed)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, dsn: str) -> AsyncIterator[SharedDatabase]:
        import asyncpg

        connection = await asyncpg.connect(dsn)
        try:
            yield cls(connection)
        finally:
            await connection.close()

    async def held_by(self, pid: int, *, at_backend: bool) -> dict[int, float]:
        """The undelivered jobs leased to process `pid`, each with its lease's expiry."""
        rows = await self.connection.fetch(
            "SELECT l.job_id, l.expires_at FROM job_leases AS l JOIN jobs AS j ON j.id = l.job_id"
            " WHERE l.owner LIKE $1 AND j.delivered_at IS NULL"
            " AND ($2 = false OR j.state = ANY($3::text[]))",
            f"%:{pid}:%",
            at_backend,
            [state.value for state in AT_BACKEND],
        )
        return {row["job_id"]: row["expires_at"] for row in rows}


async def _takeover(
    workers: list[Worker], database: SharedDatabase, first: int, jobs: int, members: int
) -> dict[str, Any]:
    """Kill the first process once it follows jobs at RunPod; time until the others hold them."""
    victim = workers[0]
    await _accept(workers, first, jobs, members)
    async with asyncio.timeout(120):
        while len(await database.held_by(victim.pid, at_backend=True)) < 3:
            await asyncio.sleep(0.05)
    await victim.kill()
    killed_at = time.time()
    stranded = await database.held_by(victim.pid, at_backend=False)
    # A queued job may be claimed by another process before its lease runs out; a job at RunPod
    # only after: the overhead of taking over is measured from the last of those leases.
    at_backend = await database.held_by(victim.pid, at_backend=True)
    async with asyncio.timeout(600):
        while await database.held_by(victim.pid, at_backend=False):
            await asyncio.sleep(0.05)
    taken_over_at = time.time()
    return {
        "stranded_jobs": len(stranded),
        "takeover_s": round(taken_over_at - killed_at, 1),
        # The part that is not the lease itself running out: finding and taking the jobs over.
        "after_lease_s": round(taken_over_at - max(at_backend.values(), default=killed_at), 1),
    }


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="stablehand-fleet-") as folder:
        yield Path(folder)


@contextlib.asynccontextmanager
async def _database(configuration: Configuration, server: Any, folder: Path) -> AsyncIterator[str]:
    """The setting naming a fresh database: a file for SQLite, a new database on the server."""
    if configuration.engine == "sqlite":
        yield f"DATABASE_PATH={folder / 'bench.db'}"
        return
    from tests.postgres_server import fresh_database

    async with fresh_database(server) as dsn:
        yield f"DATABASE_URL={dsn}"


async def run_configuration(
    configuration: Configuration,
    server: Any,
    *,
    jobs: int,
    members: int,
    budget: int,
    in_flight: int,
    lease_ttl: float,
    takeover_jobs: int,
) -> dict[str, Any]:
    with _scratch() as folder:
        async with (
            fake_runpod_process(*FAKE_ARGS) as fake,
            _database(configuration, server, folder) as database_setting,
        ):
            name, value = database_setting.split("=", 1)
            environ = _environ(fake, budget, in_flight, members) | {name: value}
            workers: list[Worker] = []
            try:
                for n in range(configuration.processes):
                    workers.append(await _start_worker(folder, n, environ, lease_ttl))
                await _counted(workers)
                for worker in workers:
                    await worker.ask("report")  # forget the start's loop lag
                started = time.monotonic()
                wall_started = time.time()
                await _accept(workers, 0, jobs, members)
                outcomes = await _ended(workers, jobs, timeout=900)
                seconds = outcomes.last_at - wall_started
                reports = [await worker.ask("report") for worker in workers]
                state = await fake.state()
                result = _throughput(configuration, jobs, seconds, reports, state, budget)
                result["measured_s"] = round(time.monotonic() - started, 1)
                if configuration.processes > 1:
                    async with SharedDatabase.open(value) as shared:
                        result |= await _takeover(workers, shared, jobs, takeover_jobs, members)
                    total = jobs + takeover_jobs
                    outcomes = await _ended(workers, total, timeout=lease_ttl * 3 + 300)
                    state = await fake.state()
                else:
                    total = jobs
                result["ended_twice"] = sum(1 for n in outcomes.ended.values() if n > 1)
                result["failed"] = len(outcomes.notified)
                result["runs_sent"] = state["requests"].get("run", 0)
                result["jobs_total"] = total
            finally:
                for worker in workers:
                    await worker.stop()
    return result


def _environ(fake: FakeProcess, budget: int, in_flight: int, members: int) -> dict[str, str]:
    return fake_environ(fake.api_base, fake.endpoint_id, fake.api_key) | {
        "RUNPOD_REQUESTS_PER_SECOND": str(budget),
        "MAX_JOBS_IN_FLIGHT": str(in_flight),
        "MEMBER_MAX_IN_FLIGHT": "2",
        "MEMBER_MAX_QUEUED": "1000",
        "DAILY_CREDITS": "1000000",
        "LOG_LEVEL": "WARNING",
    }


def _throughput(
    configuration: Configuration,
    jobs: int,
    seconds: float,
    reports: list[dict[str, Any]],
    state: dict[str, Any],
    budget: int,
) -> dict[str, Any]:
    requests = sum(state["requests"].values())
    return {
        "configuration": configuration.name,
        "processes": configuration.processes,
        "jobs": jobs,
        "seconds": round(seconds, 1),
        "jobs_per_s": round(jobs / seconds, 2),
        "requests_per_s": round(requests / seconds, 1),
        "busiest_second": most_in_one_second(
            [t for report in reports for t in report["request_times"]]
        ),
        "busiest_second_at_runpod": state["busiest_second"],
        "budget_per_s": budget,
        "loop_lag_p99_ms": [r["loop_lag_p99_ms"] for r in reports],
        "loop_lag_max_ms": [r["loop_lag_max_ms"] for r in reports],
        "rss_mb": [r["rss_mb"] for r in reports],
        "peak_rss_mb": [r["peak_rss_mb"] for r in reports],
        "processes_counted": [r["processes_counted"] for r in reports],
    }


@contextlib.contextmanager
def _postgres(needed: bool) -> Iterator[Any]:
    if not needed:
        yield None
        return
    from tests.postgres_server import running_postgres

    with running_postgres(durable=True) as server:
        yield server


async def run_fleet(
    *,
    jobs: int = 600,
    members: int = 60,
    budget: int = 50,
    in_flight: int = 40,
    lease_ttl: float = Timing.lease_ttl,
    takeover_jobs: int = 60,
    configurations: tuple[Configuration, ...] = CONFIGURATIONS,
) -> dict[str, Any]:
    with _postgres(any(c.engine == "postgresql" for c in configurations)) as server:
        results = [
            await run_configuration(
                configuration,
                server,
                jobs=jobs,
                members=members,
                budget=budget,
                in_flight=in_flight,
                lease_ttl=lease_ttl,
                takeover_jobs=takeover_jobs,
            )
            for configuration in configurations
        ]
    return {
        "bench": "scale-processes",
        "lease_ttl_s": lease_ttl,
        "in_flight": in_flight,
        "configurations": results,
        "pass": all(_passes(r) for r in results),
    }


def _bucket(result: dict[str, Any]) -> int:
    return RequestBudget(result["budget_per_s"]).burst


def _passes(result: dict[str, Any]) -> bool:
    return (
        result["ended_twice"] == 0
        and result["runs_sent"] <= result["jobs_total"]
        and result["busiest_second"] <= result["budget_per_s"] + _bucket(result)
    )


def _per_process(values: list[float], unit: str) -> str:
    return " / ".join(f"{v:g}" for v in values) + f" {unit}"


def report(result: dict[str, Any]) -> None:
    results = result["configurations"]
    rows: list[tuple[str, ...]] = [("figure", *(r["configuration"] for r in results))]

    def row(label: str, cell: Any) -> None:
        rows.append((label, *(cell(r) for r in results)))

    row("jobs per second", lambda r: f"{r['jobs_per_s']:g}")
    row("requests per second (mean)", lambda r: f"{r['requests_per_s']:g}")
    row(
        "most requests sent in 1 s",
        lambda r: f"{r['busiest_second']} (budget {r['budget_per_s']} + bucket {_bucket(r)})",
    )
    row("loop lag p99, each process", lambda r: _per_process(r["loop_lag_p99_ms"], "ms"))
    row("loop lag max, each process", lambda r: _per_process(r["loop_lag_max_ms"], "ms"))
    row("RSS at the end, each process", lambda r: _per_process(r["rss_mb"], "MB"))
    row("peak RSS, each process", lambda r: _per_process(r["peak_rss_mb"], "MB"))
    row("takeover after SIGKILL", lambda r: f"{r['takeover_s']:g} s" if "takeover_s" in r else "-")
    row(
        "  of which after the lease ran out",
        lambda r: (
            f"{r['after_lease_s']:g} s ({r['stranded_jobs']} jobs)" if "takeover_s" in r else "-"
        ),
    )
    row(
        "jobs failed / ended twice",
        lambda r: f"{r['failed']} / {r['ended_twice']} of {r['jobs_total']}",
    )
    row("/run sent", lambda r: f"{r['runs_sent']} for {r['jobs_total']} jobs")
    print_table(rows)
    print(
        f"{result['in_flight']} jobs in flight at most; lease {result['lease_ttl_s']:g} s; "
        "takeover: from the kill until no job is held by the killed process"
    )
    print("PASS" if result["pass"] else "FAIL")
    print_result(result)
