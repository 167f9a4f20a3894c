"""Soak: the real bot process against both fakes, random faults and SIGKILLs, simulated members.

Phases: chaos (members act, RunPod and Discord misbehave, RunPod answers garbage, another process
holds the database's write lock, Discord or RunPod becomes unreachable; in its first half the bot is also
killed and restarted at random moments, in its second half it must heal without a restart),
a drain in the process that lived through the last faults, then a clean phase in one last
process (a warm-up, a baseline, more load), then a drain. At the end every job must have ended, every delivered job shown in exactly one
message, no workflow sent to /run twice, every credit hold captured or refunded to match its
job, the bot's task count and memory back at their baseline, and a clean exit on SIGTERM.

The three self-healing invariants, precisely:
- stuck_jobs: jobs not in a terminal state in the database once a drain period has passed, in
  the process that lived through the last faults (no restart heals them) plus at the end.
- leaked_slots: RunPod slots the bot counts as taken (its heartbeat after each of those drains)
  beyond the jobs the database has in flight (submitting, submitted, running) at that moment.
- dead_loops: background loops any live bot process reported dead, or quiet for longer than
  LOOP_STUCK_AFTER, in a fresh heartbeat sampled every second (the rule `health` applies).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import signal
import sqlite3
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bench.harness import print_result, print_table
from bot import heartbeat
from bot.jobs import IN_FLIGHT, TERMINAL
from cogs.common.faces import CUSTOM_ID
from tests.fakes import fake_runpod as fr
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_runpod import FakeRunPod
from tests.fakes.sandbox import Sandbox

BUTTON_ACTION = re.compile(CUSTOM_ID)

CHANNELS = [payloads.CHANNEL_ID + n for n in range(0, 4)]
MEMBERS = [payloads.member(payloads.user(5_000_000 + n, f"member{n}")) for n in range(16)]
PROMPTS = [
    "a pony astronaut on the moon",
    "a pony in a meadow --ar 16:9",
    "two ponies --count 2 --steps 20",
    "a pony knight --ar 2:3 --seed -1",
    "a pony --hires 1.25 --steps 15",
    "a pony --workflow test-pattern",
]
TASK_SLACK = 3
RSS_SLACK_MB = 25.0
# Stricter than the bot's own limit: no healthy loop waits this long on one call in the soak.
LOOP_STUCK_AFTER = 60.0
GARBAGE_IMAGE = fr.s3_entry("http://bucket:abc/img.png")


def hold_write_lock(database: Path, seconds: float) -> bool:
    """Another process's `BEGIN IMMEDIATE`, held `seconds`; False if the bot held the lock first."""
    conn = sqlite3.connect(database, timeout=2.0, isolation_level=None)
    try:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return False
        time.sleep(seconds)
        conn.execute("ROLLBACK")
        return True
    finally:
        conn.close()


@dataclass
class Tally:
    actions: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    lost_interactions: int = 0
    dead_loops: dict[tuple[int, str], str] = field(default_factory=dict)
    tracebacks: int = 0
    bot_log: TextIO | None = None

    def bot_output(self, line: str) -> None:
        if "Traceback (most recent call last)" in line:
            self.tracebacks += 1
        if self.bot_log is not None:
            print(line, file=self.bot_log)


