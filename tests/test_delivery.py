"""Progress and delivery through the fake Discord: late results, lost messages, big files, many jobs."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from bot.app import Pacing, Stablehand
from tests.conftest import FAST, make_settings, reply_to, result_edit, wait_for_job, wait_for_state
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord, RecordedRequest
from tests.fakes.fake_runpod import FakeRunPod, Outcome

CHANNEL = payloads.CHANNEL_ID


async def _started(bot: Stablehand, fake: FakeDiscord, prompt: str, **kwargs) -> tuple[dict, int]:
    payload = payloads.slash_command("imagine", {"prompt": prompt}, **kwargs)
    await reply_to(bot, fake, payload)
    return payload, fake.interactions[payload["token"]].response_message_id


async def test_progress_is_shown_in_the_jobs_own_message(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.workers = {"idle": 0, "ready": 0, "running": 0, "initializing": 1}
    fake_runpod.script(Outcome(status="STUCK", queue_delay=3600))
    _, message_id = await _started(bot, fake_discord, "a pony")

    def showing(words: str) -> Callable[[RecordedRequest], bool]:
        return lambda r: r.method == "PATCH" and words in str((r.json or {}).get("content"))

    # Each phase lasts until the member has been shown it, however slowly this machine runs.
    await fake_discord.wait_for(showing("Waiting for a GPU worker to start"))
    [job_id] = fake_runpod.jobs
    fake_runpod.start_running(job_id)
    await fake_discord.wait_for(showing("Generating"))
    fake_runpod.finish(job_id)
    await fake_discord.wait_for(result_edit(message_id))
    shown = [
        r.json["content"]
        for r in fake_discord.requests
        if r.method == "PATCH" and r.json and r.json.get("content")
    ]
    assert any("Waiting for a GPU worker to start" in text for text in shown)
    assert any("Generating" in text for text in shown)
    assert shown[-1].startswith(f"<@{payloads.MEMBER_ID}> · job #1")


async def test_a_job_outliving_its_interaction_token_still_lands(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(status="HANG"))
    payload, message_id = await _started(bot, fake_discord, "a slow pony")
    await fake_runpod.wait_for_requests("run", 1)
    fake_discord.advance(fake_discord.token_ttl + 60)  # the 15-minute token is long gone
    fake_runpod.finish(next(iter(fake_runpod.jobs)))
    edit = await fake_discord.wait_for(result_edit(message_id), timeout=10)
    assert edit.status == 200 and edit.path == f"/channels/{CHANNEL}/messages/{message_id}"
    webhook_calls = fake_discord.requests_to("*", rf"/webhooks/.*{payload['token']}.*")
    assert webhook_calls == [], "nothing went through the expired interaction token"


async def test_a_deleted_progress_message_gets_a_fresh_post_recorded_at_once(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(status="HANG"))
    _, message_id = await _started(bot, fake_discord, "a pony")
    await fake_runpod.wait_for_requests("run", 1)
    fake_discord.delete_message(message_id)
    fake_runpod.finish(next(iter(fake_runpod.jobs)))
    post = await fake_discord.wait_for(
        lambda r: r.method == "POST" and r.path == f"/channels/{CHANNEL}/messages" and bool(r.files)
    )
    assert post.status == 200
    # The fake records the post before the bot has read the new message's id and stored it.
    job = await wait_for_job(bot.services, 1, lambda stored: stored.message_id != message_id)
    fresh = fake_discord.channel_messages(CHANNEL)[-1]
    assert (job.message_id, job.channel_id) == (fresh.id, CHANNEL) and fresh.attachments
    details = [detail for _, _, detail in await bot.services.jobs.events(1)]
    assert f"message moved to channel={CHANNEL} message={fresh.id}" in details


async def test_a_deleted_channel_sends_the_result_by_dm(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(status="HANG"))
    await _started(bot, fake_discord, "a pony")
    await fake_runpod.wait_for_requests("run", 1)
    fake_discord.delete_channel(CHANNEL)
    fake_runpod.finish(next(iter(fake_runpod.jobs)))
    dm = await fake_discord.wait_for(
        lambda r: (
            r.method == "POST"
            and r.path.startswith("/channels/")
            and bool(r.files)
            and r.path != f"/channels/{CHANNEL}/messages"
            and r.status == 200
        ),
        timeout=10,
    )
    job = await wait_for_state(bot.services, 1, "done")
    assert job.channel_id != CHANNEL
    assert dm.path == f"/channels/{job.channel_id}/messages" and not dm.json.get("components")


async def test_an_upload_over_the_servers_limit_is_shrunk_and_says_so(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(noise=True))
    limit = 600 * 1024  # a 1024x1024 noise PNG is about 3 MB
    _, message_id = await _started(
        bot, fake_discord, "static --count 2", attachment_size_limit=limit
    )
    edit = await fake_discord.wait_for(result_edit(message_id), timeout=20)
    assert edit.status == 200
    assert all(len(f.data) <= limit for f in edit.files) and len(edit.files) == 2
    assert "to fit this server's upload limit" in edit.json["content"]
    assert (await bot.services.jobs.get(1)).filesize_limit == limit


async def test_a_413_from_discord_shrinks_harder(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(noise=True))
    fake_discord.upload_limit = 700 * 1024  # the server really takes less than the interaction said
    _, message_id = await _started(bot, fake_discord, "static")
    edit = await fake_discord.wait_for(
        lambda r: result_edit(message_id)(r) and r.status == 200, timeout=20
    )
    assert len(edit.files[0].data) <= 700 * 1024
    assert any(r.status == 413 for r in fake_discord.requests)


async def test_everyone_mentions_in_a_prompt_never_ping(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    payload, message_id = await _started(bot, fake_discord, "@everyone look <@&1234> at @here")
    edit = await fake_discord.wait_for(result_edit(message_id), timeout=10)
    for request in (await fake_discord.wait_for_callback(payload), edit):
        body = request.json.get("data", request.json)
        assert body["allowed_mentions"]["parse"] == []
        assert "@everyone" not in body.get("content", "").replace("@\u200beveryone", "")


async def test_spoilers_where_the_server_asks_for_them(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await bot.services.guild_settings.update(payloads.GUILD_ID, 1, nsfw_policy="spoiler")
    _, message_id = await _started(bot, fake_discord, "a pony")
    edit = await fake_discord.wait_for(result_edit(message_id), timeout=10)
    assert all(f.filename.startswith("SPOILER_") for f in edit.files)
    age_restricted = payloads.guild_channel(CHANNEL, nsfw=True)
    _, other = await _started(bot, fake_discord, "a pony", channel=age_restricted)
    edit = await fake_discord.wait_for(result_edit(other), timeout=10)
    assert not any(f.filename.startswith("SPOILER_") for f in edit.files)


async def test_an_image_option_is_acknowledged_before_it_is_downloaded(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    picture = io.BytesIO()
    Image.new("RGB", (900, 700), "purple").save(picture, "JPEG")
    upload = fake_discord.host_attachment("me.jpg", picture.getvalue(), "image/jpeg")
    payload = payloads.slash_command(
        "imagine", {"prompt": "make it a pony"}, attachments={"image": upload}
    )
    fake_discord.deliver(bot, payload)
    callback = await fake_discord.wait_for_callback(payload)
    download = await fake_discord.wait_for(
        lambda r: r.method == "GET" and r.path.startswith("/attachments/")
    )
    assert callback.at <= download.at and callback.json["type"] == 5
    await fake_runpod.wait_for_requests("run", 1)
    job_input = fake_runpod.requests_for("run")[0].json["input"]
    assert job_input["images"][0]["name"].startswith("stablehand-")
    assert {n["class_type"] for n in job_input["workflow"].values()} >= {"LoadImage", "VAEEncode"}
    shown = await fake_discord.wait_for(
        lambda r: r.method == "PATCH" and r.path.endswith(f"/{payload['token']}/messages/@original")
    )
    assert shown.status == 200 and "job #1" in shown.json["content"]
    job = await wait_for_state(bot.services, 1, "queued", "submitted", "running", "done")
    assert job.message_id == fake_discord.interactions[payload["token"]].response_message_id


async def test_a_broken_attachment_is_refused_and_nothing_is_charged(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    upload = fake_discord.host_attachment("cat.png", b"this is not a picture", "image/png")
    payload = payloads.slash_command("imagine", {"prompt": "a pony"}, attachments={"image": upload})
    fake_discord.deliver(bot, payload)
    await fake_discord.wait_for_callback(payload)
    followup = await fake_discord.wait_for(
        lambda r: r.method in ("PATCH", "POST") and "/webhooks/" in r.path
    )
    assert "not a PNG, JPEG, WebP or GIF image" in followup.json["content"]
    assert (await bot.services.db.fetchone("SELECT COUNT(*) FROM jobs"))[0] == 0


async def test_a_hundred_jobs_in_one_channel_never_hit_discords_edit_limit(
    tmp_path: Path, fake_runpod: FakeRunPod
) -> None:
    # The fake limits 5 edits per 0.25 s per channel; the bot is told the same (5 per 0.25 s).
    async with FakeDiscord(channel_rate=(5, 0.25)) as fake:
        fake.install()
        settings = make_settings(
            tmp_path,
            fake_runpod,
            MAX_JOBS_IN_FLIGHT="100",
            MEMBER_MAX_IN_FLIGHT="100",
            MEMBER_MAX_QUEUED="100",
            DAILY_CREDITS="1000",
        )
        bot = Stablehand(
            settings,
            timing=FAST,
            pacing=Pacing(message_interval=0.05, channel_burst=4, channel_per_second=16),
        )
        await bot.login(fake.token)
        await bot.start_jobs()
        try:
            fake_runpod.default_outcome = Outcome(queue_delay=0.2, run_delay=0.4)
            users = [payloads.member(payloads.user(3_000 + n, f"u{n}")) for n in range(100)]
            sent = [
                payloads.slash_command("imagine", {"prompt": f"pony {n}"}, user=u)
                for n, u in enumerate(users)
            ]
            for payload in sent:
                fake.deliver(bot, payload)
            for payload in sent:
                await fake.wait_for_callback(payload)
            async with asyncio.timeout(60):
                while (
                    await bot.services.db.fetchone("SELECT COUNT(*) FROM jobs WHERE state = 'done'")
                )[0] < 100:
                    await asyncio.sleep(0.05)
            assert fake.edit_rate_429s == 0
            assert sum(1 for r in fake.requests if r.status == 429) == 0
            # Deferred or not, each job shows in its command's own answer: no channel posts.
            assert fake.requests_to("POST", r"/channels/\d+/messages") == []
        finally:
            await bot.close()
            fake.uninstall()


def test_no_test_here_waits_on_real_discord_rates() -> None:
    assert os.environ.get("STABLEHAND_FAKE_DISCORD_URL") is None
