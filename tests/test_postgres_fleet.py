"""Three whole bot processes on one PostgreSQL, each connected to Discord as its own shard, with
200 /imagine from 50 members across the shards; one process is SIGKILLed mid-run and another is
upgraded (stopped and started again). Every job ends once, nothing is sent to RunPod twice,
every hold is captured or refunded, and no member waits behind another's batch."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bot.jobs.model import TERMINAL
from tests.conftest import HANG_GUARD
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_runpod import FakeRunPod
from tests.fakes.sandbox import ROOT, SITECUSTOMIZE

SHARDS = 3
MEMBERS = 50
EACH = 4  # jobs per member, sent as one batch
# One process is killed once a fifth of the jobs are done, another upgraded at nine twentieths: both
# with jobs in flight, queued behind them, and more members waiting than the in-flight cap serves.
KILLED_AT = MEMBERS * EACH // 5
UPGRADED_AT = MEMBERS * EACH * 9 // 20
CHANNELS_PER_GUILD = 4
# Real seconds in the bot processes: short leases so a killed process's jobs are taken over soon,
# long enough that a process on a busy machine renews in time.
TIMING = (
    "first_poll=0.05,queue_interval=0.05,queue_max_interval=0.2,dense_interval=0.05,"
    "running_interval=0.05,running_max_interval=0.2,retry_delay=0.05,submit_retry_delay=0.1,"
    "delivery_retry_delay=0.1,position_interval=0.2,lease_ttl=3,reconcile_interval=0.3,"
    "claim_interval=0.05,health_interval=5"
)
# Discord-side pacing under the fake's channel limit (5 per 0.05 s): production's 0.9 edits a second
# per channel would make the run wait on pacing alone.
PACING = "message_interval=0.05,progress_tick=0.2,channel_burst=4,channel_per_second=20"
_TERMINAL = [state.value for state in TERMINAL]


@dataclass(frozen=True)
class Seat:
    """Where a member types: their guild (so their shard) and channel."""

    member: int
    guild: int
    channel: int


def _guilds() -> list[int]:
    """One guild per shard: Discord routes guild G to shard (G >> 22) % SHARDS."""
    guilds = [payloads.GUILD_ID + (k << 22) for k in range(SHARDS)]
    return sorted(guilds, key=lambda g: (g >> 22) % SHARDS)


class Fleet:
    """The bot processes, each in its own folder (its heartbeat, its log), on one database."""

    def __init__(self, root: Path, discord: FakeDiscord, runpod: FakeRunPod, dsn: str) -> None:
        self.root, self.discord, self.runpod, self.dsn = root, discord, runpod, dsn
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        self.starts = Counter[int]()

    def _environment(self, shard: int, folder: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "RUNPOD_"))}
        env.update(
            DISCORD_TOKEN=self.discord.token,
            RUNPOD_API_KEY=self.runpod.api_key,
            RUNPOD_ENDPOINT_ID=self.runpod.endpoint_id,
            RUNPOD_API_BASE=self.runpod.api_base,
            DATABASE_PATH=str(folder / "unused.db"),
            DATABASE_URL=self.dsn,
            DISCORD_SHARD_COUNT=str(SHARDS),
            DISCORD_SHARD_IDS=str(shard),
            MAX_JOBS_IN_FLIGHT="8",
            # A member's cap never binds (each sends EACH jobs), so the queue order is the rotation.
            MEMBER_MAX_IN_FLIGHT=str(EACH),
            MEMBER_MAX_QUEUED=str(EACH),
            DAILY_CREDITS="100000",
            STABLEHAND_FAKE_DISCORD_URL=self.discord.url,
            STABLEHAND_FAKE_TIMING=TIMING,
            STABLEHAND_FAKE_PACING=PACING,
            PYTHONPATH=os.pathsep.join([str(SITECUSTOMIZE), str(ROOT)]),
            PYTHONUNBUFFERED="1",
        )
        return env

    async def start(self, shard: int) -> None:
        self.starts[shard] += 1
        folder = self.root / f"shard{shard}-{self.starts[shard]}"
        folder.mkdir()
        log = (folder / "bot.log").open("wb")
        self.processes[shard] = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            cwd=folder,
            env=self._environment(shard, folder),
            stdout=log,
            stderr=log,
        )
        await until(lambda: shard in self.discord.connected_shards())

    async def kill(self, shard: int) -> None:
        process = self.processes.pop(shard)
        process.send_signal(signal.SIGKILL)
        assert await process.wait() == -signal.SIGKILL

    async def stop(self, shard: int) -> None:
        process = self.processes.pop(shard)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), HANG_GUARD) == 0

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.parent.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.root.glob("*/bot.log"))
        )


async def until(condition: Callable[[], Any], timeout: float = 90.0) -> None:
    async with asyncio.timeout(timeout):
        while not await _value(condition()):
            await asyncio.sleep(0.05)


async def _value(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value


@asynccontextmanager
async def fleet(tmp_path: Path, dsn: str) -> AsyncIterator[Fleet]:
    async with (
        FakeDiscord(
            ack_deadline=HANG_GUARD, channel_rate=(5, 0.05), default_guild=False
        ) as discord,
        FakeRunPod(run_delay=0.2) as runpod,
    ):
        running = Fleet(tmp_path, discord, runpod, dsn)
        try:
            yield running
        finally:
            for process in running.processes.values():
                process.kill()
                await process.wait()


def _seats() -> list[Seat]:
    guilds = _guilds()
    channels = {g: [g + 1 + c for c in range(CHANNELS_PER_GUILD)] for g in guilds}
    return [
        Seat(
            member=payloads.MEMBER_ID + 1 + m,
            guild=guilds[m % SHARDS],
            channel=channels[guilds[m % SHARDS]][(m // SHARDS) % CHANNELS_PER_GUILD],
        )
        for m in range(MEMBERS)
    ]


def _imagine(seat: Seat, n: int) -> dict[str, Any]:
    return payloads.slash_command(
        "imagine",
        {"prompt": f"a pony number {seat.member}-{n}"},
        user=payloads.member(payloads.user(seat.member, f"m{seat.member}")),
        guild_id=seat.guild,
        channel=payloads.guild_channel(seat.channel, seat.guild, name=f"c{seat.channel}"),
    )


async def _counts(db: asyncpg.Connection) -> Counter[str]:
    return Counter(r["state"] for r in await db.fetch("SELECT state FROM jobs"))


async def _untold(db: asyncpg.Connection) -> list[asyncpg.Record]:
    """The jobs not yet ended and delivered (what a failure prints)."""
    return await db.fetch(
        "SELECT id, user_id, state, delivered_at FROM jobs"
        " WHERE NOT (state = ANY($1::text[])) OR delivered_at IS NULL ORDER BY id",
        _TERMINAL,
    )


async def _all_told(db: asyncpg.Connection) -> bool:
    [[jobs]] = await db.fetch("SELECT COUNT(*) FROM jobs")
    return jobs == MEMBERS * EACH and not await _untold(db)


def _unfair_sends(events: Sequence[Mapping[str, Any]], *, after: int = 0) -> list[str]:
    """Round robin broken: between two sends of member A, a member B that had a job waiting the
    whole time got no send. Sends are in claim order (their events are written under the claim
    lock); no member's cap binds here, so only the rotation decides. Only pairs of sends after
    event `after` are judged: before every job is queued and committed, a claim may not yet see
    a job whose event id is already lower than its own."""
    queued_at: dict[int, int] = {}
    sent_at: dict[int, int] = {}
    owner: dict[int, int] = {}
    sends: list[tuple[int, int]] = []  # (event id, member) in claim order
    for e in events:
        owner[e["job_id"]] = e["user_id"]
        if e["to_state"] == "queued":
            queued_at.setdefault(e["job_id"], e["id"])
        elif e["to_state"] == "submitting" and e["job_id"] not in sent_at:
            sent_at[e["job_id"]] = e["id"]
            sends.append((e["id"], e["user_id"]))
    last: dict[int, int] = {}  # member -> event id of their last send so far
    broken = []
    for at, member in sends:
        before = last.get(member)
        if before is not None and before > after:
            waited = {
                owner[job]
                for job, since in queued_at.items()
                if owner[job] != member and since < before and sent_at.get(job, 1 << 62) > at
            }
            skipped = [other for other in waited if last.get(other, -1) < before]
            if skipped:
                broken.append(f"member {member} was served twice while {skipped} waited")
        last[member] = at
    return broken


async def test_three_processes_on_shards_lose_nothing_when_one_is_killed_and_one_upgraded(
    tmp_path: Path, postgres_dsn: str
) -> None:
    db = await asyncpg.connect(postgres_dsn)  # one connection for every look at the jobs
    try:
        await _run_the_fleet(tmp_path, postgres_dsn, db)
    finally:
        await db.close()


async def _run_the_fleet(tmp_path: Path, postgres_dsn: str, db: asyncpg.Connection) -> None:
    async with fleet(tmp_path, postgres_dsn) as bots:
        guilds = _guilds()
        for guild in guilds:
            channels = [
                payloads.guild_channel(guild + 1 + c, guild, name=f"c{guild + 1 + c}")
                for c in range(CHANNELS_PER_GUILD)
            ]
            bots.discord.add_guild(payloads.guild(guild, channels=channels))
        await asyncio.gather(*(bots.start(shard) for shard in range(SHARDS)))
        try:
            for seat in _seats():  # each member's batch in one go, member after member
                for n in range(EACH):
                    await bots.discord.dispatch("INTERACTION_CREATE", _imagine(seat, n))
            # Killed once every job is queued (none waits for its progress message) and some ran.
            await until(lambda: _settled_enough(db, queued=MEMBERS * EACH, done=KILLED_AT))
            [[all_queued]] = await db.fetch("SELECT MAX(id) FROM job_events")
            await bots.kill(0)
            await until(lambda: _settled_enough(db, queued=MEMBERS * EACH, done=UPGRADED_AT))
            await bots.stop(1)
            await bots.start(1)
            await until(lambda: _all_told(db), timeout=120)
        except BaseException:
            print(bots.logs())
            print("jobs not ended and delivered:", *map(dict, await _untold(db)), sep="\n")
            raise

    states = await _counts(db)
    assert sum(states.values()) == MEMBERS * EACH and set(states) <= set(_TERMINAL), states
    ends = await db.fetch(
        "SELECT job_id, COUNT(*) AS n FROM job_events WHERE to_state = ANY($1::text[])"
        " GROUP BY job_id",
        _TERMINAL,
    )
    assert len(ends) == MEMBERS * EACH and {r["n"] for r in ends} == {1}, "each job ends once"

    runs = bots.runpod.requests_for("run")
    prompts = Counter(
        re.search(r"a pony number \d+-\d+", json.dumps(r.json))[0]  # type: ignore[index]
        for r in runs
    )
    assert prompts and max(prompts.values()) == 1, "no /run sent twice"
    assert len(runs) >= states["done"]

    holds = Counter(r["state"] for r in await db.fetch("SELECT state FROM quota_holds"))
    refunded = MEMBERS * EACH - states["done"]
    assert holds == +Counter({"captured": states["done"], "refunded": refunded}), holds

    events = await db.fetch(
        "SELECT e.id, e.job_id, e.to_state, j.user_id FROM job_events AS e"
        " JOIN jobs AS j ON j.id = e.job_id ORDER BY e.id",
    )
    assert _unfair_sends(list(events), after=all_queued) == []


async def _settled_enough(db: asyncpg.Connection, *, queued: int, done: int) -> bool:
    states = await _counts(db)
    return sum(states.values()) == queued and not states["accepted"] and states["done"] >= done


def test_the_fairness_check_names_a_member_skipped_while_another_was_served_twice() -> None:
    def event(n: int, job: int, state: str, member: int) -> dict[str, Any]:
        return {"id": n, "job_id": job, "to_state": state, "user_id": member}

    queued = [event(1, 1, "queued", 7), event(2, 2, "queued", 7), event(3, 3, "queued", 8)]
    served_in_turn = [event(4, 1, "submitting", 7), event(5, 3, "submitting", 8)]
    served_twice = [event(4, 1, "submitting", 7), event(5, 2, "submitting", 7)]
    assert _unfair_sends(queued + served_in_turn + [event(6, 2, "submitting", 7)]) == []
    assert _unfair_sends(queued + served_twice) == ["member 7 was served twice while [8] waited"]
    assert _unfair_sends(queued + served_twice, after=4) == [], "judged only after event 4"


def _rotation(batches: Mapping[int, int]) -> list[int]:
    """Members' sends in round robin: one job of each member with jobs left, then again."""
    left = dict(batches)
    order = []
    while left:
        for member in list(left):
            order.append(member)
            left[member] -= 1
            if not left[member]:
                del left[member]
    return order


