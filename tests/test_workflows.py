"""Workflow templates: the Pony graphs as the model card wants them, rendered as data, validated.

Golden files: tests/golden/<template>-<case>.json hold the exact workflow each case in GOLDEN
renders to. After a deliberate change, regenerate them and review the diff:

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_workflows.py -k golden
"""

from __future__ import annotations

import copy
import json
import os
import unicodedata
from collections.abc import Callable
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.prompt import (
    ContentPolicy,
    GenerationRequest,
    ImageInput,
    Options,
    PromptError,
    aspect_to_size,
    parse,
    resolve_sampler,
)
from bot.quotas import credit_cost
from bot.samplers import A1111_SAMPLERS, SAMPLERS, SCHEDULERS
from bot.workflows import Lora, TemplateError, load_library, parse_template
from tests.comfy_schema import text_encoder_clip_paths, validate

LIBRARY = load_library()
BUNDLED = resources.files("bot.templates")
GOLDEN_DIR = Path(__file__).parent / "golden"
QUALITY = "score_9, score_8_up, score_7_up, score_6_up, score_5_up, score_4_up"
LANDSCAPE = ImageInput("job-12-input.png", 1024, 768)
SQUARE = ImageInput("job-12-1.png", 1024, 1024)
PORTRAIT = ImageInput("job-13-2.png", 832, 1216)


def request_for(
    text: str,
    *,
    options: Options | None = None,
    policy: ContentPolicy | None = None,
    nsfw: bool = False,
    image: ImageInput | None = None,
) -> GenerationRequest:
    return parse(
        text,
        library=LIBRARY,
        policy=policy or ContentPolicy(),
        options=options,
        channel_nsfw=nsfw,
        image=image,
        seed=42,
    )


def render(request: GenerationRequest) -> dict[str, Any]:
    template = LIBRARY.get(request.template)
    assert template is not None
    return template.render(request.values(), request.loras)


def nodes_of(workflow: dict[str, Any], class_type: str) -> list[dict[str, Any]]:
    ordered = sorted(workflow.items(), key=lambda item: int(item[0]))
    return [node for _, node in ordered if node["class_type"] == class_type]


def clip_layers_per_encoder(workflow: dict[str, Any]) -> list[list[int]]:
    """For each text encoder, the `stop_at_clip_layer` of every CLIPSetLastLayer on its clip path."""
    layers = []
    for encoder in nodes_of(workflow, "CLIPTextEncode"):
        found, link = [], encoder["inputs"]["clip"]
        while isinstance(link, list):
            source = workflow[link[0]]
            if source["class_type"] == "CLIPSetLastLayer":
                found.append(source["inputs"]["stop_at_clip_layer"])
            link = source["inputs"].get("clip")
        layers.append(found)
    return layers


# Typical requests for every bundled template: (case id, text, keyword arguments of request_for).
GOLDEN: list[tuple[str, str, dict[str, Any]]] = [
    ("pony-v6-xl-default", "a pony astronaut on the moon", {}),
    ("pony-v6-xl-flags",
     "a pony astronaut, moon base --ar 16:9 --seed 7 --steps 30 --cfg 6.5 "
     "--sampler DPM++ 2M Karras --no text, watermark --count 2", {}),
    ("pony-v6-xl-loras",
     "<lora:ponyStyle:0.8> a pony astronaut <lora:detailTweaker:0.5> --raw", {"nsfw": True}),
    ("pony-v6-xl-hires-default", "a pony astronaut on the moon --hires", {}),
    ("pony-v6-xl-hires-flags",
     "a pony astronaut <lora:ponyStyle:0.8> --hires 1.25 --denoise 0.45 --ar 2:3 --seed 9", {}),
    ("pony-v6-xl-img2img-default", "a pony astronaut, watercolour", {"image": LANDSCAPE}),
    ("pony-v6-xl-img2img-flags",
     "a pony astronaut --denoise 0.4 --ar 1:1 --sampler Euler --seed 11", {"image": LANDSCAPE}),
    ("pony-v6-xl-upscale-default", "a pony astronaut on the moon",
     {"image": SQUARE, "options": Options(workflow="pony-v6-xl-upscale")}),
    ("pony-v6-xl-upscale-portrait", "a pony astronaut --hires 1.25 --seed 3",
     {"image": PORTRAIT, "options": Options(workflow="pony-v6-xl-upscale")}),
    ("test-pattern-default", "--workflow test-pattern", {}),
    ("test-pattern-size", "--workflow test-pattern --size 256x128 --count 2", {}),
]  # fmt: skip
CHECKED = [(case_id, text, kwargs) for case_id, text, kwargs in GOLDEN]
CHECKED += [
    ("pony-v6-xl-every-flag",
     "<lora:a:1> a pony --ar 9:21 --seed 1 --steps 50 --cfg 30 --sampler uni_pc "
     "--scheduler kl_optimal --no x --count 4", {}),
    ("pony-v6-xl-hires-max",
     "<lora:a:1> <lora:b:-2> a pony --hires 2 --size 768x768 --denoise 1 --sampler DDIM", {}),
    ("pony-v6-xl-img2img-tiny", "a pony", {"image": ImageInput("t.png", 64, 64)}),
]  # fmt: skip


def _golden_text(workflow: dict[str, Any]) -> str:
    return json.dumps(workflow, indent=2, ensure_ascii=False) + "\n"


