"""Scale: 2,000 jobs in flight in one bot process against the fake RunPod in another process.

Running jobs are long-polled (the default, `RUNPOD_LONG_POLLS` of them at once), the rest polled.
Targets: every job completes; event-loop lag p99 < 50 ms; peak RSS < 250 MB; the request rate
never exceeds the bot's request budget (a token bucket: per second at most rate + bucket size);
never more connections open to RunPod at once than the client's pool allows.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.harness import (
    POOL_CONNECTIONS,
    CountingDelivery,
    LoopLag,
    bot_services,
    fake_runpod_process,
    peak_rss_mb,
    percentile,
    print_result,
    print_table,
)
from bot.heartbeat import rss_mb
from bot.jobs import AT_BACKEND

TARGET_LAG_P99_MS = 50.0
TARGET_PEAK_RSS_MB = 250.0
PROMPT = "a pony in a field --seed 3"


async def run_scale(
    jobs: int = 2000,
    members: int = 200,
    budget: int = 50,
    run_delay: float = 60.0,
    jitter: float = 10.0,
) -> dict[str, Any]:
    per_member = -(-jobs // members)
    fake_args = ["--queue-delay", "1", "--run-delay", str(run_delay), "--run-jitter", str(jitter)]
    env = {
        "MAX_JOBS_IN_FLIGHT": str(jobs),
        "MEMBER_MAX_IN_FLIGHT": str(per_member),
        "MEMBER_MAX_QUEUED": str(per_member),
    }
    async with (
        fake_runpod_process(*fake_args) as fake,
        bot_services(fake, requests_per_second=budget, **env) as services,
    ):
        rss_start = rss_mb()
        lag = LoopLag()
        lag.start()
        delivery = CountingDelivery(expected=jobs)
        await services.jobs.start(delivery)
        started = time.monotonic()
        for n in range(jobs):
            new = services.prepare(PROMPT, user_id=n % members, guild_id=1, channel_id=1)
            job = await services.jobs.accept(new)
            await services.jobs.attach_message(job.id, None, None)
        samples: list[tuple[float, int, int]] = []
        long_polled: list[int] = []

        async def sample() -> None:
            while True:
                long_polled.append(services.jobs.told.long_polled())
                at_runpod = sum(
                    1 for t in services.jobs._tracked.values() if t.job.state in AT_BACKEND
                )
                samples.append(
                    (time.monotonic(), sum(services.runpod.stats.calls.values()), at_runpod)
                )
                await asyncio.sleep(0.1)

        sampler = asyncio.create_task(sample())
        await asyncio.wait_for(delivery.done.wait(), 1800)
        elapsed = time.monotonic() - started
        sampler.cancel()
        await lag.stop()
        calls = dict(services.runpod.stats.calls)
        burst = services.runpod._budget.burst if services.runpod._budget else 0
        long_polls = services.settings.runpod_long_polls
        peak_connections = (await fake.state())["peak_connections"]

    max_1s = max(
        (c2 - c1 for t1, c1, _ in samples for t2, c2, _ in samples if 0 < t2 - t1 <= 1.0), default=0
    )
    lags_ms = [s * 1000 for s in lag.samples]
    result = {
        "bench": "scale",
        "jobs": jobs,
        "completed": len(delivery.delivered),
        "failed": len(delivery.notified),
        "delivered_twice": sum(1 for n in delivery.delivered.values() if n > 1),
        "peak_in_flight": max((s[2] for s in samples), default=0),
        "seconds": round(elapsed, 1),
        "loop_lag_p50_ms": round(percentile(lags_ms, 50), 2),
        "loop_lag_p99_ms": round(percentile(lags_ms, 99), 2),
        "loop_lag_max_ms": round(max(lags_ms), 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_at_start_mb": round(rss_start, 1),
        "budget_per_s": budget,
        "budget_bucket": burst,
        "max_requests_in_1s": max_1s,
        "requests": calls,
        "requests_per_job": round(sum(calls.values()) / jobs, 2),
        "long_polls_setting": long_polls,
        "peak_long_polls": max(long_polled, default=0),
        "peak_connections": peak_connections,
        "pool_connections": POOL_CONNECTIONS,
    }
    result["pass"] = (
        result["completed"] == jobs
        and result["delivered_twice"] == 0
        and result["loop_lag_p99_ms"] < TARGET_LAG_P99_MS
        and result["peak_rss_mb"] < TARGET_PEAK_RSS_MB
        and max_1s <= budget + burst
        and peak_connections <= POOL_CONNECTIONS
        and result["peak_long_polls"] <= long_polls
    )
    return result


def long_polls_cap(result: dict[str, Any]) -> str:
    return f"{result['long_polls_setting']} (RUNPOD_LONG_POLLS)"


def report(result: dict[str, Any]) -> None:
    rows = [
        ("figure", "measured", "target"),
        ("jobs completed", f"{result['completed']} / {result['jobs']}", "all"),
        ("peak jobs in flight at RunPod", str(result["peak_in_flight"]), ""),
        ("event-loop lag p99", f"{result['loop_lag_p99_ms']} ms", f"< {TARGET_LAG_P99_MS:.0f} ms"),
        ("peak RSS", f"{result['peak_rss_mb']} MB", f"< {TARGET_PEAK_RSS_MB:.0f} MB"),
        (
            "most requests in 1 s",
            str(result["max_requests_in_1s"]),
            f"<= {result['budget_per_s']} + bucket {result['budget_bucket']}",
        ),
        ("requests per job", str(result["requests_per_job"]), ""),
        (
            "most long-polls held at once",
            str(result["peak_long_polls"]),
            f"<= {long_polls_cap(result)}",
        ),
        (
            "most connections open to RunPod",
            str(result["peak_connections"]),
            f"<= {result['pool_connections']} (the pool)",
        ),
        ("wall time", f"{result['seconds']} s", ""),
    ]
    print_table(rows)
    print("PASS" if result["pass"] else "FAIL")
    print_result(result)