class Soak:
    """Drives one soak run: members, faults, kills, then the checks."""

    def __init__(self, box: Sandbox, *, seed: int) -> None:
        self.box = box
        self.rng = random.Random(seed)
        self.tally = Tally()
        self.database = box.workdir / "sandbox.db"
        self.chaos = True
        # Restarts, Discord outages and database locks take turns: a bot started while Discord
        # is unreachable exits at once (its container restarts it), which is not what is tested.
        self.disruption = asyncio.Lock()

    # ----- members ---------------------------------------------------------------------------

    async def member(self, index: int, until: float) -> None:
        who = MEMBERS[index]
        while time.monotonic() < until:
            await asyncio.sleep(self.rng.uniform(0.5, 3.0))
            try:
                await asyncio.wait_for(self.act(who), 20)
            except (TimeoutError, KeyError, ValueError, IndexError, RuntimeError):
                # The bot was down (killed, restarting), or the message changed under the click.
                self.tally.lost_interactions += 1

    async def act(self, who: dict) -> None:
        roll = self.rng.random()
        channel = payloads.guild_channel(self.rng.choice(CHANNELS))
        if roll < 0.55:
            self.tally.actions["imagine"] += 1
            await self._send(
                payloads.slash_command(
                    "imagine", {"prompt": self.rng.choice(PROMPTS)}, user=who, channel=channel
                )
            )
        elif roll < 0.65:
            active = self._active_jobs(int(who["user"]["id"]))
            if active:
                self.tally.actions["cancel"] += 1
                await self._send(
                    payloads.slash_command(
                        "cancel", {"job": self.rng.choice(active)}, user=who, channel=channel
                    )
                )
        elif roll < 0.92:
            await self._click(who)
        else:
            self.tally.actions["usage"] += 1
            await self._send(
                payloads.slash_command(
                    self.rng.choice(["usage", "jobs"]), user=who, channel=channel
                )
            )

    async def _click(self, who: dict) -> None:
        results = [
            m
            for m in self.box.discord.messages.values()
            if m.components and not m.deleted and not m.ephemeral
        ]
        if not results:
            return
        message = self.rng.choice(results)
        payload = self.box.discord.message_payload(message.id)
        # By the action in the custom id: labels carry costs and image numbers ("U1 · 3 credits").
        buttons: dict[str, str] = {}
        for row in payload["components"]:
            for component in row["components"]:
                action = BUTTON_ACTION.match(component.get("custom_id", ""))
                if action:
                    buttons.setdefault(action["action"], component["custom_id"])
        action = self.rng.choices(
            ["reroll", "subtle", "strong", "upscale", "details", "edit", "delete", "cancel"],
            [5, 2, 2, 2, 2, 2, 1, 1],
        )[0]
        if action not in buttons:
            return
        self.tally.actions[action] += 1
        click = payloads.button_click(buttons[action], payload, user=who)
        await self._send(click)
        if action == "edit":
            callback = next(
                r
                for r in self.box.discord.requests
                if r.path.endswith(f"/{click['token']}/callback")
            )
            modal = callback.json["data"]
            fields = {"prompt": f"{self.rng.choice(PROMPTS)} edited", "negative": "blurry"}
            await self._send(
                payloads.modal_submit(modal["custom_id"], fields, message=payload, user=who)
            )

    async def _send(self, payload: dict) -> None:
        await self.box.discord.dispatch("INTERACTION_CREATE", payload)
        await self.box.discord.wait_for_callback(payload, timeout=15)

    def _active_jobs(self, user_id: int) -> list[int]:
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True) as conn:
            rows = conn.execute(
                "SELECT id FROM jobs WHERE user_id = ? AND state IN ('queued', 'submitted', 'running')",
                (user_id,),
            )
            return [row[0] for row in rows]

    # ----- faults and kills ------------------------------------------------------------------

    async def faults(self, until: float) -> None:
        runpod_faults = {
            "status 429": ("status", fr.http(429, retry_after=0.5)),
            "status 500": ("status", fr.http(500)),
            "status 502": ("status", fr.http(502)),
            "status reset": ("status", fr.reset()),
            "run 429": ("run", fr.http(429, retry_after=0.5)),
            "run 503": ("run", fr.http(503)),
            "run 502": ("run", fr.http(502)),
            "run reset after sending": ("run", fr.reset_after_processing()),
            "health 500": ("health", fr.http(500)),
            "status not json": ("status", fr.http(200, body="<html>bad gateway</html>")),
            "run answer without id": ("run", fr.http(200, body={"status": "IN_QUEUE"})),
        }
        # The next status answer (of a job in that state, None: any) gets these fields.
        garbage: dict[str, tuple[str | None, dict[str, Any]]] = {
            "status garbage executionTime": ("COMPLETED", {"executionTime": 1e300}),
            "status negative executionTime": ("COMPLETED", {"executionTime": -4_000_000}),
            "status garbage delayTime": (None, {"delayTime": "soon"}),
            "status garbage status": (None, {"status": 42}),
            "status without id": (None, {"id": fr.MISSING}),
            "status not an object": (None, {"": []}),
            "status garbage output": ("COMPLETED", {"output": "garbage"}),
            "status bad image url": ("COMPLETED", {"output": fr.images_output(GARBAGE_IMAGE)}),
        }
        discord_faults = {
            "discord edit 500": ("PATCH", r"/channels/\d+/messages/\d+", 500),
            "discord edit 502": ("PATCH", r"/channels/\d+/messages/\d+", 502),
            "discord edit 429": ("PATCH", r"/channels/\d+/messages/\d+", 429),
            "discord post 500": ("POST", r"/channels/\d+/messages", 500),
            "discord post 429": ("POST", r"/channels/\d+/messages", 429),
        }
        while time.monotonic() < until:
            await asyncio.sleep(self.rng.uniform(0.5, 2.0))
            roll = self.rng.random()
            if roll < 0.4:
                name = self.rng.choice(list(runpod_faults))
                op, fault = runpod_faults[name]
                self.box.runpod.inject(op, fault)
            elif roll < 0.6:
                name = self.rng.choice(list(garbage))
                when, fields = garbage[name]
                fr.garble(self.box.runpod, when, times=1, **fields)
            else:
                name = self.rng.choice(list(discord_faults))
                method, path, status = discord_faults[name]
                self.box.discord.inject(method, path, status, retry_after=0.5)
            self.tally.faults[name] += 1

    async def outages(self, until: float) -> None:
        """Discord or RunPod goes away for a moment now and then, or the gateway drops."""
        while True:
            await asyncio.sleep(self.rng.uniform(8.0, 25.0))
            if time.monotonic() >= until:
                return
            async with self.disruption:
                roll = self.rng.random()
                if roll < 0.7:
                    fake = self.box.discord if roll < 0.4 else self.box.runpod
                    await fake.go_offline()
                    await asyncio.sleep(self.rng.uniform(0.5, 3.0))
                    await fake.go_online()
                    where = "discord" if fake is self.box.discord else "runpod"
                    self.tally.faults[f"{where} unreachable"] += 1
                else:
                    await self.box.discord.drop_gateway()
                    self.tally.faults["discord gateway drop"] += 1

    async def db_locks(self, until: float) -> None:
        """Another process (an operator's sqlite3 shell, a backup) holds the write lock for seconds."""
        while True:
            await asyncio.sleep(self.rng.uniform(5.0, 20.0))
            if time.monotonic() >= until:
                return
            seconds = self.rng.uniform(1.0, 8.0)
            async with self.disruption:
                if await asyncio.to_thread(hold_write_lock, self.database, seconds):
                    self.tally.faults["database write lock held"] += 1

    async def kills(self, until: float, *, every: tuple[float, float]) -> None:
        while True:
            await asyncio.sleep(self.rng.uniform(*every))
            if time.monotonic() >= until:
                return
            async with self.disruption:
                self.box.process.send_signal(signal.SIGKILL)
                await self.box.process.wait()
                self.tally.kills += 1
                await self.box.start_bot(**ENV)

    async def watch_loops(self) -> None:
        """Sample the heartbeat every second for dead or stuck loops, until cancelled."""
        while True:
            await asyncio.sleep(1.0)
            self.check_loops()

    def check_loops(self) -> None:
        process = self.box.process
        beat = heartbeat.read(heartbeat.heartbeat_path(self.database))
        if beat is None or process is None or process.returncode is not None:
            return
        if beat.pid != process.pid:
            return  # the last beat of a killed process; its successor has not written yet
        problems = heartbeat.loop_problems(beat, LOOP_STUCK_AFTER)
        if time.time() - beat.at > LOOP_STUCK_AFTER:
            problems["heartbeat"] = f"no heartbeat for {time.time() - beat.at:.0f} s"
        for name, problem in problems.items():
            self.tally.dead_loops.setdefault((beat.pid, name), problem)

    # ----- measuring -------------------------------------------------------------------------

    async def quiet_beat(self, drain: float, settle: float = 3.0) -> heartbeat.Beat:
        """A heartbeat taken once nothing is running (or `drain` seconds have passed) and the
        bot has sat idle for `settle` seconds."""
        await self.drained(drain)
        await asyncio.sleep(settle)
        beat = heartbeat.read(heartbeat.heartbeat_path(self.database))
        assert beat is not None
        return beat

    async def drained(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._unfinished():
                    await asyncio.sleep(0.5)
        return not self._unfinished()

    def _unfinished(self) -> int:
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True) as conn:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE state NOT IN ('done','failed','cancelled','timed_out','expired') "
                "OR delivered_at IS NULL"
            ).fetchone()
        return count

    def stuck_and_leaked(self, beat: heartbeat.Beat) -> tuple[Counter[str], int]:
        """Jobs not ended (by state) and slots held beyond the jobs in flight, after a drain."""
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True) as conn:
            states = [state for (state,) in conn.execute("SELECT state FROM jobs")]
        stuck = Counter(state for state in states if state not in TERMINAL)
        in_flight = sum(1 for state in states if state in IN_FLIGHT)
        return stuck, max(0, beat.slots_in_use - in_flight)

    def checks(
        self, after_chaos: tuple[Counter[str], int], end: tuple[Counter[str], int]
    ) -> dict[str, Any]:
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True) as conn:
            jobs = conn.execute("SELECT id, state, workflow, backend_id, cost FROM jobs").fetchall()
            holds = dict(conn.execute("SELECT job_id, state FROM quota_holds").fetchall())
        states = Counter(state for _, state, _, _, _ in jobs)
        # What RunPod created, not what was sent: a /run refused with 429 or 503 creates nothing
        # and is safely sent again.
        runs = Counter(
            json.dumps(job.input["workflow"], sort_keys=True)
            for job in self.box.runpod.jobs.values()
        )
        shown = Counter()
        for message in self.box.discord.messages.values():
            if message.attachments and " · job #" in message.content:
                shown[int(message.content.split(" · job #")[1].split()[0])] += 1
        twice_run = sum(
            1
            for _, _, workflow, _, _ in jobs
            if runs[json.dumps(json.loads(workflow), sort_keys=True)] > 1
        )
        done = [job_id for job_id, state, *_ in jobs if state == "done"]
        ledger_mismatch = [
            job_id
            for job_id, state, *_ in jobs
            if holds.get(job_id) != ("captured" if state == "done" else "refunded")
        ]
        return {
            "jobs": len(jobs),
            "states": dict(states),
            "unfinished": self._unfinished(),
            "delivered_not_once": [j for j in done if shown[j] != 1],
            "run_requests": len(self.box.runpod.requests_for("run")),
            "runpod_jobs": sum(runs.values()),
            "workflows_run_twice": twice_run,
            "holds": len(holds),
            "captured": sum(1 for s in holds.values() if s == "captured"),
            "refunded": sum(1 for s in holds.values() if s == "refunded"),
            "ledger_mismatches": ledger_mismatch,
            "stuck_jobs": after_chaos[0].total() + end[0].total(),
            "stuck_states": {"after_chaos": dict(after_chaos[0]), "at_end": dict(end[0])},
            "leaked_slots": after_chaos[1] + end[1],
            "dead_loops": len(self.tally.dead_loops),
            "dead_loop_reports": sorted(set(self.tally.dead_loops.values())),
        }


