"""/jobs through the fake Discord: pages, whose jobs, and each result's first image."""

from __future__ import annotations

from bot.app import Stablehand
from tests.conftest import reply_to, wait_for_state
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord

EPHEMERAL = 64
BOB = payloads.member(payloads.user(2_300_000_000_000_000_001, "bob"))


async def _make(bot: Stablehand, fake: FakeDiscord, count: int, user: dict | None = None) -> None:
    """`count` finished jobs, one after another (each member may only have so many at once)."""
    for _ in range(count):
        payload = payloads.slash_command("imagine", {"prompt": "a pony"}, user=user)
        await reply_to(bot, fake, payload)
        [job] = await bot.services.jobs.recent(
            payloads.GUILD_ID, int(payload["member"]["user"]["id"]), limit=1
        )
        await wait_for_state(bot.services, job.id, "done")


def _titles(data: dict) -> list[str]:
    """The jobs listed, below the heading, without their icons."""
    return [embed["title"].split(" ", 1)[1] for embed in data["embeds"][1:]]


def _heading(data: dict) -> str:
    return f"{data['embeds'][0]['title']}: {data['embeds'][0]['description']}"


def _page_buttons(data: dict) -> dict[str, dict]:
    return {c["label"]: c for row in data["components"] for c in row["components"]}


async def test_jobs_come_in_pages_of_five_with_older_and_newer_buttons(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await _make(bot, fake_discord, 6)
    command = payloads.slash_command("jobs")
    first = await reply_to(bot, fake_discord, command)
    assert first["flags"] & EPHEMERAL and _heading(first) == "Your jobs: Page 1, newest first."
    assert _titles(first) == [f"#{n} · Done" for n in (6, 5, 4, 3, 2)]
    buttons = _page_buttons(first)
    assert buttons["◀ Newer"].get("disabled") and not buttons["Older ▶"].get("disabled")

    listing = fake_discord.interactions[command["token"]].response_message_id
    older = payloads.button_click(
        buttons["Older ▶"]["custom_id"], fake_discord.message_payload(listing)
    )
    second = await reply_to(bot, fake_discord, older)
    assert _heading(second) == "Your jobs: Page 2, newest first." and _titles(second) == [
        "#1 · Done"
    ]
    assert _heading(fake_discord.message_payload(listing)) == _heading(second), "edited in place"
    buttons = _page_buttons(second)
    assert buttons["Older ▶"].get("disabled") and not buttons["◀ Newer"].get("disabled")


async def test_a_job_list_shows_each_results_first_image(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await _make(bot, fake_discord, 1)
    job = await bot.services.jobs.get(1)
    [attachment] = fake_discord.messages[job.message_id].attachments
    data = await reply_to(bot, fake_discord, payloads.slash_command("jobs"))
    [_, embed] = data["embeds"]
    assert embed["thumbnail"]["url"] == attachment.url
    assert embed["url"].endswith(f"/{job.channel_id}/{job.message_id}")


async def test_moderators_list_everyones_jobs_and_members_only_their_own(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await _make(bot, fake_discord, 1)
    await _make(bot, fake_discord, 1, user=BOB)

    own = await reply_to(bot, fake_discord, payloads.slash_command("jobs", user=BOB))
    assert _titles(own) == ["#2 · Done"]
    refused = await reply_to(
        bot, fake_discord, payloads.slash_command("jobs", {"whose": "all"}, user=BOB)
    )
    assert "Only moderators can do that" in refused["content"] and not refused.get("embeds")

    everyone = await reply_to(
        bot,
        fake_discord,
        payloads.slash_command("jobs", {"whose": "all"}, user=payloads.moderator_member()),
    )
    assert _heading(everyone) == "Everyone's jobs: Page 1, newest first."
    assert _titles(everyone) == ["#2 · Done", "#1 · Done"]
    assert f"<@{BOB['user']['id']}>" in everyone["embeds"][1]["description"]


async def test_the_moderator_role_is_checked_when_the_list_is_asked_for(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await _make(bot, fake_discord, 1)
    role = 3_300_000_000_000_000_001
    helper = payloads.member(payloads.user(2_300_000_000_000_000_002, "helper"), roles=[role])
    ask = payloads.slash_command("jobs", {"whose": "all"}, user=helper)
    assert "Only moderators" in (await reply_to(bot, fake_discord, ask))["content"]

    await bot.services.guild_settings.update(payloads.GUILD_ID, 1, moderator_role_id=role)
    again = payloads.slash_command("jobs", {"whose": "all"}, user=helper)
    assert _titles(await reply_to(bot, fake_discord, again)) == ["#1 · Done"]


async def test_a_list_name_not_offered_is_refused_plainly(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    data = await reply_to(bot, fake_discord, payloads.slash_command("jobs", {"whose": "theirs"}))
    assert (
        data["flags"] & EPHEMERAL
        and data["content"] == "Pick `mine` or `everyone's` from the list."
    )
