"""Midjourney habits, Edit that keeps everything, and look-alike blocked words, through the fake Discord."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from bot.app import Stablehand
from tests.conftest import (
    imagine_result,
    make_settings,
    reply_to,
    start_bot,
    wait_for_state,
)
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_runpod import FakeRunPod

EPHEMERAL = 64


def _buttons(message: dict) -> dict[str, str]:
    return {c["label"]: c["custom_id"] for row in message["components"] for c in row["components"]}


async def _jobs(bot: Stablehand) -> list:
    return await bot.services.jobs.recent(payloads.GUILD_ID, payloads.MEMBER_ID, 50)


async def _reply_message(bot: Stablehand, fake: FakeDiscord, payload: dict) -> dict:
    """Deliver a slash command and return its reply as a message a button click carries."""
    await reply_to(bot, fake, payload)
    return fake.message_payload(fake.interactions[payload["token"]].response_message_id)


async def test_a_prompt_full_of_midjourney_flags_runs_with_one_note(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    payload = payloads.slash_command(
        "imagine", {"prompt": "a cat --v 6 --stylize 250 --q 2 --chaos 10 --style raw --ar 1.78"}
    )
    data = await reply_to(bot, fake_discord, payload)
    notes = [line for line in data["content"].splitlines() if line.startswith("ℹ️")]
    assert len(notes) == 1 and not data.get("flags", 0) & EPHEMERAL
    for flag in ("--v 6", "--stylize 250", "--q 2", "--chaos 10", "--style raw"):
        assert f"`{flag}`" in notes[0]
    job = await wait_for_state(bot.services, 1, "done")
    assert job.request.prompt == "a cat" and (job.request.width, job.request.height) == (1344, 768)
    latent = fake_runpod.requests_for("run")[0].json["input"]["workflow"]["5"]["inputs"]
    assert (latent["width"], latent["height"]) == (1344, 768)


async def test_a_typed_aspect_that_replaces_ar_says_so(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    payload = payloads.slash_command("imagine", {"prompt": "a cat --ar 16:9", "aspect": "1:1"})
    data = await reply_to(bot, fake_discord, payload)
    assert "The `aspect: 1:1` option replaced `--ar 16:9` from your prompt." in data["content"]


async def test_permutations_are_confirmed_with_their_total_then_each_job_is_charged_once(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    payload = payloads.slash_command("imagine", {"prompt": "a {red, blue} car --repeat 2 --seed 7"})
    offer = await _reply_message(bot, fake_discord, payload)
    assert "**4 jobs**, **4 credits** in all · you have 25 left" in offer["content"]
    assert "Nothing runs or is charged until you press Start." in offer["content"]
    assert await _jobs(bot) == [] and fake_runpod.requests_for("run") == []

    start = payloads.button_click(_buttons(offer)["Start 4 jobs"], offer)
    fake_discord.deliver(bot, start)
    await fake_discord.wait_for_callback(start)
    for job_id in range(1, 5):
        await wait_for_state(bot.services, job_id, "done")
    jobs = await _jobs(bot)
    made = sorted((job.request.prompt, job.request.seed) for job in jobs)
    assert made == [("a blue car", 7), ("a blue car", 8), ("a red car", 7), ("a red car", 8)]
    assert len(fake_runpod.requests_for("run")) == 4
    balance = await bot.services.quotas.balance(payloads.GUILD_ID, payloads.MEMBER_ID)
    assert balance.used == 4, "each job charged once"
    summary = fake_discord.message_payload(int(offer["id"]))["content"]
    assert summary.startswith("Started 4 of 4 jobs:")

    again = await reply_to(
        bot, fake_discord, payloads.button_click(_buttons(offer)["Start 4 jobs"], offer)
    )
    assert "expired" in again["content"] and len(await _jobs(bot)) == 4, (
        "a second click starts nothing"
    )


async def test_a_dropped_batch_starts_nothing_and_another_member_cannot_start_it(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    offer = await _reply_message(
        bot, fake_discord, payloads.slash_command("imagine", {"prompt": "a {red, blue} car"})
    )
    bob = payloads.member(payloads.user(2_300_000_000_000_000_001, "bob"))
    refused = await reply_to(
        bot, fake_discord, payloads.button_click(_buttons(offer)["Start 2 jobs"], offer, user=bob)
    )
    assert "Only the member who asked" in refused["content"]
    cancel = payloads.button_click(_buttons(offer)["Cancel"], offer)
    data = await reply_to(bot, fake_discord, cancel)
    assert data["content"] == "Cancelled; nothing was started or charged."
    assert await _jobs(bot) == [] and fake_runpod.requests_for("run") == []


async def test_too_many_permutations_are_refused_before_anything_runs(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    payload = payloads.slash_command("imagine", {"prompt": "a {a,b,c} {d,e,f} car"})
    data = await reply_to(bot, fake_discord, payload)
    assert data["flags"] & EPHEMERAL and "one command can start at most 8" in data["content"]
    assert await _jobs(bot) == [] and fake_runpod.requests_for("run") == []


async def test_edit_round_trip_keeps_every_setting(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    message = await imagine_result(
        bot,
        fake_discord,
        'a pony astronaut --ar 16:9 --steps 28 --cfg 5 --sampler "DPM++ 2M Karras" --count 2 '
        "--hires 1.2",
    )
    original = (await bot.services.jobs.get(1)).request
    data = await reply_to(
        bot, fake_discord, payloads.button_click(_buttons(message)["Edit"], message)
    )
    fields = {
        c["components"][0]["custom_id"]: c["components"][0].get("value") or ""
        for c in data["components"]
    }
    assert set(fields) == {"prompt", "negative"}, "no source image to keep"
    submit = payloads.modal_submit(data["custom_id"], fields, message=message)
    fake_discord.deliver(bot, submit)
    await fake_discord.wait_for_callback(submit)
    edited = (await wait_for_state(bot.services, 2, "done")).request
    assert (edited.width, edited.height, edited.output_size) == (1344, 768, (1616, 920))
    assert (edited.steps, edited.cfg, edited.sampler, edited.scheduler) == (
        28,
        5.0,
        "dpmpp_2m",
        "karras",
    )
    assert (edited.count, edited.hires_scale, edited.template) == (2, 1.2, "pony-v6-xl-hires")
    assert edited == original


async def test_edit_of_an_image_job_keeps_its_source_image_unless_removed(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    message = await imagine_result(bot, fake_discord, "a pony --seed 1")
    vary = payloads.button_click(_buttons(message)["Vary (strong)"], message)
    fake_discord.deliver(bot, vary)
    await fake_discord.wait_for_callback(vary)
    varied_job = await wait_for_state(bot.services, 2, "done")
    varied = fake_discord.message_payload(varied_job.message_id)

    data = await reply_to(
        bot, fake_discord, payloads.button_click(_buttons(varied)["Edit"], varied)
    )
    fields = {
        c["components"][0]["custom_id"]: c["components"][0].get("value") or ""
        for c in data["components"]
    }
    assert fields["image"] == "keep"
    submit = payloads.modal_submit(data["custom_id"], fields, message=varied)
    fake_discord.deliver(bot, submit)
    await fake_discord.wait_for_callback(submit)
    kept = (await wait_for_state(bot.services, 3, "done")).request
    assert kept.image is not None and kept.image.name == varied_job.request.image.name
    assert (
        kept.template == varied_job.request.template and kept.denoise == varied_job.request.denoise
    )
    [sent] = fake_runpod.requests_for("run")[2].json["input"]["images"]
    assert sent["name"] == kept.image.name

    removed = payloads.modal_submit(
        data["custom_id"],
        {"prompt": "a pony --seed 1", "negative": "", "image": ""},
        message=varied,
    )
    fake_discord.deliver(bot, removed)
    await fake_discord.wait_for_callback(removed)
    assert (await wait_for_state(bot.services, 4, "done")).request.image is None


async def test_blocked_words_catch_look_alike_letters(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> None:
    bot = await start_bot(make_settings(tmp_path, fake_runpod, BLOCKED_WORDS="naked"), fake_discord)
    try:
        for prompt in ("a n\u0430ked pony", "a ＮＡＫＥＤ pony", "a nákéd pony"):
            payload = payloads.slash_command("imagine", {"prompt": prompt})
            data = await reply_to(bot, fake_discord, payload)
            assert data["flags"] & EPHEMERAL and "does not allow `naked`" in data["content"], prompt
        assert await _jobs(bot) == [] and fake_runpod.requests_for("run") == []
    finally:
        await bot.close()


async def test_permutations_with_an_attached_image_are_offered_after_the_download(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    picture = io.BytesIO()
    Image.new("RGB", (900, 700), "purple").save(picture, "JPEG")
    upload = fake_discord.host_attachment("me.jpg", picture.getvalue(), "image/jpeg")
    payload = payloads.slash_command(
        "imagine", {"prompt": "a {red, blue} pony"}, attachments={"image": upload}
    )
    fake_discord.deliver(bot, payload)
    callback = await fake_discord.wait_for_callback(payload)
    assert callback.json["type"] == 5, "deferred before downloading"
    await fake_discord.wait_for(lambda r: r.method == "POST" and "**2 jobs**" in str(r.json))
    # The public "thinking..." gave way to an offer only the member sees.
    (offer_id,) = fake_discord.interactions[payload["token"]].followup_ids
    assert fake_discord.messages[offer_id].ephemeral
    offer = fake_discord.message_payload(offer_id)
    start = payloads.button_click(_buttons(offer)["Start 2 jobs"], offer)
    fake_discord.deliver(bot, start)
    await fake_discord.wait_for_callback(start)
    first = await wait_for_state(bot.services, 1, "done")
    second = await wait_for_state(bot.services, 2, "done")
    assert first.request.image is not None and first.request.image == second.request.image
    assert all(run.json["input"]["images"] for run in fake_runpod.requests_for("run"))

    # Edit keeps the image the member attached: downloaded again from the same attachment.
    message = fake_discord.message_payload(first.message_id)
    data = await reply_to(
        bot, fake_discord, payloads.button_click(_buttons(message)["Edit"], message)
    )
    fields = {
        c["components"][0]["custom_id"]: c["components"][0].get("value") or ""
        for c in data["components"]
    }
    submit = payloads.modal_submit(data["custom_id"], fields, message=message)
    fake_discord.deliver(bot, submit)
    await fake_discord.wait_for_callback(submit)
    assert (await wait_for_state(bot.services, 3, "done")).request.image == first.request.image


async def test_a_batch_that_cannot_all_start_is_not_offered(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> None:
    bot = await start_bot(make_settings(tmp_path, fake_runpod, DAILY_CREDITS="3"), fake_discord)
    try:
        for prompt, said in (
            ("a {a, b, c, d, e} car", "at most 4 waiting or running at once (you have 0 now)"),
            ("a {a, b, c, d} car", "These 4 jobs need 4 credits but you have 3 left."),
        ):
            data = await reply_to(
                bot, fake_discord, payloads.slash_command("imagine", {"prompt": prompt})
            )
            assert data["flags"] & EPHEMERAL and said in data["content"]
            assert "components" not in data or not data["components"]
        assert await _jobs(bot) == [] and fake_runpod.requests_for("run") == []
    finally:
        await bot.close()
