"""Result buttons that tell the truth: their cost, Upscale only where it can work, two Varies."""

from __future__ import annotations

from bot.app import Stablehand
from tests.conftest import imagine_result, wait_for_state
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_runpod import FakeRunPod


def _buttons(message: dict) -> dict[str, str]:
    return {c["label"]: c["custom_id"] for row in message["components"] for c in row["components"]}


async def test_a_four_image_job_says_what_each_button_costs(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    message = await imagine_result(bot, fake_discord, "a pony --count 4 --steps 30")
    labels = set(_buttons(message))
    # 4 images at 30 steps: 4 x 1.2 = 4.8, so 5 credits; one upscale 2.25 x 1.2 = 2.7, so 3.
    assert "Reroll · 5 credits" in labels
    assert {"U1 · 3 credits", "U4 · 3 credits"} <= labels
    assert {"V1 subtle", "V4 subtle", "V1 strong", "V4 strong"} <= labels, "one credit: no label"


async def test_the_upscale_a_button_names_costs_what_it_says(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    message = await imagine_result(bot, fake_discord, "a pony --count 4 --steps 30")
    click = payloads.button_click(_buttons(message)["U1 · 3 credits"], message)
    fake_discord.deliver(bot, click)
    await fake_discord.wait_for_callback(click)
    upscaled = await wait_for_state(bot.services, 2, "queued", "submitted", "running", "done")
    assert upscaled.cost == 3


async def test_no_upscale_is_offered_on_images_already_at_the_size_limit(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    message = await imagine_result(bot, fake_discord, "a pony --hires 1.5")
    labels = set(_buttons(message))
    assert not any(label.startswith("Upscale") for label in labels)
    assert {"Vary (subtle)", "Vary (strong)"} <= labels, "Vary fits the image to an SDXL size"
    assert (
        "ℹ️ No Upscale here: This 1536x1536 image is already about as large as"
        in (message["content"])
    )


async def test_vary_subtle_and_strong_redraw_little_or_much_of_the_image(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    message = await imagine_result(bot, fake_discord, "a pony")
    buttons = _buttons(message)
    for job_id, label in ((2, "Vary (subtle)"), (3, "Vary (strong)")):
        click = payloads.button_click(buttons[label], message)
        fake_discord.deliver(bot, click)
        await fake_discord.wait_for_callback(click)
        await wait_for_state(bot.services, job_id, "done")
    subtle, strong = [(await bot.services.jobs.get(n)).request for n in (2, 3)]
    assert (subtle.template, subtle.denoise) == ("pony-v6-xl-img2img", 0.35)
    assert (strong.template, strong.denoise) == ("pony-v6-xl-img2img", 0.7)
