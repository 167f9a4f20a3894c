"""Discord shards split between processes: the settings that name them, and a process that
connects exactly its own shards."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bot.app import Stablehand
from bot.config import ConfigError, load_settings
from tests.conftest import FAST, FAST_PACING, HANG_GUARD, connects_at_once, make_settings
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_runpod import FakeRunPod

BASE = {"DISCORD_TOKEN": "t", "RUNPOD_API_KEY": "k", "RUNPOD_ENDPOINT_ID": "e"}


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"DISCORD_SHARD_IDS": "0"}, "DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT"),
        (
            {"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "1,2"},
            "names shard 2, but DISCORD_SHARD_COUNT=2 numbers them 0 to 1",
        ),
        ({"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "1,1"}, "names a shard twice"),
        ({"DISCORD_SHARD_COUNT": "0"}, "DISCORD_SHARD_COUNT='0' must be 1 or more"),
    ],
)
def test_shard_settings_that_cannot_work_are_refused_saying_what_to_fix(
    env: dict[str, str], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=BASE | env, dotenv_path=None)
    assert problem in caught.value.render()


@pytest.mark.parametrize(
    ("env", "identified"),
    [
        ({}, [[0, 1]]),
        ({"DISCORD_SHARD_COUNT": "3", "DISCORD_SHARD_IDS": "1,2"}, [[1, 3], [2, 3]]),
    ],
    ids=["unset-one-shard", "two-of-three"],
)
async def test_a_process_connects_the_shards_its_settings_name_and_no_other(
    tmp_path: Path,
    fake_runpod: FakeRunPod,
    fake_discord: FakeDiscord,
    env: dict[str, str],
    identified: list[list[int]],
) -> None:
    bot = connects_at_once(
        Stablehand(make_settings(tmp_path, fake_runpod, **env), timing=FAST, pacing=FAST_PACING)
    )
    runner = asyncio.create_task(bot.start(fake_discord.token))
    try:
        await asyncio.wait_for(bot.wait_until_ready(), HANG_GUARD)
        assert sorted(bot.shards) == [shard for shard, _ in identified]
    finally:
        await bot.close()
        await asyncio.gather(runner, return_exceptions=True)
    assert sorted(p["shard"] for p in fake_discord.identify_payloads) == identified
