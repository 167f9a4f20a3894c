"""/imagine's options, /jobs, /cancel, /settings and the error handler, through the fake Discord."""

from __future__ import annotations

import pytest

from bot.app import Stablehand
from bot.jobs import JobState
from bot.prompt import MAX_SEED
from tests.conftest import embed_text, reply_to, wait_for_state
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_runpod import FakeRunPod, Outcome

EPHEMERAL = 64
GUILD = payloads.GUILD_ID
BOB = payloads.member(payloads.user(2_400_000_000_000_000_001, "bob"))
MANAGER = payloads.member(
    payloads.user(2_400_000_000_000_000_002, "owner"), permissions=payloads.PERM_MANAGE_GUILD
)


async def test_every_typed_option_reaches_the_workflow(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    options = {
        "prompt": "a pony --seed 1 --steps 10",
        "negative": "blurry",
        "aspect": "16:9",
        "count": 2,
        "seed": 777,
        "steps": 33,
        "cfg": 5.5,
        "sampler": "DPM++ 2M Karras",
        "workflow": "pony-v6-xl",
    }
    await reply_to(bot, fake_discord, payloads.slash_command("imagine", options))
    job = await bot.services.jobs.get(1)
    request = job.request
    assert (request.seed, request.steps, request.cfg) == (777, 33, 5.5), (
        "typed options win over flags"
    )
    assert (request.width, request.height, request.count) == (1344, 768, 2)
    assert (request.sampler, request.scheduler, request.negative) == (
        "dpmpp_2m",
        "karras",
        "blurry",
    )
    assert job.cost == 3, "two 1344x768 images at 33 steps: 2 x 0.98 MP x 33/25"


async def test_seeds_beyond_discords_integer_range_go_in_the_text(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await reply_to(
        bot,
        fake_discord,
        payloads.slash_command("imagine", {"prompt": f"a pony --seed {MAX_SEED}"}),
    )
    assert (await bot.services.jobs.get(1)).request.seed == MAX_SEED
    [command] = [c for c in await bot.tree.sync() if c.name == "imagine"]
    seed = next(o for o in command.options if o.name == "seed")
    assert seed.max_value == 2**53 - 1 and "--seed" in seed.description


async def test_autocomplete_offers_samplers_and_workflows(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    fake = fake_discord
    sampler = payloads.autocomplete(
        "imagine", {"prompt": "x", "sampler": "karras"}, focused="sampler"
    )
    data = await reply_to(bot, fake, sampler)
    names = [c["name"] for c in data["choices"]]
    assert (
        "DPM++ 2M Karras" in names
        and all("karras" in n.lower() for n in names)
        and len(names) <= 25
    )
    workflow = payloads.autocomplete(
        "imagine", {"prompt": "x", "workflow": "hires"}, focused="workflow"
    )
    data = await reply_to(bot, fake, workflow)
    assert [c["value"] for c in data["choices"]] == ["pony-v6-xl-hires"]


async def test_jobs_lists_a_members_jobs_with_links(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    fake = fake_discord
    fake_runpod.script(Outcome(), Outcome(status="HANG"))
    await reply_to(bot, fake, payloads.slash_command("imagine", {"prompt": "first pony"}))
    await wait_for_state(bot.services, 1, "done")
    await reply_to(bot, fake, payloads.slash_command("imagine", {"prompt": "second pony"}))
    await wait_for_state(bot.services, 2, "submitted")
    data = await reply_to(bot, fake, payloads.slash_command("jobs"))
    text = embed_text(data)
    assert data["flags"] & EPHEMERAL
    heading, second, first = data["embeds"]
    assert heading["title"] == "Your jobs" and "Stop one with /cancel." in heading["description"]
    assert second["title"].endswith("#2 · Waiting for a GPU") and "second pony" in text
    assert second["url"].startswith("https://discord.com/channels/")
    assert first["title"].endswith("#1 · Done")


async def test_cancel_returns_the_credits_and_says_so_in_the_jobs_message(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    fake = fake_discord
    fake_runpod.script(Outcome(status="HANG"))
    await reply_to(bot, fake, payloads.slash_command("imagine", {"prompt": "a pony"}))
    await wait_for_state(bot.services, 1, "submitted")
    choices = await reply_to(bot, fake, payloads.autocomplete("cancel", {"job": ""}, focused="job"))
    [choice] = choices["choices"]
    assert choice["value"] == 1 and choice["name"] == "#1 Waiting for a GPU — a pony"
    data = await reply_to(bot, fake, payloads.slash_command("cancel", {"job": 1}))
    assert data["content"] == "Cancelled job #1. 1 credit refunded."
    assert (await bot.services.quotas.balance(GUILD, payloads.MEMBER_ID)).used == 0
    ended = await fake.wait_for(lambda r: r.method == "PATCH" and "Cancelled" in str(r.json))
    assert "🚫 **Cancelled**" in ended.json["content"]


async def test_only_the_owner_or_a_moderator_can_cancel(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    fake = fake_discord
    fake_runpod.script(Outcome(status="HANG"))
    await reply_to(bot, fake, payloads.slash_command("imagine", {"prompt": "a pony"}))
    await wait_for_state(bot.services, 1, "submitted")
    refused = await reply_to(bot, fake, payloads.slash_command("cancel", {"job": 1}, user=BOB))
    assert "Only the member who started a job, or a moderator" in refused["content"]
    nothing = await reply_to(
        bot, fake, payloads.autocomplete("cancel", {"job": ""}, focused="job", user=BOB)
    )
    assert nothing["choices"] == []
    done = await reply_to(
        bot, fake, payloads.slash_command("cancel", {"job": 1}, user=payloads.moderator_member())
    )
    assert done["content"].startswith("Cancelled job #1 (started by <@")
    assert (await bot.services.jobs.get(1)).state is JobState.CANCELLED


async def test_settings_are_for_managers_and_shape_imagine(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    fake = fake_discord
    refused = await reply_to(
        bot, fake, payloads.slash_command("settings", {"policy": "refuse"}, subcommand="nsfw")
    )
    assert "Manage Server" in refused["content"]
    assert (await bot.services.guild_settings.get(GUILD)).nsfw_policy is None

    said = embed_text(
        await reply_to(
            bot, fake, payloads.slash_command("settings", subcommand="show", user=MANAGER)
        )
    )
    assert "every channel" in said and "`safe_tags`" in said and "50 steps, 4 images" in said

    elsewhere = payloads.guild_channel(3_000_000_000_000_000_001, name="art")
    await reply_to(
        bot,
        fake,
        payloads.slash_command(
            "settings", {"action": "add", "channel": elsewhere}, subcommand="channels", user=MANAGER
        ),
    )
    blocked = await reply_to(bot, fake, payloads.slash_command("imagine", {"prompt": "a pony"}))
    assert "<#3000000000000000001>" in blocked["content"] and blocked["flags"] & EPHEMERAL

    await reply_to(
        bot,
        fake,
        payloads.slash_command(
            "settings", {"action": "allow everywhere"}, subcommand="channels", user=MANAGER
        ),
    )
    await reply_to(
        bot,
        fake,
        payloads.slash_command(
            "settings", {"max_steps": 20, "max_count": 1}, subcommand="caps", user=MANAGER
        ),
    )
    capped = await reply_to(
        bot, fake, payloads.slash_command("imagine", {"prompt": "a pony --steps 30"})
    )
    assert "20 steps" in capped["content"]

    await reply_to(
        bot,
        fake,
        payloads.slash_command(
            "settings", {"steps": 12, "cfg": 6.0}, subcommand="defaults", user=MANAGER
        ),
    )
    await reply_to(
        bot,
        fake,
        payloads.slash_command(
            "settings", {"policy": "age_restricted_only"}, subcommand="nsfw", user=MANAGER
        ),
    )
    refusal = await reply_to(bot, fake, payloads.slash_command("imagine", {"prompt": "a pony"}))
    assert "age-restricted" in refusal["content"]
    nsfw_channel = payloads.guild_channel(payloads.CHANNEL_ID, nsfw=True)
    await reply_to(
        bot, fake, payloads.slash_command("imagine", {"prompt": "a pony"}, channel=nsfw_channel)
    )
    job = await bot.services.jobs.get(1)
    assert (job.request.steps, job.request.cfg) == (12, 6.0)

    role = payloads.role(payloads.MODERATOR_ROLE_ID, "mods")
    named = await reply_to(
        bot,
        fake,
        payloads.slash_command("settings", {"role": role}, subcommand="moderators", user=MANAGER),
    )
    # Discord hides Manage Server commands from the role until the server allows it for them.
    assert "Server Settings → Integrations →" in named["content"]
    assert all(c in named["content"] for c in ("`/quota`", "`/stats`", "`/settings`"))
    log = embed_text(
        await reply_to(bot, fake, payloads.slash_command("quota", subcommand="log", user=MANAGER))
    )
    for change in (
        "set the channels /imagine works in to <#3000000000000000001>",
        "set the steps cap to 20",
        "set the default steps to 12",
        "set the NSFW policy to age_restricted_only",
        f"set the moderator role to <@&{payloads.MODERATOR_ROLE_ID}>",
    ):
        assert change in log, change


async def test_an_unexpected_error_is_one_plain_sentence_and_a_log_line(
    bot: Stablehand, fake_discord: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args, **kwargs):
        raise RuntimeError("database on fire: secret-ish detail")

    bot.services.quotas.balance = broken  # /usage's first step fails
    data = await reply_to(bot, fake_discord, payloads.slash_command("usage"))
    assert data["flags"] & EPHEMERAL
    assert (
        data["content"]
        == "Something went wrong on my side. It has been logged; please try again in a moment."
    )
    assert "database on fire" in caplog.text and "command=usage" in caplog.text


async def test_commands_out_of_date_on_discord_tell_the_member_an_operator_must_sync(
    bot: Stablehand, fake_discord: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    # Discord still shows an older /quota grant whose option was `amount` (now `credits`).
    stale = payloads.slash_command(
        "quota",
        {"user": BOB, "amount": 5, "reason": "contest winner"},
        subcommand="grant",
        user=MANAGER,
    )
    data = await reply_to(bot, fake_discord, stale)
    assert data["flags"] & EPHEMERAL
    assert "python -m bot sync" in data["content"]
    assert "try again" not in data["content"]
    assert (await bot.services.quotas.balance(GUILD, int(BOB["user"]["id"]))).bonus == 0
    warned = [r for r in caplog.records if "python -m bot sync" in r.getMessage()]
    assert warned and all(r.levelname == "WARNING" for r in warned)
    assert "command=quota grant" in warned[0].getMessage()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
