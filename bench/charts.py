"""Charts at scale: 30 days of 50 members' jobs, read, counted and drawn; target under a second each.

`--out DIR` also writes every chart (dark and light, with and without data) for a look by eye.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import print_result, print_table
from bot import charts
from bot.db import Database
from bot.estimates import DurationModel
from bot.quotas import QuotaConfig, QuotaLedger
from bot.stats import Figures
from bot.store.stats import SqliteStatsStore
from tests.history import seed_history

GUILD = 1
TARGET_SECONDS = 1.0


async def run_charts(
    *, days: int = 30, members: int = 50, repeats: int = 5, out: Path | None = None
) -> dict[str, Any]:
    """Each chart read and drawn `repeats` times; the medians are the figures (a shared machine)."""
    with tempfile.TemporaryDirectory() as folder:
        db = await Database.open(Path(folder) / "bench.db")
        try:
            now = time.time()
            ids = [1000 + n for n in range(members)]
            seeded = await seed_history(db, GUILD, ids, days=days, now=now, running=3)
            quotas = QuotaLedger(db, QuotaConfig(), DurationModel())
            figures = Figures(SqliteStatsStore(db), quotas, clock=lambda: now)
            names = {user: f"member-{user - 999:02d}" for user in ids}
            timed: dict[str, dict[str, float]] = {}
            pngs: dict[str, bytes] = {}

            async def measure(name: str, read, draw) -> None:
                reads, draws = [], []
                for _ in range(repeats):
                    began = time.perf_counter()
                    data = await read()
                    counted = time.perf_counter()
                    pngs[name] = draw(data)
                    reads.append(counted - began)
                    draws.append(time.perf_counter() - counted)
                timed[name] = {
                    "read_s": statistics.median(reads),
                    "draw_s": statistics.median(draws),
                    "slowest_total_s": max(r + d for r, d in zip(reads, draws, strict=True)),
                }

            await measure(
                "usage", lambda: figures.usage(GUILD, ids[0], limit=25), charts.usage_chart
            )
            await measure(
                "spend",
                lambda: figures.spend(GUILD, now - days * 86_400),
                lambda f: charts.spend_chart(f, names, f"last {days} days"),
            )
            await measure("stats", lambda: figures.server(GUILD, days), charts.server_chart)
        finally:
            await db.close()
    if out is not None:
        await asyncio.to_thread(_write, out, pngs)
    slowest = max(t["read_s"] + t["draw_s"] for t in timed.values())
    return {
        "days": days,
        "repeats": repeats,
        "members": members,
        "jobs": seeded.jobs,
        "charts": {name: {k: round(v, 3) for k, v in t.items()} for name, t in timed.items()},
        "slowest_s": round(slowest, 3),
        "target_s": TARGET_SECONDS,
        "pass": slowest < TARGET_SECONDS,
    }


def _write(out: Path, pngs: dict[str, bytes]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, png in pngs.items():
        (out / f"{name}.png").write_bytes(png)


def report(result: dict[str, Any]) -> None:
    rows = [("chart", "read + count", "draw", "slowest run", "target (median total)")]
    for name, t in result["charts"].items():
        rows.append(
            (
                name,
                f"{t['read_s']:.3f} s",
                f"{t['draw_s']:.3f} s",
                f"{t['slowest_total_s']:.3f} s",
                f"< {TARGET_SECONDS:.0f} s",
            )
        )
    print(
        f"{result['days']} days × {result['members']} members, {result['jobs']} jobs; "
        f"medians of {result['repeats']} runs"
    )
    print_table(rows)
    print("PASS" if result["pass"] else "FAIL")
    print_result(result)
