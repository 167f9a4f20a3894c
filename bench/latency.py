"""Added latency: the fake marks a job done -> the bot sees it; beside runpod-python's asyncio client.

Both clients run the same kind of job against the same fake process in the same run. The bot uses
its production defaults (intervals, request budget); it starts with a short history of finished
jobs, as a running bot has in its database.
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

TARGET_P50 = 0.3
TARGET_P95 = 1.0
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
    async with fake_runpod_process(*args) as fake, bot_services(fake) as services:
        seen: dict[str, float] = {}

        def on_update(update: JobUpdate) -> None:
            if update.kind == "delivering" and update.job.backend_id:
                seen.setdefault(update.job.backend_id, time.monotonic())

        services.jobs.subscribe(on_update)
        delivery = CountingDelivery(expected=warmup)
        await services.jobs.start(delivery)
        await _submit_ours(services, warmup, spacing=0.0)
        await asyncio.wait_for(delivery.done.wait(), 120)
        warm_ids = set(seen)
        calls_before = sum(services.runpod.stats.calls.values())

        delivery.expected += jobs
        delivery.done.clear()
        baseline_seen: dict[str, float] = {}
        workflow = services.prepare(PROMPT, user_id=0, guild_id=0, channel_id=0).workflow
        await asyncio.gather(
            _submit_ours(services, jobs, spacing=spacing),
            _run_baseline(fake, workflow, jobs, spacing, baseline_seen),
        )
        await asyncio.wait_for(delivery.done.wait(), 300)
        our_calls = sum(services.runpod.stats.calls.values()) - calls_before
        state = await fake.state()

    ours = {rid: t for rid, t in seen.items() if rid not in warm_ids}
    return _summarise(state, ours, baseline_seen, our_calls, jobs)


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
    state: dict, ours: dict[str, float], baseline: dict[str, float], our_calls: int, jobs: int
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
    result = {
        "bench": "latency",
        "stablehand": figures(ours, our_calls / max(1, jobs)),
        "runpod_python": figures(baseline, baseline_requests),
        "targets": {"p50_s": TARGET_P50, "p95_s": TARGET_P95, "fewer_requests_than_baseline": True},
    }
    mine, theirs = result["stablehand"], result["runpod_python"]
    result["pass"] = (
        mine["p50_s"] <= TARGET_P50
        and mine["p95_s"] <= TARGET_P95
        and mine["requests_per_job"] < theirs["requests_per_job"]
    )
    return result


def report(result: dict[str, Any]) -> None:
    rows = [("client", "jobs", "p50 added latency", "p95", "max", "requests/job")]
    for name in ("stablehand", "runpod_python"):
        f = result[name]
        rows.append(
            (
                name,
                str(f["jobs"]),
                f"{f['p50_s']:.3f} s",
                f"{f['p95_s']:.3f} s",
                f"{f['max_s']:.3f} s",
                f"{f['requests_per_job']:.2f}",
            )
        )
    rows.append(("target", "", f"<= {TARGET_P50} s", f"<= {TARGET_P95} s", "", "< baseline"))
    print_table(rows)
    print("PASS" if result["pass"] else "FAIL")
    print_result(result)
