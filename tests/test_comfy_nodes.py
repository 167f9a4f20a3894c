"""Templates are checked against ComfyUI 0.8.0's own node definitions when they load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.comfy_nodes import check_workflow, definitions
from bot.workflows import TemplateError, load_library, parse_template
from tests import gen_comfy_nodes
from tests.test_workflows import DELETE, _edit, _template_data

PREVIEW = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
CUSTOM = {"class_type": "MyUpscaler", "inputs": {"image": ["8", 0], "strength": 2}}
CUSTOM_SAVE = {"class_type": "MySaveToCloud", "inputs": {"images": ["8", 0]}}

# (id, base template, edits as dotted path -> value, substrings the message must hold)
REFUSED: list[tuple[str, str, dict[str, Any], tuple[str, ...]]] = [
    ("only a PreviewImage output", "pony-v6-xl", {"workflow.9": PREVIEW},
     ("node 9 (PreviewImage) is an output worker-comfyui never sends back", "use SaveImage")),
    ("a PreviewImage beside the SaveImage", "pony-v6-xl", {"workflow.20": PREVIEW},
     ("node 20 (PreviewImage)",)),
    ("a node class ComfyUI lacks", "pony-v6-xl", {"workflow.20": CUSTOM},
     ("node 20 uses the node class 'MyUpscaler', which ComfyUI 0.8.0 does not have",
      '"requires_nodes": ["MyUpscaler"]')),
    ("scale above ImageScaleBy's maximum", "pony-v6-xl-upscale", {"defaults.scale": 9.0},
     ("node 12 (ImageScaleBy) input 'scale_by': 9 is above the maximum 8",)),
    ("denoise above KSampler's maximum", "pony-v6-xl-img2img", {"defaults.denoise": 1.5},
     ("node 3 (KSampler) input 'denoise': 1.5 is above the maximum 1",)),
    ("a literal below the minimum", "pony-v6-xl", {"workflow.10.inputs.stop_at_clip_layer": -30},
     ("node 10 (CLIPSetLastLayer) input 'stop_at_clip_layer': -30 is below the minimum -24",)),
    ("a choice ComfyUI does not offer", "pony-v6-xl-upscale",
     {"workflow.12.inputs.upscale_method": "lanczoz"},
     ("node 12 (ImageScaleBy) input 'upscale_method': 'lanczoz' is not one of the allowed "
      "values: nearest-exact, bilinear",)),
    ("an input ComfyUI would ignore", "pony-v6-xl",
     {"workflow.4.inputs.stop_at_clip_layer": -2},
     ("node 4 (CheckpointLoaderSimple) has an input 'stop_at_clip_layer' that "
      "CheckpointLoaderSimple does not declare",)),
    ("a required input missing", "pony-v6-xl", {"workflow.8.inputs.vae": DELETE},
     ("node 8 (VAEDecode) lacks its required input 'vae'",)),
    ("a model input set to text", "pony-v6-xl", {"workflow.8.inputs.vae": "sdxl_vae"},
     ("node 8 (VAEDecode) input 'vae': a VAE input must be linked",)),
    ("a link to the wrong kind of output", "pony-v6-xl", {"workflow.8.inputs.vae": ["4", 0]},
     ("node 8 (VAEDecode) input 'vae': expects VAE but is linked to a MODEL output of node 4",)),
    ("a number given as text", "pony-v6-xl", {"workflow.10.inputs.stop_at_clip_layer": "-2"},
     ("input 'stop_at_clip_layer': '-2' is not a number",)),
    ("requires_nodes not a list", "pony-v6-xl", {"requires_nodes": "MyNode"},
     ("'requires_nodes' must be a list of node class names",)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("base", "edits", "expected"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_templates_comfyui_would_refuse_are_refused_at_load_naming_node_and_input(
    base: str, edits: dict[str, Any], expected: tuple[str, ...]
) -> None:
    text = json.dumps(_edit(_template_data(base), edits))
    with pytest.raises(TemplateError) as caught:
        parse_template(text, source="mine.json")
    message = str(caught.value)
    assert message.startswith("mine.json: ")
    for part in expected:
        assert part in message


def test_declared_custom_nodes_are_allowed_through() -> None:
    data = _edit(
        _template_data("pony-v6-xl"),
        {"workflow.20": CUSTOM, "workflow.9": CUSTOM_SAVE},
    )
    data["requires_nodes"] = ["MyUpscaler", "MySaveToCloud"]
    template = parse_template(json.dumps(data), source="mine.json")
    assert template.requires_nodes == ("MyUpscaler", "MySaveToCloud")


def test_an_operator_directory_with_an_out_of_range_template_does_not_load(tmp_path: Path) -> None:
    data = _edit(_template_data("pony-v6-xl-upscale"), {"name": "mine", "defaults.scale": 9.0})
    (tmp_path / "mine.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(TemplateError, match=r"mine\.json: node 12 \(ImageScaleBy\)"):
        load_library(tmp_path)


def test_every_bundled_template_passes_as_loaded_and_as_rendered() -> None:
    library = load_library()
    assert len(library) >= 5
    for template in library:
        assert check_workflow(template.render({})) == [], template.name


def test_several_problems_are_counted_in_the_one_message() -> None:
    data = _edit(
        _template_data("pony-v6-xl"),
        {"workflow.20": PREVIEW, "workflow.4.inputs.stop_at_clip_layer": -2},
    )
    with pytest.raises(TemplateError, match=r"\(and 1 more\)"):
        parse_template(json.dumps(data), source="mine.json")


def test_file_lists_accept_any_name_but_fixed_lists_do_not() -> None:
    nodes = definitions()
    assert nodes["CheckpointLoaderSimple"].inputs["ckpt_name"].choices is None
    assert nodes["LoraLoader"].inputs["lora_name"].choices is None
    assert nodes["VAELoader"].inputs["vae_name"].choices is None
    assert nodes["LoadImage"].inputs["image"].choices is None
    assert "lanczos" in (nodes["ImageScaleBy"].inputs["upscale_method"].choices or ())
    assert len(nodes) == 545


def test_the_shipped_node_table_is_what_the_generator_makes_from_comfyui_0_8_0() -> None:
    source = gen_comfy_nodes.load(gen_comfy_nodes.SOURCE)
    assert len(source) == 545
    expected = gen_comfy_nodes.render(gen_comfy_nodes.compact(source))
    assert gen_comfy_nodes.TARGET.read_text("utf-8") == expected, (
        "bot/comfyui_nodes.json is stale: run python -m tests.gen_comfy_nodes"
    )
