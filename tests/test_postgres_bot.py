"""The whole bot on PostgreSQL: Discord and RunPod are the fakes, the database a real server."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from bot import heartbeat
from bot.app import Stablehand
from bot.postgres import PostgresDatabase
from tests.conftest import (
    HANG_GUARD,
    imagine_result,
    make_settings,
    reply_to,
    start_bot,
    wait_for_job,
    wait_for_state,
)
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_runpod import FakeRunPod, Outcome


@pytest_asyncio.fixture
async def bot_on_postgresql(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord, postgres_dsn: str
) -> AsyncIterator[Stablehand]:
    settings = make_settings(tmp_path, fake_runpod, DATABASE_URL=postgres_dsn)
    running = await start_bot(settings, fake_discord)
    yield running
    await running.close()


async def test_an_imagine_is_delivered_and_its_credits_held_then_captured(
    bot_on_postgresql: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    bot = bot_on_postgresql
    assert isinstance(bot.services.db, PostgresDatabase)
    fake_runpod.script(Outcome("HANG"))
    payload = payloads.slash_command("imagine", {"prompt": "a pony astronaut"})
    await reply_to(bot, fake_discord, payload)
    [job] = await bot.services.jobs.recent(payloads.GUILD_ID, payloads.MEMBER_ID)
    job = await wait_for_state(bot.services, job.id, "submitted")
    held = await bot.services.quotas.balance(payloads.GUILD_ID, payloads.MEMBER_ID)
    assert (held.used, held.held) == (job.cost, job.cost), "held while RunPod has it"

    assert job.backend_id is not None
    fake_runpod.finish(job.backend_id, Outcome())
    message_id = fake_discord.interactions[payload["token"]].response_message_id
    await fake_discord.wait_for(
        lambda r: (
            r.method == "PATCH" and r.path.endswith(f"/messages/{message_id}") and bool(r.files)
        ),
        timeout=HANG_GUARD,
    )
    assert fake_discord.message_payload(message_id)["attachments"], "the images are posted"
    done = await wait_for_state(bot.services, job.id, "done")
    assert len(fake_runpod.requests_for("run")) == 1
    trail = [to for _, to, _ in await bot.services.jobs.events(done.id)]
    assert trail[0] == "accepted" and trail[-1] == "done"
    holds = await bot.services.db.fetchall(
        "SELECT state, credits FROM quota_holds WHERE job_id = $1", (done.id,)
    )
    assert [(h["state"], h["credits"]) for h in holds] == [("captured", done.cost)]
    captured = await bot.services.quotas.balance(payloads.GUILD_ID, payloads.MEMBER_ID)
    assert (captured.used, captured.held) == (done.cost, 0)


async def test_health_reports_the_leases_held_and_the_last_claim(
    bot_on_postgresql: Stablehand, fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    bot = bot_on_postgresql
    await imagine_result(bot, fake_discord, "a pony astronaut")
    path = tmp_path / "beat"
    heartbeat.write(path, dataclasses.replace(bot._beat(), connected=True))
    healthy, why = heartbeat.check(path)
    assert healthy and re.search(r"; 1 job leases held, last claim \d+ s ago$", why), why
    [job] = await bot.services.jobs.recent(payloads.GUILD_ID, payloads.MEMBER_ID)
    await wait_for_job(bot.services, job.id, lambda stored: stored.delivered_at is not None)
    await bot.services.jobs.leases.renew()  # the job has ended and been told: its lease goes
    heartbeat.write(path, dataclasses.replace(bot._beat(), connected=True))
    assert re.search(r"; 0 job leases held, last claim \d+ s ago$", heartbeat.check(path)[1])