@pytest.mark.parametrize(("case_id", "text", "kwargs"), GOLDEN, ids=[c[0] for c in GOLDEN])
def test_golden_workflows(case_id: str, text: str, kwargs: dict[str, Any]) -> None:
    request = request_for(text, **kwargs)
    assert case_id.startswith(request.template + "-")
    rendered = _golden_text(render(request))
    path = GOLDEN_DIR / f"{case_id}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(rendered, encoding="utf-8")
    assert path.exists(), f"no golden file yet: run with UPDATE_GOLDEN=1 to create {path.name}"
    assert rendered == path.read_text(encoding="utf-8")


def test_every_bundled_template_has_golden_files_and_none_is_stale() -> None:
    case_ids = {case_id for case_id, _, _ in GOLDEN}
    for name in LIBRARY.names(include_hidden=True):
        assert any(c.startswith(name + "-") for c in case_ids), name
    on_disk = {path.stem for path in GOLDEN_DIR.glob("*.json")}
    assert on_disk == case_ids


@pytest.mark.parametrize(("case_id", "text", "kwargs"), CHECKED, ids=[c[0] for c in CHECKED])
def test_rendered_workflows_pass_comfyui_validation(
    case_id: str, text: str, kwargs: dict[str, Any]
) -> None:
    """Every input declared, none undeclared, enums (samplers, schedulers) and ranges respected."""
    workflow = render(request_for(text, **kwargs))
    assert validate(workflow) == []
    if case_id.startswith("pony"):
        assert clip_layers_per_encoder(workflow) == [[-2], [-2]]
        assert all(
            path[-1] == "CheckpointLoaderSimple" for path in text_encoder_clip_paths(workflow)
        )
        for loader in nodes_of(workflow, "CheckpointLoaderSimple"):
            assert set(loader["inputs"]) == {"ckpt_name"}


@pytest.mark.parametrize("name", LIBRARY.names(include_hidden=True))
def test_bundled_templates_are_valid_as_shipped(name: str) -> None:
    template = LIBRARY.get(name)
    assert validate(template.workflow) == []
    assert validate(template.render({})) == []
    if template.pony_tags:
        assert template.accepts_loras
        assert clip_layers_per_encoder(template.workflow) == [[-2], [-2]]
        defaults = template.defaults
        assert (defaults["sampler"], defaults["scheduler"], defaults["steps"], defaults["cfg"]) == (
            "euler_ancestral",
            "normal",
            25,
            7.0,
        )
        for sampler in nodes_of(template.render({}), "KSampler"):
            inputs = sampler["inputs"]
            assert (inputs["sampler_name"], inputs["scheduler"], inputs["steps"]) == (
                "euler_ancestral",
                "normal",
                25,
            )


def test_pony_workflow_has_clip_skip_two_and_the_model_card_defaults() -> None:
    workflow = render(request_for("a pony astronaut on the moon"))
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
    texts = [n["inputs"]["text"] for n in nodes_of(workflow, "CLIPTextEncode")]
    assert texts == [
        f"{QUALITY}, rating_safe, a pony astronaut on the moon",
        "score_1, score_2, score_3, rating_questionable, rating_explicit",
    ]


def test_quality_tags_and_negative_come_from_settings() -> None:
    policy = ContentPolicy(quality_tags="score_9", default_negative="blurry", nsfw_policy="off")
    workflow = render(request_for("a cat", policy=policy))
    texts = {n["inputs"]["text"] for n in nodes_of(workflow, "CLIPTextEncode")}
    assert texts == {"score_9, a cat", "blurry"}


def test_the_server_checkpoint_is_loaded() -> None:
    policy = ContentPolicy(checkpoint="ponyDiffusionV6XL_v6StartWithThisOne.safetensors")
    for text, kwargs in (("a pony", {}), ("a pony --hires", {}), ("a pony", {"image": SQUARE})):
        workflow = render(request_for(text, policy=policy, **kwargs))
        (loader,) = nodes_of(workflow, "CheckpointLoaderSimple")
        assert loader["inputs"]["ckpt_name"] == policy.checkpoint


def test_rendering_never_changes_the_template_and_output_is_json() -> None:
    template = LIBRARY.get("pony-v6-xl")
    before = json.dumps(template.workflow, sort_keys=True)
    workflow = render(request_for('"quotes", {braces}, \\backslash --seed 7 <lora:x:1>'))
    assert json.dumps(template.workflow, sort_keys=True) == before
    assert json.loads(json.dumps(workflow)) == workflow
    assert any(
        '"quotes", {braces}, \\backslash' in n["inputs"].get("text", "") for n in workflow.values()
    )


def test_loras_chain_between_clip_skip_and_every_user() -> None:
    template = LIBRARY.get("pony-v6-xl")
    workflow = template.render(
        {"seed": 1}, [Lora("a.safetensors", 0.8), Lora("b.safetensors", 0.5)]
    )
    loras = {k: n for k, n in workflow.items() if n["class_type"] == "LoraLoader"}
    first, second = sorted(loras, key=int)
    assert loras[first]["inputs"] == {
        "model": ["4", 0],
        "clip": ["10", 0],
        "lora_name": "a.safetensors",
        "strength_model": 0.8,
        "strength_clip": 0.8,
    }
    assert (loras[second]["inputs"]["model"], loras[second]["inputs"]["clip"]) == (
        [first, 0],
        [first, 1],
    )
    assert workflow["3"]["inputs"]["model"] == [second, 0]
    for encoder in ("6", "7"):
        assert workflow[encoder]["inputs"]["clip"] == [second, 1]
    assert validate(workflow) == []
    assert all(
        path[:3] == ["LoraLoader", "LoraLoader", "CLIPSetLastLayer"]
        for path in text_encoder_clip_paths(workflow)
    )


