"""/usage and /quota through the fake Discord: replies members and moderators read, and what changes."""

from __future__ import annotations

import pytest

from bot import audit
from bot.app import Stablehand
from tests.conftest import embed_text, reply_to
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord

GUILD = payloads.GUILD_ID
ALICE_ID = 2_200_000_000_000_000_001
ALICE = payloads.member(payloads.user(ALICE_ID, "alice"), roles=(501,))
VIP = payloads.role(501, "vip")
EPHEMERAL = 64


def _quota(subcommand: str, options: dict | None = None, *, moderator: bool = True) -> dict:
    who = payloads.moderator_member() if moderator else payloads.member()
    return payloads.slash_command("quota", options or {}, subcommand=subcommand, user=who)


MODERATOR_COMMANDS = [
    ("show", {"user": ALICE}),
    ("set", {"user": ALICE, "limit": 3}),
    ("grant", {"user": ALICE, "credits": 5, "reason": "contest"}),
    ("reset", {"user": ALICE}),
    ("block", {"user": ALICE, "reason": "spam"}),
    ("unblock", {"user": ALICE}),
    ("default", {"limit": 9}),
    ("role", {"role": VIP, "limit": 40}),
    ("budget", {"amount": 2.5}),
    ("top", {}),
    ("log", {}),
]


@pytest.mark.parametrize(
    ("subcommand", "options"), MODERATOR_COMMANDS, ids=[c[0] for c in MODERATOR_COMMANDS]
)
async def test_a_non_moderator_is_refused_and_nothing_changes(
    bot: Stablehand, fake_discord: FakeDiscord, subcommand: str, options: dict
) -> None:
    data = await reply_to(bot, fake_discord, _quota(subcommand, options, moderator=False))
    assert data["flags"] & EPHEMERAL
    assert "Only moderators" in data["content"]
    db = bot.services.db
    for table in (
        "audit_log",
        "quota_limits",
        "quota_grants",
        "quota_blocks",
        "quota_budgets",
        "quota_resets",
    ):
        assert (await db.fetchone(f"SELECT COUNT(*) FROM {table}"))[0] == 0, table


