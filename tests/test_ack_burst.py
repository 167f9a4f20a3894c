"""Deferring costs nothing a member can see: a deferred /imagine shows its job in its own answer
(the public "thinking..." edited into the progress message, no channel post), refusals after a
deferral stay private, and a burst of commands is deferred at once instead of queueing.

All through the fake Discord, the bot's SQLite file (a second real connection holds its write lock
where work must wait) and the real job manager on the fake RunPod.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from bot.app import Stablehand
from tests.conftest import FAST_PACING, make_settings, start_bot, wait_for_state
from tests.fakes import HANG_GUARD, payloads
from tests.fakes.fake_discord import FakeDiscord, FakeMessage, RecordedRequest
from tests.fakes.fake_runpod import FakeRunPod
from tests.test_acknowledgement import (
    DEFERRED,
    EPHEMERAL,
    assert_nothing_expired,
    meets_locks_quickly,
    until_refused_once,
)
from tests.test_healing import OtherProcess

ANSWERED = 4  # CHANNEL_MESSAGE_WITH_SOURCE: the answer itself, no deferral
BOB = payloads.member(payloads.user(2_500_000_000_000_000_002, "bob"))
CAROL = payloads.member(payloads.user(2_500_000_000_000_000_003, "carol"))

BotFactory = Callable[..., Awaitable[Stablehand]]


@pytest_asyncio.fixture
async def start(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> AsyncIterator[BotFactory]:
    """Starts the bot with the given pacing changes; closes it at teardown."""
    started: list[Stablehand] = []

    async def factory(**pacing: float) -> Stablehand:
        bot = await start_bot(
            make_settings(tmp_path, fake_runpod),
            fake_discord,
            pacing=dataclasses.replace(FAST_PACING, **pacing),
        )
        started.append(bot)
        return bot

    yield factory
    for bot in started:
        await bot.close()


@pytest.fixture
def other_process(tmp_path: Path) -> Iterator[OtherProcess]:
    holder = OtherProcess(make_settings(tmp_path).database_path)
    yield holder
    holder.close()


def channel_posts(fake: FakeDiscord) -> list[RecordedRequest]:
    """Messages the bot posted into a channel with its token (what Discord rate-limits)."""
    return fake.requests_to("POST", r"/channels/\d+/messages")


def seen_by_others(fake: FakeDiscord) -> list[FakeMessage]:
    """What anyone else in the channel can read now."""
    return [m for m in fake.channel_messages(payloads.CHANNEL_ID) if not m.ephemeral]


async def publicly_deferred(fake: FakeDiscord, payload: dict) -> None:
    callback = await fake.wait_for_callback(payload)
    assert (callback.status, callback.json["type"]) == (200, DEFERRED)
    assert not (callback.json.get("data") or {}).get("flags", 0) & EPHEMERAL


async def private_answer(fake: FakeDiscord, payload: dict) -> FakeMessage:
    """The followup only the member sees, after the public "thinking..." was withdrawn."""
    followup = await fake.wait_for(
        lambda r: (
            r.method == "POST" and r.path.startswith("/webhooks/") and payload["token"] in r.path
        )
    )
    assert followup.status == 200
    record = fake.interactions[payload["token"]]
    assert fake.messages[record.response_message_id].deleted, "the thinking message is gone"
    (message_id,) = record.followup_ids
    return fake.messages[message_id]


async def test_a_deferred_imagine_shows_its_job_in_its_own_answer_not_a_channel_post(
    start: BotFactory, fake_discord: FakeDiscord, other_process: OtherProcess
) -> None:
    bot = await start(ack_deadline=0.01)
    await other_process.take_write_lock()
    payload = payloads.slash_command("imagine", {"prompt": "a pony astronaut"})
    fake_discord.deliver(bot, payload)
    await publicly_deferred(fake_discord, payload)  # sent while the job could not be accepted yet
    fake_discord.advance(fake_discord.ack_deadline + 1)  # the lock outlasts Discord's deadline
    await other_process.release_write_lock()

    done = await wait_for_state(bot.services, 1, "done")
    answer = fake_discord.interactions[payload["token"]].response_message_id
    assert (done.channel_id, done.message_id) == (payloads.CHANNEL_ID, answer)
    shown = fake_discord.messages[answer]
    assert not shown.ephemeral and not shown.loading and not shown.deleted
    assert [f.filename for f in shown.attachments], "the result went into that same message"
    assert channel_posts(fake_discord) == []
    assert seen_by_others(fake_discord) == [shown]
    assert_nothing_expired(fake_discord, payload)


async def test_an_imagine_with_nothing_in_its_way_is_answered_with_its_job_at_once(
    start: BotFactory, fake_discord: FakeDiscord
) -> None:
    bot = await start(ack_deadline=HANG_GUARD)
    payload = payloads.slash_command("imagine", {"prompt": "a pony astronaut"})
    fake_discord.deliver(bot, payload)
    callback = await fake_discord.wait_for_callback(payload)
    assert (callback.status, callback.json["type"]) == (200, ANSWERED)
    assert "job #1" in callback.json["data"]["content"]
    done = await wait_for_state(bot.services, 1, "done")
    assert done.message_id == fake_discord.interactions[payload["token"]].response_message_id
    token_requests = [r for r in fake_discord.requests if payload["token"] in r.path]
    assert token_requests == [callback], "one request: no deferral, no edit of the answer"


async def test_a_refusal_after_a_public_deferral_reaches_only_the_member(
    start: BotFactory, fake_discord: FakeDiscord
) -> None:
    bot = await start(ack_crowd=0)  # any command is a crowd: deferred before its work starts
    await bot.services.guild_settings.update(payloads.GUILD_ID, 1, allowed_channels=(7,))
    payload = payloads.slash_command("imagine", {"prompt": "a pony astronaut"})
    fake_discord.deliver(bot, payload)
    await publicly_deferred(fake_discord, payload)

    refusal = await private_answer(fake_discord, payload)
    assert refusal.ephemeral
    assert refusal.content == "On this server images can be made in <#7>."
    assert seen_by_others(fake_discord) == []
    assert (await bot.services.db.fetchone("SELECT COUNT(*) FROM jobs"))[0] == 0
    assert_nothing_expired(fake_discord, payload)


async def test_a_batch_offered_after_a_public_deferral_is_shown_only_to_its_member(
    start: BotFactory, fake_discord: FakeDiscord
) -> None:
    bot = await start(ack_crowd=0)
    payload = payloads.slash_command("imagine", {"prompt": "a {red, blue} pony"})
    fake_discord.deliver(bot, payload)
    await publicly_deferred(fake_discord, payload)

    offer = await private_answer(fake_discord, payload)
    assert offer.ephemeral and "This makes **2 jobs**" in offer.content
    labels = [b["label"] for row in offer.components for b in row["components"]]
    assert labels == ["Start 2 jobs", "Cancel"]
    assert seen_by_others(fake_discord) == []
    assert (await bot.services.db.fetchone("SELECT COUNT(*) FROM jobs"))[0] == 0


async def test_a_deferred_imagine_whose_answer_cannot_be_shown_is_withdrawn_refunded_and_told(
    start: BotFactory, fake_discord: FakeDiscord
) -> None:
    bot = await start(ack_crowd=0)
    fake_discord.inject("PATCH", r"/webhooks/\d+/[^/]+/messages/@original", 400)
    payload = payloads.slash_command("imagine", {"prompt": "a pony astronaut"})
    fake_discord.deliver(bot, payload)
    await publicly_deferred(fake_discord, payload)

    withdrawn = await wait_for_state(bot.services, 1, "cancelled")
    assert withdrawn.error == "its progress message could not be posted"
    holds = await bot.services.db.fetchall("SELECT state FROM quota_holds")
    assert [h["state"] for h in holds] == ["refunded"]
    told = await private_answer(fake_discord, payload)
    assert told.ephemeral and "Something went wrong" in told.content
    assert seen_by_others(fake_discord) == []


async def test_a_burst_is_deferred_at_once_even_the_commands_already_waiting_on_their_work(
    start: BotFactory, fake_discord: FakeDiscord, other_process: OtherProcess
) -> None:
    # Only the crowd can defer here: the deadline is far away and no work can finish meanwhile.
    bot = await start(ack_deadline=HANG_GUARD, ack_crowd=1)
    await meets_locks_quickly(bot)
    await other_process.take_write_lock()
    first = payloads.slash_command("imagine", {"prompt": "a pony astronaut"})
    fake_discord.deliver(bot, first)
    await until_refused_once(bot)  # its work waits on the lock, its answer on its work
    second = payloads.slash_command("imagine", {"prompt": "a pony pilot"}, user=BOB)
    third = payloads.slash_command("imagine", {"prompt": "a pony sailor"}, user=CAROL)
    fake_discord.deliver(bot, second)
    fake_discord.deliver(bot, third)
    for payload in (first, second, third):
        await publicly_deferred(fake_discord, payload)
    await other_process.release_write_lock()

    for job_id in (1, 2, 3):
        job = await wait_for_state(bot.services, job_id, "done")
        answers = {
            fake_discord.interactions[p["token"]].response_message_id
            for p in (first, second, third)
        }
        assert job.message_id in answers
    assert channel_posts(fake_discord) == []
