"""The progress message through the fake Discord: a bar with time left, and its Cancel button."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from bot.app import Stablehand
from bot.estimates import Estimate, expected_wait
from cogs.common import progress
from tests.conftest import (
    FAST,
    FAST_PACING,
    make_settings,
    reply_to,
    result_edit,
    start_bot,
    wait_for_state,
)
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord, RecordedRequest
from tests.fakes.fake_runpod import FakeRunPod, Outcome

EPHEMERAL = 64
PERCENT = re.compile(r"(\d+) %")
BOB = payloads.member(payloads.user(2_300_000_000_000_000_001, "bob"))


async def _started(bot: Stablehand, fake: FakeDiscord, prompt: str) -> int:
    payload = payloads.slash_command("imagine", {"prompt": prompt})
    await reply_to(bot, fake, payload)
    return fake.interactions[payload["token"]].response_message_id


def _showing(words: str) -> Callable[[RecordedRequest], bool]:
    return lambda r: r.method == "PATCH" and words in str((r.json or {}).get("content"))


def _progress_texts(fake: FakeDiscord, message_id: int) -> list[str]:
    """Every text the job's message was edited to, in order (the result included)."""
    return [
        r.json["content"]
        for r in fake.requests
        if r.method == "PATCH"
        and r.path.endswith(f"/messages/{message_id}")
        and r.json
        and r.json.get("content")
    ]


def _cancel_button(message: dict) -> str:
    [cancel] = [
        c["custom_id"]
        for row in message.get("components", [])
        for c in row["components"]
        if c.get("label") == "Cancel"
    ]
    return cancel


async def test_generating_shows_a_percentage_and_time_left_before_the_result(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(status="STUCK"))
    message_id = await _started(bot, fake_discord, "a pony")
    await fake_runpod.wait_for_requests("run", 1)
    [job_id] = fake_runpod.jobs
    fake_runpod.start_running(job_id)
    await fake_discord.wait_for(_showing("Generating"))
    fake_runpod.finish(job_id)
    await fake_discord.wait_for(result_edit(message_id))

    texts = _progress_texts(fake_discord, message_id)
    generating = [t for t in texts if "Generating" in t]
    assert generating and texts.index(generating[0]) < len(texts) - 1, "shown before the result"
    for text in generating:
        [percent] = PERCENT.findall(text)
        assert 0 <= int(percent) < 100, text
        assert "left (a first guess)" in text or "taking longer than" in text, text
    assert "%" not in texts[-1]


