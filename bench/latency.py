"""Added latency: the fake marks a job done -> the bot sees it; beside runpod-python's asyncio client.

Four ways of following jobs run the same kind of job against the same fake process in the same
run: runpod-python's `AsyncioJob`, and three bots with production defaults but for the way they
follow jobs: adaptive polling only, long-polls (`/status-sync`), and webhooks. Each bot has its
own database and starts with a short history of finished jobs, as a running bot has.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import runpod

from bench.harness import (
    CountingDelivery,
    FakeProcess,
    bot_services,
    fake_runpod_process,
    percentile,
    print_result,
    print_table,
)
from bot.jobs import JobUpdate
from bot.services import Services
from tests.told_modes import free_port

TARGET_P50 = 0.3
TARGET_P95 = 1.0
# RunPod telling the bot: long-poll and webhook.
TOLD_P50 = 0.05
TOLD_P95 = 0.15
LONG_POLL_REQUESTS = 3.0
WEBHOOK_REQUESTS = 2.0
PROMPT = "a pony astronaut, moon base --seed 1"


async def run_latency(
    jobs: int = 40,
    spacing: float = 0.4,
    run_delay: float = 4.0,
    jitter: float = 0.4,
    queue_delay: float = 0.3,
    warmup: int = 3,
) -> dict[str, Any]:
    args = [
        "--queue-delay",
        str(queue_delay),
        "--run-delay",
        str(run_delay),
        "--run-jitter",
        str(jitter),
    ]
    port = free_port()
    webhooks = {
        "RUNPOD_LONG_POLLS": "0",
        "WEBHOOK_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "WEBHOOK_LISTEN": f"127.0.0.1:{port}",
    }
    async with (
        fake_runpod_process(*args) as fake,
        bot_services(fake, RUNPOD_LONG_POLLS="0") as adaptive,
        bot_services(fake, RUNPOD_LONG_POLLS="24") as long_poll,
        bot_services(fake, **webhooks) as webhook,
    ):
        ways = {"stablehand": Way(adaptive), "long_poll": Way(long_poll), "webhook": Way(webhook)}
        await asyncio.gather(*(way.warm_up(warmup) for way in ways.values()))
        baseline_seen: dict[str, float] = {}
        workflow = adaptive.prepare(PROMPT, user_id=0, guild_id=0, channel_id=0).workflow
        await asyncio.gather(
            *(way.run(jobs, spacing) for way in ways.values()),
            _run_baseline(fake, workflow, jobs, spacing, baseline_seen),
        )
        state = await fake.state()
    followed = {name: (way.measured(), way.calls) for name, way in ways.items()}
    return _summarise(state, baseline_seen, followed, jobs)


class Way:
    """One bot (its own database and manager) following jobs one way: when it saw each end."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.seen: dict[str, float] = {}
        self.warm: set[str] = set()
        self.calls: dict[str, int] = {}
        self.delivery = CountingDelivery()
        services.jobs.subscribe(self._on_update)

    def _on_update(self, update: JobUpdate) -> None:
        if update.kind == "delivering" and update.job.backend_id:
            self.seen.setdefault(update.job.backend_id, time.monotonic())

    async def warm_up(self, count: int) -> None:
        """A short history of finished jobs, as a running bot has in its database."""
        self.delivery.expected = count
        await self.services.jobs.start(self.delivery)
        await _submit_ours(self.services, count, spacing=0.0)
        await asyncio.wait_for(self.delivery.done.wait(), 120)
        self.warm = set(self.seen)

    async def run(self, count: int, spacing: float) -> None:
        before = dict(self.services.runpod.stats.calls)
        self.delivery.expected += count
        self.delivery.done.clear()
        await _submit_ours(self.services, count, spacing=spacing)
        await asyncio.wait_for(self.delivery.done.wait(), 300)
        after = self.services.runpod.stats.calls
        self.calls = {op: after[op] - before.get(op, 0) for op in after}

    def measured(self) -> dict[str, float]:
        return {rid: at for rid, at in self.seen.items() if rid not in self.warm}


async def _submit_ours(services: Services, count: int, *, spacing: float) -> None:
    for n in range(count):
        new = services.prepare(PROMPT, user_id=n, guild_id=0, channel_id=0)
        job = await services.jobs.accept(new)
        await services.jobs.attach_message(job.id, None, None)
        await asyncio.sleep(spacing)


