"""Over 200 hostile prompts, option values and attachments through the real /imagine: each gets a
clear refusal or a safe result; nothing crashes and nothing is charged for a refusal."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

from bot.app import Stablehand
from cogs.common.errors import UNEXPECTED
from tests.comfy_schema import validate
from tests.conftest import FAST, FAST_PACING, make_settings
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_runpod import FakeRunPod
from tests.hostile_corpus import corpus

EPHEMERAL = 64


@pytest_asyncio.fixture
async def idle_bot(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> AsyncIterator[Stablehand]:
    """The bot with jobs not started: accepted requests wait, so each one's workflow can be read."""
    settings = make_settings(
        tmp_path, fake_runpod, DAILY_CREDITS="100000", MEMBER_MAX_QUEUED="1000"
    )
    bot = Stablehand(settings, timing=FAST, pacing=FAST_PACING)
    await bot.login(fake_discord.token)
    yield bot
    await bot.close()


async def _counts(bot: Stablehand) -> tuple[int, int]:
    jobs = await bot.services.db.fetchone("SELECT COUNT(*) FROM jobs")
    holds = await bot.services.db.fetchone("SELECT COUNT(*) FROM quota_holds")
    return jobs[0], holds[0]


async def _answer(bot: Stablehand, fake: FakeDiscord, payload: dict) -> dict:
    """The reply the member sees: the callback, or the followup after a deferral."""
    fake.deliver(bot, payload)
    callback = await fake.wait_for_callback(payload, timeout=15)
    assert callback.status == 200, callback
    if callback.json["type"] != 5:
        return callback.json["data"]
    followup = await fake.wait_for(
        lambda r: (
            r.method == "POST" and r.path.startswith("/webhooks/") and payload["token"] in r.path
        ),
        timeout=15,
    )
    # The followup replaced a private "thinking...", or came after a public one was withdrawn.
    record = fake.interactions[payload["token"]]
    told = fake.messages[(record.followup_ids or [record.response_message_id])[-1]]
    return {**followup.json, "flags": told.flags}


def _problem_with_refusal(data: dict) -> str | None:
    content = data.get("content") or ""
    if content == UNEXPECTED:
        return "crashed into the generic error"
    if (
        "Traceback" in content
        or "Error" in content.split(":")[0]
        or len(content) > 2000
        or not content.strip()
    ):
        return f"unclear refusal: {content[:200]!r}"
    return None


async def test_every_hostile_prompt_and_option_is_refused_clearly_or_made_safely(
    idle_bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    cases = corpus()
    assert len(cases) >= 200
    problems, refused, accepted = [], 0, 0
    for text, options in cases:
        before = await _counts(idle_bot)
        payload = payloads.slash_command("imagine", {"prompt": text, **options})
        data = await _answer(idle_bot, fake_discord, payload)
        label = f"{text[:60]!r} {options}"
        if data.get("flags", 0) & EPHEMERAL:
            refused += 1
            if problem := _problem_with_refusal(data):
                problems.append(f"{label}: {problem}")
            if await _counts(idle_bot) != before:
                problems.append(f"{label}: refused but something was stored or charged")
            continue
        accepted += 1
        if data.get("allowed_mentions", {}).get("parse") != []:
            problems.append(f"{label}: posted with mentions enabled")
        jobs, holds = await _counts(idle_bot)
        if (jobs, holds) != (before[0] + 1, before[1] + 1):
            problems.append(f"{label}: accepted without exactly one job and one hold")
            continue
        job = await idle_bot.services.jobs.get(jobs)
        workflow = json.loads(job.workflow_json)
        if invalid := validate(workflow):
            problems.append(f"{label}: invalid workflow {invalid[:2]}")
    assert not problems, "\n".join(problems)
    assert refused > 100 and accepted > 30, (refused, accepted)


def _png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, "orange").save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("filename", "data", "says"),
    [
        ("cut.png", _png((512, 512))[:100], "damaged or incomplete"),
        ("cat.png", b"I am a text file wearing a .png name", "not a PNG, JPEG, WebP or GIF"),
        ("empty.png", b"", "not a PNG, JPEG, WebP or GIF"),
        ("huge.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * (50 * 2**20), "the limit is 20 MB"),
        ("bomb.png", _png((5000, 5000)), "the limit is 4096x4096"),
    ],
    ids=["truncated-png", "text-named-png", "empty", "50-mb", "decompression-bomb"],
)
async def test_broken_attachments_are_refused_and_cost_nothing(
    idle_bot: Stablehand, fake_discord: FakeDiscord, filename: str, data: bytes, says: str
) -> None:
    upload = fake_discord.host_attachment(filename, data, "image/png")
    payload = payloads.slash_command("imagine", {"prompt": "a pony"}, attachments={"image": upload})
    answer = await _answer(idle_bot, fake_discord, payload)
    assert says in answer["content"]
    assert await _counts(idle_bot) == (0, 0)
