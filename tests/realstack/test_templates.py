"""Every bundled workflow, rendered by the bot's own code, passes real ComfyUI 0.8.0's validation."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

from bot.prompt import ContentPolicy, ImageInput, Options, parse
from bot.samplers import A1111_SAMPLERS, SAMPLERS, SCHEDULERS
from bot.workflows import load_library
from tests.conftest import make_settings
from tests.fakes.real_worker import ComfyUI

LIBRARY = load_library()
INPUT_IMAGE = ImageInput("stablehand-validation.png", 768, 512)


def _upload(comfy: ComfyUI, image: ImageInput) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (image.width, image.height), (90, 120, 200)).save(buffer, format="PNG")
    response = httpx.post(
        f"{comfy.stack.comfy_url}/upload/image",
        files={"image": (image.name, buffer.getvalue(), "image/png")},
        data={"overwrite": "true"},
        timeout=30,
    )
    response.raise_for_status()


@pytest.mark.parametrize("name", LIBRARY.names(include_hidden=True))
def test_comfyui_accepts_the_bundled_workflow_as_the_bot_renders_it(
    name: str, comfy: ComfyUI, tmp_path: Path
) -> None:
    template = LIBRARY.get(name)
    assert template is not None
    image = INPUT_IMAGE if template.needs_image else None
    if image is not None:
        _upload(comfy, image)
    lora = "<lora:detail:0.8> " if template.accepts_loras else ""
    text = f"{lora}a pony astronaut on the moon" if template.accepts("prompt") else ""
    request = parse(
        text,
        library=LIBRARY,
        policy=ContentPolicy.from_settings(make_settings(tmp_path)),
        options=Options(workflow=name),
        image=image,
    )
    workflow = template.render(request.values(), request.loras)

    response = httpx.post(f"{comfy.stack.comfy_url}/prompt", json={"prompt": workflow}, timeout=30)

    print(f"{name}: POST /prompt -> {response.status_code} {response.text}")
    assert response.status_code == 200, response.text
    assert response.json()["node_errors"] == {}
    if template.accepts_loras:
        assert any(node["class_type"] == "LoraLoader" for node in workflow.values())


def test_comfyui_knows_every_sampler_and_scheduler_the_bot_offers(comfy: ComfyUI) -> None:
    info = httpx.get(f"{comfy.stack.comfy_url}/object_info/KSampler", timeout=30).json()
    required = info["KSampler"]["input"]["required"]
    samplers, schedulers = set(required["sampler_name"][0]), set(required["scheduler"][0])

    assert set(SAMPLERS) - samplers == set()
    assert set(SCHEDULERS) - schedulers == set()
    assert {pair for pair in A1111_SAMPLERS.values()} <= {
        (sampler, scheduler) for sampler in samplers for scheduler in schedulers
    }


def test_comfyui_accepts_a_lora_in_a_subfolder_as_the_bot_names_it(
    comfy: ComfyUI, tmp_path: Path
) -> None:
    request = parse(
        "<lora:pony/detail:0.8> a pony astronaut",
        library=LIBRARY,
        policy=ContentPolicy.from_settings(make_settings(tmp_path)),
    )
    template = LIBRARY.get(request.template)
    assert template is not None
    workflow = template.render(request.values(), request.loras)

    response = httpx.post(f"{comfy.stack.comfy_url}/prompt", json={"prompt": workflow}, timeout=30)

    assert response.status_code == 200, response.text
    assert [n["inputs"]["lora_name"] for n in workflow.values() if "lora_name" in n["inputs"]] == [
        "pony/detail.safetensors"
    ]
