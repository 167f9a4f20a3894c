"""Deferring a result button costs nothing a member can see either: a deferred Reroll, Vary,
Upscale or Edit shows its new job in its own answer (the public "thinking..." edited into the
progress message, no channel post, no "Started job" link), a refusal after such a deferral reaches
only the member, and an answer that cannot be shown withdraws and refunds the job. A batch's
Start shows each of its jobs in a public followup of its own, not a channel post.

All through the fake Discord and the real job manager on the fake RunPod; `ack_crowd=0` makes
every click a crowd, so it is deferred before its work starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from bot.app import Stablehand
from tests.conftest import FAST_PACING, imagine_result, make_settings, start_bot, wait_for_state
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_runpod import FakeRunPod
from tests.test_ack_burst import channel_posts, private_answer, publicly_deferred, seen_by_others
from tests.test_acknowledgement import assert_nothing_expired

NEW_JOB = 2  # the job a click starts, after the /imagine that made the clicked result


def _click(action: str) -> Callable[[dict], dict]:
    """The interaction a member sends to start a job with `action` from a result message."""

    def button(message: dict) -> dict:
        custom_ids = [c["custom_id"] for row in message["components"] for c in row["components"]]
        [first, *_] = [c for c in custom_ids if c.startswith(f"sh:{action}:")]
        return payloads.button_click(first, message)

    def edit_submit(message: dict) -> dict:
        fields = {"prompt": "a zebra --seed 9", "negative": ""}
        return payloads.modal_submit("sh:edit:1", fields, message=message)

    return edit_submit if action == "edit" else button


STARTERS = pytest.mark.parametrize(
    "make_click",
    [_click("reroll"), _click("subtle"), _click("strong"), _click("upscale"), _click("edit")],
    ids=["reroll", "vary-subtle", "vary-strong", "upscale", "edit-submit"],
)


@pytest_asyncio.fixture
async def bot(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> AsyncIterator[Stablehand]:
    started = await start_bot(
        make_settings(tmp_path, fake_runpod), fake_discord, pacing=FAST_PACING
    )
    yield started
    await started.close()


async def _result_then_crowded(bot: Stablehand, fake: FakeDiscord) -> dict:
    """A finished /imagine result; from here on every interaction is deferred at once."""
    message = await imagine_result(bot, fake, "a pony astronaut")
    bot.pacing = dataclasses.replace(bot.pacing, ack_crowd=0)
    return message


@STARTERS
async def test_a_deferred_button_shows_its_new_job_in_its_own_answer_not_a_channel_post(
    bot: Stablehand, fake_discord: FakeDiscord, make_click: Callable[[dict], dict]
) -> None:
    result = await _result_then_crowded(bot, fake_discord)
    click = make_click(result)
    fake_discord.deliver(bot, click)
    await publicly_deferred(fake_discord, click)

    done = await wait_for_state(bot.services, NEW_JOB, "done")
    answer = fake_discord.interactions[click["token"]].response_message_id
    assert answer != int(result["id"]), "a message of its own, not the clicked one edited"
    assert (done.channel_id, done.message_id) == (payloads.CHANNEL_ID, answer)
    shown = fake_discord.messages[answer]
    assert not shown.ephemeral and not shown.loading and not shown.deleted
    assert f"job #{NEW_JOB}" in shown.content
    assert [f.filename for f in shown.attachments], "the result went into that same message"
    assert fake_discord.messages[int(result["id"])] in seen_by_others(fake_discord)
    assert channel_posts(fake_discord) == []
    assert not [m for m in fake_discord.messages.values() if "Started job" in m.content]
    assert fake_discord.interactions[click["token"]].followup_ids == [], "one answer, no link"
    assert_nothing_expired(fake_discord, click)


@STARTERS
async def test_a_refusal_after_a_buttons_public_deferral_reaches_only_the_member(
    bot: Stablehand, fake_discord: FakeDiscord, make_click: Callable[[dict], dict]
) -> None:
    result = await _result_then_crowded(bot, fake_discord)
    await bot.services.guild_settings.update(payloads.GUILD_ID, 1, allowed_channels=(7,))
    click = make_click(result)
    fake_discord.deliver(bot, click)
    await publicly_deferred(fake_discord, click)

    refusal = await private_answer(fake_discord, click)
    assert refusal.ephemeral
    assert refusal.content == "On this server images can be made in <#7>."
    assert seen_by_others(fake_discord) == [fake_discord.messages[int(result["id"])]]
    assert (await bot.services.db.fetchone("SELECT COUNT(*) FROM jobs"))[0] == 1
    assert_nothing_expired(fake_discord, click)


@STARTERS
async def test_a_deferred_button_whose_answer_cannot_be_shown_is_withdrawn_refunded_and_told(
    bot: Stablehand, fake_discord: FakeDiscord, make_click: Callable[[dict], dict]
) -> None:
    result = await _result_then_crowded(bot, fake_discord)
    fake_discord.inject("PATCH", r"/webhooks/\d+/[^/]+/messages/@original", 400)
    click = make_click(result)
    fake_discord.deliver(bot, click)
    await publicly_deferred(fake_discord, click)

    withdrawn = await wait_for_state(bot.services, NEW_JOB, "cancelled")
    assert withdrawn.error == "its progress message could not be posted"
    hold = await bot.services.db.fetchone(
        "SELECT state FROM quota_holds WHERE job_id = ?", (NEW_JOB,)
    )
    assert hold["state"] == "refunded"
    told = await private_answer(fake_discord, click)
    assert told.ephemeral and "Something went wrong" in told.content
    assert seen_by_others(fake_discord) == [fake_discord.messages[int(result["id"])]]
    assert channel_posts(fake_discord) == []


async def _batch_offer(bot: Stablehand, fake: FakeDiscord) -> dict:
    """The private confirmation of a two-job /imagine, as its Start click carries it."""
    payload = payloads.slash_command("imagine", {"prompt": "a {red, blue} pony"})
    fake.deliver(bot, payload)
    await fake.wait_for_callback(payload)
    return fake.message_payload(fake.interactions[payload["token"]].response_message_id)


def _start_click(offer: dict) -> dict:
    [start] = [
        c["custom_id"]
        for row in offer["components"]
        for c in row["components"]
        if c["label"] == "Start 2 jobs"
    ]
    return payloads.button_click(start, offer)


async def test_a_started_batch_shows_each_job_in_a_public_followup_not_a_channel_post(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    offer = await _batch_offer(bot, fake_discord)
    click = _start_click(offer)
    fake_discord.deliver(bot, click)
    await fake_discord.wait_for_callback(click)

    jobs = [await wait_for_state(bot.services, job_id, "done") for job_id in (1, 2)]
    followups = fake_discord.interactions[click["token"]].followup_ids
    assert sorted(job.message_id for job in jobs) == sorted(followups)
    for message_id in followups:
        shown = fake_discord.messages[message_id]
        assert not shown.ephemeral and [f.filename for f in shown.attachments]
    assert seen_by_others(fake_discord) == [fake_discord.messages[i] for i in followups]
    assert channel_posts(fake_discord) == []
    assert not [m for m in fake_discord.messages.values() if "Started job" in m.content]
    summary = fake_discord.messages[int(offer["id"])]
    assert summary.ephemeral and summary.content.startswith("Started 2 of 2 jobs:")
    assert_nothing_expired(fake_discord, click)


async def test_a_batch_job_whose_followup_cannot_be_shown_is_withdrawn_refunded_and_told(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    offer = await _batch_offer(bot, fake_discord)
    fake_discord.inject("POST", r"/webhooks/\d+/[^/]+$", 400)
    click = _start_click(offer)
    fake_discord.deliver(bot, click)
    await fake_discord.wait_for_callback(click)

    withdrawn = await wait_for_state(bot.services, 1, "cancelled")
    assert withdrawn.error == "its progress message could not be posted"
    hold = await bot.services.db.fetchone("SELECT state FROM quota_holds WHERE job_id = 1")
    assert hold["state"] == "refunded"
    told = await fake_discord.wait_for(
        lambda r: (
            r.method == "POST"
            and r.path.startswith("/webhooks/")
            and click["token"] in r.path
            and r.status == 200
        )
    )
    assert told.json["flags"] & 64 and "Something went wrong" in told.json["content"]
    assert (await bot.services.db.fetchone("SELECT COUNT(*) FROM jobs"))[0] == 1, "no second job"
    assert seen_by_others(fake_discord) == []
