"""Workflow templates: the Pony graph as the model card wants it, rendered as data, validated."""

from __future__ import annotations

import json

from bot.prompt import ContentPolicy, parse
from bot.workflows import Lora, load_library
from tests.comfy_schema import text_encoder_clip_paths, validate

QUALITY = "score_9, score_8_up, score_7_up, score_6_up, score_5_up, score_4_up"


def _render(text: str, **policy):
    library = load_library()
    request = parse(text, library=library, policy=ContentPolicy(**policy), seed=42)
    template = library.get(request.template)
    return request, template.render(request.values(), request.loras)


def test_pony_workflow_has_clip_skip_two_and_the_model_card_defaults() -> None:
    _, workflow = _render("a pony astronaut on the moon")
    by_class = {node["class_type"]: node for node in workflow.values()}
    assert by_class["CLIPSetLastLayer"]["inputs"]["stop_at_clip_layer"] == -2
    assert by_class["CheckpointLoaderSimple"]["inputs"] == {
        "ckpt_name": "ponyDiffusionV6XL.safetensors"
    }
    sampler = by_class["KSampler"]["inputs"]
    assert (sampler["sampler_name"], sampler["scheduler"], sampler["steps"], sampler["cfg"]) == (
        "euler_ancestral",
        "normal",
        25,
        7.0,
    )
    assert sampler["seed"] == 42
    latent = by_class["EmptyLatentImage"]["inputs"]
    assert (latent["width"], latent["height"], latent["batch_size"]) == (1024, 1024, 1)
    texts = sorted(
        n["inputs"]["text"] for n in workflow.values() if n["class_type"] == "CLIPTextEncode"
    )
    assert f"{QUALITY}, rating_safe, a pony astronaut on the moon" in texts
    assert "score_1, score_2, score_3, rating_questionable, rating_explicit" in texts
    assert validate(workflow) == []
    assert all(path[0] == "CLIPSetLastLayer" for path in text_encoder_clip_paths(workflow))


def test_quality_tags_and_negative_come_from_settings() -> None:
    _, workflow = _render(
        "a cat", quality_tags="score_9", default_negative="blurry", nsfw_policy="off"
    )
    texts = {n["inputs"]["text"] for n in workflow.values() if n["class_type"] == "CLIPTextEncode"}
    assert texts == {"score_9, a cat", "blurry"}


def test_rendering_never_changes_the_template_and_output_is_json() -> None:
    library = load_library()
    template = library.get("pony-v6-xl")
    before = json.dumps(template.workflow, sort_keys=True)
    _, workflow = _render('"quotes", {braces}, \\backslash --seed 7')
    assert json.dumps(template.workflow, sort_keys=True) == before
    assert json.loads(json.dumps(workflow)) == workflow
    assert any(
        '"quotes", {braces}, \\backslash' in n["inputs"].get("text", "") for n in workflow.values()
    )


def test_loras_chain_between_clip_skip_and_every_user() -> None:
    template = load_library().get("pony-v6-xl")
    workflow = template.render(
        {"seed": 1}, [Lora("a.safetensors", 0.8), Lora("b.safetensors", 0.5)]
    )
    loras = {k: n for k, n in workflow.items() if n["class_type"] == "LoraLoader"}
    assert len(loras) == 2
    first, second = sorted(loras, key=int)
    assert loras[first]["inputs"]["model"] == ["4", 0] and loras[first]["inputs"]["clip"] == [
        "10",
        0,
    ]
    assert loras[second]["inputs"]["model"] == [first, 0] and loras[second]["inputs"]["clip"] == [
        first,
        1,
    ]
    assert workflow["3"]["inputs"]["model"] == [second, 0]
    for encoder in ("6", "7"):
        assert workflow[encoder]["inputs"]["clip"] == [second, 1]
    assert validate(workflow) == []
    assert all(
        path[:3] == ["LoraLoader", "LoraLoader", "CLIPSetLastLayer"]
        for path in text_encoder_clip_paths(workflow)
    )


def test_test_pattern_needs_no_model() -> None:
    _, workflow = _render("anything --workflow test-pattern")
    assert {n["class_type"] for n in workflow.values()} == {"EmptyImage", "SaveImage"}
    assert validate(workflow) == []
