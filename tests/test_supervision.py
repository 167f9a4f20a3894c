"""Supervised loops: a crash never ends a loop, idle is not stuck, and `health` names what is wrong."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from bot import heartbeat
from bot.app import Stablehand
from bot.jobs.core import every
from bot.supervisor import Loop, Supervision, Supervisor
from tests.conftest import FAST, FAST_PACING, connects_at_once, make_settings, reply_to, run_cli
from tests.fakes import fake_runpod as fr
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_runpod import FakeRunPod, Outcome

QUICK = Supervision(idle_beat=0.01, first_backoff=0.001, max_backoff=0.004, crash_limit=3)


class ManualClock:
    """A monotonic clock that moves only when told: loop ages become exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def status(supervisor: Supervisor, name: str):
    return next(s for s in supervisor.statuses() if s.name == name)


# ----- the supervisor ---------------------------------------------------------------------------


def test_restart_backoff_grows_and_is_capped() -> None:
    supervision = Supervision(first_backoff=1.0, growth=2.0, max_backoff=5.0)
    assert [supervision.backoff(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


async def test_a_periodic_job_step_logs_a_refusing_database_as_a_warning_a_bug_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = sqlite3.SQLITE_BUSY  # as SQLite itself sets it
    outcomes: list[BaseException | None] = [busy, ValueError("a bad row"), None]
    served = asyncio.Event()

    async def step() -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        served.set()

    supervisor = Supervisor(QUICK)
    loop = supervisor.start("steps", lambda loop: every(loop, lambda: 0.001, step, "stepping"))
    try:
        await asyncio.wait_for(served.wait(), 10)
        assert loop.status().restarts == 0, "neither failure ended the loop"
        refused, bug = [r for r in caplog.records if r.getMessage().startswith("stepping")]
        assert refused.levelno == logging.WARNING and refused.exc_info is None
        assert "the database refused (database is locked)" in refused.getMessage()
        assert bug.levelno == logging.ERROR and bug.exc_info is not None
    finally:
        await supervisor.stop()


async def test_a_crash_is_logged_with_the_loops_name_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(QUICK)
    crashes_left = [2]
    served = asyncio.Event()

    async def body(loop: Loop) -> None:
        while True:
            loop.beat()
            if crashes_left[0]:
                crashes_left[0] -= 1
                raise ValueError("a bad row")
            served.set()
            await loop.sleep(1.0)

    supervisor.start("worker", body)
    try:
        await asyncio.wait_for(served.wait(), 10)
        worker = status(supervisor, "worker")
        assert worker.restarts == 2 and not worker.dead and worker.last_error == "ValueError"
        assert "loop worker crashed (1 in a row)" in caplog.text
        assert "a bad row" in caplog.text, "the traceback goes to the log"
    finally:
        await supervisor.stop()


async def test_a_loop_that_keeps_crashing_is_reported_dead_and_one_that_recovers_is_not() -> None:
    supervisor = Supervisor(QUICK)
    recovered = asyncio.Event()

    async def always_fails(loop: Loop) -> None:
        loop.beat()
        raise OSError("database or disk is full")

    async def fails_then_works(loop: Loop) -> None:
        while True:
            loop.beat()
            if status(supervisor, "flaky").restarts < QUICK.crash_limit - 1:
                raise OSError("database is locked")
            recovered.set()
            await loop.sleep(0.01)

    supervisor.start("broken", always_fails)
    supervisor.start("flaky", fails_then_works)
    try:
        await until(lambda: status(supervisor, "broken").dead)
        await asyncio.wait_for(recovered.wait(), 10)
        await until(lambda: status(supervisor, "flaky").crashes == 0)
        broken = status(supervisor, "broken")
        assert broken.crashes >= QUICK.crash_limit and broken.last_error == "OSError"
        assert not status(supervisor, "flaky").dead
    finally:
        await supervisor.stop()


async def test_an_idle_loop_keeps_beating_while_a_blocked_one_goes_quiet() -> None:
    clock = ManualClock()
    supervisor = Supervisor(QUICK, clock=clock)
    never = asyncio.Event()
    blocked = asyncio.Event()

    async def waits_for_work(loop: Loop) -> None:
        while True:
            loop.beat()
            await loop.idle(never)

    async def wedged(loop: Loop) -> None:
        loop.beat()
        blocked.set()
        await asyncio.Future()  # a call that never answers

    supervisor.start("idle", waits_for_work)
    supervisor.start("wedged", wedged)
    try:
        await asyncio.wait_for(blocked.wait(), 10)
        clock.advance(500)
        await until(lambda: status(supervisor, "idle").age == 0)
        assert status(supervisor, "wedged").age == 500
        assert not any(s.dead for s in supervisor.statuses())
    finally:
        await supervisor.stop()


async def test_a_loop_ended_from_outside_is_dead_and_a_stopped_one_is_gone() -> None:
    supervisor = Supervisor(QUICK)

    async def body(loop: Loop) -> None:
        while True:
            loop.beat()
            await loop.sleep(1.0)

    killed = supervisor.start("killed", body)
    stopped = supervisor.start("stopped", body)
    assert killed.task is not None
    killed.task.cancel()
    await asyncio.gather(killed.task, return_exceptions=True)
    await stopped.stop()
    assert [(s.name, s.dead) for s in supervisor.statuses()] == [("killed", True)]
    with pytest.raises(ValueError, match="already running"):
        supervisor.start("killed", body)
    await killed.stop()
    assert supervisor.statuses() == []


# ----- health, through the bot's real heartbeat file and the real `python -m bot health` ---------


@pytest_asyncio.fixture
async def clock() -> ManualClock:
    return ManualClock()


@pytest_asyncio.fixture
async def running_bot(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord, clock: ManualClock
) -> AsyncIterator[Stablehand]:
    """The whole bot in this process, connected to the fake gateway, writing its heartbeat."""
    settings = make_settings(tmp_path, fake_runpod, HEARTBEAT_INTERVAL="1")
    bot = connects_at_once(
        Stablehand(
            settings, timing=FAST, pacing=FAST_PACING, supervisor=Supervisor(QUICK, clock=clock)
        )
    )
    runner = asyncio.create_task(bot.start(fake_discord.token))
    try:
        await until(lambda: bool((beat := _beat(bot)) and beat.connected and beat.loops))
        yield bot
    finally:
        await bot.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


def _beat(bot: Stablehand) -> heartbeat.Beat | None:
    return heartbeat.read(heartbeat.heartbeat_path(bot.settings.database_path))


async def _health(bot: Stablehand, *args: str):
    folder = Path(bot.settings.database_path).parent
    # In a thread: the bot in this process keeps beating while the command runs.
    return await asyncio.to_thread(run_cli, "health", *args, cwd=folder)


async def test_health_passes_while_every_loop_beats(running_bot: Stablehand) -> None:
    result = await _health(running_bot)
    assert result.returncode == 0, result.stderr
    names = {loop.name for loop in _beat(running_bot).loops}
    assert names == {
        "jobs-dispatch",
        "jobs-poll",
        "jobs-positions",
        "jobs-health",
        "jobs-reconcile",
        "progress-board",
        "heartbeat",
    }
    assert f"{len(names)} loops beating" in result.stdout


async def test_health_fails_naming_a_stuck_loop_and_how_long_it_has_been_quiet(
    running_bot: Stablehand,
    fake_runpod: FakeRunPod,
    fake_discord: FakeDiscord,
    clock: ManualClock,
) -> None:
    # RunPod's /health hangs while a job waits in its queue: the health loop is stuck in that call.
    fake_runpod.inject("health", fr.delay(60))
    fake_runpod.script(Outcome(status="HANG"))
    await reply_to(
        running_bot, fake_discord, payloads.slash_command("imagine", {"prompt": "a pony"})
    )
    await fake_runpod.wait_for_requests("health", 1, timeout=10)
    clock.advance(1000)

    def health_loop_quiet() -> bool:
        beat = _beat(running_bot)
        return beat is not None and list(heartbeat.loop_problems(beat)) == ["jobs-health"]

    await until(health_loop_quiet)
    result = await _health(running_bot)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "loop jobs-health is stuck: no beat for 1000 s (the limit is 300 s)"
    )
    assert (await _health(running_bot, "--stuck-after", "2000")).returncode == 0


async def test_health_fails_naming_a_loop_that_keeps_crashing(running_bot: Stablehand) -> None:
    async def disk_full(loop: Loop) -> None:
        loop.beat()
        raise OSError("No space left on device")

    running_bot.supervisor.start("exports", disk_full)
    await until(
        lambda: any(loop.name == "exports" and loop.dead for loop in _beat(running_bot).loops)
    )
    result = await _health(running_bot)
    assert result.returncode == 1
    assert "loop exports is dead:" in result.stderr and "(last: OSError)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ----- case 2: a network blip must not freeze progress ------------------------------------------


async def test_progress_keeps_flowing_after_discord_was_unreachable(
    bot: Stablehand,
    fake_discord: FakeDiscord,
    fake_runpod: FakeRunPod,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cogs.common.delivery")
    fake_runpod.script(Outcome(status="STUCK", queue_delay=3600))  # waits, then runs for ever
    payload = payloads.slash_command("imagine", {"prompt": "a pony"})
    await reply_to(bot, fake_discord, payload)
    message_id = fake_discord.interactions[payload["token"]].response_message_id
    await fake_runpod.wait_for_requests("run", 1)

    await fake_discord.go_offline()
    fake_runpod.start_running(next(iter(fake_runpod.jobs)))  # new progress to show: "Generating"
    await until(lambda: "progress edit failed (ClientConnectorError)" in caplog.text)
    await fake_discord.go_online()

    def generating_shown() -> bool:
        return any(
            r.method == "PATCH"
            and r.path.endswith(f"/messages/{message_id}")
            and r.status == 200
            and "Generating" in (r.json or {}).get("content", "")
            for r in fake_discord.requests
        )

    await until(generating_shown)
    board = status(bot.supervisor, "progress-board")
    assert not board.dead and board.restarts == 0


def test_health_refuses_a_limit_that_is_not_a_positive_number(tmp_path: Path) -> None:
    result = run_cli("health", "--stuck-after", "-5", cwd=tmp_path)
    assert result.returncode == 2
    assert "'-5' is not a number of seconds above 0" in result.stderr
    assert "Traceback" not in result.stderr
