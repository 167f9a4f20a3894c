"""Added latency: the fake marks a job done -> the bot sees it; beside runpod-python's asyncio client.

Four ways of following jobs run the same kind of job against the same fake process in the same
run: runpod-python's `AsyncioJob`, the bot's adaptive polling (its job manager with production
defaults, starting with a short history of finished jobs, as a running bot has in its database),
and RunPod telling the bot: a long-poll (`/status-sync`, through the completion watcher) and a
webhook (through the webhook receiver), each on the bot's own RunPod client.
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
from bot.completion import CompletionWatcher
from bot.config import Secret
from bot.jobs import JobUpdate
from bot.runpod import JobStatus, RequestBudget, RunPodClient, RunPodError
from bot.services import Services
from bot.webhooks import WebhookReceiver

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
        long_poll_seen: dict[str, float] = {}
        webhook_seen: dict[str, float] = {}
        workflow = services.prepare(PROMPT, user_id=0, guild_id=0, channel_id=0).workflow
        long_poll_client, webhook_client = _told_client(fake), _told_client(fake)
        try:
            await asyncio.gather(
                _submit_ours(services, jobs, spacing=spacing),
                _run_baseline(fake, workflow, jobs, spacing, baseline_seen),
                _run_long_poll(long_poll_client, workflow, jobs, spacing, long_poll_seen),
                _run_webhook(webhook_client, workflow, jobs, spacing, webhook_seen),
            )
            await asyncio.wait_for(delivery.done.wait(), 300)
        finally:
            await long_poll_client.aclose()
            await webhook_client.aclose()
        our_calls = sum(services.runpod.stats.calls.values()) - calls_before
        state = await fake.state()

    ours = {rid: t for rid, t in seen.items() if rid not in warm_ids}
    told = {
        "long_poll": (long_poll_seen, sum(long_poll_client.stats.calls.values())),
        "webhook": (webhook_seen, sum(webhook_client.stats.calls.values())),
    }
    return _summarise(state, ours, baseline_seen, our_calls, jobs, told)


def _told_client(fake: FakeProcess) -> RunPodClient:
    """The bot's RunPod client as services build it (its own budget and pool), for one way."""
    return RunPodClient(
        api_base=fake.api_base,
        endpoint_id=fake.endpoint_id,
        api_key=Secret(fake.api_key),
        budget=RequestBudget(50),
    )


async def _run_long_poll(
    client: RunPodClient, workflow: dict, count: int, spacing: float, seen: dict[str, float]
) -> None:
    """Each job long-polled from its submission until it ends (24 slots: all fit)."""
    ended = asyncio.Event()

    async def on_status(job_id: str, status: JobStatus) -> None:
        if status.terminal:
            seen.setdefault(job_id, time.monotonic())
            if len(seen) == count:
                ended.set()

    async def on_fault(job_id: str, exc: Exception) -> None:
        raise RuntimeError(f"long-poll of {job_id} failed: {exc}")

    watcher: CompletionWatcher[JobStatus] = CompletionWatcher(
        lambda job_id, wait: client.status_sync(job_id, wait_ms=round(wait * 1000)),
        ended=lambda status: status.terminal,
        on_status=on_status,
        on_fault=on_fault,
        on_release=on_fault_release,
        slots=24,
    )
    try:
        for _ in range(count):
            job = await client.run({"workflow": workflow})
            watcher.watch(job.id)
            await asyncio.sleep(spacing)
        await asyncio.wait_for(ended.wait(), 300)
    finally:
        await watcher.stop()


async def on_fault_release(job_id: str) -> None:
    raise RuntimeError(f"long-poll of {job_id} was handed back: the fake has no /status-sync")


async def _run_webhook(
    client: RunPodClient, workflow: dict, count: int, spacing: float, seen: dict[str, float]
) -> None:
    """Each job submitted with its own webhook URL; seen when the call reaches the receiver."""
    ended = asyncio.Event()

    async def on_status(key: str, status: JobStatus) -> None:
        seen.setdefault(status.id, time.monotonic())
        if len(seen) == count:
            ended.set()

    receiver: WebhookReceiver[JobStatus] = WebhookReceiver(
        public_url=None,
        host="127.0.0.1",
        port=0,
        parse=lambda data, expected: JobStatus.parse(data, op="webhook", expected_id=expected),
        ended=lambda status: status.terminal,
        on_status=on_status,
        invalid=(RunPodError,),
    )
    async with receiver:
        for n in range(count):
            key = str(n)
            job = await client.run({"workflow": workflow}, webhook=receiver.arm(key))
            receiver.expect(key, job.id)
            await asyncio.sleep(spacing)
        await asyncio.wait_for(ended.wait(), 300)


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
    ours: dict[str, float],
    baseline: dict[str, float],
    our_calls: int,
    jobs: int,
    told: dict[str, tuple[dict[str, float], int]],
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
        "stablehand": figures(ours, our_calls / max(1, jobs)),
        "runpod_python": figures(baseline, baseline_requests),
        "targets": {"p50_s": TARGET_P50, "p95_s": TARGET_P95, "fewer_requests_than_baseline": True},
    }
    for name, (seen, calls) in told.items():
        result[name] = figures(seen, calls / max(1, jobs))
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
