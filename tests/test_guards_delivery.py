"""Delivery guards through the fake Discord: the message cap, 413 arithmetic, late progress, 403."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.app import Pacing, Stablehand
from bot.images import MESSAGE_CAP
from bot.jobs import JobUpdate
from tests.conftest import FAST, make_settings, reply_to, result_edit, start_bot, wait_for_state
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_runpod import FakeRunPod, Outcome

CHANNEL = payloads.CHANNEL_ID
BOOSTED = 100 * 2**20  # what a level-3 boosted server reports as its attachment size limit


async def _started(bot: Stablehand, fake: FakeDiscord, prompt: str, **kwargs) -> int:
    payload = payloads.slash_command("imagine", {"prompt": prompt}, **kwargs)
    await reply_to(bot, fake, payload)
    return fake.interactions[payload["token"]].response_message_id


async def test_several_large_images_are_fitted_under_the_25_mb_message_cap(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> None:
    bot = await start_bot(make_settings(tmp_path, fake_runpod, DAILY_CREDITS="100"), fake_discord)
    try:
        # 4 incompressible 1536² PNGs of about 7 MB: each fits the server's 10 MB, all 28 MB do not.
        fake_runpod.script(Outcome(noise=True))
        message_id = await _started(bot, fake_discord, "static --size 1536x1536 --count 4")
        edit = await fake_discord.wait_for(result_edit(message_id), timeout=120)
        assert edit.status == 200 and len(edit.files) == 4
        assert sum(len(f.data) for f in edit.files) <= MESSAGE_CAP
        assert [r for r in fake_discord.requests if r.status == 413] == [], (
            "Discord answered 413: the images went out over its per-message cap"
        )
        assert (await wait_for_state(bot.services, 1, "done")).failure is None
    finally:
        await bot.close()


async def test_after_a_413_the_refused_file_size_is_halved_and_the_result_arrives(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(noise=True))
    # The interaction claims a boosted server, but Discord takes 700 KB: halving the claimed
    # 100 MB would take every attempt before reaching a size that fits.
    fake_discord.upload_limit = 700 * 1024
    message_id = await _started(bot, fake_discord, "static", attachment_size_limit=BOOSTED)
    edit = await fake_discord.wait_for(lambda r: result_edit(message_id)(r) and r.status == 200, 60)
    assert len(edit.files) == 1 and len(edit.files[0].data) <= 700 * 1024
    assert any(r.status == 413 for r in fake_discord.requests)
    job = await wait_for_state(bot.services, 1, "done", "failed")
    assert job.failure is None, f"a deliverable result ended as {job.failure!r}"


@pytest.mark.parametrize(
    ("outcome", "end"), [(Outcome(), "done"), (Outcome(status="FAILED"), "failed")]
)
async def test_a_late_progress_update_never_overwrites_how_the_job_ended(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod, outcome: Outcome, end: str
) -> None:
    board = bot.progress_board
    fake_runpod.script(outcome)
    first = await _started(bot, fake_discord, "a pony")
    ended = await wait_for_state(bot.services, 1, end)
    async with asyncio.timeout(10):  # until the member has been shown how it ended
        while (await bot.services.jobs.get(1)).delivered_at is None:
            await asyncio.sleep(0.005)
    shown = fake_discord.message_payload(first)["content"]
    # A poll answer that was already on its way when the job ended.
    board.update(JobUpdate(ended, "running", elapsed=3.0))
    second = await _started(bot, fake_discord, "another pony")
    await fake_discord.wait_for(
        result_edit(second), timeout=10
    )  # the board has worked through both
    assert fake_discord.message_payload(first)["content"] == shown, "how it ended was overwritten"


async def test_a_fresh_post_names_its_files_after_the_job(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(status="HANG"))
    message_id = await _started(bot, fake_discord, "a pony")
    await fake_runpod.wait_for_requests("run", 1)
    fake_discord.delete_message(message_id)
    fake_runpod.finish(next(iter(fake_runpod.jobs)))
    job = await wait_for_state(bot.services, 1, "done")
    fresh = fake_discord.channel_messages(CHANNEL)[-1]
    assert fresh.id == job.message_id
    assert [a.filename for a in fresh.attachments] == ["stablehand-1-1.png"]


async def test_a_forbidden_channel_sends_the_result_by_dm(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(status="HANG"))
    message_id = await _started(bot, fake_discord, "a pony")
    await fake_runpod.wait_for_requests("run", 1)
    # The bot lost its permissions in the channel: editing and posting there both answer 403.
    forbidden = [403] * 50  # progress edits meet it too
    fake_discord.inject("PATCH", rf"/channels/{CHANNEL}/messages/{message_id}", *forbidden)
    fake_discord.inject("POST", rf"/channels/{CHANNEL}/messages", *forbidden)
    fake_runpod.finish(next(iter(fake_runpod.jobs)))
    job = await wait_for_state(bot.services, 1, "done", "failed")
    assert job.state.value == "done" and job.channel_id != CHANNEL
    dm = [m for m in fake_discord.channel_messages(job.channel_id) if m.id == job.message_id]
    assert dm and [a.filename for a in dm[0].attachments] == ["stablehand-1-1.png"], (
        "the member got the images, named after the job, in a DM"
    )


async def test_progress_is_shown_for_every_waiting_job_in_a_channel(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.default_outcome = Outcome(status="HANG")
    others = [payloads.member(payloads.user(5_000 + n, f"m{n}")) for n in range(3)]
    messages = [await _started(bot, fake_discord, "a pony", user=user) for user in others]
    await fake_runpod.wait_for_requests("run", 3)
    for message_id in messages:
        edit = await fake_discord.wait_for(
            lambda r, m=message_id: (
                r.method == "PATCH"
                and r.path.endswith(f"/messages/{m}")
                and "Waiting" in str(r.json)
                and r.status == 200
            ),
            timeout=10,
        )
        assert edit.status == 200


async def test_a_progress_message_is_edited_at_most_once_per_interval(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> None:
    # Queued, waiting for a GPU, generating: each a new text, all inside one long interval.
    pacing = Pacing(message_interval=60.0, channel_burst=5, channel_per_second=200.0)
    bot = Stablehand(make_settings(tmp_path, fake_runpod), timing=FAST, pacing=pacing)
    await bot.login(fake_discord.token)
    await bot.start_jobs()
    try:
        fake_runpod.workers = {"idle": 0, "ready": 0, "running": 0, "initializing": 1}
        fake_runpod.script(Outcome(queue_delay=0.3, run_delay=0.3))
        message_id = await _started(bot, fake_discord, "a pony")
        await fake_discord.wait_for(result_edit(message_id), timeout=10)
        progress = [
            r
            for r in fake_discord.requests
            if r.method == "PATCH" and r.path.endswith(f"/messages/{message_id}") and not r.files
        ]
        assert len(progress) <= 1, [r.json.get("content") for r in progress]
    finally:
        await bot.close()


async def test_images_too_large_even_when_shrunk_fail_the_job_and_say_why(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    fake_discord.upload_limit = 50  # bytes: no picture fits, however small
    await _started(bot, fake_discord, "a pony")
    job = await wait_for_state(bot.services, 1, "failed", "done", timeout=60)
    assert job.state.value == "failed" and "could not be posted" in job.failure
    assert job.error == "the images are too large for this server even when shrunk"
    hold = await bot.services.db.fetchone("SELECT state FROM quota_holds WHERE job_id = 1")
    assert hold["state"] == "refunded"
