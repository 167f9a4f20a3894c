"""Benchmarks: `python -m bench latency | scale | soak | charts | ack`. Each prints a table, then one JSON line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from bench import ack, charts, fleet, latency, scale, soak
from bot import logs
from bot.polling import Timing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="bench", required=True)
    lat = sub.add_parser("latency", help="added latency and requests per job, beside runpod-python")
    lat.add_argument("--jobs", type=int, default=40)
    sc = sub.add_parser(
        "scale",
        help="2,000 jobs in flight in one process; then SQLite beside PostgreSQL with 1-3 processes",
    )
    sc.add_argument("--part", choices=("in-flight", "processes", "both"), default="both")
    sc.add_argument("--jobs", type=int, default=2000, help="jobs in flight in one process")
    sc.add_argument(
        "--budget", type=int, default=50, help="requests per second to RunPod (the default setting)"
    )
    sc.add_argument("--fleet-jobs", type=int, default=600, help="jobs per process configuration")
    sc.add_argument(
        "--fleet-in-flight", type=int, default=40, help="MAX_JOBS_IN_FLIGHT of the configurations"
    )
    sc.add_argument(
        "--fleet-members", type=int, default=60, help="members sending them (2 in flight each)"
    )
    sc.add_argument(
        "--lease-ttl", type=float, default=Timing.lease_ttl, help="seconds (the default timing)"
    )
    so = sub.add_parser(
        "soak", help="the bot process under random faults and SIGKILLs, then the invariants"
    )
    so.add_argument("--minutes", type=float, default=10.0)
    so.add_argument("--seed", type=int, default=7)
    so.add_argument(
        "--drain",
        type=float,
        help="seconds the bot may take to end every job after the load (default: 60 per minute)",
    )
    so.add_argument("--bot-log", type=argparse.FileType("w"), help="write the bot's output here")
    ak = sub.add_parser(
        "ack", help="many /imagine at once: time to the first response beside the 3 s limit"
    )
    ak.add_argument("--commands", type=int, default=200)
    ch = sub.add_parser("charts", help="usage, spend and server charts for 30 days × 50 members")
    ch.add_argument("--days", type=int, default=30)
    ch.add_argument("--members", type=int, default=50)
    ch.add_argument("--repeats", type=int, default=5)
    ch.add_argument("--out", type=Path, help="also write the charts as PNG files here")
    args = parser.parse_args(argv)
    # runpod-python installs a root log handler when imported; the figures are what we print.
    logs.configure("WARNING")
    if args.bench == "latency":
        result = asyncio.run(latency.run_latency(jobs=args.jobs))
        latency.report(result)
        return 0 if result["pass"] else 1
    if args.bench == "ack":
        result = asyncio.run(ack.run_ack(commands=args.commands))
        ack.report(result)
        return 0 if result["pass"] else 1
    if args.bench == "soak":
        result = asyncio.run(
            soak.run_soak(
                minutes=args.minutes, seed=args.seed, drain=args.drain, bot_log=args.bot_log
            )
        )
        soak.report(result)
        return 0 if result["pass"] else 1
    if args.bench == "scale":
        passed = True
        if args.part in ("in-flight", "both"):
            result = asyncio.run(scale.run_scale(jobs=args.jobs, budget=args.budget))
            scale.report(result)
            passed = passed and result["pass"]
        if args.part in ("processes", "both"):
            result = asyncio.run(
                fleet.run_fleet(
                    jobs=args.fleet_jobs,
                    budget=args.budget,
                    in_flight=args.fleet_in_flight,
                    members=args.fleet_members,
                    lease_ttl=args.lease_ttl,
                )
            )
            fleet.report(result)
            passed = passed and result["pass"]
        return 0 if passed else 1
    if args.bench == "charts":
        result = asyncio.run(
            charts.run_charts(
                days=args.days, members=args.members, repeats=args.repeats, out=args.out
            )
        )
        charts.report(result)
        return 0 if result["pass"] else 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