async def test_the_configured_moderator_role_is_enough(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await bot.services.guild_settings.update(GUILD, 1, moderator_role_id=payloads.MODERATOR_ROLE_ID)
    helper = payloads.member(payloads.user(3_300, "helper"), roles=(payloads.MODERATOR_ROLE_ID,))
    payload = payloads.slash_command("quota", {"amount": 1.0}, subcommand="budget", user=helper)
    data = await reply_to(bot, fake_discord, payload)
    assert "daily GPU budget is now $1.00" in data["content"]


async def test_a_budget_below_a_cent_is_shown_with_its_digits_and_one_bonus_credit_is_singular(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    budget = await reply_to(bot, fake_discord, _quota("budget", {"amount": 0.0001}))
    assert "daily GPU budget is now $0.0001," in budget["content"]
    top = embed_text(await reply_to(bot, fake_discord, _quota("top")))
    assert "$0.00 of $0.0001" in top
    log = embed_text(await reply_to(bot, fake_discord, _quota("log")))
    assert "set the daily budget to $0.0001" in log
    grant = await reply_to(
        bot, fake_discord, _quota("grant", {"user": ALICE, "credits": 1, "reason": "typo"})
    )
    assert grant["content"] == f"Gave <@{ALICE_ID}> 1 bonus credit (typo)."


async def test_each_moderator_command_changes_what_it_says_and_is_audited(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    quotas = bot.services.quotas
    said = {}
    for subcommand, options in MODERATOR_COMMANDS:
        data = await reply_to(bot, fake_discord, _quota(subcommand, options))
        assert data["flags"] & EPHEMERAL, subcommand
        said[subcommand] = embed_text(data)
    assert f"<@{ALICE_ID}> now has 3 credits per day" in said["set"]
    assert said["grant"] == f"Gave <@{ALICE_ID}> 5 bonus credits (contest)."
    assert "full again" in said["reset"]
    assert (
        "Blocked" in said["block"] and "spam" in said["block"] and "/quota unblock" in said["block"]
    )
    assert said["unblock"] == f"Unblocked <@{ALICE_ID}>."
    assert "server default is now 9 credits per day" in said["default"]
    assert "<@&501> now get 40 credits per day" in said["role"]
    assert "$2.50" in said["budget"] and "new images are refused" in said["budget"]
    assert "next day" not in said["budget"].replace("next daily reset", "")
    assert "Nobody has spent anything yet" in said["top"] and "$0.00 of $2.50" in said["top"]
    for action in (
        "limit.member",
        "grant",
        "reset",
        "block",
        "unblock",
        "limit.default",
        "limit.role",
        "budget",
    ):
        assert action in said["log"] or any(
            e.action == action for e in await audit.entries(bot.services.db, GUILD)
        )
    balance = await quotas.balance(GUILD, ALICE_ID, [501])
    assert (balance.limit, balance.bonus, balance.block) == (3, 5, None)
    assert "contest" in said["log"] and f"<@{payloads.MODERATOR_ID}>" in said["log"]


async def test_show_and_usage_tell_a_member_where_they_stand(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await reply_to(bot, fake_discord, _quota("role", {"role": VIP, "limit": 40}))
    await reply_to(
        bot, fake_discord, _quota("block", {"user": ALICE, "reason": "spam", "duration": "2h"})
    )
    shown = embed_text(await reply_to(bot, fake_discord, _quota("show", {"user": ALICE})))
    assert (
        "**40 credits left**" in shown
        and "from the role <@&501>" in shown
        and "Resets <t:" in shown
    )
    assert "⛔ Blocked by" in shown and "spam" in shown

    usage = await reply_to(bot, fake_discord, payloads.slash_command("usage", user=ALICE))
    text = embed_text(usage)
    assert usage["flags"] & EPHEMERAL
    assert (
        "Your image credits" in text
        and "**40 credits left**" in text
        and "Running now: nothing" in text
    )


async def test_a_blocked_member_cannot_imagine_and_hears_why(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await reply_to(bot, fake_discord, _quota("block", {"user": ALICE, "reason": "rule 3"}))
    data = await reply_to(
        bot, fake_discord, payloads.slash_command("imagine", {"prompt": "a cat"}, user=ALICE)
    )
    assert (
        data["flags"] & EPHEMERAL
        and "blocked you from making images here: rule 3" in data["content"]
    )
    assert (await bot.services.db.fetchone("SELECT COUNT(*) FROM jobs"))[0] == 0


async def test_imagine_shows_the_cost_and_what_remains(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await reply_to(bot, fake_discord, _quota("set", {"user": ALICE, "limit": 3}))
    data = await reply_to(
        bot,
        fake_discord,
        payloads.slash_command("imagine", {"prompt": "a cat --ar 16:9"}, user=ALICE),
    )
    assert "Costs 1 credit · 2 left today" in data["content"]
    refused = await reply_to(
        bot,
        fake_discord,
        payloads.slash_command("imagine", {"prompt": "a cat --count 4"}, user=ALICE),
    )
    assert "This needs 4 credits but you have 2 left" in refused["content"]


async def test_a_bad_block_duration_is_explained_and_changes_nothing(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    data = await reply_to(
        bot, fake_discord, _quota("block", {"user": ALICE, "reason": "x", "duration": "soon"})
    )
    assert "is not a duration" in data["content"] and "`12h`" in data["content"]
    assert (await bot.services.db.fetchone("SELECT COUNT(*) FROM quota_blocks"))[0] == 0


async def test_the_audit_trail_says_each_moderator_action_in_the_same_words(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    """The core records values; /quota log words them as the trail always did."""
    quotas, settings = bot.services.quotas, bot.services.guild_settings
    await quotas.block(GUILD, 1, ALICE_ID, "spam", duration=7200)
    await quotas.set_budget(GUILD, 1, 0)
    await settings.update(GUILD, 1, moderator_role_id=501, max_pixels=2**20)
    await settings.update(GUILD, 1, max_pixels=None, allowed_channels=(7, 8))
    await settings.remove_channel(GUILD, 1, 7)
    for subcommand, options in MODERATOR_COMMANDS:
        await reply_to(bot, fake_discord, _quota(subcommand, options))
    log = await reply_to(bot, fake_discord, _quota("log"))
    until = (await audit.entries(bot.services.db, GUILD))[-1].facts["until"]
    said = [
        line.split(">", 2)[2].strip()  # after the timestamp and the moderator's mention
        for line in log["embeds"][0]["description"].split("\n")
    ]
    assert said == [
        "set the daily budget to $2.50",
        f"set the <@&{VIP['id']}> tier to 40 credits per day",
        "set the server default to 9 credits per day",
        f"unblocked <@{ALICE_ID}>",
        f"blocked <@{ALICE_ID}> — spam",
        f"reset <@{ALICE_ID}>'s allowance",
        f"gave <@{ALICE_ID}> 5 bonus credits — contest",
        f"set <@{ALICE_ID}>'s own limit to 3 credits per day",
        "removed <#7> from the channels /imagine works in",
        "set the channels /imagine works in to <#7>, <#8>",
        "reset the pixels-per-image cap to the bot's default",
        "set the pixels-per-image cap to 1.00 MP",
        "set the moderator role to <@&501>",
        "removed the daily budget",
        f"blocked <@{ALICE_ID}> until <t:{int(until)}:R> — spam",
    ]
