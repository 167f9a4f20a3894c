"""Images real ComfyUI drew reach the member: through `python -m bot generate` and the sandbox."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from bot.config import SETTINGS
from bot.images import prepare_input_image
from bot.prompt import Options
from bot.runpod import OutputError, decode_output
from tests.conftest import ROOT, OpenServices, RecordingDelivery, make_client, make_settings
from tests.fakes.fake_runpod import FakeRunPod
from tests.fakes.real_worker import ComfyUI, RealWorker, Stack
from tests.fakes.sandbox import sandbox

SETTING_NAMES = {setting.name for setting in SETTINGS}
WORKFLOWS = Path(__file__).resolve().parent / "workflows"


def _pattern_colour(seed: int) -> tuple[int, int, int]:
    """The colour test-pattern paints for a seed (the bot sets `color` to seed mod 2^24)."""
    colour = seed % 0x1000000
    return colour >> 16, (colour >> 8) & 0xFF, colour & 0xFF


async def _generate(
    fake: FakeRunPod, tmp_path: Path, *args: str, **env: str
) -> tuple[int, str, str]:
    """`python -m bot generate ARGS` on the emulator: (exit status, stdout, stderr)."""
    environ = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    environ.update(
        PYTHONPATH=str(ROOT),
        RUNPOD_API_BASE=fake.api_base,
        RUNPOD_ENDPOINT_ID=fake.endpoint_id,
        RUNPOD_API_KEY=fake.api_key,
        DATABASE_PATH=str(tmp_path / "stablehand.db"),
        **env,
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "generate",
        *args,
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
        env=environ,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 300)
    print(stderr.decode(), stdout.decode())
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_generate_saves_the_test_pattern_that_real_comfyui_drew(
    real_worker: RealWorker, fake_runpod: FakeRunPod, tmp_path: Path
) -> None:
    status, stdout, stderr = await _generate(
        fake_runpod, tmp_path, "a test pattern", "--workflow", "test-pattern"
    )

    assert status == 0, stderr
    (saved,) = [Path(line) for line in stdout.split()]
    seed = int(re.search(r"-seed(\d+)-", saved.name).group(1))
    with Image.open(saved) as image:
        assert image.size == (512, 512)
        assert image.convert("RGB").getpixel((256, 256)) == _pattern_colour(seed)
    (job_result,) = real_worker.results.values()
    assert job_result["output"]["images"][0]["filename"].startswith("stablehand-test")


async def test_sandbox_member_gets_the_test_pattern_from_the_real_worker(
    stack: Stack, comfy: ComfyUI
) -> None:
    lines: list[str] = []
    async with sandbox(real_stack=stack, show=lines.append) as box:
        await box.start_bot()
        await box.imagine("a test pattern", workflow="test-pattern")
        result = await box.until_results(1, timeout=300)
        assert await box.stop_bot() == 0
    print("\n".join(lines))

    (attachment,) = result.attachments
    with Image.open(io.BytesIO(attachment.data)) as image:
        assert image.size == (512, 512)
        seed = int(re.search(r"Seed: (\d+)", image.info["parameters"]).group(1))
        assert image.convert("RGB").getpixel((256, 256)) == _pattern_colour(seed)


async def test_an_attached_image_reaches_comfyui_and_comes_back_processed(
    open_services: OpenServices, real_worker: RealWorker, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, real_worker.fake, WORKFLOWS_DIR=str(WORKFLOWS))
    services = await open_services(settings, charge=False)
    delivery = RecordingDelivery()
    await services.jobs.start(delivery)
    buffer = io.BytesIO()
    Image.new("RGB", (320, 200), (200, 40, 10)).save(buffer, format="PNG")
    attached = prepare_input_image(buffer.getvalue(), max_pixels=1024 * 1024, max_bytes=10**7)

    new = services.prepare(
        "",
        user_id=1,
        guild_id=None,
        channel_id=None,
        options=Options(workflow="inverted-image"),
        image=attached,
    )
    job = await services.jobs.accept(new)
    await services.jobs.attach_message(job.id, None, None)
    await delivery.wait(job.id, timeout=300)

    ((delivered,),) = delivery.delivered[job.id]
    with Image.open(io.BytesIO(delivered.data)) as image:
        assert image.size == (320, 200)
        pixel = image.convert("RGB").getpixel((160, 100))
    # ComfyUI works in floats and truncates on saving: 255 - 200 may come back as 54.
    assert all(abs(got - want) <= 1 for got, want in zip(pixel, (55, 215, 245), strict=True))


async def test_a_preview_only_workflow_completes_with_no_image_to_deliver(
    real_worker: RealWorker, fake_runpod: FakeRunPod
) -> None:
    workflow = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    client = make_client(fake_runpod)
    try:
        submitted = await client.run({"workflow": workflow})
        async with asyncio.timeout(300):
            while not (status := await client.status(submitted.id)).terminal:
                await asyncio.sleep(0.1)
        print(f"\nworker: {status.status} {status.output}")
        with pytest.raises(OutputError) as refused:
            await decode_output(status.output, expected=1, fetch=client.download)
    finally:
        await client.aclose()

    assert status.status == "COMPLETED"
    assert status.output == {"status": "success_no_images", "images": []}
    assert refused.value.kind == "no_images"


async def test_a_delivered_png_dropped_on_comfyui_is_the_prompt_that_made_it(
    fake_runpod: FakeRunPod, comfy: ComfyUI, tmp_path: Path
) -> None:
    status, stdout, stderr = await _generate(
        fake_runpod, tmp_path, "a test pattern", "--workflow", "test-pattern"
    )
    assert status == 0, stderr
    (saved,) = [Path(line) for line in stdout.split()]
    with Image.open(saved) as image:
        workflow = json.loads(image.info["prompt"])

    async with httpx.AsyncClient(base_url=comfy.stack.comfy_url, timeout=30) as client:
        queued = (await client.post("/prompt", json={"prompt": workflow})).json()
        async with asyncio.timeout(300):
            while queued["prompt_id"] not in (history := (await client.get("/history")).json()):
                await asyncio.sleep(0.1)
    messages = dict(history[queued["prompt_id"]]["status"]["messages"])

    (job,) = fake_runpod.jobs.values()
    assert workflow == job.input["workflow"]
    assert queued["node_errors"] == {}
    # ComfyUI's cache knows it: every node is the one the worker's run just executed.
    assert sorted(messages["execution_cached"]["nodes"]) == sorted(workflow)


async def test_generate_sends_an_image_file_the_real_worker_uploads_and_processes(
    fake_runpod: FakeRunPod, comfy: ComfyUI, tmp_path: Path
) -> None:
    Image.new("RGB", (320, 200), (200, 40, 10)).save(tmp_path / "input.png")

    status, stdout, stderr = await _generate(
        fake_runpod,
        tmp_path,
        "",
        "--workflow",
        "inverted-image",
        "--image",
        str(tmp_path / "input.png"),
        WORKFLOWS_DIR=str(WORKFLOWS),
    )

    assert status == 0, stderr
    (saved,) = [Path(line) for line in stdout.split()]
    with Image.open(saved) as image:
        assert image.size == (320, 200)
        pixel = image.convert("RGB").getpixel((160, 100))
    assert all(abs(got - want) <= 1 for got, want in zip(pixel, (55, 215, 245), strict=True))
