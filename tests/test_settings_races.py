"""Two moderators changing /settings at the same moment: both changes stay, the audit log agrees."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from bot import audit
from bot.app import Stablehand
from bot.db import Database
from bot.guild_settings import GuildSettings, GuildSettingsStore
from cogs.common import audit_lines
from tests.conftest import answer_to
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord

GUILD = payloads.GUILD_ID
ALICE = payloads.member(
    payloads.user(2_500_000_000_000_000_001, "alice"), permissions=payloads.PERM_MANAGE_GUILD
)
BOB = payloads.member(
    payloads.user(2_500_000_000_000_000_002, "bob"), permissions=payloads.PERM_MANAGE_GUILD
)
CHANNELS = [payloads.guild_channel(3_100_000_000_000_000_000 + n, name=f"c{n}") for n in range(6)]


def _settings(subcommand: str, options: dict, user: dict) -> dict:
    return payloads.slash_command("settings", options, subcommand=subcommand, user=user)


async def _all_at_once(bot: Stablehand, fake: FakeDiscord, *interactions: dict) -> list[dict]:
    """Hand every interaction to the bot before any is answered, then collect the answers."""
    for payload in interactions:
        fake.deliver(bot, payload)
    # So many at once may be deferred (a crowd): then the answer is the followup.
    return [await answer_to(fake, payload) for payload in interactions]


async def test_nsfw_and_caps_changed_at_once_both_stay(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    store = bot.services.guild_settings
    await store.get(GUILD)  # a warm cache is where the lost update came from
    await _all_at_once(
        bot,
        fake_discord,
        _settings("nsfw", {"policy": "age_restricted_only"}, ALICE),
        _settings("caps", {"max_steps": 20}, BOB),
    )
    for settings in (await store.get(GUILD), await GuildSettingsStore(bot.services.db).get(GUILD)):
        assert (settings.nsfw_policy, settings.max_steps) == ("age_restricted_only", 20)
    log = [audit_lines.said(e) for e in await audit.entries(bot.services.db, GUILD)]
    assert sorted(log) == ["set the NSFW policy to age_restricted_only", "set the steps cap to 20"]


async def test_channels_added_at_once_are_all_allowed(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    store = bot.services.guild_settings
    await store.get(GUILD)
    answers = await _all_at_once(
        bot,
        fake_discord,
        *(
            _settings("channels", {"action": "add", "channel": channel}, (ALICE, BOB)[n % 2])
            for n, channel in enumerate(CHANNELS)
        ),
    )
    wanted = {int(c["id"]) for c in CHANNELS}
    assert set((await store.get(GUILD)).allowed_channels or ()) == wanted
    assert set((await GuildSettingsStore(bot.services.db).get(GUILD)).allowed_channels) == wanted
    assert all(a["content"].startswith("Added <#") for a in answers)
    log = [audit_lines.said(e) for e in await audit.entries(bot.services.db, GUILD)]
    oldest_first = list(reversed(log))
    assert oldest_first[0].startswith("set the channels /imagine works in to <#")
    assert all(d.startswith("added <#") for d in oldest_first[1:]) and len(log) == len(CHANNELS)
    assert {int(i) for d in log for i in re.findall(r"<#(\d+)>", d)} == wanted


async def test_a_channel_removed_while_another_is_added_stays_removed(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    store = bot.services.guild_settings
    first, second, third = (int(c["id"]) for c in CHANNELS[:3])
    await store.update(GUILD, 1, allowed_channels=(first, second))
    await _all_at_once(
        bot,
        fake_discord,
        _settings("channels", {"action": "remove", "channel": CHANNELS[0]}, ALICE),
        _settings("channels", {"action": "add", "channel": CHANNELS[2]}, BOB),
    )
    assert set((await store.get(GUILD)).allowed_channels) == {second, third}


async def test_two_processes_changing_different_settings_keep_both(tmp_path: Path) -> None:
    """A second connection (another process, the same file) never sees the first one's cache."""
    path = tmp_path / "settings.db"
    one, two = await Database.open(path), await Database.open(path)
    try:
        mine, theirs = GuildSettingsStore(one), GuildSettingsStore(two)
        await mine.get(GUILD)
        await theirs.update(GUILD, 7, nsfw_policy="spoiler", allowed_channels=(11,))
        await asyncio.gather(
            mine.update(GUILD, 8, max_count=2),
            mine.add_channel(GUILD, 8, 12),
            mine.update(GUILD, 9, default_steps=15),
        )
        for store in (mine, GuildSettingsStore(two)):
            settings = await store.get(GUILD)
            assert settings.nsfw_policy == "spoiler"
            assert (settings.max_count, settings.default_steps) == (2, 15)
            assert settings.allowed_channels == (11, 12)
    finally:
        await one.close()
        await two.close()


async def test_a_change_refused_inside_its_transaction_writes_nothing(db: Database) -> None:
    """/settings defaults checks the cap it reads in the same transaction as its write."""
    store = GuildSettingsStore(db)
    await store.update(GUILD, 1, max_steps=20, nsfw_policy="off")

    def above_the_cap(current: GuildSettings) -> dict[str, int]:
        raise ValueError(f"{current.max_steps} is the cap")

    with pytest.raises(ValueError, match="20 is the cap"):
        await store.change(GUILD, 2, above_the_cap)
    assert (await store.get(GUILD)).max_steps == 20
    assert (await GuildSettingsStore(db).get(GUILD)).nsfw_policy == "off"
    assert [e.moderator_id for e in await audit.entries(db, GUILD)] == [1, 1]
