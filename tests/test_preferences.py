"""/prefer through the fake Discord: defaults below typed options and flags, shown in Details;
and the ping (or DM) a member gets when a result lands."""

from __future__ import annotations

from bot.app import Stablehand
from tests.conftest import embed_text, reply_to, result_edit, wait_for_state
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord, RecordedRequest
from tests.fakes.fake_runpod import FakeRunPod

EPHEMERAL = 64
MANAGER = payloads.moderator_member()


async def _prefer(bot: Stablehand, fake: FakeDiscord, subcommand: str, **options) -> dict:
    return await reply_to(
        bot, fake, payloads.slash_command("prefer", options, subcommand=subcommand)
    )


async def _imagine(bot: Stablehand, fake: FakeDiscord, prompt: str, **options) -> int:
    """Run /imagine to its result; the job's id."""
    payload = payloads.slash_command("imagine", {"prompt": prompt, **options})
    await reply_to(bot, fake, payload)
    [job] = await bot.services.jobs.recent(payloads.GUILD_ID, payloads.MEMBER_ID, limit=1)
    await wait_for_state(bot.services, job.id, "done")
    return job.id


def _details_button(message: dict) -> str:
    [details] = [
        c["custom_id"]
        for row in message["components"]
        for c in row["components"]
        if c["label"] == "Details"
    ]
    return details