async def _run_baseline(
    fake: FakeProcess, workflow: dict, count: int, spacing: float, seen: dict[str, float]
) -> None:
    runpod.api_key = fake.api_key
    runpod.endpoint_url_base = fake.api_base
    async with aiohttp.ClientSession() as session:
        endpoint = runpod.AsyncioEndpoint(fake.endpoint_id, session)

        async def one() -> None:
            job = await endpoint.run({"workflow": workflow})
            await job.output(timeout=300)
            seen[job.job_id] = time.monotonic()

        tasks = []
        for _ in range(count):
            tasks.append(asyncio.create_task(one()))
            await asyncio.sleep(spacing)
        await asyncio.gather(*tasks)


def _summarise(
    state: dict,
    baseline: dict[str, float],
    followed: dict[str, tuple[dict[str, float], dict[str, int]]],
    jobs: int,
) -> dict[str, Any]:
    def figures(seen: dict[str, float], requests_per_job: float) -> dict[str, float]:
        lags = [seen[rid] - state["jobs"][rid]["completed_at"] for rid in seen]
        return {
            "jobs": len(lags),
            "p50_s": round(percentile(lags, 50), 3),
            "p95_s": round(percentile(lags, 95), 3),
            "max_s": round(max(lags), 3),
            "requests_per_job": round(requests_per_job, 2),
        }

    # runpod-python: one /run plus every status read of its own jobs.
    baseline_requests = sum(1 + state["jobs"][rid]["status_reads"] for rid in baseline) / max(
        1, len(baseline)
    )
    result: dict[str, Any] = {
        "bench": "latency",
        "runpod_python": figures(baseline, baseline_requests),
        "targets": {"p50_s": TARGET_P50, "p95_s": TARGET_P95, "fewer_requests_than_baseline": True},
    }
    for name, (seen, calls) in followed.items():
        # Per job, as for the baseline: its /run and reads of it. /health is the endpoint's.
        per_job = sum(n for op, n in calls.items() if op != "health")
        result[name] = figures(seen, per_job / max(1, jobs))
        result[name]["health_requests"] = calls.get("health", 0)
    result["told_targets"] = {
        "p50_s": TOLD_P50,
        "p95_s": TOLD_P95,
        "long_poll_requests_per_job": LONG_POLL_REQUESTS,
        "webhook_requests_per_job": WEBHOOK_REQUESTS,
    }
    mine, theirs = result["stablehand"], result["runpod_python"]
    told_pass = all(
        result[name]["jobs"] == jobs
        and result[name]["p50_s"] <= TOLD_P50
        and result[name]["p95_s"] <= TOLD_P95
        and result[name]["requests_per_job"] <= limit
        for name, limit in (("long_poll", LONG_POLL_REQUESTS), ("webhook", WEBHOOK_REQUESTS))
    )
    result["pass"] = (
        mine["p50_s"] <= TARGET_P50
        and mine["p95_s"] <= TARGET_P95
        and mine["requests_per_job"] < theirs["requests_per_job"]
        and told_pass
    )
    return result


def report(result: dict[str, Any]) -> None:
    rows = [("client", "jobs", "p50 added latency", "p95", "max", "requests/job", "target")]
    targets = {
        "stablehand": f"p50 <= {TARGET_P50} s, p95 <= {TARGET_P95} s, < baseline requests",
        "runpod_python": "baseline",
        "long_poll": f"p50 <= {TOLD_P50} s, p95 <= {TOLD_P95} s, <= {LONG_POLL_REQUESTS:g} req",
        "webhook": f"p50 <= {TOLD_P50} s, p95 <= {TOLD_P95} s, <= {WEBHOOK_REQUESTS:g} req",
    }
    for name in ("runpod_python", "stablehand", "long_poll", "webhook"):
        f = result[name]
        rows.append(
            (
                "adaptive polling" if name == "stablehand" else name,
                str(f["jobs"]),
                f"{f['p50_s']:.3f} s",
                f"{f['p95_s']:.3f} s",
                f"{f['max_s']:.3f} s",
                f"{f['requests_per_job']:.2f}",
                targets[name],
            )
        )
    print_table(rows)
    print("PASS" if result["pass"] else "FAIL")
    print_result(result)