def test_loras_reach_both_passes_of_the_hires_workflow() -> None:
    workflow = render(request_for("a pony <lora:style:0.7> --hires"))
    (lora_id,) = [k for k, n in workflow.items() if n["class_type"] == "LoraLoader"]
    samplers = nodes_of(workflow, "KSampler")
    assert [s["inputs"]["model"] for s in samplers] == [[lora_id, 0], [lora_id, 0]]
    assert all(path[0] == "LoraLoader" for path in text_encoder_clip_paths(workflow))


def test_hires_draws_then_upscales_the_latent_then_refines_it() -> None:
    workflow = render(request_for("a pony --hires 1.25 --seed 9 --steps 30 --ar 16:9"))
    first, second = nodes_of(workflow, "KSampler")
    (upscale,) = nodes_of(workflow, "LatentUpscaleBy")
    assert upscale["inputs"]["samples"] == [_id_of(workflow, first), 0]
    assert upscale["inputs"]["scale_by"] == 1.25
    assert second["inputs"]["latent_image"] == [_id_of(workflow, upscale), 0]
    assert (first["inputs"]["denoise"], second["inputs"]["denoise"]) == (1.0, 0.5)
    for sampler in (first, second):
        assert (sampler["inputs"]["seed"], sampler["inputs"]["steps"]) == (9, 30)
    (decode,) = nodes_of(workflow, "VAEDecode")
    assert decode["inputs"]["samples"] == [_id_of(workflow, second), 0]
    (latent,) = nodes_of(workflow, "EmptyLatentImage")
    assert (latent["inputs"]["width"], latent["inputs"]["height"]) == (1344, 768)


def test_img2img_loads_the_attached_image_by_its_name() -> None:
    workflow = render(request_for("a pony --denoise 0.45", image=LANDSCAPE))
    (load,) = nodes_of(workflow, "LoadImage")
    assert load["inputs"] == {"image": "job-12-input.png"}
    (fit,) = nodes_of(workflow, "ImageScale")
    assert (fit["inputs"]["width"], fit["inputs"]["height"], fit["inputs"]["crop"]) == (
        1152,
        896,
        "center",
    )
    (encode,) = nodes_of(workflow, "VAEEncode")
    (sampler,) = nodes_of(workflow, "KSampler")
    assert sampler["inputs"]["latent_image"] == [_id_of(workflow, encode), 0]
    assert sampler["inputs"]["denoise"] == 0.45
    assert not nodes_of(workflow, "EmptyLatentImage")


def test_upscale_scales_the_image_then_refines_it_lightly() -> None:
    request = request_for("a pony", options=Options(workflow="pony-v6-xl-upscale"), image=SQUARE)
    workflow = render(request)
    (load,) = nodes_of(workflow, "LoadImage")
    assert load["inputs"] == {"image": "job-12-1.png"}
    (scale,) = nodes_of(workflow, "ImageScaleBy")
    assert scale["inputs"]["scale_by"] == 1.5 and scale["inputs"]["image"] == [
        _id_of(workflow, load),
        0,
    ]
    (sampler,) = nodes_of(workflow, "KSampler")
    assert sampler["inputs"]["denoise"] == 0.35
    assert request.output_size == (1536, 1536)


def test_test_pattern_needs_no_model() -> None:
    workflow = render(request_for("anything --workflow test-pattern"))
    assert {n["class_type"] for n in workflow.values()} == {"EmptyImage", "SaveImage"}
    assert validate(workflow) == []


def test_the_text_to_image_template_names_its_variants() -> None:
    template = LIBRARY.get("pony-v6-xl")
    assert template.variants == {"hires": "pony-v6-xl-hires", "image": "pony-v6-xl-img2img"}


def _id_of(workflow: dict[str, Any], node: dict[str, Any]) -> str:
    return next(k for k, n in workflow.items() if n is node)


# --- cost ---------------------------------------------------------------------------------------


def _credits(text: str, **kwargs: Any) -> int:
    request = request_for(text, **kwargs)
    return credit_cost(request, LIBRARY.get(request.template))


def test_one_default_image_costs_one_credit_and_cost_follows_the_work() -> None:
    assert _credits("a pony") == 1
    assert _credits("a pony --count 4") == 4
    assert _credits("a pony --steps 50 --count 2") == 4


def test_an_upscale_costs_what_its_final_pixels_cost() -> None:
    upscale = _credits("a pony", options=Options(workflow="pony-v6-xl-upscale"), image=SQUARE)
    assert upscale == _credits("a pony --size 1536x1536")


def test_img2img_costs_what_text_to_image_of_the_same_size_costs() -> None:
    assert _credits("a pony", image=SQUARE) == _credits("a pony")
    assert _credits("a pony --steps 50", image=SQUARE) == _credits("a pony --steps 50")


def test_hires_costs_its_two_passes() -> None:
    """A 1024² pass plus a 1536² pass: more than the final size alone, less than two of them."""
    hires = LIBRARY.get("pony-v6-xl-hires").cost_multiplier
    assert hires >= 1 + 1 / 1.5**2 and hires < 1.6
    assert _credits("a pony --hires --count 4") > _credits("a pony --size 1536x1536 --count 4")


# --- properties: any input is a valid workflow or a PromptError -------------------------------

