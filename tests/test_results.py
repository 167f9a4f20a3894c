"""The result message: embed, generation data, and every button — also after a restart."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

from PIL import Image

from bot.app import Stablehand
from bot.jobs import JobState
from tests.conftest import imagine_result, make_settings, reply_to, start_bot, wait_for_state
from tests.fakes import HANG_GUARD, payloads
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_runpod import FakeRunPod

EPHEMERAL = 64
BOB_ID = 2_300_000_000_000_000_001
BOB = payloads.member(payloads.user(BOB_ID, "bob"))


def _buttons(message: dict) -> dict[str, str]:
    return {c["label"]: c["custom_id"] for row in message["components"] for c in row["components"]}


async def _new_job_from(bot: Stablehand, fake: FakeDiscord, payload: dict) -> int:
    """Deliver a button click or modal submit that starts a job; return the new job's id."""
    before = {
        job.id
        for job in await bot.services.jobs.recent(
            payloads.GUILD_ID, int(payload["member"]["user"]["id"]), 50
        )
    }
    fake.deliver(bot, payload)
    await fake.wait_for_callback(payload)
    await fake.wait_for(lambda r: r.method == "PATCH" and bool(r.files) and r.at > 0, timeout=10)
    after = await bot.services.jobs.recent(
        payloads.GUILD_ID, int(payload["member"]["user"]["id"]), 50
    )
    [new] = [job for job in after if job.id not in before]
    return new.id


