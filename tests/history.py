"""A seeded past for charts: jobs, their events and their ledger holds, as the job manager leaves them.

Rows are written directly (thousands of jobs through the fake RunPod would take minutes); each
follows the manager's shape: a job row, an event into its final state whose detail is the failure
kind, and one hold captured for delivered jobs, refunded for the rest, held for unfinished ones.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bot.db import Database
from bot.prompt import GenerationRequest
from bot.quotas import period_start

DAY = 86_400.0
TEMPLATES = ("pony-v6-xl", "pony-v6-xl-hires", "sdxl")
# (state, failure kind) with weights: mostly delivered, some failures of each kind.
ENDINGS = (
    (("done", None), 70),
    (("failed", "oom"), 5),
    (("failed", "worker"), 4),
    (("failed", "validation"), 2),
    (("timed_out", "timed_out"), 3),
    (("expired", "expired"), 1),
    (("cancelled", "cancelled"), 6),
)
PRICE_PER_SECOND = 0.00031


@dataclass(frozen=True)
class Seeded:
    jobs: int
    first_at: float


async def seed_history(
    db: Database,
    guild_id: int,
    members: list[int],
    *,
    days: int,
    now: float,
    seed: int = 7,
    jobs_per_member_day: tuple[int, int] = (0, 4),
    running: int = 0,
) -> Seeded:
    """Jobs for every member on each of the last `days` UTC days until `now`, plus `running` held."""
    rng = random.Random(seed)
    states, weights = zip(*ENDINGS, strict=True)
    first = period_start(now, period="daily", reset_hour=0) - (days - 1) * DAY
    count = 0
    async with db.transaction() as tx:
        for day in range(days):
            for user_id in members:
                for _ in range(rng.randint(*jobs_per_member_day)):
                    at = first + day * DAY + rng.uniform(0, DAY - 60)
                    if at >= now:
                        continue
                    state, kind = rng.choices(states, weights)[0]
                    await _job(tx, rng, guild_id, user_id, at, state, kind)
                    count += 1
        for _ in range(running):
            await _job(tx, rng, guild_id, rng.choice(members), now - 5, "running", None)
            count += 1
    return Seeded(count, first)


async def _job(tx, rng: random.Random, guild_id, user_id, at, state, kind) -> None:
    template = rng.choice(TEMPLATES)
    cost = rng.choice((1, 1, 1, 2, 4))
    bonus = rng.choice((0, 0, 0, 0, cost))
    queued = rng.uniform(0, 5)
    delay_ms = rng.randint(200, 40_000)
    execution_ms = rng.randint(6_000, 30_000) if state in ("done", "running") else None
    submitted = at + queued if state != "cancelled" else None
    started = submitted + delay_ms / 1000 if submitted is not None else None
    finished = started + (execution_ms or 10_000) / 1000 if started and state != "running" else None
    prompt = f"seeded {template}"
    request = GenerationRequest(template, prompt, "", prompt, "", rng.randint(0, 2**31), 1024, 1024)
    job_id = await tx.insert(
        "INSERT INTO jobs (guild_id, channel_id, message_id, user_id, state, template, request, "
        "workflow, cost, created_at, updated_at, submitted_at, started_at, finished_at, delay_ms, "
        "execution_ms, failure) VALUES (?, 1, NULL, ?, ?, ?, ?, '{}', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            guild_id,
            user_id,
            state,
            template,
            request.to_json(),
            cost,
            at,
            finished or at,
            submitted,
            started,
            finished,
            delay_ms if submitted else None,
            execution_ms,
            None if state in ("done", "running") else f"a {kind} sentence",
        ),
    )
    await tx.insert(
        "INSERT INTO job_events (job_id, at, from_state, to_state, detail) VALUES (?, ?, NULL, ?, ?)",
        (job_id, finished or at, state, kind),
    )
    gpu = execution_ms / 1000 if execution_ms else None
    estimate = 15 * cost * PRICE_PER_SECOND
    hold_state = {"done": "captured", "running": "held"}.get(state, "refunded")
    await tx.insert(
        "INSERT INTO quota_holds (job_id, guild_id, user_id, credits, bonus_credits, usd_estimate, "
        "usd_actual, gpu_seconds, state, created_at, settled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            job_id,
            guild_id,
            user_id,
            cost,
            bonus,
            estimate,
            gpu * PRICE_PER_SECOND if hold_state == "captured" else None,
            gpu if hold_state == "captured" else None,
            hold_state,
            at,
            finished if hold_state != "held" else None,
        ),
    )
