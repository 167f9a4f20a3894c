"""Midjourney habits, look-alike blocked words and the sizes ComfyUI makes, at the parser."""

from __future__ import annotations

from typing import Any

import pytest

from bot.prompt import ContentPolicy, GenerationRequest, ImageInput, Options, PromptError, parse
from bot.prompt.blocked import fold
from bot.prompt.midjourney import expand
from bot.workflows import load_library

LIBRARY = load_library()


def run(text: str, options: dict[str, Any] | None = None, **policy: Any) -> GenerationRequest:
    return parse(
        text,
        library=LIBRARY,
        policy=ContentPolicy(**policy),
        options=Options(**(options or {})),
        seed=42,
    )


def test_midjourney_flags_are_ignored_with_one_note_naming_them_all() -> None:
    request = run(
        "a cat --v 6 --stylize 250 --q 2 --chaos 20 --weird 100 --tile --iw 1.5 --style raw "
        "--niji 6 --s 50 --c 10 --ar 16:9"
    )
    assert request.prompt == "a cat" and (request.width, request.height) == (1344, 768)
    [note] = request.notes
    for flag in ("--v 6", "--stylize 250", "--q 2", "--chaos 20", "--weird 100", "--tile"):
        assert f"`{flag}`" in note
    assert "`--iw 1.5`" in note and "`--style raw`" in note and "`--niji 6`" in note


def test_a_prompt_without_midjourney_flags_has_no_notes() -> None:
    assert run("a cat --ar 16:9 --seed 3").notes == ()


def test_repeated_no_is_merged_into_the_negative() -> None:
    request = run("a cat --no dogs --no birds, fish")
    assert request.negative == "dogs, birds, fish"
    assert request.negative_text.endswith("dogs, birds, fish")


@pytest.mark.parametrize(
    ("aspect", "size"),
    [("1.78", (1344, 768)), ("0.56", (768, 1344)), ("1", (1024, 1024)), ("1.5:1", (1216, 832))],
)
def test_ar_takes_midjourney_decimals(aspect: str, size: tuple[int, int]) -> None:
    assert (run(f"a cat --ar {aspect}").width, run(f"a cat --ar {aspect}").height) == size


def test_a_decimal_ar_too_wide_is_refused_with_a_fix() -> None:
    with pytest.raises(PromptError, match="--ar 21:9"):
        run("a cat --ar 4.5")


def test_multi_prompt_weights_become_comfyui_emphasis_and_negative_parts() -> None:
    request = run("space ship::2 ocean::-0.5 stars")
    assert request.prompt == "space ship::2 ocean::-0.5 stars", "kept as written, for Edit"
    assert request.positive_text.endswith("(space ship:2), stars")
    assert "ocean" not in request.positive_text
    assert request.negative_text.endswith("(ocean:0.5)")


def test_multi_prompt_with_weight_one_and_minus_one_stays_plain() -> None:
    request = run("hot dog::1 bun::-1", {"negative": "blurry"})
    assert request.positive_text.endswith("hot dog")
    assert request.negative_text.endswith("blurry, bun")


def test_a_multi_prompt_with_only_negative_parts_is_refused() -> None:
    with pytest.raises(PromptError, match="positive weight"):
        run("ocean::-1")


def test_a_typed_option_that_replaces_a_flag_says_so() -> None:
    request = run("a cat --ar 16:9 --steps 30", {"aspect": "1:1", "steps": 20})
    assert (request.width, request.height, request.steps) == (1024, 1024, 20)
    assert request.notes == (
        "The `aspect: 1:1` option replaced `--ar 16:9` from your prompt.",
        "The `steps: 20` option replaced `--steps 30` from your prompt.",
    )


def test_style_is_carried_for_the_styles_module_and_a_typed_style_wins() -> None:
    assert run("a cat --style watercolor").style == "watercolor"
    assert run("a cat --style watercolor", {"style": "ink"}).style == "ink"
    assert run("a cat").style is None


