"""Discord's three seconds while another process holds the database's write lock: every command
that writes is acknowledged in time, and what the member finally reads is true.

All through the real parts: the fake Discord, the bot's SQLite file with a second real connection
holding its write lock (`OtherProcess`), and the real job manager on the fake RunPod.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from bot.app import Stablehand
from bot.db import TransientRetry
from bot.jobs import DatabaseBusy, JobState
from tests.conftest import (
    FAST_PACING,
    imagine_result,
    make_settings,
    start_bot,
    wait_for_state,
)
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_runpod import FakeRunPod, Outcome
from tests.test_healing import IMPATIENT, OtherProcess

EPHEMERAL = 64
DEFERRED = 5  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE: "<bot> is thinking..."
BUSY = str(DatabaseBusy())
MANAGER = payloads.moderator_member()
ALICE = payloads.member(payloads.user(2_500_000_000_000_000_001, "alice"))
ART = payloads.guild_channel(3_100_000_000_000_000_001, name="art")

BotFactory = Callable[..., Awaitable[Stablehand]]


@pytest_asyncio.fixture
async def start(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> AsyncIterator[BotFactory]:
    """Starts the bot with a given acknowledgement deadline; closes it at teardown."""
    started: list[Stablehand] = []

    async def factory(*, ack_deadline: float) -> Stablehand:
        pacing = dataclasses.replace(FAST_PACING, ack_deadline=ack_deadline)
        bot = await start_bot(make_settings(tmp_path, fake_runpod), fake_discord, pacing=pacing)
        started.append(bot)
        return bot

    yield factory
    for bot in started:
        await bot.close()


async def impatient(start: BotFactory) -> Stablehand:
    """A bot whose deadline passes at once, with a database that gives up after quick retries:
    what a lock of many seconds looks like to a member, without waiting seconds."""
    bot = await start(ack_deadline=0.0)
    bot.services.db.retry = IMPATIENT
    await bot.services.db.set_busy_timeout(10)
    return bot


@pytest.fixture
def other_process(tmp_path: Path) -> Iterator[OtherProcess]:
    holder = OtherProcess(make_settings(tmp_path).database_path)
    yield holder
    holder.close()


def assert_nothing_expired(fake: FakeDiscord, payload: dict) -> None:
    """Discord refused none of the bot's answers to this interaction (no expired token)."""
    token = payload["token"]
    answers = [r for r in fake.requests if token in r.path]
    assert answers and all(r.status < 400 for r in answers), [
        (r.method, r.path, r.status) for r in answers
    ]


async def deferred_then_told(fake: FakeDiscord, payload: dict) -> str:
    """What the member reads after a "thinking..." deferral: a followup only they can see (a
    public "thinking..." is withdrawn first, a private one is replaced)."""
    callback = await fake.wait_for_callback(payload)
    assert (callback.status, callback.json["type"]) == (200, DEFERRED)
    followup = await fake.wait_for(
        lambda r: (
            r.method == "POST" and r.path.startswith("/webhooks/") and payload["token"] in r.path
        )
    )
    record = fake.interactions[payload["token"]]
    answers = [fake.messages[i] for i in (record.response_message_id, *record.followup_ids)]
    shown = [m for m in answers if not m.deleted]
    assert shown and all(m.ephemeral for m in shown)
    return followup.json["content"]


async def count(bot: Stablehand, table: str) -> int:
    return (await bot.services.db.fetchone(f"SELECT COUNT(*) FROM {table}"))[0]


# ----- /imagine ---------------------------------------------------------------------------------


