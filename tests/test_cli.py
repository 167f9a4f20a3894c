"""The operator's commands: `workflow`, `workflows` (as processes) and `generate` (on the fake RunPod)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.generate import generate
from tests.comfy_schema import text_encoder_clip_paths, validate
from tests.conftest import FAST, make_settings, run_cli
from tests.fakes.fake_runpod import FakeRunPod

QUALITY = "score_9, score_8_up, score_7_up, score_6_up, score_5_up, score_4_up"


def _texts(workflow: dict[str, Any]) -> list[str]:
    return [n["inputs"]["text"] for n in workflow.values() if n["class_type"] == "CLIPTextEncode"]


def _one(workflow: dict[str, Any], class_type: str) -> dict[str, Any]:
    (node,) = [n for n in workflow.values() if n["class_type"] == class_type]
    return node["inputs"]


# --- workflow ------------------------------------------------------------------------------------


def test_workflow_prints_what_a_prompt_renders_to(tmp_path: Path) -> None:
    result = run_cli(
        "workflow", "a pony astronaut <lora:ponyStyle:0.8> --ar 16:9 --seed 7", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    workflow = json.loads(result.stdout)
    assert validate(workflow) == []
    assert _one(workflow, "KSampler")["seed"] == 7
    latent = _one(workflow, "EmptyLatentImage")
    assert (latent["width"], latent["height"]) == (1344, 768)
    assert _one(workflow, "LoraLoader")["lora_name"] == "ponyStyle.safetensors"
    for path in text_encoder_clip_paths(workflow):
        assert path[-2:] == ["CLIPSetLastLayer", "CheckpointLoaderSimple"]
    assert f"{QUALITY}, rating_safe, a pony astronaut" in _texts(workflow)
    assert not list(tmp_path.iterdir()), "printing a workflow creates no database or file"


def test_workflow_in_an_age_restricted_channel_has_no_safe_tags(tmp_path: Path) -> None:
    result = run_cli("workflow", "a pony astronaut --seed 1", "--channel-nsfw", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert _texts(json.loads(result.stdout)) == [
        f"{QUALITY}, a pony astronaut",
        "score_1, score_2, score_3",
    ]


def test_workflow_option_chooses_the_template(tmp_path: Path) -> None:
    result = run_cli("workflow", "anything", "--workflow", "test-pattern", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    workflow = json.loads(result.stdout)
    assert {n["class_type"] for n in workflow.values()} == {"EmptyImage", "SaveImage"}


def test_workflow_hires_flag_renders_the_two_pass_workflow(tmp_path: Path) -> None:
    result = run_cli("workflow", "a pony --hires 1.25 --seed 3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    workflow = json.loads(result.stdout)
    assert _one(workflow, "LatentUpscaleBy")["scale_by"] == 1.25
    assert validate(workflow) == []


def test_workflow_follows_the_settings(tmp_path: Path) -> None:
    result = run_cli(
        "workflow",
        "a pony",
        cwd=tmp_path,
        QUALITY_TAGS="score_9",
        DEFAULT_NEGATIVE="blurry",
        NSFW_POLICY="off",
        CHECKPOINT="ponyDiffusionV6XL_v6StartWithThisOne.safetensors",
    )
    assert result.returncode == 0, result.stderr
    workflow = json.loads(result.stdout)
    assert _texts(workflow) == ["score_9, a pony", "blurry"]
    assert _one(workflow, "CheckpointLoaderSimple") == {
        "ckpt_name": "ponyDiffusionV6XL_v6StartWithThisOne.safetensors"
    }


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a pony --ar 5:1", "`--ar 5:1` is wider than 2.4:1"),
        ("a pony --sed 4", "Did you mean `--seed`?"),
        ("a pony --workflow nope", "There is no workflow called `nope`"),
    ],
)
def test_workflow_refuses_with_the_message_a_member_would_get(
    tmp_path: Path, prompt: str, message: str
) -> None:
    result = run_cli("workflow", prompt, cwd=tmp_path)
    assert result.returncode == 1
    assert message in result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr


# --- workflows -----------------------------------------------------------------------------------


def test_workflows_lists_every_bundled_template(tmp_path: Path) -> None:
    result = run_cli("workflows", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in (
        "pony-v6-xl",
        "pony-v6-xl-hires",
        "pony-v6-xl-img2img",
        "pony-v6-xl-upscale",
        "test-pattern",
    ):
        assert f"{name}  ({name}.json)" in result.stdout
    assert "cost multiplier: 1.45" in result.stdout
    assert "parameters: prompt, negative, seed" in result.stdout


def test_operator_templates_are_listed_and_usable(tmp_path: Path) -> None:
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    data = json.loads(resources.files("bot.templates").joinpath("pony-v6-xl.json").read_text())
    data.update(name="house-style", description="Our house style.", variants={})
    (workflows / "house.json").write_text(json.dumps(data))
    listed = run_cli("workflows", cwd=tmp_path, WORKFLOWS_DIR=str(workflows))
    assert listed.returncode == 0, listed.stderr
    assert f"house-style  ({workflows / 'house.json'})" in listed.stdout
    assert "Our house style." in listed.stdout
    rendered = run_cli(
        "workflow",
        "a pony",
        "--workflow",
        "house-style",
        cwd=tmp_path,
        WORKFLOWS_DIR=str(workflows),
    )
    assert rendered.returncode == 0, rendered.stderr
    assert validate(json.loads(rendered.stdout)) == []


# --- generate ------------------------------------------------------------------------------------


def _parameters(path: Path) -> tuple[tuple[int, int], str]:
    with Image.open(path) as image:
        return image.size, image.text["parameters"]


async def test_generate_saves_pngs_with_their_generation_data(
    tmp_path: Path, fake_runpod: FakeRunPod, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, fake_runpod)
    out = tmp_path / "out"
    prompt = "a pony astronaut <lora:ponyStyle:0.8> --ar 16:9 --seed 7 --count 2"
    assert await generate(settings, prompt, workflow=None, out=out, timing=FAST) == 0

    files = sorted(out.glob("*.png"))
    assert len(files) == 2
    assert capsys.readouterr().out.split() == [str(path) for path in files]
    size, parameters = _parameters(files[0])
    assert size == (1344, 768)
    positive, negative, fields = parameters.split("\n")
    assert positive == f"{QUALITY}, rating_safe, a pony astronaut <lora:ponyStyle:0.8>"
    assert negative == (
        "Negative prompt: score_1, score_2, score_3, rating_questionable, rating_explicit"
    )
    assert fields == (
        "Steps: 25, Sampler: Euler a, Schedule type: Normal, CFG scale: 7, Seed: 7, "
        "Size: 1344x768, Batch size: 2, Batch pos: 0, Model: ponyDiffusionV6XL, Clip skip: 2"
    )
    assert "Seed: 7, Size: 1344x768, Batch size: 2, Batch pos: 1," in _parameters(files[1])[1]
    (run,) = fake_runpod.requests_for("run")
    submitted = run.json["input"]["workflow"]
    assert validate(submitted) == []
    assert _one(submitted, "KSampler")["seed"] == 7


async def test_generate_says_which_midjourney_flags_it_ignored(
    tmp_path: Path, fake_runpod: FakeRunPod, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, fake_runpod)
    prompt = "a pony astronaut --v 6 --stylize 250 --seed 7"
    assert await generate(settings, prompt, workflow=None, out=tmp_path / "out", timing=FAST) == 0
    said = capsys.readouterr().err
    assert "note: Ignored Midjourney flags" in said
    assert "`--v 6`" in said and "`--stylize 250`" in said


async def test_generate_hires_saves_the_upscaled_size(
    tmp_path: Path, fake_runpod: FakeRunPod
) -> None:
    settings = make_settings(tmp_path, fake_runpod)
    out = tmp_path / "out"
    prompt = "a pony --hires --sampler DPM++ 2M Karras --seed 5"
    assert await generate(settings, prompt, workflow=None, out=out, timing=FAST) == 0
    (path,) = out.glob("*.png")
    size, parameters = _parameters(path)
    assert size == (1536, 1536)
    assert "Sampler: DPM++ 2M, Schedule type: Karras" in parameters
    assert "Size: 1536x1536" in parameters
    assert "Denoising strength: 0.5, Hires upscale: 1.5" in parameters


async def test_generate_the_test_pattern_by_workflow_name(
    tmp_path: Path, fake_runpod: FakeRunPod
) -> None:
    settings = make_settings(tmp_path, fake_runpod)
    out = tmp_path / "out"
    assert await generate(settings, "test", workflow="test-pattern", out=out, timing=FAST) == 0
    (path,) = out.glob("*.png")
    size, parameters = _parameters(path)
    assert size == (512, 512)
    assert "Steps:" not in parameters and "Sampler:" not in parameters


async def test_generate_refuses_a_bad_prompt_before_sending_anything(
    tmp_path: Path, fake_runpod: FakeRunPod, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, fake_runpod)
    out = tmp_path / "out"
    assert await generate(settings, "a pony --steps 500", workflow=None, out=out, timing=FAST) == 1
    captured = capsys.readouterr()
    assert "`--steps 500` is more than this server allows (50 steps)" in captured.err
    assert captured.out == ""
    assert fake_runpod.requests_for("run") == [] and fake_runpod.requests_for("runsync") == []
    assert not out.exists()


@pytest.mark.parametrize("command", [("workflows",), ("workflow", "a pony")])
def test_a_broken_operator_template_is_named_without_a_traceback(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "mine.json").write_text('{"name": "mine", "workflow": {}}')
    result = run_cli(*command, cwd=tmp_path, WORKFLOWS_DIR=str(workflows))
    assert result.returncode == 2
    assert "cannot load a workflow template" in result.stderr and "mine.json" in result.stderr
    assert "Traceback" not in result.stderr