async def test_a_learned_duration_is_labelled_as_an_estimate_from_recent_runs(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    first = await _started(bot, fake_discord, "a pony")
    await fake_discord.wait_for(result_edit(first))
    await wait_for_state(bot.services, 1, "done")
    request = (await bot.services.jobs.get(1)).request
    bot.services.jobs.durations.observe(request, 60_000)  # as if it had run for a minute

    fake_runpod.script(Outcome(status="STUCK"))
    await _started(bot, fake_discord, "a pony")
    await fake_runpod.wait_for_requests("run", 2)
    [_, job_id] = fake_runpod.jobs
    fake_runpod.start_running(job_id)
    shown = await fake_discord.wait_for(_showing("Generating"))
    assert "estimated from recent runs" in shown.json["content"]
    assert "left" in shown.json["content"]


def test_the_bar_stops_at_99_percent_however_long_a_job_overruns() -> None:
    estimate = Estimate(seconds=20.0, spread=2.0, learned=True)
    halfway = progress.running_line(10.0, estimate)
    overrun = progress.running_line(600.0, estimate)
    assert "50 %" in halfway and "about 10 s left (estimated from recent runs)" in halfway
    assert "99 %" in overrun and "taking longer than the 20 s expected" in overrun
    assert progress.bar(99) == "▰" * 9 + "▱"


def test_durations_read_the_way_people_say_them() -> None:
    assert [progress.duration(s) for s in (0.2, 8, 80, 600, 3_630)] == [
        "1 s",
        "8 s",
        "1 min 20 s",
        "10 min",
        "61 min",
    ]


async def test_cancel_on_the_progress_message_cancels_and_refunds(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(status="HANG"))
    message_id = await _started(bot, fake_discord, "a slow pony --count 2")
    await wait_for_state(bot.services, 1, "submitted")
    message = fake_discord.message_payload(message_id)
    click = payloads.button_click(_cancel_button(message), message)

    data = await reply_to(bot, fake_discord, click)

    assert data["flags"] & EPHEMERAL and data["content"] == "Cancelled job #1. 2 credits refunded."
    assert (await bot.services.jobs.get(1)).state.value == "cancelled"
    assert (await bot.services.quotas.balance(payloads.GUILD_ID, payloads.MEMBER_ID)).used == 0
    await fake_runpod.wait_for_requests("cancel", 1)
    ended = await fake_discord.wait_for(_showing("Cancelled"))
    assert ended.json.get("components") == [], "the ended message keeps no Cancel button"


async def test_cancel_on_the_progress_message_works_after_a_restart(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> None:
    settings = make_settings(tmp_path, fake_runpod)
    fake_runpod.script(Outcome(status="HANG"))
    first = await start_bot(settings, fake_discord)
    message_id = await _started(first, fake_discord, "a slow pony")
    await wait_for_state(first.services, 1, "submitted")
    message = fake_discord.message_payload(message_id)
    await first.close()

    second = await start_bot(settings, fake_discord)
    try:
        click = payloads.button_click(_cancel_button(message), message)
        data = await reply_to(second, fake_discord, click)
        assert data["content"] == "Cancelled job #1. 1 credit refunded."
        balance = await second.services.quotas.balance(payloads.GUILD_ID, payloads.MEMBER_ID)
        assert balance.used == 0
    finally:
        await second.close()


async def test_only_the_member_or_a_moderator_can_cancel_from_the_progress_message(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(status="HANG"))
    message_id = await _started(bot, fake_discord, "a slow pony")
    await wait_for_state(bot.services, 1, "submitted")
    message = fake_discord.message_payload(message_id)
    cancel = _cancel_button(message)

    refused = await reply_to(bot, fake_discord, payloads.button_click(cancel, message, user=BOB))
    assert "Only the member who started a job, or a moderator" in refused["content"]
    assert (await bot.services.jobs.get(1)).state.value == "submitted"

    by_moderator = payloads.button_click(cancel, message, user=payloads.moderator_member())
    data = await reply_to(bot, fake_discord, by_moderator)
    assert data["content"].startswith(f"Cancelled job #1 (started by <@{payloads.MEMBER_ID}>).")


async def test_the_bar_moves_on_between_polls(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> None:
    # One poll an hour while running: any later change of the bar is the board's own tick.
    timing = replace(
        FAST, running_interval=3600.0, running_max_interval=3600.0, dense_interval=3600.0
    )
    pacing = replace(FAST_PACING, progress_tick=0.01)
    bot = await start_bot(
        make_settings(tmp_path, fake_runpod), fake_discord, timing=timing, pacing=pacing
    )
    try:
        fake_runpod.script(Outcome(status="STUCK"))
        message_id = await _started(bot, fake_discord, "a pony")
        await fake_runpod.wait_for_requests("run", 1)
        [job_id] = fake_runpod.jobs
        fake_runpod.start_running(job_id)
        await fake_discord.wait_for(_showing("Generating"))
        polls = len(fake_runpod.requests_for("status"))

        def later_bar(request: RecordedRequest) -> bool:
            texts = [t for t in _progress_texts(fake_discord, message_id) if "Generating" in t]
            return _showing("Generating")(request) and len(set(texts)) >= 2

        await fake_discord.wait_for(later_bar)
        assert len(fake_runpod.requests_for("status")) == polls, "no poll moved it"
    finally:
        await bot.close()


def test_a_queued_job_starts_when_the_jobs_ahead_of_it_have_freed_a_slot() -> None:
    # Two slots: one frees in 5 s, the other in 20 s; two jobs of 10 s wait ahead.
    assert expected_wait(2, [5.0, 20.0], [10.0, 10.0]) == 20.0
    assert expected_wait(2, [5.0, 20.0], []) == 5.0
    assert expected_wait(2, [5.0], []) == 0.0, "a free slot: it starts now"
    assert expected_wait(1, [], [8.0, 8.0, 8.0]) == 24.0
    assert expected_wait(1, [-3.0], []) == 0.0, "an overrunning job frees its slot any moment"


async def test_a_queued_job_shows_its_place_and_when_it_should_start(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> None:
    settings = make_settings(tmp_path, fake_runpod, MAX_JOBS_IN_FLIGHT="1")
    bot = await start_bot(settings, fake_discord)
    try:
        fake_runpod.script(Outcome(status="HANG"))
        await _started(bot, fake_discord, "the first pony")
        await wait_for_state(bot.services, 1, "submitted")
        asked = time.time()
        payload = payloads.slash_command("imagine", {"prompt": "a pony"}, user=BOB)
        await reply_to(bot, fake_discord, payload)
        second = fake_discord.interactions[payload["token"]].response_message_id

        shown = await fake_discord.wait_for(
            lambda r: _showing("Queued** — position 1")(r) and r.path.endswith(f"/{second}")
        )
        [starts] = re.findall(r"expected to start <t:(\d+):R> \(estimate\)", shown.json["content"])
        # The first job has a whole first-guess run (15 s) ahead of it.
        assert int(starts) >= int(asked) + 10
    finally:
        await bot.close()
