"""/queue and the gallery through the fake Discord: age-restricted prompts stay where they belong."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.app import Stablehand
from bot.jobs import Job, JobState
from bot.prompt import GenerationRequest
from bot.queue_view import Stage, prompt_may_show, queue_view
from tests.conftest import (
    embed_text,
    imagine_result,
    make_settings,
    reply_to,
    start_bot,
    wait_for_state,
)
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord, RecordedRequest
from tests.fakes.fake_runpod import FakeRunPod, Outcome

GUILD = payloads.GUILD_ID
AFTER_DARK = 1_100_000_000_000_000_101  # an age-restricted channel
GALLERY = 1_100_000_000_000_000_102
GONE = 1_100_000_000_000_000_103
NORMAL = payloads.guild_channel()
RESTRICTED = payloads.guild_channel(AFTER_DARK, name="after-dark", nsfw=True)
THREAD_ID = 1_100_000_000_000_000_104
# A thread says nothing of its own age restriction: its parent's applies.
DARK_THREAD = {
    **payloads.guild_channel(THREAD_ID, name="late thread", type=11, parent_id=AFTER_DARK),
    "owner_id": str(payloads.MEMBER_ID),
    "thread_metadata": {
        "archived": False,
        "auto_archive_duration": 1440,
        "archive_timestamp": payloads.iso(),
        "locked": False,
    },
    "message_count": 0,
    "member_count": 1,
}
DEFERRED = 5


def _job(job_id: int, state: JobState, *, started_at: float | None = None) -> Job:
    request = GenerationRequest("pony-v6-xl", f"prompt {job_id}", "", "", "", 1, 1024, 1024)
    return Job(
        id=job_id, user_id=job_id, guild_id=GUILD, channel_id=1, message_id=None, state=state,
        template="pony-v6-xl", request=request, workflow_json="{}", cost=1, filesize_limit=None,
        backend_id=None, created_at=0.0, submitted_at=None, started_at=started_at,
        finished_at=None, delay_ms=None, execution_ms=None, failure=None, error=None,
        delivered_at=None,
    )  # fmt: skip


def test_waiting_jobs_start_when_the_earliest_slot_frees_in_queue_order() -> None:
    jobs = [
        _job(1, JobState.RUNNING, started_at=90.0),
        _job(2, JobState.SUBMITTED),
        _job(3, JobState.QUEUED),
        _job(4, JobState.QUEUED),
        _job(5, JobState.QUEUED),
    ]
    view = queue_view(jobs, {3: 2, 4: 1, 5: 3}, lambda job: 20.0, slots=2, now=100.0)
    assert [(e.job_id, e.stage) for e in view.running] == [(1, Stage.RUNNING), (2, Stage.AT_GPU)]
    assert [(e.job_id, e.position, e.expected_start) for e in view.waiting] == [
        (4, 1, 110.0),  # job 1 ends at 90 + 20
        (3, 2, 120.0),  # job 2, at RunPod, is expected to end 20 s from now
        (5, 3, 130.0),  # then job 4's slot frees
    ]


def test_a_prompt_from_an_age_restricted_channel_shows_only_in_another() -> None:
    assert prompt_may_show(False, here_age_restricted=False)
    assert prompt_may_show(False, here_age_restricted=True)
    assert prompt_may_show(True, here_age_restricted=True)
    assert not prompt_may_show(True, here_age_restricted=False)
    assert not prompt_may_show(None, here_age_restricted=True)  # a channel we cannot see


async def _imagine_and_hang(
    bot: Stablehand, fake: FakeDiscord, prompt: str, channel: dict, job_id: int
) -> None:
    member = payloads.member(payloads.user(5_000 + job_id, f"member{job_id}"))
    payload = payloads.slash_command("imagine", {"prompt": prompt}, channel=channel, user=member)
    await reply_to(bot, fake, payload)
    await wait_for_state(bot.services, job_id, "queued", "submitted", "running")


async def test_queue_never_shows_an_age_restricted_channels_prompt_in_a_normal_one(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    fake_discord.add_channel(NORMAL)
    fake_discord.add_channel(RESTRICTED)
    fake_runpod.script(Outcome(status="HANG"), Outcome(status="HANG"), Outcome(status="HANG"))
    await _imagine_and_hang(bot, fake_discord, "a sunny meadow", NORMAL, 1)
    await _imagine_and_hang(bot, fake_discord, "velvet midnight secret", RESTRICTED, 2)
    gone = payloads.guild_channel(GONE, name="gone")
    await _imagine_and_hang(bot, fake_discord, "a vanished channel's words", gone, 3)
    fake_discord.delete_channel(GONE)
    fake_discord.add_channel(DARK_THREAD)
    fake_runpod.script(Outcome(status="HANG"))
    await _imagine_and_hang(bot, fake_discord, "whispers in a dark thread", DARK_THREAD, 4)

    here = embed_text(await reply_to(bot, fake_discord, payloads.slash_command("queue")))
    assert "a sunny meadow" in here
    assert "velvet midnight" not in here and "vanished channel" not in here
    assert "dark thread" not in here
    assert here.count("(prompt from another channel)") == 3
    assert all(f"`#{n}`" in here for n in (1, 2, 3, 4))

    there = embed_text(
        await reply_to(bot, fake_discord, payloads.slash_command("queue", channel=RESTRICTED))
    )
    assert "a sunny meadow" in there and "velvet midnight secret" in there
    assert "whispers in a dark thread" in there
    assert "vanished channel" not in there


async def test_an_empty_queue_says_so(bot: Stablehand, fake_discord: FakeDiscord) -> None:
    text = embed_text(await reply_to(bot, fake_discord, payloads.slash_command("queue")))
    assert "Nothing is running or waiting" in text


# ----- gallery ----------------------------------------------------------------------------------


def _share_id(message: dict) -> str:
    ids = [c["custom_id"] for row in message["components"] for c in row["components"]]
    [share] = [i for i in ids if i.startswith("gallery:share:")]
    return share


async def _click(bot: Stablehand, fake: FakeDiscord, payload: dict) -> str:
    """What the member is told after clicking (the answer follows a deferral)."""
    fake.deliver(bot, payload)
    callback = await fake.wait_for_callback(payload)
    if callback.json["type"] != DEFERRED:
        return callback.json["data"]["content"]

    def followup(r: RecordedRequest) -> bool:
        return r.method == "POST" and r.path.startswith("/webhooks/") and payload["token"] in r.path

    return (await fake.wait_for(followup)).json["content"]


def _in_gallery(fake: FakeDiscord) -> list:
    """The gallery's own posts (not the private answers to clicks made there)."""
    return [m for m in fake.channel_messages(GALLERY) if m.webhook_id is None]