ENV = {
    "HEARTBEAT_INTERVAL": "1",
    "DAILY_CREDITS": "100000",
    "MEMBER_MAX_QUEUED": "6",
    "MAX_JOBS_IN_FLIGHT": "8",
}


async def run_soak(
    minutes: float = 10.0,
    seed: int = 7,
    drain: float | None = None,
    bot_log: TextIO | None = None,
) -> dict[str, Any]:
    """`drain`: how long the bot may take to end every job once the load stops (default: a
    minute per soak minute, at least two); `bot_log` receives the bot processes' output."""
    drain = drain if drain is not None else max(120.0, 60.0 * minutes)
    with tempfile.TemporaryDirectory(prefix="stablehand-soak-") as workdir:
        discord = FakeDiscord()
        runpod = FakeRunPod(queue_delay=0.5, run_delay=2.0, run_jitter=1.0, seed=seed)
        async with discord, runpod:
            for channel in CHANNELS:
                discord.add_channel(payloads.guild_channel(channel, name=f"art{channel % 10}"))
            box = Sandbox(discord, runpod, Path(workdir))
            soak = Soak(box, seed=seed)
            soak.tally.bot_log = bot_log
            box.show = soak.tally.bot_output
            started = time.monotonic()
            chaos_end = started + minutes * 60 * 0.8
            kills_end = started + minutes * 60 * 0.4
            await box.start_bot(**ENV)
            watcher = asyncio.create_task(soak.watch_loops())
            members = [asyncio.create_task(soak.member(n, chaos_end)) for n in range(len(MEMBERS))]
            await asyncio.gather(
                soak.faults(chaos_end),
                soak.outages(chaos_end),
                soak.db_locks(chaos_end),
                soak.kills(kills_end, every=(20.0, 60.0)),
                *members,
            )

            # The process that lived through the last faults must end every job by itself.
            after_chaos = soak.stuck_and_leaked(await soak.quiet_beat(drain))

            # The clean phase, in one last process: warm up, take the baseline, load it again.
            soak.tally.kills += 1
            box.process.send_signal(signal.SIGKILL)
            await box.process.wait()
            await box.start_bot(**ENV)
            clean_end = max(time.monotonic() + 30.0, started + minutes * 60)
            await asyncio.gather(*(soak.member(n, time.monotonic() + 15) for n in range(4)))
            baseline = await soak.quiet_beat(drain)
            await asyncio.gather(*(soak.member(n, clean_end) for n in range(len(MEMBERS))))
            end = await soak.quiet_beat(drain)
            soak.check_loops()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            checks = soak.checks(after_chaos, soak.stuck_and_leaked(end))
            exit_code = await box.stop_bot(signal.SIGTERM)
            result = {
                "bench": "soak",
                "minutes": round((time.monotonic() - started) / 60, 1),
                "actions": dict(soak.tally.actions),
                "faults": sum(soak.tally.faults.values()),
                "faults_by_kind": dict(soak.tally.faults),
                "kills": soak.tally.kills,
                "lost_interactions": soak.tally.lost_interactions,
                "bot_tracebacks": soak.tally.tracebacks,
                **checks,
                "tasks_baseline": baseline.tasks,
                "tasks_end": end.tasks,
                "rss_baseline_mb": baseline.rss_mb,
                "rss_end_mb": end.rss_mb,
                "exit_code": exit_code,
            }
    result["pass"] = (
        result["unfinished"] == 0
        and not result["delivered_not_once"]
        and result["workflows_run_twice"] == 0
        and not result["ledger_mismatches"]
        and result["holds"] == result["captured"] + result["refunded"] == result["jobs"]
        and result["tasks_end"] <= result["tasks_baseline"] + TASK_SLACK
        and result["rss_end_mb"] <= result["rss_baseline_mb"] + RSS_SLACK_MB
        and result["exit_code"] == 0
        and result["stuck_jobs"] == 0
        and result["leaked_slots"] == 0
        and result["dead_loops"] == 0
    )
    return result