def _claim_events(batches: Mapping[int, int], sends: Sequence[int]) -> list[dict[str, Any]]:
    """Every batch queued, member after member, then one `submitting` event per send in `sends`
    (each member's jobs in the order they were queued)."""
    events: list[dict[str, Any]] = []
    jobs: dict[int, list[int]] = {}
    for member, count in batches.items():
        for _ in range(count):
            job = len(events) + 1
            jobs.setdefault(member, []).append(job)
            events.append({"id": job, "job_id": job, "to_state": "queued", "user_id": member})
    for member in sends:
        job = jobs[member].pop(0)
        events.append(
            {"id": len(events) + 1, "job_id": job, "to_state": "submitting", "user_id": member}
        )
    return events


def test_the_fairness_check_fails_the_old_per_process_rotation_and_passes_the_global_one() -> None:
    # Member 1's batch was accepted by process A; the batches of members 2, 3 and 4 by process B.
    in_a, in_b = {1: EACH}, {2: EACH, 3: EACH, 4: EACH}
    everyone = in_a | in_b
    all_queued = sum(everyone.values())
    # The old design: each process rotated only the jobs it had accepted, the two claiming in
    # turn; so A served member 1 again and again while members 3 and 4 waited in B.
    per_process = [
        member
        for turn in itertools.zip_longest(_rotation(in_a), _rotation(in_b))
        for member in turn
        if member is not None
    ]
    assert per_process[:5] == [1, 2, 1, 3, 1]

    reports = _unfair_sends(_claim_events(everyone, per_process), after=all_queued)
    assert [r.split(" while ")[0] for r in reports] == ["member 1 was served twice"] * (EACH - 1)
    assert re.findall(r"\d+", reports[0].split(" while ")[1]) in (["3", "4"], ["4", "3"])
    # The global rotation, which every process now claims from: the same jobs, fair.
    assert _unfair_sends(_claim_events(everyone, _rotation(everyone)), after=all_queued) == []