_FLAGS = st.sampled_from(
    [
        "--ar", "—ar", "–ar", "--aspect", "--size", "--seed", "--steps", "--cfg", "--sampler",
        "--scheduler", "--no", "--count", "--workflow", "--raw", "--hires", "--hires", "--denoise",
        "--n", "--sed", "--chaos",
    ]
)  # fmt: skip
_VALUES = st.sampled_from(
    [
        "", "16:9", "9:21", "5:1", "832x1216", "2048x2048", "-1", "0", "0.5", "1.5", "2", "7",
        "99", "1e309", "nan", "DPM++ 2M Karras", '"Euler a"', "karras", "test-pattern",
        "pony-v6-xl-hires", "pony-v6-xl-img2img", "pony-v6-xl-upscale", "text, watermark",
    ]
)  # fmt: skip
_ODDITIES = st.sampled_from(
    [
        "<lora:", "<lora:style:0.8>", "<lora:x>", "<lora:../x:1>", ">", ":", ",", '"', "“", "`",
        "{", "}", "\\", "%", "score_9", "rating_explicit", "\n", "\t", "gore", "👩\u200d🚀",
    ]
)  # fmt: skip
_PLAIN = st.characters(exclude_categories=("Cc", "Cs", "Co", "Cf"))
# Anything a member might paste: words, odd bits, flags with usual or unusual values, and
# sometimes arbitrary text (control characters, surrogates, private use).
ANY_TEXT = st.builds(
    lambda words, flags, wild: " ".join([*words, *flags, wild]),
    st.lists(st.one_of(st.text(_PLAIN, max_size=12), _ODDITIES), max_size=8),
    st.lists(st.tuples(_FLAGS, st.one_of(_VALUES, st.text(_PLAIN, max_size=8))).map(" ".join),
             max_size=4),
    st.one_of(st.just(""), st.text(max_size=12)),
)  # fmt: skip
_DISCORD_INT = st.integers(min_value=-(2**53), max_value=2**53)
_DISCORD_FLOAT = st.floats(min_value=-(2.0**53), max_value=2.0**53, allow_nan=False)


def _typed(usual: st.SearchStrategy, wild: st.SearchStrategy) -> st.SearchStrategy:
    """A typed option: usually not given, often a usual value, sometimes anything of its type."""
    return st.one_of(st.none(), st.none(), st.none(), usual, wild)


ANY_OPTIONS = st.builds(
    Options,
    negative=_typed(st.text(_PLAIN, max_size=30), st.text(max_size=30)),
    aspect=_typed(st.sampled_from(["16:9", "2:3", "1:1", "5:1", "x"]), st.text(max_size=8)),
    count=_typed(st.integers(0, 5), _DISCORD_INT),
    seed=_typed(st.integers(-2, 2**64), _DISCORD_INT),
    steps=_typed(st.integers(0, 60), _DISCORD_INT),
    cfg=_typed(st.floats(0, 31), _DISCORD_FLOAT),
    sampler=_typed(st.sampled_from([*SAMPLERS, *A1111_SAMPLERS]), st.text(max_size=8)),
    workflow=_typed(st.sampled_from([*LIBRARY.names(), "nope"]), st.text(max_size=8)),
    denoise=_typed(st.floats(0, 1.1), _DISCORD_FLOAT),
    hires=_typed(st.floats(1, 2.1), _DISCORD_FLOAT),
)
ANY_POLICY = st.builds(
    ContentPolicy,
    nsfw_policy=st.sampled_from(["safe_tags", "refuse", "spoiler", "off"]),
    blocked_words=st.sampled_from([(), ("gore",)]),
    max_steps=st.integers(1, 80),
    max_count=st.integers(1, 8),
    max_pixels=st.sampled_from([512 * 512, 1024 * 1024, 1536 * 1536, 2048 * 2048]),
    max_prompt_length=st.sampled_from([100, 1500]),
    allowed_samplers=st.none() | st.just(frozenset({"euler", "euler_ancestral"})),
    allowed_templates=st.none() | st.just(frozenset({"pony-v6-xl", "test-pattern"})),
    allowed_loras=st.none() | st.just(frozenset({"style"})),
    default_steps=st.none() | st.integers(1, 60),
    default_cfg=st.none() | st.floats(1, 30),
)
ANY_IMAGE = st.none() | st.builds(
    ImageInput,
    name=st.just("job-1-input.png"),
    width=st.integers(64, 4096),
    height=st.integers(64, 4096),
)
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_SNAPSHOT = {t.name: json.dumps(t.workflow, sort_keys=True) for t in LIBRARY}


def _check_valid(request: GenerationRequest, policy: ContentPolicy) -> dict[str, Any]:
    """Render `request` and check what ComfyUI and the server's limits would check."""
    workflow = render(request)
    json.dumps(workflow, ensure_ascii=False, allow_nan=False).encode("utf-8")
    assert validate(workflow) == []
    if request.template.startswith("pony"):
        assert all(layers == [-2] for layers in clip_layers_per_encoder(workflow))
    width, height = request.output_size
    assert width * height <= policy.max_pixels
    assert request.count in range(1, policy.max_count + 1)
    assert request.steps is None or 1 <= request.steps <= policy.max_steps
    if policy.allowed_templates is not None:
        assert request.template in policy.allowed_templates
    if request.image is not None:
        (load,) = nodes_of(workflow, "LoadImage")
        assert load["inputs"]["image"] == request.image.name
    return workflow


