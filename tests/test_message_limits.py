"""Every text the bot sends fits Discord's limits, however long what went into it.

The fake Discord refuses over-long content, titles, descriptions, fields, footers and embed
totals with the same 400 Discord answers; each test drives the real command code through it.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import discord
import pytest
from discord.utils import MISSING

from bot.app import Stablehand
from cogs.common import outgoing
from tests.conftest import (
    ROOT,
    embed_text,
    imagine_result,
    make_settings,
    reply_to,
    start_bot,
)
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord, check_embeds
from tests.fakes.fake_runpod import FakeRunPod

GUILD = payloads.GUILD_ID
MANAGER = payloads.member(
    payloads.user(2_600_000_000_000_000_001, "owner"), permissions=payloads.PERM_MANAGE_GUILD
)
NINETY_CHANNELS = tuple(3_200_000_000_000_000_000 + n for n in range(90))


async def test_the_refusal_naming_90_allowed_channels_reaches_the_member(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await bot.services.guild_settings.update(GUILD, 1, allowed_channels=NINETY_CHANNELS)
    refused = await reply_to(bot, fake_discord, payloads.slash_command("imagine", {"prompt": "a"}))
    text = refused["content"]
    assert text.startswith(f"On this server images can be made in <#{NINETY_CHANNELS[0]}>, ")
    assert text.endswith(" and 80 more.") and len(text) <= 2000
    assert await bot.services.jobs.recent(GUILD, payloads.MEMBER_ID) == []


async def test_settings_show_with_90_channels_lists_them_within_the_embed(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await bot.services.guild_settings.update(GUILD, 1, allowed_channels=NINETY_CHANNELS)
    shown = await reply_to(
        bot, fake_discord, payloads.slash_command("settings", subcommand="show", user=MANAGER)
    )
    assert f"<#{NINETY_CHANNELS[49]}> and 40 more" in embed_text(shown)


async def test_the_longest_prompt_is_delivered_and_its_details_open(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> None:
    """4,000 characters of markdown (escaping doubles them), five LoRAs with the longest names."""
    bot = await start_bot(
        make_settings(tmp_path, fake_runpod, MAX_PROMPT_LENGTH="4000"), fake_discord
    )
    try:
        loras = "".join(f"<lora:{chr(97 + n) * 100}:0.5>" for n in range(5))
        prompt = "*_" * ((4000 - len(loras)) // 2) + loras
        message = await imagine_result(bot, fake_discord, prompt, options={"negative": "`|" * 1000})
        [embed] = message["embeds"]
        fields = {f["name"]: f["value"] for f in embed["fields"]}
        assert embed["description"].startswith(r"\*\_\*\_")
        assert fields["LoRAs"].count(".safetensors (0.5)") == 5
        assert fields["Seed"] and fields["Credits"]
        [details] = [
            c["custom_id"]
            for row in message["components"]
            for c in row["components"]
            if c["label"] == "Details"
        ]
        said = await reply_to(bot, fake_discord, payloads.button_click(details, message))
        assert said["content"].startswith("**Job #1**") and len(said["content"]) <= 2000
    finally:
        await bot.close()


async def test_a_huge_audit_trail_shows_the_newest_entries_and_counts_the_rest(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    quotas = bot.services.quotas
    for n in range(14):
        await quotas.grant(GUILD, 1, payloads.MEMBER_ID, n + 1, "*" * 200)
    await bot.services.guild_settings.update(
        GUILD, 1, allowed_channels=tuple(range(10**17, 10**17 + 300))
    )
    log = await reply_to(
        bot, fake_discord, payloads.slash_command("quota", subcommand="log", user=MANAGER)
    )
    [embed] = log["embeds"]
    lines = embed["description"].split("\n")
    assert "set the channels /imagine works in to <#" in lines[0]
    assert "gave <@" in lines[1] and "14 bonus credits" in lines[1]
    assert lines[-1].startswith("… and ") and lines[-1].endswith(" more")


def _many_workflows(directory: Path, count: int) -> list[str]:
    """`count` copies of the bundled test pattern under long names, as an operator might add."""
    directory.mkdir()
    pattern = json.loads((ROOT / "bot" / "templates" / "test-pattern.json").read_text())
    names = [f"community-made-workflow-number-{n:03d}" for n in range(count)]
    for name in names:
        (directory / f"{name}.json").write_text(json.dumps({**pattern, "name": name}))
    return names


async def test_a_refusal_listing_60_workflows_still_reaches_the_member(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> None:
    """The prompt parser lists every workflow; the central error handler fits what it says."""
    names = _many_workflows(tmp_path / "workflows", 60)
    settings = make_settings(tmp_path, fake_runpod, WORKFLOWS_DIR=str(tmp_path / "workflows"))
    bot = await start_bot(settings, fake_discord)
    try:
        imagine = payloads.slash_command("imagine", {"prompt": "a pony --workflow nope"})
        said = await reply_to(bot, fake_discord, imagine)
        assert said["content"].startswith("There is no workflow called `nope`.")
        assert names[0] in said["content"] and said["content"].endswith("…")
        assert said["flags"] & 64 and len(said["content"]) == 2000

        defaults = payloads.slash_command(
            "settings", {"workflow": "nope"}, subcommand="defaults", user=MANAGER
        )
        said = await reply_to(bot, fake_discord, defaults)
        listed = len(bot.services.templates.names())
        assert said["content"].startswith("There is no workflow `nope`. Workflows: `")
        assert said["content"].endswith(f" and {listed - 10} more.")
    finally:
        await bot.close()


# ----- the fitting itself, checked against the fake's copy of Discord's rules ------------------


def _giant_embed() -> discord.Embed:
    embed = discord.Embed(title="t" * 300, description="d" * 5000)
    for n in range(30):
        embed.add_field(name=f"{n}" * 300, value="v" * 2000)
    embed.set_footer(text="f" * 3000)
    embed.set_author(name="a" * 300)
    return embed


def test_a_giant_embed_is_fitted_to_every_limit_discord_checks() -> None:
    with pytest.raises(Exception, match="Invalid Form Body"):
        check_embeds([_giant_embed().to_dict()])
    fitted = outgoing.fit_embed(_giant_embed())
    check_embeds([fitted.to_dict()])
    assert len(fitted.fields) == 25 and fitted.title.startswith("ttt")


def test_an_embed_that_fits_is_sent_as_it_is() -> None:
    embed = discord.Embed(title="Your jobs", description="one\ntwo", colour=0x5865F2)
    embed.add_field(name="Seed", value="`42`")
    embed.set_footer(text="Stop one with /cancel.")
    assert outgoing.fit_embed(embed).to_dict() == embed.to_dict()
    assert outgoing.fit_embed(None) is None and outgoing.fit_embed(MISSING) is MISSING


def test_only_the_longest_texts_give_way_to_the_embed_total() -> None:
    embed = discord.Embed(title="Result", description="p" * 4000)
    for name in ("Negative", "LoRAs", "Sampler"):
        embed.add_field(name=name, value=name[0] * 1000)
    embed.add_field(name="Seed", value="`42`")
    fitted = outgoing.fit_embed(embed)
    check_embeds([fitted.to_dict()])
    assert [f.value for f in fitted.fields][-1] == "`42`" and fitted.title == "Result"
    assert fitted.description.endswith("…") and len(fitted.description) < 4000


@pytest.mark.parametrize(
    ("items", "said"),
    [
        ([], "none"),
        (["#general"], "#general"),
        (["#general", "#art"], "#general and #art"),
        ([f"#c{n}" for n in range(90)], ", ".join(f"#c{n}" for n in range(10)) + " and 80 more"),
    ],
)
def test_lists_are_summarised_where_they_are_built(items: list[str], said: str) -> None:
    assert outgoing.summarise(items) == said


def test_long_lines_are_cut_whole_and_counted() -> None:
    lines = [f"{n:02d} " + "x" * 300 for n in range(40)]
    text = outgoing.lines_within(lines, 4096)
    kept = text.split("\n")
    assert len(text) <= 4096 and kept[-1] == f"… and {40 - (len(kept) - 1)} more"
    assert kept[:-1] == lines[: len(kept) - 1]


# ----- by construction: no message leaves any other way ----------------------------------------

SENDING = {"send", "send_message", "edit", "edit_original_response", "followup"}


def test_every_message_leaves_through_the_fitting_edge() -> None:
    """A send, reply or edit written anywhere but `cogs/common/outgoing.py` would skip the fitting."""
    found = []
    for path in sorted([*(ROOT / "cogs").rglob("*.py"), *(ROOT / "bot").rglob("*.py")]):
        tree = ast.parse(path.read_text())
        if path.name == "outgoing.py" or not _imports_discord(tree):
            continue  # only modules that use discord.py can send to Discord
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in SENDING:
                owner = ast.unparse(node.value)
                if owner != "outgoing":
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {owner}.{node.attr}")
    assert found == []


def _imports_discord(tree: ast.Module) -> bool:
    return any(
        (isinstance(node, ast.Import) and any(a.name.startswith("discord") for a in node.names))
        or (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("discord"))
        for node in ast.walk(tree)
    )
