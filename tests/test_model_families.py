"""Model families through the fake Discord and the fake RunPod: what members see and what runs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

import pytest_asyncio

from bot.app import Stablehand
from tests.conftest import (
    HANG_GUARD,
    make_settings,
    reply_to,
    result_edit,
    run_cli,
    start_bot,
    wait_for_state,
)
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_runpod import FakeRunPod

FLUX = "flux1-dev-fp8"


def _flux_on_the_default_endpoint(directory: Path) -> Path:
    """An operator whose one endpoint runs the official Flux image: the bundled copy, renamed."""
    directory.mkdir()
    data = json.loads(resources.files("bot.templates").joinpath(f"{FLUX}.json").read_text("utf-8"))
    data["endpoint"] = "default"
    (directory / "flux.json").write_text(json.dumps(data), encoding="utf-8")
    return directory


@pytest_asyncio.fixture
async def flux_bot(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> AsyncIterator[Stablehand]:
    workflows = _flux_on_the_default_endpoint(tmp_path / "workflows")
    settings = make_settings(tmp_path, fake_runpod, WORKFLOWS_DIR=str(workflows))
    running = await start_bot(settings, fake_discord)
    yield running
    await running.close()


async def _workflow_choices(bot: Stablehand, fake: FakeDiscord, typed: str) -> list[dict]:
    payload = payloads.autocomplete(
        "imagine", {"prompt": "x", "workflow": typed}, focused="workflow"
    )
    return (await reply_to(bot, fake, payload))["choices"]


async def test_workflow_autocomplete_shows_each_templates_model(
    flux_bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    choices = await _workflow_choices(flux_bot, fake_discord, "")
    labels = {c["value"]: c["name"] for c in choices}
    assert labels[FLUX].startswith("flux1-dev-fp8 · FLUX.1 [dev] — Text to image")
    assert labels["pony-v6-xl"] == (
        "pony-v6-xl · Pony Diffusion V6 XL — text to image (clip skip 2, Euler a, 25 steps)."
    )
    assert all(len(label) <= 100 for label in labels.values())
    by_model = await _workflow_choices(flux_bot, fake_discord, "pony diffusion")
    assert [c["value"] for c in by_model] == [
        "pony-v6-xl",
        "pony-v6-xl-hires",
        "pony-v6-xl-img2img",
        "pony-v6-xl-upscale",
    ]


async def test_workflows_for_an_endpoint_not_configured_are_not_offered(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    values = [c["value"] for c in await _workflow_choices(bot, fake_discord, "")]
    assert "pony-v6-xl" in values and FLUX not in values and "sdxl" not in values


async def test_a_flux_job_runs_guidance_without_score_tags_and_is_spoilered_outside_nsfw(
    flux_bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    payload = payloads.slash_command(
        "imagine", {"prompt": "a red fox in snow --ar 16:9", "workflow": FLUX, "count": 2}
    )
    await reply_to(flux_bot, fake_discord, payload)
    message_id = fake_discord.interactions[payload["token"]].response_message_id
    edit = await fake_discord.wait_for(result_edit(message_id), timeout=HANG_GUARD)
    await wait_for_state(flux_bot.services, 1, "done")
    submitted = fake_runpod.requests_for("run")[0].json["input"]["workflow"]
    by_class = {node["class_type"]: node["inputs"] for node in submitted.values()}
    assert by_class["CheckpointLoaderSimple"] == {"ckpt_name": "flux1-dev-fp8.safetensors"}
    assert (by_class["KSampler"]["cfg"], by_class["FluxGuidance"]["guidance"]) == (1.0, 3.5)
    assert by_class["CLIPTextEncode"]["text"] == "a red fox in snow"
    assert "score_" not in json.dumps(submitted) and "rating_" not in json.dumps(submitted)
    assert len(edit.files) == 2
    assert all(f.filename.startswith("SPOILER_") for f in edit.files), (
        "Flux has no safe terms, so outside an age-restricted channel its images are hidden"
    )


async def test_a_negative_for_flux_is_refused_privately_and_nothing_runs(
    flux_bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    payload = payloads.slash_command(
        "imagine", {"prompt": "a red fox", "workflow": FLUX, "negative": "blurry"}
    )
    data = await reply_to(flux_bot, fake_discord, payload)
    assert data["flags"] & 64, "ephemeral"
    assert "The `negative` option has no effect on the `flux1-dev-fp8` workflow" in data["content"]
    assert (await flux_bot.services.db.fetchone("SELECT COUNT(*) FROM jobs"))[0] == 0
    assert fake_runpod.requests_for("run") == []


def test_the_workflows_command_names_each_templates_model_and_endpoint(tmp_path: Path) -> None:
    listed = run_cli("workflows", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "model: Pony Diffusion V6 XL, endpoint: default" in listed.stdout
    assert FLUX not in listed.stdout, "no endpoint named flux is configured"
    workflows = _flux_on_the_default_endpoint(tmp_path / "workflows")
    listed = run_cli("workflows", cwd=tmp_path, WORKFLOWS_DIR=str(workflows))
    assert listed.returncode == 0, listed.stderr
    assert f"{FLUX}  ({workflows / 'flux.json'})" in listed.stdout
    assert "model: FLUX.1 [dev], endpoint: default" in listed.stdout