async def test_the_result_shows_every_parameter_and_carries_generation_data(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    message = await imagine_result(
        bot,
        fake_discord,
        "a pony astronaut --seed 4242 --steps 30 --cfg 6.5 --sampler DPM++ 2M Karras",
        options={"negative": "blurry"},
    )
    [embed] = message["embeds"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert embed["description"] == "a pony astronaut"
    assert (
        fields["Negative"] == "blurry"
        and fields["Seed"] == "`4242`"
        and fields["Size"] == "1024×1024"
    )
    assert (fields["Steps"], fields["CFG"], fields["Sampler"], fields["Workflow"]) == (
        "30",
        "6.5",
        "DPM++ 2M Karras",
        "pony-v6-xl",
    )
    assert fields["GPU time"].endswith(" s") and fields["Credits"] == "1 credit · 24 left today"
    # 30 steps at 1.5x the size: the upscale costs 2.25 x 30/25 = 2.7, rounded to 3 credits.
    assert set(_buttons(message)) == {
        "Reroll",
        "Edit",
        "Details",
        "Delete",
        "Vary (subtle)",
        "Vary (strong)",
        "Upscale · 3 credits",
        "Share",
    }
    [attachment] = fake_discord.messages[int(message["id"])].attachments
    parameters = Image.open(io.BytesIO(attachment.data)).text["parameters"]
    assert "a pony astronaut" in parameters and "Negative prompt: " in parameters
    assert (
        "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 4242, Size: 1024x1024"
        in parameters
    )


async def test_reroll_is_charged_to_whoever_clicked_and_changes_only_the_seed(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    message = await imagine_result(bot, fake_discord, "a pony --seed 5 --steps 20")
    click = payloads.button_click(_buttons(message)["Reroll"], message, user=BOB)
    job_id = await _new_job_from(bot, fake_discord, click)
    job = await bot.services.jobs.get(job_id)
    original = await bot.services.jobs.get(1)
    assert job.user_id == BOB_ID and job.request.seed != 5 and job.request.steps == 20
    assert job.request.prompt == original.request.prompt
    assert (await bot.services.quotas.balance(payloads.GUILD_ID, BOB_ID)).used == 1
    assert (await bot.services.quotas.balance(payloads.GUILD_ID, payloads.MEMBER_ID)).used == 1


async def test_vary_and_upscale_start_from_the_posted_image(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    message = await imagine_result(bot, fake_discord, "a pony --ar 16:9")
    buttons = _buttons(message)
    clicks = []
    for label, scaler in (("Vary (strong)", "ImageScale"), ("Upscale · 2 credits", "ImageScaleBy")):
        expected_runs = len(fake_runpod.requests_for("run")) + 1
        click = payloads.button_click(buttons[label], message)
        clicks.append(click)
        fake_discord.deliver(bot, click)
        callback = await fake_discord.wait_for_callback(click)
        assert callback.json["type"] == 5, "deferred before downloading"
        assert not callback.json.get("data", {}).get("flags", 0) & EPHEMERAL, (
            "a public thinking... that becomes the new job's message"
        )
        await fake_runpod.wait_for_requests("run", expected_runs)
        workflow = fake_runpod.requests_for("run")[-1].json["input"]["workflow"]
        assert scaler in {node["class_type"] for node in workflow.values()}, label
    for job_id, click in zip((2, 3), clicks, strict=True):
        job = await wait_for_state(bot.services, job_id, "done")
        answer = fake_discord.interactions[click["token"]].response_message_id
        assert job.message_id == answer != int(message["id"])
        assert not fake_discord.messages[answer].ephemeral
        assert fake_discord.messages[answer].attachments, "the result went into that answer"
    assert fake_discord.requests_to("POST", r"/channels/\d+/messages") == [], "no channel post"
    runs = [r.json["input"] for r in fake_runpod.requests_for("run")[1:]]
    assert len(runs) == 2
    for job_input in runs:
        [image] = job_input["images"]
        loads = [n for n in job_input["workflow"].values() if n["class_type"] == "LoadImage"]
        assert loads[0]["inputs"]["image"] == image["name"]
    downloads = fake_discord.requests_to("GET", r"/attachments/.*")
    assert len(downloads) == 2 and all(r.status == 200 for r in downloads)


async def test_buttons_work_after_the_bot_restarted(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> None:
    settings = make_settings(tmp_path, fake_runpod)
    first = await start_bot(settings, fake_discord)
    message = await imagine_result(first, fake_discord, "a pony --seed 1")
    await first.close()

    second = await start_bot(settings, fake_discord)
    try:
        click = payloads.button_click(_buttons(message)["Reroll"], message, user=BOB)
        job_id = await _new_job_from(second, fake_discord, click)
        assert (await second.services.jobs.get(job_id)).user_id == BOB_ID
        details = payloads.button_click(_buttons(message)["Details"], message)
        data = await reply_to(second, fake_discord, details)
        assert data["flags"] & EPHEMERAL and "**Seed:** `1`" in data["content"]
        callback = await fake_discord.wait_for_callback(details)
        [workflow_file] = callback.files
        assert json.loads(workflow_file.data)["10"]["class_type"] == "CLIPSetLastLayer"
    finally:
        await second.close()


async def test_edit_opens_a_prefilled_modal_and_its_submit_starts_a_job(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    message = await imagine_result(
        bot, fake_discord, "a pony <lora:style:0.8> --raw --seed 3", options={"negative": "text"}
    )
    click = payloads.button_click(_buttons(message)["Edit"], message)
    data = await reply_to(bot, fake_discord, click)
    fields = {
        c["components"][0]["custom_id"]: c["components"][0].get("value") for c in data["components"]
    }
    assert fields == {
        "prompt": "a pony <lora:style.safetensors:0.8> --raw --workflow pony-v6-xl "
        "--size 1024x1024 --seed 3 --steps 25 --cfg 7 --sampler euler_ancestral --scheduler normal",
        "negative": "text",
    }
    submit = payloads.modal_submit(
        data["custom_id"], {"prompt": "a zebra --seed 9", "negative": ""}, message=message
    )
    job_id = await _new_job_from(bot, fake_discord, submit)
    job = await bot.services.jobs.get(job_id)
    assert (job.request.prompt, job.request.seed, job.request.negative) == ("a zebra", 9, "")


async def test_delete_is_for_the_requester_or_a_moderator(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    message = await imagine_result(bot, fake_discord, "a pony")
    await wait_for_state(bot.services, 1, "done")  # the edit is seen before the bot marks it done
    delete = _buttons(message)["Delete"]
    refused = await reply_to(bot, fake_discord, payloads.button_click(delete, message, user=BOB))
    assert "Only the member who made these images, or a moderator" in refused["content"]
    assert not fake_discord.messages[int(message["id"])].deleted
    done = await reply_to(
        bot, fake_discord, payloads.button_click(delete, message, user=payloads.moderator_member())
    )
    assert done["content"] == "Deleted." and fake_discord.messages[int(message["id"])].deleted
    assert (await bot.services.jobs.get(1)).state is JobState.DONE


async def test_a_result_made_from_an_image_rerolls_from_the_same_source_image(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    message = await imagine_result(bot, fake_discord, "a pony")
    click = payloads.button_click(_buttons(message)["Vary (subtle)"], message)
    fake_discord.deliver(bot, click)
    await fake_discord.wait_for_callback(click)
    varied_job = await wait_for_state(bot.services, 2, "done")
    varied = fake_discord.message_payload(varied_job.message_id)
    assert set(_buttons(varied)) == {
        "Reroll",
        "Edit",
        "Details",
        "Delete",
        "Vary (subtle)",
        "Vary (strong)",
        "Upscale · 2 credits",
        "Share",
    }

    reroll = payloads.button_click(_buttons(varied)["Reroll"], varied, user=BOB)
    fake_discord.deliver(bot, reroll)
    await fake_discord.wait_for_callback(reroll)
    async with asyncio.timeout(HANG_GUARD):
        while not (bobs := await bot.services.jobs.recent(payloads.GUILD_ID, BOB_ID, 1)):
            await asyncio.sleep(0.005)
    rerolled = (await wait_for_state(bot.services, bobs[0].id, "done")).request
    source = varied_job.request
    assert (rerolled.template, rerolled.denoise) == (source.template, source.denoise)
    assert rerolled.image.name == source.image.name and rerolled.seed != source.seed
    job_input = fake_runpod.requests_for("run")[-1].json["input"]
    assert [image["name"] for image in job_input["images"]] == [source.image.name]


async def test_a_reroll_whose_source_image_is_gone_says_so_and_charges_nothing(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    message = await imagine_result(bot, fake_discord, "a pony")
    click = payloads.button_click(_buttons(message)["Vary (subtle)"], message)
    fake_discord.deliver(bot, click)
    await fake_discord.wait_for_callback(click)
    varied_job = await wait_for_state(bot.services, 2, "done")
    varied = fake_discord.message_payload(varied_job.message_id)
    fake_discord.delete_message(int(message["id"]))  # the source image goes with its message
    fake_discord.inject("GET", r"/attachments/.*", 404)

    reroll = payloads.button_click(_buttons(varied)["Reroll"], varied, user=BOB)
    fake_discord.deliver(bot, reroll)
    answer = await fake_discord.wait_for(
        lambda r: (
            r.method == "POST" and r.path.startswith("/webhooks/") and reroll["token"] in r.path
        )
    )
    assert "no longer available from Discord, so this cannot be rerolled" in answer.json["content"]
    assert answer.json["flags"] & EPHEMERAL, "the refusal reaches only the member"
    assert (await bot.services.quotas.balance(payloads.GUILD_ID, BOB_ID)).used == 0
    assert len(await bot.services.jobs.recent(payloads.GUILD_ID, BOB_ID, 10)) == 0


async def test_buttons_obey_the_servers_channel_list_too(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    message = await imagine_result(bot, fake_discord, "a pony")
    await bot.services.guild_settings.update(
        payloads.GUILD_ID, 1, allowed_channels=(3_100_000_000_000_000_001,)
    )
    data = await reply_to(
        bot, fake_discord, payloads.button_click(_buttons(message)["Reroll"], message)
    )
    assert data["flags"] & EPHEMERAL and "<#3100000000000000001>" in data["content"]
    assert len(await bot.services.jobs.recent(payloads.GUILD_ID, payloads.MEMBER_ID, 10)) == 1