async def test_preferences_apply_to_imagine_and_show_in_details(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    said = await _prefer(bot, fake_discord, "set", aspect="16:9", count=2, negative="blurry, text")
    assert said["flags"] & EPHEMERAL and said["content"] == "Saved: aspect, negative, count."
    shown = embed_text(said)
    assert "**Aspect:** 16:9" in shown and "**Images:** 2" in shown

    job_id = await _imagine(bot, fake_discord, "a pony")
    job = await bot.services.jobs.get(job_id)
    assert (job.request.width, job.request.height, job.request.count) == (1344, 768, 2)
    assert job.request.negative == "blurry, text"
    message = fake_discord.message_payload(job.message_id)
    details = await reply_to(
        bot, fake_discord, payloads.button_click(_details_button(message), message)
    )
    assert "**From preferences:** aspect, count, negative" in details["content"]


async def test_a_typed_option_or_a_flag_wins_over_a_preference(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await _prefer(bot, fake_discord, "set", aspect="16:9", count=2, negative="blurry")

    flagged = await bot.services.jobs.get(
        await _imagine(bot, fake_discord, "a pony --ar 1:1 --no text")
    )
    assert (flagged.request.width, flagged.request.height) == (1024, 1024)
    assert flagged.request.negative == "text" and flagged.request.count == 2
    assert flagged.request.from_preferences == ("count",)

    typed = await bot.services.jobs.get(
        await _imagine(bot, fake_discord, "a pony", aspect="3:4", count=1)
    )
    assert (typed.request.width, typed.request.height, typed.request.count) == (896, 1152, 1)
    assert typed.request.from_preferences == ("negative",)


async def test_a_preferred_count_above_the_servers_cap_is_held_to_the_cap(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await bot.services.guild_settings.update(payloads.GUILD_ID, 1, max_count=1)
    await _prefer(bot, fake_discord, "set", count=4)
    job = await bot.services.jobs.get(await _imagine(bot, fake_discord, "a pony"))
    assert job.request.count == 1


async def test_preferences_reset_one_at_a_time_or_all_at_once(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await _prefer(bot, fake_discord, "set", aspect="16:9", style="ink", ping=False, dm=True)
    one = await _prefer(bot, fake_discord, "reset", which="aspect")
    assert one["content"] == "Reset aspect."
    assert "**Aspect:** not set" in embed_text(one) and "**Style:** ink" in embed_text(one)
    reset = await _prefer(bot, fake_discord, "reset")
    everything = embed_text(reset)
    assert reset["content"] == "Reset all your preferences."
    assert "**Style:** not set" in everything
    assert "**Ping me when a slow result lands:** yes" in everything
    assert "**Results by DM:** no" in everything
    shown = await _prefer(bot, fake_discord, "show")
    assert shown["embeds"] == reset["embeds"]


async def test_nothing_to_set_is_said_and_changes_nothing(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await _prefer(bot, fake_discord, "set", count=3)
    said = await _prefer(bot, fake_discord, "set")
    assert said["content"] == "Nothing to change: pick at least one option."
    assert (await bot.services.preferences.get(payloads.MEMBER_ID)).count == 3


# ----- when the result lands ----------------------------------------------------------------


def _pings(fake: FakeDiscord) -> list[RecordedRequest]:
    return [
        r
        for r in fake.requests
        if r.method == "POST"
        and r.path == f"/channels/{payloads.CHANNEL_ID}/messages"
        and "are ready" in str((r.json or {}).get("content"))
    ]


async def test_a_result_after_a_wait_pings_only_its_member_and_links_it(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await bot.services.guild_settings.update(payloads.GUILD_ID, 1, ping_after=0)
    job = await bot.services.jobs.get(await _imagine(bot, fake_discord, "a pony"))

    [ping] = _pings(fake_discord)
    link = f"https://discord.com/channels/{payloads.GUILD_ID}/{job.channel_id}/{job.message_id}"
    assert (
        ping.json["content"] == f"<@{payloads.MEMBER_ID}> your images for job #1 are ready: {link}"
    )
    mentions = ping.json["allowed_mentions"]
    assert [int(u) for u in mentions["users"]] == [payloads.MEMBER_ID] and mentions["parse"] == []
    assert not mentions.get("replied_user"), "the reply itself pings nobody else"
    assert int(ping.json["message_reference"]["message_id"]) == job.message_id


async def test_a_member_who_turned_pings_off_is_not_pinged(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await bot.services.guild_settings.update(payloads.GUILD_ID, 1, ping_after=0)
    await _prefer(bot, fake_discord, "set", ping=False)
    await _imagine(bot, fake_discord, "a pony")
    assert _pings(fake_discord) == []


async def test_a_quick_result_pings_nobody(bot: Stablehand, fake_discord: FakeDiscord) -> None:
    # An hour: however slowly this machine runs the job, it is quicker than that.
    await bot.services.guild_settings.update(payloads.GUILD_ID, 1, ping_after=3600)
    await _imagine(bot, fake_discord, "a pony")
    assert _pings(fake_discord) == []


async def test_moderators_set_how_long_a_wait_earns_a_ping(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    shown = embed_text(
        await reply_to(
            bot, fake_discord, payloads.slash_command("settings", subcommand="show", user=MANAGER)
        )
    )
    assert "**Ping when a result took:** 30 s or more" in shown
    await reply_to(
        bot,
        fake_discord,
        payloads.slash_command("settings", {"seconds": 120}, subcommand="ping", user=MANAGER),
    )
    assert (await bot.services.guild_settings.get(payloads.GUILD_ID)).ping_after_seconds == 120


async def test_results_go_by_dm_when_the_member_prefers(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    await _prefer(bot, fake_discord, "set", dm=True)
    payload = payloads.slash_command("imagine", {"prompt": "a pony"})
    await reply_to(bot, fake_discord, payload)
    posted = fake_discord.interactions[payload["token"]].response_message_id
    job = await wait_for_state(bot.services, 1, "done")

    assert job.message_id != posted and job.channel_id != payloads.CHANNEL_ID
    assert fake_discord.messages[job.message_id].attachments, "the images are in the DM"
    assert "📬 **Sent by DM**" in fake_discord.message_payload(posted)["content"]
    assert not [r for r in fake_discord.requests if result_edit(posted)(r)]


async def test_closed_dms_bring_the_result_to_the_channel_as_usual(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await _prefer(bot, fake_discord, "set", dm=True)
    # Any channel but the server's is the member's DM: Discord refuses to post there.
    fake_discord.inject("POST", rf"/channels/(?!{payloads.CHANNEL_ID})\d+/messages", 403)
    payload = payloads.slash_command("imagine", {"prompt": "a pony"})
    await reply_to(bot, fake_discord, payload)
    posted = fake_discord.interactions[payload["token"]].response_message_id
    await fake_discord.wait_for(result_edit(posted))
    job = await wait_for_state(bot.services, 1, "done")
    assert (job.channel_id, job.message_id) == (payloads.CHANNEL_ID, posted)
    refused = fake_discord.requests_to("POST", rf"/channels/(?!{payloads.CHANNEL_ID})\d+/messages")
    assert [r.status for r in refused] == [403], "the DM was tried first"
