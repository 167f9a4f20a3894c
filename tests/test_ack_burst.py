"""A burst of commands: beyond `Pacing.busy_commands` waiting on the database, each is deferred
at once instead of queueing unanswered toward Discord's three seconds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tests.conftest import FAST_PACING, make_settings, start_bot, wait_for_state
from tests.fakes import HANG_GUARD, payloads
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_runpod import FakeRunPod
from tests.test_acknowledgement import DEFERRED
from tests.test_healing import OtherProcess

BOB = payloads.member(payloads.user(2_500_000_000_000_000_002, "bob"))


async def test_a_command_arriving_while_others_wait_on_the_database_is_deferred_at_once(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> None:
    # Only the burst rule can defer here: the ordinary deadline is far away.
    pacing = dataclasses.replace(FAST_PACING, ack_deadline=HANG_GUARD, busy_commands=1)
    settings = make_settings(tmp_path, fake_runpod)
    bot = await start_bot(settings, fake_discord, pacing=pacing)
    holder = OtherProcess(settings.database_path)
    try:
        await holder.take_write_lock()
        first = payloads.slash_command("imagine", {"prompt": "a pony astronaut"})
        second = payloads.slash_command("imagine", {"prompt": "a pony pilot"}, user=BOB)
        fake_discord.deliver(bot, first)
        fake_discord.deliver(bot, second)
        # Sent while the lock is still held: no work could have finished, no deadline passed.
        callback = await fake_discord.wait_for_callback(second)
        assert (callback.status, callback.json["type"]) == (200, DEFERRED)
        assert fake_discord.interactions[second["token"]].acknowledged
        await holder.release_write_lock()
        for job_id in (1, 2):
            await wait_for_state(bot.services, job_id, "done")
    finally:
        holder.close()
        await bot.close()