def test_permutations_make_one_prompt_per_option() -> None:
    texts, repeat = expand("a {red, blue} car on {sand, snow} --ar 16:9")
    assert texts == [
        "a red car on sand --ar 16:9",
        "a red car on snow --ar 16:9",
        "a blue car on sand --ar 16:9",
        "a blue car on snow --ar 16:9",
    ]
    assert repeat == 1


def test_nested_and_escaped_permutations() -> None:
    texts, _ = expand("a {big {red, blue}, tiny\\, shy} car")
    assert texts == ["a big red car", "a tiny, shy car", "a big blue car"]


def test_repeat_is_taken_out_of_the_text() -> None:
    assert expand("a cat --repeat 3 --ar 16:9") == (["a cat --ar 16:9"], 3)
    assert expand("a {red, blue} cat —r 2") == (["a red cat", "a blue cat"], 2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a {a,b,c} {d,e,f} cat", "This makes 9 jobs; one command can start at most 8"),
        ("a {a,b,c} cat --repeat 3", "This makes 9 jobs with `--repeat 3`"),
        ("{a,b} {a,b} {a,b} {a,b} {a,b} {a,b} {a,b} {a,b} {a,b} {a,b}", "more than 8 jobs"),
        ("a cat --repeat 9", "`--repeat 9`: write a whole number from 1 to 8"),
        ("a cat --repeat many", "`--repeat many`"),
        ("a cat --repeat 2 --r 2", "`--repeat` appears twice"),
    ],
)
def test_too_many_jobs_are_refused_before_anything_runs(text: str, expected: str) -> None:
    with pytest.raises(PromptError) as caught:
        expand(text)
    assert expected in str(caught.value)


def test_repeat_outside_imagine_is_explained() -> None:
    with pytest.raises(PromptError, match="works in `/imagine` only"):
        run("a cat --repeat 2")


@pytest.mark.parametrize(
    "prompt",
    [
        "a n\u0430ked pony",  # Cyrillic а
        "a ＮＡＫＥＤ pony",  # fullwidth
        "a NÁKÉD pony",  # accents and case
        "a n\u0430k\u0435d pony",  # Cyrillic а and е
        "a \U0001d427\U0001d41a\U0001d424\U0001d41e\U0001d41d pony",  # mathematical bold
    ],
)
def test_blocked_words_catch_look_alikes(prompt: str) -> None:
    with pytest.raises(PromptError, match="does not allow `naked`"):
        run(prompt, blocked_words=("naked",))


def test_blocked_words_still_match_whole_words_only() -> None:
    assert run("a snaked river", blocked_words=("naked",)).prompt == "a snaked river"
    assert fold("nakedness") != fold("naked")


def test_a_blocked_word_written_with_look_alikes_catches_plain_text() -> None:
    with pytest.raises(PromptError):
        run("a naked pony", blocked_words=("n\u0430ked",))


@pytest.mark.parametrize(
    ("text", "image", "size"),
    [
        # LatentUpscaleBy rounds the latent (an eighth): 168*1.2=201.6 -> 202, 96*1.2 -> 115.
        ("a cat --ar 16:9 --hires 1.2", None, (1616, 920)),
        ("a cat --hires 1.5", None, (1536, 1536)),
        ("a cat --ar 3:2 --hires 1.15", None, (1400, 960)),
        # ImageScaleBy rounds pixels, then VAEEncode crops to a multiple of 8.
        (
            "a cat --hires 1.3 --workflow pony-v6-xl-upscale",
            ImageInput("x.png", 1000, 750),
            (1296, 968),
        ),
    ],
)
def test_sizes_are_the_sizes_comfyui_makes(
    text: str, image: ImageInput | None, size: tuple[int, int]
) -> None:
    request = parse(text, library=LIBRARY, policy=ContentPolicy(), image=image, seed=1)
    assert request.output_size == size
    assert all(side % 8 == 0 for side in request.output_size)