# What each kind of request may carry: flags in the text, typed options, an image.
_MODES = {
    "text": ({"ar", "size", "seed", "steps", "cfg", "sampler", "scheduler", "no", "count", "raw"},
             {"negative", "aspect", "count", "seed", "steps", "cfg", "sampler"}),
    "hires": ({"ar", "size", "seed", "steps", "cfg", "sampler", "scheduler", "no", "count", "raw",
               "hires", "denoise"},
              {"negative", "aspect", "count", "seed", "steps", "cfg", "sampler", "hires",
               "denoise"}),
    "img2img": ({"ar", "size", "seed", "steps", "cfg", "sampler", "scheduler", "no", "raw",
                 "denoise"},
                {"negative", "aspect", "seed", "steps", "cfg", "sampler", "denoise"}),
    "upscale": ({"seed", "steps", "cfg", "sampler", "scheduler", "no", "raw", "denoise", "hires"},
                {"negative", "seed", "steps", "cfg", "sampler", "denoise", "hires"}),
}  # fmt: skip
_TEMPLATE_OF_MODE = {
    "text": "pony-v6-xl",
    "hires": "pony-v6-xl-hires",
    "img2img": "pony-v6-xl-img2img",
    "upscale": "pony-v6-xl-upscale",
}
_RATIOS = ["16:9", "9:16", "1:1", "3:2", "2:3", "4:3", "3:4", "21:9", "9:21", "2.39:1", "5:4"]


def _is_word(text: str) -> bool:
    """Still one word after NFKC, with a letter or digit in it, and no flag or LoRA tag."""
    normal = unicodedata.normalize("NFKC", text)
    return (
        len(normal.split()) == 1
        and not set(normal) & set("-—–<>")
        and any(c.isalnum() for c in normal)
    )