def report(result: dict[str, Any]) -> None:
    states = ", ".join(f"{k} {v}" for k, v in sorted(result["states"].items()))
    rows = [
        ("figure", "measured", "must be"),
        ("duration", f"{result['minutes']} min", ""),
        ("member actions", str(sum(result["actions"].values())), ""),
        ("faults injected", str(result["faults"]), ""),
        ("bot SIGKILLed and restarted", str(result["kills"]), ""),
        ("jobs", f"{result['jobs']} ({states})", ""),
        ("jobs not ended", str(result["unfinished"]), "0"),
        ("delivered jobs not shown exactly once", str(len(result["delivered_not_once"])), "0"),
        ("/run requests (refused ones sent again)", str(result["run_requests"]), ""),
        ("jobs RunPod created", str(result["runpod_jobs"]), ""),
        ("our jobs RunPod ran twice", str(result["workflows_run_twice"]), "0"),
        (
            "holds = captures + refunds",
            f"{result['holds']} = {result['captured']} + {result['refunded']}",
            "all jobs",
        ),
        (
            "holds settled against their job's outcome",
            f"{len(result['ledger_mismatches'])} wrong",
            "0 wrong",
        ),
        (
            "asyncio tasks, baseline -> end",
            f"{result['tasks_baseline']} -> {result['tasks_end']}",
            f"+{TASK_SLACK} at most",
        ),
        (
            "RSS, baseline -> end",
            f"{result['rss_baseline_mb']} -> {result['rss_end_mb']} MB",
            f"+{RSS_SLACK_MB:.0f} MB at most",
        ),
        ("exit code on SIGTERM", str(result["exit_code"]), "0"),
        ("jobs stuck after the drain", str(result["stuck_jobs"]), "0"),
        ("RunPod slots held by no job in flight", str(result["leaked_slots"]), "0"),
        ("loops seen dead or stuck", str(result["dead_loops"]), "0"),
    ]
    print_table(rows)
    print("PASS" if result["pass"] else "FAIL")
    print_result(result)