def _gallery_posts(fake: FakeDiscord) -> list[RecordedRequest]:
    return fake.requests_to("POST", rf"/channels/{GALLERY}/messages")


async def _with_gallery(bot: Stablehand, fake: FakeDiscord, *, nsfw: bool = False) -> None:
    fake.add_channel(payloads.guild_channel(GALLERY, name="gallery", nsfw=nsfw))
    await bot.services.guild_settings.update(GUILD, 1, gallery_channel_id=GALLERY)


async def test_share_posts_the_image_once_with_its_author_and_prompt(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await _with_gallery(bot, fake_discord)
    result = await imagine_result(bot, fake_discord, "a pony astronaut")
    share = _share_id(result)
    said = await _click(bot, fake_discord, payloads.button_click(share, result))
    assert f"Shared to <#{GALLERY}>" in said
    [post] = _gallery_posts(fake_discord)
    assert post.json["content"].startswith(f"🖼️ <@{payloads.MEMBER_ID}> · job #1")
    assert "a pony astronaut" in post.json["content"]
    assert post.json["allowed_mentions"]["parse"] == []
    [image] = post.files
    assert image.data.startswith(b"\x89PNG")

    again = await _click(bot, fake_discord, payloads.button_click(share, result))
    assert "already in the gallery" in again
    assert len(_gallery_posts(fake_discord)) == 1


async def test_an_age_restricted_image_never_goes_to_a_normal_gallery(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await _with_gallery(bot, fake_discord)
    fake_discord.add_channel(RESTRICTED)
    result = await imagine_result(bot, fake_discord, "a pony after dark", channel=RESTRICTED)
    click = payloads.button_click(_share_id(result), result, channel=RESTRICTED)
    said = await _click(bot, fake_discord, click)
    assert "age-restricted channel and the gallery is not one" in said
    assert _gallery_posts(fake_discord) == []
    assert await bot.services.gallery.existing(1, 0) is None  # nothing claimed: no trace


async def test_an_age_restricted_gallery_takes_an_age_restricted_image(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await _with_gallery(bot, fake_discord, nsfw=True)
    fake_discord.add_channel(RESTRICTED)
    result = await imagine_result(bot, fake_discord, "a pony after dark", channel=RESTRICTED)
    click = payloads.button_click(_share_id(result), result, channel=RESTRICTED)
    assert "Shared to" in await _click(bot, fake_discord, click)
    assert len(_gallery_posts(fake_discord)) == 1


async def test_only_the_author_or_a_moderator_shares_and_no_gallery_is_explained(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    result = await imagine_result(bot, fake_discord, "a pony astronaut")
    share = _share_id(result)
    said = await _click(bot, fake_discord, payloads.button_click(share, result))
    assert "no gallery yet" in said and "/settings gallery" in said
    assert "Manage Server" in said  # who can set one: /settings gallery is for managers only
    await _with_gallery(bot, fake_discord)
    stranger = payloads.member(payloads.user(4_400, "stranger"))
    said = await _click(bot, fake_discord, payloads.button_click(share, result, user=stranger))
    assert "Only the member who made this image" in said
    assert _gallery_posts(fake_discord) == []


async def test_a_moderator_removes_a_share_and_it_is_not_shared_again(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await _with_gallery(bot, fake_discord)
    result = await imagine_result(bot, fake_discord, "a pony astronaut")
    share = _share_id(result)
    await _click(bot, fake_discord, payloads.button_click(share, result))
    [post] = _in_gallery(fake_discord)
    posted = fake_discord.message_payload(post.id)
    [remove] = [c["custom_id"] for row in posted["components"] for c in row["components"]]

    member_try = payloads.button_click(remove, posted)
    assert "Only moderators" in await _click(bot, fake_discord, member_try)
    assert _in_gallery(fake_discord) != []

    by_moderator = payloads.button_click(remove, posted, user=payloads.moderator_member())
    assert "Removed from the gallery" in await _click(bot, fake_discord, by_moderator)
    assert _in_gallery(fake_discord) == []
    again = await _click(bot, fake_discord, payloads.button_click(share, result))
    assert "A moderator removed this image" in again
    assert len(_gallery_posts(fake_discord)) == 1
    log = await reply_to(
        bot,
        fake_discord,
        payloads.slash_command("quota", subcommand="log", user=payloads.moderator_member()),
    )
    assert f"<@{payloads.MODERATOR_ID}> removed image 1 of job #1" in embed_text(log)


async def test_the_gallery_channel_is_a_server_setting(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    gallery = payloads.guild_channel(GALLERY, name="gallery")
    payload = payloads.slash_command(
        "settings", {"channel": gallery}, subcommand="gallery", user=payloads.moderator_member(),
        permissions=payloads.PERM_MANAGE_GUILD,
    )  # fmt: skip
    said = embed_text(await reply_to(bot, fake_discord, payload))
    assert f"Results can now be shared to <#{GALLERY}>" in said
    assert f"**Gallery:** <#{GALLERY}>" in said
    assert (await bot.services.guild_settings.get(GUILD)).gallery_channel_id == GALLERY


async def test_two_clicks_at_once_post_once(bot: Stablehand, fake_discord: FakeDiscord) -> None:
    await _with_gallery(bot, fake_discord)
    result = await imagine_result(bot, fake_discord, "a pony astronaut")
    share = _share_id(result)
    first, second = (payloads.button_click(share, result) for _ in range(2))
    said = await asyncio.gather(_click(bot, fake_discord, first), _click(bot, fake_discord, second))
    assert sum("Shared to" in s for s in said) == 1
    assert len(_gallery_posts(fake_discord)) == 1


async def test_a_share_button_works_after_a_restart(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> None:
    settings = make_settings(tmp_path, fake_runpod)
    before = await start_bot(settings, fake_discord)
    try:
        await _with_gallery(before, fake_discord)
        result = await imagine_result(before, fake_discord, "a pony astronaut")
    finally:
        await before.close()
    after = await start_bot(settings, fake_discord)
    try:
        share = _share_id(result)
        said = await _click(after, fake_discord, payloads.button_click(share, result))
        assert f"Shared to <#{GALLERY}>" in said
        again = await _click(after, fake_discord, payloads.button_click(share, result))
        assert "already in the gallery" in again
    finally:
        await after.close()
    assert len(_gallery_posts(fake_discord)) == 1