_PROMPT_WORD = st.text(
    st.characters(exclude_categories=("Cc", "Cs", "Co", "Cf", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=10,
).filter(_is_word)
_NUMBER_TEXT = {
    "seed": st.integers(0, 2**64 - 1).map(str),
    "steps": st.integers(1, 50).map(str),
    "cfg": st.floats(1, 30).map(lambda v: f"{v:.2f}"),
    "sampler": st.sampled_from([*SAMPLERS, *A1111_SAMPLERS]),
    "scheduler": st.sampled_from(SCHEDULERS),
    "count": st.integers(1, 4).map(str),
    "ar": st.sampled_from(_RATIOS),
    "size": st.tuples(st.integers(1, 32), st.integers(1, 32)).map(
        lambda s: f"{s[0] * 64}x{s[1] * 64}"
    ),
    "hires": st.one_of(st.just(""), st.floats(1.1, 2.0).map(lambda v: f"{v:.2f}")),
    "denoise": st.floats(0.05, 1.0).map(lambda v: f"{v:.2f}"),
    "raw": st.just(""),
}
_TYPED = {
    "negative": st.text(_PLAIN, min_size=1, max_size=30),
    "aspect": st.sampled_from(_RATIOS),
    "count": st.integers(1, 4),
    "seed": st.integers(0, 2**64 - 1),
    "steps": st.integers(1, 50),
    "cfg": st.floats(1, 30),
    "sampler": st.sampled_from([*SAMPLERS, *A1111_SAMPLERS]),
    "hires": st.floats(1.1, 2.0),
    "denoise": st.floats(0.05, 1.0),
}
# Large enough that any size the flags allow fits, so every generated request must be accepted.
ROOMY = ContentPolicy(max_pixels=8192 * 8192)


@st.composite
def sensible_requests(draw: st.DrawFn) -> tuple[str, Options, ImageInput | None, str, dict]:
    """A request a member could reasonably make, with flags and options in any order and mix."""
    mode = draw(st.sampled_from(sorted(_MODES)))
    flag_names, option_names = _MODES[mode]
    flags = draw(st.lists(st.sampled_from(sorted(flag_names)), unique=True, max_size=6))
    if "ar" in flags and "size" in flags:
        flags.remove("size")
    if mode == "hires" and "hires" not in flags:
        flags.append("hires")
    values = {name: draw(_NUMBER_TEXT.get(name, _PROMPT_WORD)) for name in flags}
    dash = draw(st.sampled_from(["--", "—", "–"]))
    lora_name = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_]{0,15}", fullmatch=True)
    loras = draw(
        st.lists(st.tuples(lora_name, st.floats(-2, 2)), max_size=3, unique_by=lambda x: x[0])
    )
    words = draw(st.lists(_PROMPT_WORD, min_size=1, max_size=8))
    words += [f"<lora:{name}:{strength!r}>" for name, strength in loras]
    text = " ".join(draw(st.permutations(words)))
    text += "".join(f" {dash}{name} {values[name]}".rstrip() for name in flags)
    typed = draw(st.lists(st.sampled_from(sorted(option_names)), unique=True, max_size=4))
    options = {name: draw(_TYPED[name]) for name in typed}
    if mode == "upscale":
        options["workflow"] = "pony-v6-xl-upscale"
    image = None
    if mode in ("img2img", "upscale"):
        image = ImageInput(
            "job-5-input.png", draw(st.integers(64, 2048)), draw(st.integers(64, 2048))
        )
    return text, Options(**options), image, mode, {"flags": values, "typed": options}


# Wild requests, sensible ones, and sensible text with wild options.
ANY_REQUEST = st.one_of(
    st.tuples(ANY_TEXT, ANY_OPTIONS, ANY_IMAGE),
    sensible_requests().map(lambda case: case[:3]),
    st.tuples(sensible_requests().map(lambda case: case[0]), ANY_OPTIONS, ANY_IMAGE),
)


@PROPERTY
@given(case=ANY_REQUEST, policy=ANY_POLICY, nsfw=st.booleans())
def test_any_input_is_a_valid_workflow_within_the_limits_or_a_prompt_error(
    case: tuple[str, Options, ImageInput | None], policy: ContentPolicy, nsfw: bool
) -> None:
    text, options, image = case
    try:
        request = parse(
            text, library=LIBRARY, policy=policy, options=options, channel_nsfw=nsfw, image=image
        )
    except PromptError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    _check_valid(request, policy)
    assert {t.name: json.dumps(t.workflow, sort_keys=True) for t in LIBRARY} == _SNAPSHOT


@PROPERTY
@given(case=sensible_requests(), nsfw=st.booleans())
def test_sensible_requests_are_accepted_with_typed_options_winning(
    case: tuple[str, Options, ImageInput | None, str, dict], nsfw: bool
) -> None:
    text, options, image, mode, given_values = case
    request = parse(
        text,
        library=LIBRARY,
        policy=ROOMY,
        options=options,
        channel_nsfw=nsfw,
        image=image,
        seed=42,
    )
    _check_valid(request, ROOMY)
    assert request.template == _TEMPLATE_OF_MODE[mode]
    flags, typed = given_values["flags"], given_values["typed"]
    for name, default in (("seed", 42), ("steps", 25), ("count", 1)):
        if name in typed:
            assert getattr(request, name) == typed[name]
        elif name in flags:
            assert getattr(request, name) == int(flags[name])
        elif mode in ("text", "hires") or name != "count":
            assert getattr(request, name) == default
    if "sampler" in typed:
        assert request.sampler == resolve_sampler(typed["sampler"])[0]
    elif "sampler" in flags:
        assert request.sampler == resolve_sampler(flags["sampler"])[0]
    if "scheduler" in flags:
        assert request.scheduler == flags["scheduler"]
    if "hires" in typed:
        assert request.hires_scale == round(typed["hires"], 2)
    if "aspect" in typed:
        assert (request.width, request.height) == aspect_to_size(
            typed["aspect"], LIBRARY.get(request.template)
        )
    assert len(request.loras) == text.count("<lora:")


@PROPERTY
@given(case=sensible_requests(), wild=st.text(max_size=40), negative=st.text(_PLAIN, max_size=20))
def test_member_text_lands_only_in_text_inputs(
    case: tuple[str, Options, ImageInput | None, str, dict], wild: str, negative: str
) -> None:
    """Whatever is typed ends up in CLIPTextEncode.text or nowhere: never another input, never a key."""
    text, options, image, _, _ = case
    text = f"{_MARKER} {wild} {text}"
    options = replace(options, negative=f"{_MARKER} {negative}")
    try:
        request = parse(text, library=LIBRARY, policy=ROOMY, options=options, image=image)
    except PromptError:
        return
    workflow = render(request)
    literals = _template_strings(LIBRARY.get(request.template).workflow)
    allowed = literals | set(SAMPLERS) | set(SCHEDULERS) | {request.checkpoint}
    if request.image is not None:
        allowed.add(request.image.name)
    lora_names = {lora.name for lora in request.loras}
    for node_id, node in workflow.items():
        assert _MARKER not in node_id and _MARKER not in node["class_type"]
        for name, value in node["inputs"].items():
            assert _MARKER not in name
            if not isinstance(value, str) or (node["class_type"], name) == (
                "CLIPTextEncode",
                "text",
            ):
                continue
            if (node["class_type"], name) == ("LoraLoader", "lora_name"):
                assert value in lora_names
                continue
            assert value in allowed, (node["class_type"], name, value)
    texts = [n["inputs"]["text"] for n in nodes_of(workflow, "CLIPTextEncode")]
    assert all(_MARKER in t for t in texts), "the prompt and the negative both arrive"


_MARKER = "zqmarkerqz"


def _template_strings(workflow: dict[str, Any]) -> set[str]:
    return {
        value
        for node in workflow.values()
        for value in node["inputs"].values()
        if isinstance(value, str)
    }


@settings(max_examples=100, deadline=None)
@given(
    name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9 _.()+-]{0,30}", fullmatch=True),
    strength=st.floats(-2, 2),
)
def test_lora_tags_become_lora_loaders_with_a_plain_file_name(name: str, strength: float) -> None:
    try:
        request = request_for(f"a pony <lora:{name}:{strength!r}>")
    except PromptError as exc:
        assert ".." in name or "`" in str(exc)
        return
    (loader,) = nodes_of(render(request), "LoraLoader")
    spaced = " ".join(name.split())  # prompts are read with runs of spaces collapsed
    assert loader["inputs"]["lora_name"] in (spaced, f"{spaced}.safetensors")
    assert loader["inputs"]["strength_model"] == strength


# --- the loader refuses broken templates, naming the file, node and input --------------------

DELETE = object()


def _template_data(name: str) -> dict[str, Any]:
    return json.loads(BUNDLED.joinpath(f"{name}.json").read_text("utf-8"))


