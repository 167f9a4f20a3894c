"""Delivered PNGs carry A1111 `parameters` and ComfyUI's `prompt`, so ComfyUI can reload them."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image, PngImagePlugin

from bot.app import Stablehand
from bot.images import ImageFile
from bot.metadata import comfyui_prompt, png_with_generation_data, with_generation_data
from bot.prompt import ContentPolicy, parse
from bot.workflows import load_library
from tests.comfy_schema import validate
from tests.conftest import imagine_result, reply_to
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_runpod import FakeRunPod, Outcome

WORKFLOW = {
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["8", 0]}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "un poney étoilé", "clip": ["4", 1]}},
}


def _png(size: tuple[int, int] = (64, 48), **text: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    out = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(out, "PNG", pnginfo=info)
    return out.getvalue()


def test_both_chunks_are_written_and_the_pixels_are_untouched() -> None:
    original = _png()
    marked = png_with_generation_data(original, parameters="un poney\nSteps: 25", workflow=WORKFLOW)
    with Image.open(io.BytesIO(marked)) as image, Image.open(io.BytesIO(original)) as before:
        assert image.text["parameters"] == "un poney\nSteps: 25"
        assert json.loads(image.text["prompt"]) == WORKFLOW
        assert image.tobytes() == before.tobytes()


def test_the_prompt_chunk_is_written_as_comfyui_writes_it() -> None:
    # ComfyUI's SaveImage: metadata.add_text("prompt", json.dumps(prompt)) — a tEXt chunk, ASCII.
    marked = png_with_generation_data(_png(), parameters="p", workflow=json.dumps(WORKFLOW))
    assert b"tEXtprompt\x00" + json.dumps(WORKFLOW).encode("ascii") in marked
    assert comfyui_prompt(json.dumps(WORKFLOW, ensure_ascii=False)) == json.dumps(WORKFLOW)


def test_chunks_the_worker_already_wrote_are_replaced_not_doubled() -> None:
    stale = _png(prompt='{"1": {}}', workflow='{"nodes": []}', parameters="old", Software="x")
    marked = png_with_generation_data(stale, parameters="new", workflow=WORKFLOW)
    with Image.open(io.BytesIO(marked)) as image:
        assert image.text == {"Software": "x", "parameters": "new", "prompt": json.dumps(WORKFLOW)}
    assert marked.count(b"tEXtprompt") == 1


def test_a_png_that_cannot_be_walked_is_delivered_as_it_came() -> None:
    library = load_library()
    request = parse("a pony", library=library, policy=ContentPolicy(), options=None)
    broken = ImageFile("a.png", "image/png", _png()[:40])
    webp = ImageFile("b.webp", "image/webp", b"RIFF....WEBP")
    assert with_generation_data([broken, webp], request, WORKFLOW) == [broken, webp]


@pytest.mark.parametrize("data", [b"not a png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x01IDAT"])
def test_bytes_that_are_not_a_png_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        png_with_generation_data(data, parameters="p", workflow=WORKFLOW)


async def test_a_delivered_png_reloads_in_comfyui_as_the_workflow_that_ran(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    message = await imagine_result(bot, fake_discord, "a pony astronaut --seed 7")
    [attachment] = fake_discord.messages[int(message["id"])].attachments
    submitted = fake_runpod.requests_for("run")[0].json["input"]["workflow"]
    with Image.open(io.BytesIO(attachment.data)) as image:
        assert json.loads(image.text["prompt"]) == submitted
        assert "Seed: 7" in image.text["parameters"]


async def test_a_result_converted_to_webp_still_offers_its_workflow_under_details(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    fake_runpod.script(Outcome(noise=True))  # about 3 MB as PNG
    message = await imagine_result(
        bot, fake_discord, "static --seed 3", attachment_size_limit=1500 * 1024
    )
    [attachment] = fake_discord.messages[int(message["id"])].attachments
    assert not attachment.data.startswith(b"\x89PNG"), "the upload had to be converted"
    buttons = {
        c["label"]: c["custom_id"] for row in message["components"] for c in row["components"]
    }
    details = payloads.button_click(buttons["Details"], message)
    await reply_to(bot, fake_discord, details)
    callback = await fake_discord.wait_for_callback(details)
    [workflow_file] = callback.files
    submitted = fake_runpod.requests_for("run")[0].json["input"]["workflow"]
    assert json.loads(workflow_file.data) == submitted


def test_each_image_of_a_batch_carries_the_data_that_remakes_it_alone() -> None:
    library = load_library()
    request = parse(
        "a pony --count 3 --ar 16:9 --hires 1.2", library=library, policy=ContentPolicy(), seed=77
    )
    template = library.get(request.template)
    workflow = template.render(request.values(), request.loras)
    images = [ImageFile(f"{i}.png", "image/png", _png()) for i in range(3)]
    marked = with_generation_data(images, request, workflow)
    for index, image in enumerate(marked):
        with Image.open(io.BytesIO(image.data)) as png:
            parameters, prompt = png.text["parameters"], json.loads(png.text["prompt"])
        # ComfyUI seeds the whole batch once; the image is that seed at its place in the batch.
        assert "Seed: 77, Size: 1616x920, Batch size: 3" in parameters
        assert f"Batch pos: {index}" in parameters
        assert validate(prompt) == []
        [picker] = [n for n in prompt.values() if n["class_type"] == "LatentFromBatch"]
        assert picker["inputs"]["batch_index"] == index and picker["inputs"]["length"] == 1
        sampler = prompt["3"]["inputs"]["latent_image"]
        assert prompt[sampler[0]]["class_type"] == "LatentFromBatch"


def test_a_single_image_keeps_the_workflow_as_sent() -> None:
    library = load_library()
    request = parse("a pony", library=library, policy=ContentPolicy(), seed=5)
    workflow = library.get(request.template).render(request.values(), request.loras)
    [image] = with_generation_data([ImageFile("a.png", "image/png", _png())], request, workflow)
    with Image.open(io.BytesIO(image.data)) as png:
        assert json.loads(png.text["prompt"]) == workflow
        assert "Batch" not in png.text["parameters"]