async def test_an_answer_too_late_for_discord_refunds_the_job_and_logs_no_traceback(
    start: BotFactory,
    fake_discord: FakeDiscord,
    other_process: OtherProcess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = await start(ack_deadline=3600)  # no deferral: the answer itself comes too late
    await meets_locks_quickly(bot)
    await other_process.take_write_lock()
    payload = payloads.slash_command("imagine", {"prompt": "a pony astronaut"})
    fake_discord.deliver(bot, payload)
    await until_refused_once(bot)
    fake_discord.advance(fake_discord.ack_deadline + 1)
    await other_process.release_write_lock()

    withdrawn = await wait_for_state(bot.services, 1, "cancelled")
    assert withdrawn.error == "its progress message could not be posted"
    holds = await bot.services.db.fetchall("SELECT state FROM quota_holds")
    assert [h["state"] for h in holds] == ["refunded"]
    await fake_discord.wait_for(lambda r: payload["token"] in r.path and r.status == 404)
    expired = [r for r in caplog.records if "interaction expired" in r.getMessage()]
    assert expired and expired[0].levelname == "WARNING"
    assert not [
        r for r in caplog.records if r.levelname == "ERROR" and r.name == "cogs.common.errors"
    ]


async def test_discord_unreachable_as_the_bot_answers_refunds_and_logs_no_traceback(
    start: BotFactory, fake_discord: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await start(ack_deadline=3600)
    await fake_discord.go_offline()
    try:
        fake_discord.deliver(bot, payloads.slash_command("imagine", {"prompt": "a pony"}))
        withdrawn = await wait_for_state(bot.services, 1, "cancelled")
        told = [r for r in caplog.records if "could not be reached" in r.getMessage()]
        async with asyncio.timeout(30):
            while not told:
                await asyncio.sleep(0.005)
                told = [r for r in caplog.records if "could not be reached" in r.getMessage()]
    finally:
        await fake_discord.go_online()
    assert withdrawn.error == "its progress message could not be posted"
    holds = await bot.services.db.fetchall("SELECT state FROM quota_holds")
    assert [h["state"] for h in holds] == ["refunded"]
    assert told[0].levelname == "WARNING"
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


# SQLite's busy handler gives up on a held lock after 50 ms instead of 5 s, so the bot meets the lock
# at once; these retries still outlast any test, so its work keeps waiting on the lock as before.
PATIENT = TransientRetry(attempts=1_000, base_delay=0.01, max_delay=0.05)


async def meets_locks_quickly(bot: Stablehand) -> None:
    bot.services.db.retry = PATIENT
    await bot.services.db.set_busy_timeout(50)


async def until_refused_once(bot: Stablehand) -> None:
    """The bot has met the other process's lock at least once (its write is waiting)."""
    async with asyncio.timeout(30):
        while bot.services.db.transient_errors == 0:
            await asyncio.sleep(0.005)


async def test_imagine_during_a_lock_that_never_lets_go_says_busy_and_charges_nothing(
    start: BotFactory, fake_discord: FakeDiscord, other_process: OtherProcess
) -> None:
    bot = await impatient(start)
    await other_process.take_write_lock()
    payload = payloads.slash_command("imagine", {"prompt": "a pony astronaut"})
    fake_discord.deliver(bot, payload)
    assert await deferred_then_told(fake_discord, payload) == BUSY
    await other_process.release_write_lock()

    assert await count(bot, "jobs") == 0
    assert await count(bot, "quota_holds") == 0
    assert fake_discord.requests_to("POST", r"/channels/\d+/messages") == [], "no progress message"
    assert_nothing_expired(fake_discord, payload)


async def test_reroll_during_a_lock_that_never_lets_go_says_busy_and_charges_nothing(
    start: BotFactory, fake_discord: FakeDiscord, other_process: OtherProcess
) -> None:
    bot = await start(ack_deadline=FAST_PACING.ack_deadline)
    message = await imagine_result(bot, fake_discord, "a pony astronaut")
    bot.pacing = dataclasses.replace(bot.pacing, ack_deadline=0.0)
    bot.services.db.retry = IMPATIENT
    await bot.services.db.set_busy_timeout(10)
    await other_process.take_write_lock()
    payload = payloads.button_click("sh:reroll:1", message)
    fake_discord.deliver(bot, payload)
    assert await deferred_then_told(fake_discord, payload) == BUSY
    await other_process.release_write_lock()

    assert await count(bot, "jobs") == 1, "only the first job"
    assert await count(bot, "quota_holds") == 1
    assert_nothing_expired(fake_discord, payload)


# ----- /cancel ----------------------------------------------------------------------------------


async def test_cancel_during_a_lock_is_deferred_says_busy_and_the_job_runs_on(
    start: BotFactory,
    fake_discord: FakeDiscord,
    fake_runpod: FakeRunPod,
    other_process: OtherProcess,
) -> None:
    fake_runpod.script(Outcome(status="HANG"))
    bot = await impatient(start)
    imagine = payloads.slash_command("imagine", {"prompt": "a pony"})
    fake_discord.deliver(bot, imagine)
    await wait_for_state(bot.services, 1, "submitted")
    await other_process.take_write_lock()
    payload = payloads.slash_command("cancel", {"job": 1})
    fake_discord.deliver(bot, payload)
    assert await deferred_then_told(fake_discord, payload) == BUSY
    await other_process.release_write_lock()

    assert (await bot.services.jobs.get(1)).state is JobState.SUBMITTED
    assert fake_runpod.requests_for("cancel") == []
    assert_nothing_expired(fake_discord, payload)


# ----- moderators' and managers' changes --------------------------------------------------------

CHANGES = [
    ("quota", "set", {"user": ALICE, "limit": 3}),
    ("quota", "grant", {"user": ALICE, "credits": 5, "reason": "contest"}),
    ("quota", "reset", {"user": ALICE}),
    ("quota", "block", {"user": ALICE, "reason": "spam"}),
    ("quota", "unblock", {"user": ALICE}),
    ("quota", "default", {"limit": 9}),
    ("quota", "role", {"role": payloads.role(501, "vip"), "limit": 40}),
    ("quota", "budget", {"amount": 2.5}),
    ("settings", "channels", {"action": "add", "channel": ART}),
    ("settings", "nsfw", {"policy": "age_restricted_only"}),
    ("settings", "defaults", {"steps": 12}),
    ("settings", "caps", {"max_steps": 40}),
    ("settings", "moderators", {"role": payloads.role(502, "mods")}),
]


@pytest.mark.parametrize(
    ("command", "subcommand", "options"), CHANGES, ids=[f"{c[0]}-{c[1]}" for c in CHANGES]
)
async def test_a_change_during_a_lock_is_deferred_says_busy_and_changes_nothing(
    start: BotFactory,
    fake_discord: FakeDiscord,
    other_process: OtherProcess,
    command: str,
    subcommand: str,
    options: dict,
) -> None:
    bot = await impatient(start)
    await other_process.take_write_lock()
    payload = payloads.slash_command(command, options, subcommand=subcommand, user=MANAGER)
    fake_discord.deliver(bot, payload)
    assert await deferred_then_told(fake_discord, payload) == BUSY
    await other_process.release_write_lock()

    assert await count(bot, "audit_log") == 0
    assert_nothing_expired(fake_discord, payload)


# ----- reads queued behind a write that waits out the lock --------------------------------------

READS = [
    ("jobs", None, {}, "Your jobs"),
    ("usage", None, {}, "Your image credits"),
    ("quota", "show", {"user": ALICE}, "Credits of alice"),
    ("quota", "top", {}, "Top spenders (today)"),
    ("quota", "log", {}, "Audit trail"),
    ("settings", "show", {}, "Server settings"),
]


@pytest.mark.parametrize(
    ("command", "subcommand", "options", "title"),
    READS,
    ids=[" ".join(filter(None, r[:2])) for r in READS],
)
async def test_a_read_behind_a_write_waiting_out_a_lock_is_deferred_then_answered(
    start: BotFactory,
    fake_discord: FakeDiscord,
    other_process: OtherProcess,
    command: str,
    subcommand: str | None,
    options: dict,
    title: str,
) -> None:
    bot = await start(ack_deadline=FAST_PACING.ack_deadline)
    grant = await _stuck_behind_a_write(bot, fake_discord, other_process)
    payload = payloads.slash_command(command, options, subcommand=subcommand, user=MANAGER)
    fake_discord.deliver(bot, payload)
    callback = await fake_discord.wait_for_callback(payload)
    assert (callback.status, callback.json["type"]) == (200, DEFERRED)
    await other_process.release_write_lock()

    followup = await fake_discord.wait_for(
        lambda r: r.path.startswith("/webhooks/") and payload["token"] in r.path
    )
    assert followup.json["embeds"][0]["title"] == title
    assert "Gave" in await deferred_then_told(fake_discord, grant)
    assert_nothing_expired(fake_discord, payload)


async def _stuck_behind_a_write(bot: Stablehand, fake: FakeDiscord, other: OtherProcess) -> dict:
    """Hold the lock while a /quota grant waits it out in SQLite's busy handler, on the bot's one
    connection: every read queues behind it. Returns the grant's payload."""
    bot.pacing = dataclasses.replace(bot.pacing, ack_deadline=0.01)
    await bot.services.db.set_busy_timeout(600_000)
    await other.take_write_lock()
    grant = payloads.slash_command(
        "quota",
        {"user": ALICE, "credits": 5, "reason": "contest"},
        subcommand="grant",
        user=MANAGER,
    )
    fake.deliver(bot, grant)
    assert (await fake.wait_for_callback(grant)).json["type"] == DEFERRED
    return grant


@pytest.mark.parametrize("button", ["details", "reroll"])
async def test_a_result_button_behind_a_write_waiting_out_a_lock_is_deferred_then_does_its_job(
    start: BotFactory, fake_discord: FakeDiscord, other_process: OtherProcess, button: str
) -> None:
    bot = await start(ack_deadline=FAST_PACING.ack_deadline)
    message = await imagine_result(bot, fake_discord, "a pony astronaut")
    grant = await _stuck_behind_a_write(bot, fake_discord, other_process)
    payload = payloads.button_click(f"sh:{button}:1", message)
    fake_discord.deliver(bot, payload)
    callback = await fake_discord.wait_for_callback(payload)
    assert (callback.status, callback.json["type"]) == (200, DEFERRED)
    await other_process.release_write_lock()

    answer = await fake_discord.wait_for(
        lambda r: r.path.startswith("/webhooks/") and payload["token"] in r.path
    )
    if button == "details":
        assert [f.filename for f in answer.files] == ["job1-workflow.json"]
    else:
        assert "job #2" in answer.json["content"]
        rerolled = await wait_for_state(bot.services, 2, "done")
        shown = fake_discord.interactions[payload["token"]].response_message_id
        assert rerolled.message_id == shown, "the deferred answer became the new job's message"
        assert not fake_discord.messages[shown].ephemeral
    assert "Gave" in await deferred_then_told(fake_discord, grant)
    assert_nothing_expired(fake_discord, payload)