def _edit(data: dict[str, Any], edits: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for path, value in edits.items():
        *parents, last = path.split(".")
        target = data
        for key in parents:
            target = target[key]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
    return data


# (id, base template, edits as dotted path -> value, substrings the message must hold)
BROKEN: list[tuple[str, str, dict[str, Any], tuple[str, ...]]] = [
    ("link to a missing node", "pony-v6-xl", {"workflow.3.inputs.model": ["99", 0]},
     ("node 3 input 'model' links to node 99, which does not exist",)),
    ("link to a missing output slot", "pony-v6-xl", {"workflow.8.inputs.vae": ["4", 3]},
     ("node 8 input 'vae' links to output 3 of node 4 (CheckpointLoaderSimple), "
      "which has no such output",)),
    ("link with a numeric node id", "pony-v6-xl", {"workflow.8.inputs.vae": [4, 2]},
     ("node 8 input 'vae' must be a link", "id as a string")),
    ("malformed link", "pony-v6-xl", {"workflow.8.inputs.vae": ["4"]},
     ("node 8 input 'vae' must be a link",)),
    ("node without a class", "pony-v6-xl", {"workflow.8.class_type": DELETE},
     ("node 8 has no class_type",)),
    ("node without inputs", "pony-v6-xl", {"workflow.8.inputs": DELETE},
     ("node 8 has no inputs object",)),
    ("no output node", "pony-v6-xl", {"workflow.9": DELETE},
     ("saves no image that worker-comfyui returns", "SaveImage")),
    ("UI export under workflow", "pony-v6-xl", {"workflow": {"nodes": [], "links": []}},
     ("ComfyUI's UI format", "Export (API)")),
    ("mapped input missing", "pony-v6-xl", {"parameters.seed": "3.noise_seed"},
     ("parameter 'seed' points at input 'noise_seed' of node 3 (KSampler), "
      "which has no such input",)),
    ("mapped node missing", "pony-v6-xl", {"parameters.seed": "30.seed"},
     ("parameter 'seed' points at node 30, which does not exist",)),
    ("mapping without a node", "pony-v6-xl", {"parameters.seed": "seed"},
     ("'seed' is not of the form 'node.input'",)),
    ("mapping that would overwrite a link", "pony-v6-xl", {"parameters.prompt": "6.clip"},
     ("parameter 'prompt' points at input 'clip' of node 6 (CLIPTextEncode), which is a link",)),
    ("input mapped twice", "pony-v6-xl", {"parameters.steps": ["3.steps", "3.cfg"]},
     ("node 3 input 'cfg' is set by both 'steps' and 'cfg'",)),
    ("mapping to nothing", "pony-v6-xl", {"parameters.seed": []},
     ("parameter 'seed' maps to no input",)),
    ("required parameter unmapped", "pony-v6-xl", {"parameters.seed": DELETE},
     ("node 3 (KSampler) input 'seed' is not set by any parameter", "map 'seed' to \"3.seed\"")),
    ("second sampler left with a fixed seed", "pony-v6-xl-hires", {"parameters.seed": "3.seed"},
     ("node 12 (KSampler) input 'seed' is not set by any parameter",)),
    ("text encoder left with fixed text", "pony-v6-xl", {"parameters.negative": DELETE},
     ("node 7 (CLIPTextEncode) input 'text'", "'prompt' or 'negative'")),
    ("batch size unmapped", "pony-v6-xl",
     {"parameters.count": DELETE, "defaults.count": DELETE},
     ("node 5 (EmptyLatentImage) input 'batch_size'", "map 'count'")),
    ("input image unmapped", "pony-v6-xl-img2img", {"parameters.image": DELETE},
     ("node 11 (LoadImage) input 'image' is not set by any parameter",)),
    ("default of the wrong type", "pony-v6-xl", {"defaults.steps": "25"},
     ("default steps='25' must be a whole number",)),
    ("default that is a boolean", "pony-v6-xl", {"defaults.count": True},
     ("default count=True must be a whole number",)),
    ("default number for a name", "pony-v6-xl", {"defaults.sampler": 1.5},
     ("default sampler=1.5 must be a string",)),
    ("default sampler ComfyUI lacks", "pony-v6-xl", {"defaults.sampler": "euler_a"},
     ("default sampler='euler_a' is not a ComfyUI sampler name",)),
    ("default for an unmapped parameter", "pony-v6-xl", {"defaults.denoise": 0.5},
     ("default for 'denoise', which the template does not map",)),
    ("unknown parameter", "pony-v6-xl", {"parameters.clip_skip": "10.stop_at_clip_layer"},
     ("unknown parameter 'clip_skip'", "known: prompt, negative")),
    ("unknown field", "pony-v6-xl", {"lora_anchors": {"model": ["4", 0]}},
     ("unknown field 'lora_anchors'",)),
    ("unknown kind of variant", "pony-v6-xl", {"variants": {"video": "pony-v6-xl"}},
     ("'variants' may only name 'hires' and 'image'",)),
    ("missing workflow", "pony-v6-xl", {"workflow": DELETE}, ("missing field 'workflow'",)),
    ("missing parameters", "pony-v6-xl", {"parameters": DELETE}, ("missing field 'parameters'",)),
    ("parameters not an object", "pony-v6-xl", {"parameters": ["prompt"]},
     ("'parameters' must be an object",)),
    ("name with spaces", "pony-v6-xl", {"name": "Pony XL"}, ("must be lower-case with no spaces",)),
    ("LoRA anchor of the wrong type", "pony-v6-xl", {"lora_anchor.clip": ["4", 0]},
     ("lora_anchor.clip links to output 0 of node 4, which is MODEL, not CLIP",)),
    ("LoRA anchor to a missing node", "pony-v6-xl", {"lora_anchor.model": ["44", 0]},
     ("lora_anchor.model links to node 44, which does not exist",)),
    ("bad base resolution", "pony-v6-xl", {"base_resolution": [1024]},
     ("'base_resolution' must be [width, height]",)),
    ("zero cost multiplier", "pony-v6-xl", {"cost_multiplier": 0},
     ("cost_multiplier must be a number above 0",)),
    ("cost multiplier as text", "pony-v6-xl", {"cost_multiplier": "1"},
     ("cost_multiplier must be a number above 0",)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("base", "edits", "expected"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN]
)
def test_broken_templates_are_refused_naming_file_node_and_input(
    base: str, edits: dict[str, Any], expected: tuple[str, ...]
) -> None:
    text = json.dumps(_edit(_template_data(base), edits))
    with pytest.raises(TemplateError) as caught:
        parse_template(text, source="broken.json")
    message = str(caught.value)
    assert message.startswith("broken.json: ")
    for part in expected:
        assert part in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"name": "x",\n  "workflow": ', ("not valid JSON", "line 2")),
        ("[1, 2]", ("must hold one JSON object",)),
        (json.dumps({"nodes": [], "links": [], "version": 0.4}), ("UI format", "Export (API)")),
        (
            json.dumps(_template_data("pony-v6-xl")["workflow"]),
            ("bare API workflow", '"workflow": <it>'),
        ),
    ],
    ids=["bad JSON", "not an object", "UI export", "bare API workflow"],
)
def test_files_that_are_not_templates_are_refused(text: str, expected: tuple[str, ...]) -> None:
    with pytest.raises(TemplateError) as caught:
        parse_template(text, source="broken.json")
    assert str(caught.value).startswith("broken.json: ")
    for part in expected:
        assert part in str(caught.value)


