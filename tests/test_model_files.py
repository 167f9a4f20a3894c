"""Model file names with safe subfolders are accepted; anything that could escape them is not."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, load_settings
from bot.model_files import ModelNameError, model_file_name
from bot.prompt import ContentPolicy, parse
from bot.workflows import load_library


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("detail", "detail.safetensors"),
        ("pony/detail", "pony/detail.safetensors"),
        ("pony/styles/ink v2.ckpt", "pony/styles/ink v2.ckpt"),
        (" pony/detail.safetensors ", "pony/detail.safetensors"),
    ],
)
def test_subfolders_are_named_as_comfyui_lists_them(text: str, expected: str) -> None:
    assert model_file_name(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("../secret", "`..`"),
        ("pony/../../etc/passwd", "`..`"),
        ("./detail", "`..` or `.`"),
        ("/etc/passwd", "without a leading `/`"),
        ("C:/models/x", "without a leading `/`"),
        ("pony\\detail", "not `\\`"),
        ("pony//detail", "empty folder"),
        ("pony/", "empty folder"),
        ("", "empty"),
        ("a/b/c/d/e", "folders deep"),
        ("pony/$(rm -rf)", "letters, digits"),
        ("pony/.hidden", "letters, digits"),
    ],
)
def test_names_that_could_escape_the_model_folder_are_refused_with_the_reason(
    text: str, reason: str
) -> None:
    with pytest.raises(ModelNameError) as caught:
        model_file_name(text)
    assert reason in str(caught.value)


def test_a_subfolder_lora_reaches_the_workflow_with_its_folder() -> None:
    library = load_library()
    request = parse(
        "a pony <lora:pony/detail:0.8>", library=library, policy=ContentPolicy(), options=None
    )
    template = library.get(request.template)
    assert template is not None
    workflow = template.render(request.values(), request.loras)
    loaders = [n for n in workflow.values() if n["class_type"] == "LoraLoader"]
    assert [n["inputs"]["lora_name"] for n in loaders] == ["pony/detail.safetensors"]


def test_the_checkpoint_setting_takes_a_subfolder() -> None:
    settings = load_settings(environ={"CHECKPOINT": "pony/ponyDiffusionV6XL.safetensors"})
    assert settings.checkpoint == "pony/ponyDiffusionV6XL.safetensors"


@pytest.mark.parametrize("bad", ["../ponyDiffusionV6XL.safetensors", "/models/pony.safetensors"])
def test_a_checkpoint_setting_that_escapes_its_folder_is_an_operator_error(bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"CHECKPOINT": bad})
    rendered = caught.value.render()
    assert "CHECKPOINT=" in rendered and "is not a file name on the volume" in rendered
