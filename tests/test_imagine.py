"""/imagine end to end: the real bot, the fake Discord, the fake RunPod, a real database."""

from __future__ import annotations

import io
import json

from PIL import Image

from bot.app import Stablehand
from tests.conftest import wait_for_state
from tests.fakes import fake_runpod as fr
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord, RecordedRequest
from tests.fakes.fake_runpod import FakeRunPod, Outcome

CHANNEL = payloads.CHANNEL_ID


def _edit_with_files(request: RecordedRequest) -> bool:
    return (
        request.method == "PATCH"
        and request.path.startswith(f"/channels/{CHANNEL}/messages/")
        and bool(request.files)
    )


def _final_edit(request: RecordedRequest, marker: str) -> bool:
    content = (request.json or {}).get("content") or ""
    return request.method == "PATCH" and marker in content


async def test_imagine_posts_a_1024_png_with_the_seed(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    payload = payloads.slash_command("imagine", {"prompt": "a pony astronaut --seed 4242"})
    fake_discord.deliver(bot, payload)

    callback = await fake_discord.wait_for_callback(payload)
    assert callback.status == 200 and callback.json["type"] == 4
    assert "Queued" in callback.json["data"]["content"]
    message_id = fake_discord.interactions[payload["token"]].response_message_id

    edit = await fake_discord.wait_for(_edit_with_files, timeout=10)
    assert edit.path == f"/channels/{CHANNEL}/messages/{message_id}"
    assert "authorization" in {k.lower() for k in edit.headers}, "delivered with the bot token"
    [file] = edit.files
    image = Image.open(io.BytesIO(file.data))
    assert image.format == "PNG" and image.size == (1024, 1024)
    [embed] = edit.json["embeds"]
    assert {"name": "Seed", "value": "`4242`", "inline": True} in embed["fields"]
    assert edit.json["allowed_mentions"]["parse"] == []

    # The fake records the edit before the bot reads its answer and marks the job done.
    job = await wait_for_state(bot.services, 1, "done")
    assert job.channel_id == CHANNEL and job.message_id == message_id
    submitted = fake_runpod.requests_for("run")[0].json["input"]["workflow"]
    assert any(node["class_type"] == "CLIPSetLastLayer" for node in submitted.values())
    assert len(fake_discord.channel_messages(CHANNEL)) == 1, (
        "the result replaces the progress message"
    )


async def test_a_failed_job_shows_a_short_reason_and_no_attachment(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(status="FAILED", error=fr.ERROR_VALIDATION))
    fake_discord.deliver(bot, payloads.slash_command("imagine", {"prompt": "a pony"}))
    edit = await fake_discord.wait_for(lambda r: _final_edit(r, "Failed"), timeout=10)
    content = edit.json["content"]
    assert "missing.safetensors" in content and "refunded" in content
    assert "Traceback" not in content and "{'type'" not in content and len(content) < 600
    assert not edit.files and edit.json.get("attachments") == []


async def test_a_bad_prompt_is_refused_privately_and_nothing_is_stored(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    payload = payloads.slash_command("imagine", {"prompt": "a cat --ar 5:1"})
    fake_discord.deliver(bot, payload)
    callback = await fake_discord.wait_for_callback(payload)
    data = callback.json["data"]
    assert data["flags"] & 64, "ephemeral"
    assert "--ar 21:9" in data["content"]
    assert (await bot.services.db.fetchone("SELECT COUNT(*) FROM jobs"))[0] == 0
    assert fake_runpod.requests_for("run") == []


async def test_all_cogs_load_and_commands_sync_without_clashes(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    names = [command.name for command in bot.tree.get_commands()]
    assert len(names) == len(set(names)) and "imagine" in names
    synced = await bot.tree.sync()
    assert {c.name for c in synced} == set(names)
    assert json.dumps(fake_discord.commands)  # the fake validated every command definition