def _write(directory: Path, filename: str, data: dict[str, Any]) -> Path:
    path = directory / filename
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _mine(**edits: Any) -> dict[str, Any]:
    return _edit(_template_data("pony-v6-xl"), {"name": "mine", **edits})


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"mine.json": _mine(variants={"hires": "nope"})},
            ("mine.json: variant 'hires' names the workflow 'nope', which does not exist",),
        ),
        (
            {"mine.json": _mine(variants={"hires": "test-pattern"})},
            (
                "mine.json: variant 'hires' names 'test-pattern' (test-pattern.json)",
                "does not map the 'scale'",
            ),
        ),
        (
            {"mine.json": _mine(variants={"image": "pony-v6-xl-hires"})},
            ("does not map the 'image' parameter",),
        ),
        (
            {"a.json": _mine(), "b.json": _mine()},
            ("b.json: the name 'mine' is already used by", "a.json"),
        ),
        (
            {"a.json": _mine(name="pony-v6-xl"), "b.json": _mine(name="pony-v6-xl")},
            ("b.json: the name 'pony-v6-xl' is already used by", "a.json"),
        ),
        (
            {"good.json": _mine(), "zz-broken.json": _mine(name="x", **{"cost_multiplier": -1})},
            ("zz-broken.json: cost_multiplier",),
        ),
    ],
    ids=[
        "unknown variant",
        "hires variant without a hires pass",
        "image variant without an image",
        "duplicate name",
        "two replacements of one bundled template",
        "one broken file among good ones",
    ],
)
def test_operator_directories_are_checked_as_a_whole(
    tmp_path: Path, files: dict[str, dict[str, Any]], expected: tuple[str, ...]
) -> None:
    for filename, data in files.items():
        _write(tmp_path, filename, data)
    with pytest.raises(TemplateError) as caught:
        load_library(tmp_path)
    for part in expected:
        assert part in str(caught.value)


def test_an_operator_template_may_replace_a_bundled_one(tmp_path: Path) -> None:
    path = _write(tmp_path, "pony.json", _mine(name="pony-v6-xl", description="Ours."))
    _write(tmp_path, "mine.json", _mine())
    library = load_library(tmp_path)
    assert library.get("pony-v6-xl").source == str(path)
    assert library.get("pony-v6-xl").description == "Ours."
    assert library.get("mine") is not None and library.get("test-pattern") is not None


def test_a_missing_operator_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"WORKFLOWS_DIR .*nowhere is not a directory"):
        load_library(tmp_path / "nowhere")


def test_an_operator_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    (tmp_path / "latin.json").write_bytes('{"name": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(TemplateError, match=r"latin\.json: cannot be read as UTF-8"):
        load_library(tmp_path)


def test_template_defaults_are_applied_when_a_request_leaves_them_out(tmp_path: Path) -> None:
    data = _mine(**{"defaults.steps": 30, "defaults.cfg": 5})
    _write(tmp_path, "mine.json", data)
    library = load_library(tmp_path)
    template = library.get("mine")
    assert template.defaults["cfg"] == 5.0 and isinstance(template.defaults["cfg"], float)
    workflow = template.render({"seed": 3})
    assert (workflow["3"]["inputs"]["steps"], workflow["3"]["inputs"]["cfg"]) == (30, 5.0)
    request = parse(
        "a pony", library=library, policy=ContentPolicy(), options=Options(workflow="mine")
    )
    assert (request.steps, request.cfg) == (30, 5.0)


@pytest.mark.parametrize(
    ("edit", "check"),
    [
        ({"hidden": True}, lambda library: "mine" not in library.names()),
        ({"_comment": "operators may annotate"}, lambda library: "mine" in library.names()),
    ],
    ids=["hidden", "comment field"],
)
def test_operator_template_flags(
    tmp_path: Path, edit: dict[str, Any], check: Callable[[Any], bool]
) -> None:
    _write(tmp_path, "mine.json", _mine(**edit))
    library = load_library(tmp_path)
    assert check(library)
    assert library.get("mine") is not None
