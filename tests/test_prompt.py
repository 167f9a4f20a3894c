"""The prompt parser, as tables: what a member types (and the server allows) -> what runs, or why not."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import bot.prompt.values
from bot.prompt import (
    MAX_SEED,
    ContentPolicy,
    GenerationRequest,
    ImageInput,
    Options,
    PromptError,
    as_text,
    parse,
    revise,
)
from bot.workflows import Lora, load_library
from tests.conftest import make_settings

LIBRARY = load_library()
QUALITY = "score_9, score_8_up, score_7_up, score_6_up, score_5_up, score_4_up"
NEGATIVE = "score_1, score_2, score_3"
SAFE_NEGATIVE = "rating_questionable, rating_explicit"
LANDSCAPE = ImageInput("job-7-input.png", 1024, 768)
SQUARE = ImageInput("job-7-1.png", 1024, 1024)


def run(
    text: str,
    options: dict[str, Any] | None = None,
    policy: dict[str, Any] | None = None,
    *,
    nsfw: bool = False,
    image: ImageInput | None = None,
) -> GenerationRequest:
    return parse(
        text,
        library=LIBRARY,
        policy=ContentPolicy(**(policy or {})),
        options=Options(**(options or {})),
        channel_nsfw=nsfw,
        image=image,
        seed=42,
    )


# (id, text, typed options, policy, extra keyword arguments, expected fields)
ACCEPTED: list[tuple[str, str, dict, dict, dict, dict[str, Any]]] = [
    # --- defaults: the model card's settings -------------------------------------------------
    ("plain", "a pony astronaut", {}, {}, {}, {
        "template": "pony-v6-xl", "prompt": "a pony astronaut", "negative": "", "seed": 42,
        "width": 1024, "height": 1024, "count": 1, "steps": 25, "cfg": 7.0,
        "sampler": "euler_ancestral", "scheduler": "normal",
        "checkpoint": "ponyDiffusionV6XL.safetensors", "loras": (), "raw": False,
        "hires_scale": None, "denoise": None, "image": None, "spoiler": False,
    }),
    ("whitespace is tidied", "  a pony,\n\tastronaut ,  ", {}, {}, {},
     {"prompt": "a pony, astronaut"}),
    ("emoji sequences are kept", "a 👩\u200d🚀 pony ❤\ufe0f", {}, {}, {},
     {"prompt": "a 👩\u200d🚀 pony ❤\ufe0f"}),
    # --- --ar: the nearest SDXL bucket -------------------------------------------------------
    ("ar 16:9", "a pony --ar 16:9", {}, {}, {}, {"width": 1344, "height": 768, "prompt": "a pony"}),
    ("ar 9:16", "a pony --ar 9:16", {}, {}, {}, {"width": 768, "height": 1344}),
    ("ar 1:1", "a pony --ar 1:1", {}, {}, {}, {"width": 1024, "height": 1024}),
    ("ar 3:2", "a pony --ar 3:2", {}, {}, {}, {"width": 1216, "height": 832}),
    ("ar 4:3", "a pony --ar 4:3", {}, {}, {}, {"width": 1152, "height": 896}),
    ("ar 2:3", "a pony --ar 2:3", {}, {}, {}, {"width": 832, "height": 1216}),
    ("ar 21:9", "a pony --ar 21:9", {}, {}, {}, {"width": 1536, "height": 640}),
    ("ar 9:21", "a pony --ar 9:21", {}, {}, {}, {"width": 640, "height": 1536}),
    ("ar decimal", "a pony --ar 2.39:1", {}, {}, {}, {"width": 1536, "height": 640}),
    ("ar with x", "a pony --ar 16x9", {}, {}, {}, {"width": 1344, "height": 768}),
    ("ar with slash", "a pony --ar 16/9", {}, {}, {}, {"width": 1344, "height": 768}),
    ("aspect alias", "a pony --aspect 16:9", {}, {}, {}, {"width": 1344, "height": 768}),
    ("ar on a 512 template", "x --workflow test-pattern --ar 16:9", {}, {}, {},
     {"width": 672, "height": 384}),
    # --- phones turn -- into dashes ------------------------------------------------------------
    ("em dash", "a pony —ar 16:9", {}, {}, {}, {"width": 1344, "height": 768, "prompt": "a pony"}),
    ("en dash", "a pony –ar 16:9", {}, {}, {}, {"width": 1344}),
    ("em dash and hyphen", "a pony —-ar 16:9", {}, {}, {}, {"width": 1344}),
    ("three hyphens", "a pony ---ar 16:9", {}, {}, {}, {"width": 1344}),
    ("upper-case flag", "a pony --AR 16:9 --SEED 5", {}, {}, {}, {"width": 1344, "seed": 5}),
    ("trailing commas", "a pony --ar 16:9, --seed 5,", {}, {}, {}, {"width": 1344, "seed": 5}),
    # --- --size ----------------------------------------------------------------------------------
    ("size", "a pony --size 832x1216", {}, {}, {}, {"width": 832, "height": 1216}),
    ("size with ×", "a pony --size 832×1216", {}, {}, {}, {"width": 832, "height": 1216}),
    ("size at the pixel limit", "a pony --size 1536x1536", {}, {}, {},
     {"width": 1536, "height": 1536}),
    # --- --seed ----------------------------------------------------------------------------------
    ("seed", "a pony --seed 7", {}, {}, {}, {"seed": 7}),
    ("seed with separators", "a pony --seed 1,000_000", {}, {}, {}, {"seed": 1000000}),
    ("largest seed", f"a pony --seed {MAX_SEED}", {}, {}, {}, {"seed": MAX_SEED}),
    ("seed 0", "a pony --seed 0", {}, {}, {}, {"seed": 0}),
    # --- --steps, --cfg, --count --------------------------------------------------------------
    ("steps", "a pony --steps 30", {}, {}, {}, {"steps": 30}),
    ("steps at the limit", "a pony --steps 50", {}, {}, {}, {"steps": 50}),
    ("cfg", "a pony --cfg 6.5", {}, {}, {}, {"cfg": 6.5}),
    ("cfg integer", "a pony --cfg 5", {}, {}, {}, {"cfg": 5.0}),
    ("count", "a pony --count 2", {}, {}, {}, {"count": 2}),
    ("count alias n", "a pony --n 3", {}, {}, {}, {"count": 3}),
    ("count alias batch", "a pony --batch 4", {}, {}, {}, {"count": 4}),
    # --- --sampler and --scheduler ------------------------------------------------------------
    ("A1111 Euler a", "a pony --sampler Euler a", {}, {}, {},
     {"sampler": "euler_ancestral", "scheduler": "normal"}),
    ("A1111 DPM++ 2M Karras", "a pony --sampler DPM++ 2M Karras", {}, {}, {},
     {"sampler": "dpmpp_2m", "scheduler": "karras"}),
    ("quoted sampler", 'a pony --sampler "DPM++ 2M Karras"', {}, {}, {},
     {"sampler": "dpmpp_2m", "scheduler": "karras"}),
    ("smart-quoted sampler", "a pony --sampler “DPM++ SDE Karras”", {}, {}, {},
     {"sampler": "dpmpp_sde", "scheduler": "karras"}),
    ("A1111 DDIM", "a pony --sampler DDIM", {}, {}, {},
     {"sampler": "ddim", "scheduler": "ddim_uniform"}),
    ("ComfyUI name keeps the default scheduler", "a pony --sampler dpmpp_2m", {}, {}, {},
     {"sampler": "dpmpp_2m", "scheduler": "normal"}),
    ("euler_a means Euler a", "a pony --sampler euler_a", {}, {}, {},
     {"sampler": "euler_ancestral", "scheduler": "normal"}),
    ("scheduler", "a pony --sampler dpmpp_2m --scheduler karras", {}, {}, {},
     {"sampler": "dpmpp_2m", "scheduler": "karras"}),
    ("scheduler beats the A1111 pair", "a pony --sampler DPM++ 2M Karras --scheduler exponential",
     {}, {}, {}, {"sampler": "dpmpp_2m", "scheduler": "exponential"}),
    ("scheduler case", "a pony --scheduler Karras", {}, {}, {},
     {"sampler": "euler_ancestral", "scheduler": "karras"}),
    ("allowed sampler", "a pony --sampler euler", {}, {"allowed_samplers": frozenset({"euler"})}, {},
     {"sampler": "euler"}),
    # --- --no: added to the negative ----------------------------------------------------------
    ("no", "a pony --no text, watermark", {}, {}, {}, {
        "negative": "text, watermark",
        "negative_text": f"{NEGATIVE}, {SAFE_NEGATIVE}, text, watermark",
    }),
    ("quoted no", 'a pony --no "text, watermark"', {}, {}, {}, {"negative": "text, watermark"}),
    # --- --workflow -------------------------------------------------------------------------------
    ("workflow", "a pony --workflow test-pattern", {}, {}, {},
     {"template": "test-pattern", "width": 512, "height": 512, "steps": None, "sampler": None,
      "checkpoint": None, "positive_text": "a pony"}),
    ("workflow alias and case", "a pony --w Test-Pattern", {}, {}, {}, {"template": "test-pattern"}),
    ("workflow needs no prompt when it takes none", "--workflow test-pattern", {}, {}, {},
     {"template": "test-pattern", "prompt": ""}),
    ("hires workflow by name", "a pony --workflow pony-v6-xl-hires", {}, {}, {},
     {"template": "pony-v6-xl-hires", "hires_scale": 1.5, "denoise": 0.5}),
    # --- --raw and Pony tags ------------------------------------------------------------------
    ("tags in a safe channel", "a pony", {}, {}, {}, {
        "positive_text": f"{QUALITY}, rating_safe, a pony",
        "negative_text": f"{NEGATIVE}, {SAFE_NEGATIVE}",
    }),
    ("tags in an age-restricted channel", "a pony", {}, {}, {"nsfw": True},
     {"positive_text": f"{QUALITY}, a pony", "negative_text": NEGATIVE}),
    ("raw keeps the safe tags", "a pony --raw", {}, {}, {},
     {"raw": True, "positive_text": "rating_safe, a pony", "negative_text": SAFE_NEGATIVE}),
    ("raw in an age-restricted channel", "a pony --raw", {}, {}, {"nsfw": True},
     {"positive_text": "a pony", "negative_text": ""}),
    ("policy off", "a pony", {}, {"nsfw_policy": "off"}, {},
     {"positive_text": f"{QUALITY}, a pony", "negative_text": NEGATIVE, "spoiler": False}),
    ("policy spoiler", "a pony", {}, {"nsfw_policy": "spoiler"}, {},
     {"positive_text": f"{QUALITY}, rating_safe, a pony", "spoiler": True}),
    ("spoiler not in an age-restricted channel", "a pony", {}, {"nsfw_policy": "spoiler"},
     {"nsfw": True}, {"positive_text": f"{QUALITY}, a pony", "spoiler": False}),
    ("age-restricted-only policy in an age-restricted channel", "a pony", {},
     {"nsfw_policy": "age_restricted_only"},
     {"nsfw": True}, {"positive_text": f"{QUALITY}, a pony"}),
    ("tags a member already wrote are not repeated",
     "score_9, score_8_up, score_7_up, rating_safe, a pony --no score_1", {}, {}, {}, {
         "positive_text": "score_6_up, score_5_up, score_4_up, "
         "score_9, score_8_up, score_7_up, rating_safe, a pony",
         "negative_text": f"score_2, score_3, {SAFE_NEGATIVE}, score_1",
     }),
    ("server quality tags", "a pony", {}, {"quality_tags": "score_9", "default_negative": "blurry"},
     {"nsfw": True}, {"positive_text": "score_9, a pony", "negative_text": "blurry"}),
    ("no tags on a non-Pony workflow", "a pony --workflow test-pattern", {}, {}, {},
     {"positive_text": "a pony", "negative_text": ""}),
    # --- --hires: switches to the hires variant ----------------------------------------------
    ("hires", "a pony --hires", {}, {}, {},
     {"template": "pony-v6-xl-hires", "hires_scale": 1.5, "denoise": 0.5, "width": 1024}),
    ("hires scale", "a pony --hires 1.25", {}, {}, {}, {"hires_scale": 1.25}),
    ("hires scale with x", "a pony --hires 1.3x", {}, {}, {}, {"hires_scale": 1.3}),
    ("hires denoise", "a pony --hires --denoise 0.4", {}, {}, {}, {"denoise": 0.4}),
    ("hires with ar", "a pony --ar 21:9 --hires", {}, {}, {},
     {"width": 1536, "height": 640, "hires_scale": 1.5}),
    # --- LoRA tags ------------------------------------------------------------------------------
    ("lora", "<lora:ponyStyle:0.8> a pony", {}, {}, {},
     {"loras": (Lora("ponyStyle.safetensors", 0.8),), "prompt": "a pony"}),
    ("lora default strength", "a pony <lora:detail.safetensors>", {}, {}, {},
     {"loras": (Lora("detail.safetensors", 1.0),)}),
    ("loras in order", "a <lora:b:0.5> pony <lora:a:-1>", {}, {}, {},
     {"loras": (Lora("b.safetensors", 0.5), Lora("a.safetensors", -1.0)), "prompt": "a pony"}),
    ("lora tag in upper case", "a pony <LORA:style:0.7>", {}, {}, {},
     {"loras": (Lora("style.safetensors", 0.7),)}),
    ("allowed lora by stem", "a pony <lora:good:1>", {}, {"allowed_loras": frozenset({"good"})},
     {}, {"loras": (Lora("good.safetensors", 1.0),)}),
    ("lora in a subfolder", "a pony <lora:pony/detail:0.8>", {}, {}, {},
     {"loras": (Lora("pony/detail.safetensors", 0.8),)}),
    ("lora two folders deep", "a pony <lora:pony/styles/ink.pt:1>", {}, {}, {},
     {"loras": (Lora("pony/styles/ink.pt", 1.0),)}),
    ("lora with hires", "a pony <lora:x:0.5> --hires", {}, {}, {},
     {"template": "pony-v6-xl-hires", "loras": (Lora("x.safetensors", 0.5),)}),
    # --- precedence: typed option > flag > server default > template default ---------------
    ("typed seed beats flag", "a pony --seed 7", {"seed": 5}, {}, {}, {"seed": 5}),
    ("typed steps beats flag", "a pony --steps 30", {"steps": 20}, {}, {}, {"steps": 20}),
    ("typed cfg beats flag", "a pony --cfg 8", {"cfg": 5.5}, {}, {}, {"cfg": 5.5}),
    ("typed sampler beats flag", "a pony --sampler DPM++ 2M Karras", {"sampler": "euler"}, {}, {},
     {"sampler": "euler", "scheduler": "normal"}),
    ("typed A1111 sampler", "a pony", {"sampler": "DPM++ 2M Karras"}, {}, {},
     {"sampler": "dpmpp_2m", "scheduler": "karras"}),
    ("typed aspect beats flag", "a pony --ar 16:9", {"aspect": "2:3"}, {}, {},
     {"width": 832, "height": 1216}),
    ("typed aspect beats size", "a pony --size 512x512", {"aspect": "1:1"}, {}, {},
     {"width": 1024, "height": 1024}),
    ("typed count beats flag", "a pony --count 1", {"count": 3}, {}, {}, {"count": 3}),
    ("typed workflow beats flag", "a pony --workflow pony-v6-xl", {"workflow": "test-pattern"},
     {}, {}, {"template": "test-pattern"}),
    ("typed hires beats flag", "a pony --hires 1.75", {"hires": 1.25}, {}, {},
     {"template": "pony-v6-xl-hires", "hires_scale": 1.25}),
    ("typed hires switches the workflow", "a pony", {"hires": 1.5}, {}, {},
     {"template": "pony-v6-xl-hires"}),
    ("typed denoise beats flag", "a pony --hires --denoise 0.4", {"denoise": 0.3}, {}, {},
     {"denoise": 0.3}),
    ("typed seed -1 is random too", "a pony", {"seed": -1}, {}, {}, {}),
    ("typed negative and --no add up", "a pony --no text", {"negative": "blurry,\n jpeg"}, {}, {},
     {"negative": "blurry, jpeg, text"}),
    ("server steps beat the template", "a pony", {}, {"default_steps": 30}, {}, {"steps": 30}),
    ("flag beats the server steps", "a pony --steps 20", {}, {"default_steps": 30}, {},
     {"steps": 20}),
    ("server cfg beats the template", "a pony", {}, {"default_cfg": 5.0}, {}, {"cfg": 5.0}),
    ("a lower step cap lowers the default", "a pony", {}, {"max_steps": 20}, {}, {"steps": 20}),
    ("server default workflow", "a pony", {}, {"default_template": "test-pattern"}, {},
     {"template": "test-pattern"}),
    ("server checkpoint", "a pony", {}, {"checkpoint": "pony_v6.safetensors"}, {},
     {"checkpoint": "pony_v6.safetensors"}),
    ("blocked words are whole words", "a gorey pony", {}, {"blocked_words": ("gore",)}, {},
     {"prompt": "a gorey pony"}),
    ("negatives may name blocked words", "a pony --no gore", {}, {"blocked_words": ("gore",)}, {},
     {"negative": "gore"}),
    # --- an attached image ----------------------------------------------------------------------
    ("image switches to img2img", "a pony in watercolour", {}, {}, {"image": LANDSCAPE}, {
        "template": "pony-v6-xl-img2img", "image": LANDSCAPE, "width": 1152, "height": 896,
        "denoise": 0.6, "count": 1, "hires_scale": None,
    }),
    ("image with ar", "a pony --ar 1:1", {}, {}, {"image": LANDSCAPE},
     {"width": 1024, "height": 1024}),
    ("image with denoise", "a pony --denoise 0.35", {}, {}, {"image": LANDSCAPE},
     {"denoise": 0.35}),
    ("panorama image gets the widest bucket", "a pony", {}, {},
     {"image": ImageInput("pano.png", 4000, 1000)}, {"width": 1536, "height": 640}),
    ("upscale", "a pony", {"workflow": "pony-v6-xl-upscale"}, {}, {"image": SQUARE}, {
        "template": "pony-v6-xl-upscale", "width": 1024, "height": 1024, "hires_scale": 1.5,
        "denoise": 0.35, "image": SQUARE,
    }),
    ("upscale scale", "a pony --hires 1.25", {"workflow": "pony-v6-xl-upscale"}, {},
     {"image": ImageInput("p.png", 832, 1216)}, {"hires_scale": 1.25, "width": 832}),
    ("upscale fits its default scale to the limit", "a pony", {"workflow": "pony-v6-xl-upscale"},
     {}, {"image": ImageInput("big.png", 1216, 1216)}, {"hires_scale": 1.25}),
    ("bare hires fits its scale to the limit", "a pony --hires --ar 1:1", {},
     {"max_pixels": 1280 * 1280}, {}, {"hires_scale": 1.25}),
    ("typed workflow hires fits too", "a pony", {"workflow": "pony-v6-xl-hires"},
     {"max_pixels": 1200 * 1200}, {}, {"hires_scale": 1.15}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "options", "policy", "extra", "expected"),
    [case[1:] for case in ACCEPTED],
    ids=[case[0] for case in ACCEPTED],
)
def test_accepted(
    text: str, options: dict, policy: dict, extra: dict, expected: dict[str, Any]
) -> None:
    request = run(text, options, policy, **extra)
    assert {name: getattr(request, name) for name in expected} == expected


# (id, text, typed options, policy, extra keyword arguments, substrings the message must hold)
REFUSED: list[tuple[str, str, dict, dict, dict, tuple[str, ...]]] = [
    # --- what the prompt itself is --------------------------------------------------------------
    ("empty", "", {}, {}, {}, ("Describe what you want to see", "`a pony astronaut on the moon`")),
    ("only flags", "--ar 16:9", {}, {}, {}, ("Describe what you want to see",)),
    ("only a LoRA", "<lora:style:1>", {}, {}, {}, ("Describe what you want to see",)),
    ("typed workflow still needs a prompt", "", {"workflow": "pony-v6-xl"}, {}, {},
     ("Describe what you want to see",)),
    ("too long", "a" * 1501, {}, {}, {}, ("1,501 characters", "the limit is 1,500", "Shorten")),
    ("server length limit", "a pony astronaut", {}, {"max_prompt_length": 10}, {},
     ("16 characters", "the limit is 10")),
    ("typed negative too long", "a pony", {"negative": "b" * 1501}, {}, {},
     ("negative prompt is 1,501 characters",)),
    ("control character", "a pony\x00", {}, {}, {}, ("invisible character", "U+0000", "Retype")),
    ("zero-width space", "a\u200bpony", {}, {}, {}, ("U+200B", "zero width space")),
    ("bidi override", "a pony \u202e", {}, {}, {}, ("U+202E",)),
    ("control character in the negative", "a pony", {"negative": "x\x07"}, {}, {},
     ("negative prompt contains an invisible character", "U+0007")),
    # --- flags themselves -------------------------------------------------------------------------
    ("typo", "a pony --sed 4", {}, {}, {}, ("`--sed` is not a flag I know", "Did you mean `--seed`?")),
    ("typo of an alias", "a pony --aspct 16:9", {}, {}, {}, ("Did you mean `--ar`?",)),
    ("A1111 negative", "a pony --negative text", {}, {}, {}, ("`--negative`", "Did you mean `--no`?")),
    ("width", "a pony --width 800", {}, {}, {}, ("Did you mean `--size`?",)),
    ("unknown flag lists the flags", "a pony --zzz", {}, {}, {},
     ("`--zzz` is not a flag I know", "Flags: --ar, --size, --seed")),
    ("repeated flag", "a pony --seed 1 --seed 2", {}, {}, {}, ("`--seed` appears twice", "keep one")),
    ("repeated through an alias", "a pony --ar 1:1 --aspect 2:3", {}, {}, {},
     ("`--ar` appears twice",)),
    ("raw with a value", "a pony --raw please", {}, {}, {},
     ("`--raw` takes no value", "`please`", "at the end")),
    ("missing value", "a pony --seed", {}, {}, {}, ("`--seed` needs a value", "`--seed 42`")),
    ("empty --no", "a pony --no", {}, {}, {}, ("`--no` needs a value", "`--no text, watermark`")),
    ("flag in the middle", "a pony --ar 16:9 on the moon", {}, {}, {},
     ("`--ar` takes one value", "`16:9 on the moon`", "at the end of the prompt", "`--ar 16:9`")),
    # --- --ar and --size ------------------------------------------------------------------------
    ("too wide", "a pony --ar 5:1", {}, {}, {}, ("`--ar 5:1` is wider than 2.4:1", "`--ar 21:9`")),
    ("too tall", "a pony --ar 1:5", {}, {}, {}, ("`--ar 1:5` is taller than 1:2.4", "`--ar 9:21`")),
    ("typed aspect too wide", "a pony", {"aspect": "4:1"}, {}, {}, ("wider than 2.4:1",)),
    ("not a ratio", "a pony --ar wide", {}, {}, {}, ("`wide` is not an aspect ratio", "`--ar 16:9`")),
    ("zero ratio", "a pony --ar 0:1", {}, {}, {}, ("not an aspect ratio",)),
    ("ar and size", "a pony --ar 1:1 --size 512x512", {}, {}, {},
     ("either `--ar` or `--size`, not both",)),
    ("not a size", "a pony --size big", {}, {}, {}, ("`--size big` is not a size", "`--size 832x1216`")),
    ("size not a multiple of 8", "a pony --size 1000x1001", {}, {}, {},
     ("multiples of 8", "`--size 1024x1024`")),
    ("side too small", "a pony --size 32x512", {}, {}, {}, ("from 64 to 4096 pixels",)),
    ("side too large", "a pony --size 8192x64", {}, {}, {}, ("from 64 to 4096 pixels",)),
    ("size over the pixel limit", "a pony --size 2048x2048", {}, {}, {},
     ("`--size 2048x2048`", "this server's limit of 2,359,296 pixels", "`--size 1536x1536`")),
    ("size over a server pixel limit", "a pony --size 1024x1024", {}, {"max_pixels": 512 * 512},
     {}, ("limit of 262,144 pixels (about 512x512)", "`--size 512x512`")),
    ("default size over a server pixel limit", "a pony", {}, {"max_pixels": 512 * 512}, {},
     ("1024x1024 images are more than this server's limit", "`--ar` or `--size`")),
    # --- numbers ----------------------------------------------------------------------------------
    ("seed not a number", "a pony --seed abc", {}, {}, {},
     ("`--seed abc` is not a whole number", "`--seed 42`")),
    ("seed too large", f"a pony --seed {MAX_SEED + 1}", {}, {}, {},
     (f"from 0 to {MAX_SEED}", "-1 for a random one")),
    ("negative seed", "a pony --seed -5", {}, {}, {}, ("`--seed -5` is not a seed",)),
    ("typed seed too large", "a pony", {"seed": MAX_SEED + 1}, {}, {}, ("`seed: ",)),
    ("steps over the limit", "a pony --steps 80", {}, {}, {},
     ("`--steps 80` is more than this server allows (50 steps)", "`--steps 50` or less")),
    ("steps over a server limit", "a pony --steps 40", {}, {"max_steps": 30}, {},
     ("(30 steps)", "`--steps 30`")),
    ("typed steps over the limit", "a pony", {"steps": 99}, {}, {},
     ("`steps: 99` is more than this server allows (50 steps)", "`steps: 50`")),
    ("zero steps", "a pony --steps 0", {}, {}, {}, ("`--steps 0` is too low", "`--steps 1` or more")),
    ("steps not a number", "a pony --steps many", {}, {}, {}, ("not a whole number", "`--steps 30`")),
    ("count over the limit", "a pony --count 9", {}, {}, {},
     ("`--count 9` is more than this server allows (4 images per prompt)", "`--count 4`")),
    ("count over a server limit", "a pony --count 3", {}, {"max_count": 2}, {},
     ("(2 images per prompt)",)),
    ("zero count", "a pony", {"count": 0}, {}, {}, ("`count: 0` is too low", "`count: 1`")),
    ("cfg too high", "a pony --cfg 40", {}, {}, {}, ("`--cfg 40` is outside 1 to 30", "`--cfg 6.5`")),
    ("cfg not a number", "a pony --cfg nan", {}, {}, {}, ("`--cfg nan` is not a number", "`--cfg 6.5`")),
    ("cfg infinite", "a pony --cfg inf", {}, {}, {}, ("is not a number",)),
    ("typed cfg too low", "a pony", {"cfg": 0.5}, {}, {}, ("`cfg: 0.5` is outside 1 to 30",)),
    # --- samplers ------------------------------------------------------------------------------
    ("sampler typo", "a pony --sampler Eulr a", {}, {}, {},
     ("`Eulr a` is not a sampler I know", "Did you mean `Euler a`?")),
    ("unknown sampler", "a pony --sampler zzz", {}, {}, {},
     ("`zzz` is not a sampler I know", "`euler_ancestral`", "`DPM++ 2M Karras`")),
    ("typed unknown sampler", "a pony", {"sampler": "turbo"}, {}, {}, ("`turbo` is not a sampler",)),
    ("scheduler typo", "a pony --scheduler karas", {}, {}, {}, ("Did you mean `karras`?",)),
    ("unknown scheduler", "a pony --scheduler zzz", {}, {}, {},
     ("`zzz` is not a scheduler I know", "Schedulers: simple")),
    ("sampler not allowed", "a pony --sampler DPM++ 2M Karras", {},
     {"allowed_samplers": frozenset({"euler", "euler_ancestral"})}, {},
     ("does not allow the sampler `dpmpp_2m`", "`euler`, `euler_ancestral`")),
    # --- workflows ---------------------------------------------------------------------------
    ("unknown workflow", "a pony --workflow pony-v6", {}, {}, {},
     ("no workflow called `pony-v6`", "Did you mean `pony-v6-xl`?", "Workflows: pony-v6-xl")),
    ("typed unknown workflow", "a pony", {"workflow": "flux"}, {}, {}, ("no workflow called `flux`",)),
    ("workflow not allowed", "a pony --workflow test-pattern", {},
     {"allowed_templates": frozenset({"pony-v6-xl"})}, {},
     ("does not allow the `test-pattern` workflow", "Allowed: `pony-v6-xl`")),
    ("hires variant not allowed", "a pony --hires", {},
     {"allowed_templates": frozenset({"pony-v6-xl"})}, {},
     ("`--hires` uses the `pony-v6-xl-hires` workflow, which this server does not allow",)),
    ("image variant not allowed", "a pony", {}, {"allowed_templates": frozenset({"pony-v6-xl"})},
     {"image": LANDSCAPE}, ("An attached image uses the `pony-v6-xl-img2img` workflow",)),
    ("flag the workflow ignores", "a pony --workflow test-pattern --steps 20", {}, {}, {},
     ("`--steps` has no effect on the `test-pattern` workflow", "drop it")),
    ("denoise without an image or hires", "a pony --denoise 0.5", {}, {}, {},
     ("`--denoise` has no effect on the `pony-v6-xl` workflow", "`pony-v6-xl-hires`")),
    ("typed option the workflow ignores", "a pony", {"workflow": "test-pattern", "steps": 20}, {},
     {}, ("The `steps` option has no effect on the `test-pattern` workflow",)),
    ("raw on a workflow without tags", "a pony --workflow test-pattern --raw", {}, {}, {},
     ("adds no quality tags", "drop `--raw`")),
    ("hires on a workflow without it", "a pony --workflow test-pattern --hires", {}, {}, {},
     ("The `test-pattern` workflow has no hires pass; drop `--hires`",)),
    # --- hires ------------------------------------------------------------------------------------
    ("hires out of range", "a pony --hires 3", {}, {}, {}, ("`--hires 3` is outside 1.1 to 2", "`--hires 1.5`")),
    ("hires not a number", "a pony --hires big", {}, {}, {}, ("`--hires big` is not a number",)),
    ("typed hires out of range", "a pony", {"hires": 1.0}, {}, {}, ("`hires: 1` is outside 1.1 to 2",)),
    ("hires over the pixel limit", "a pony --hires 2", {}, {}, {},
     ("`--hires 2` makes 2048x2048 images", "limit of 2,359,296 pixels", "try `--hires 1.5`")),
    ("hires with a large size", "a pony --hires --size 1536x1536", {}, {}, {},
     ("`--hires 1.5` makes 2304x2304 images", "drop `--hires`")),
    ("denoise out of range", "a pony --hires --denoise 1.5", {}, {}, {},
     ("`--denoise 1.5` is outside 0.05 to 1", "`--denoise 0.5`")),
    # --- LoRAs ------------------------------------------------------------------------------------
    ("lora without a name", "a pony <lora::0.8>", {}, {}, {}, ("is not a LoRA tag I can use", "`<lora:name:0.8>`")),
    ("lora with a path", "a pony <lora:../secret:1>", {}, {}, {},
     ("is not a LoRA tag I can use", "cannot step between folders with `..`")),
    ("lora climbing out midway", "a pony <lora:pony/../../x:1>", {}, {}, {}, ("`..`",)),
    ("lora with an absolute path", "a pony <lora:/etc/x:1>", {}, {}, {},
     ("relative to the model folder, without a leading `/`",)),
    ("lora with backslashes", "a pony <lora:pony\\detail:1>", {}, {}, {},
     ("separated with `/`, not `\\`", "`<lora:folder/name:0.8>`")),
    ("lora with an empty folder", "a pony <lora:pony//detail:1>", {}, {}, {}, ("empty folder",)),
    ("lora ending in a slash", "a pony <lora:pony/:1>", {}, {}, {}, ("empty folder",)),
    ("lora strength not a number", "a pony <lora:style:lots>", {}, {}, {},
     ("must be a number", "`<lora:style:0.8>`")),
    ("lora strength out of range", "a pony <lora:style:5>", {}, {}, {},
     ("LoRA strength `5` is out of range", "-2 to 2")),
    ("lora named twice", "a <lora:x:1> pony <lora:x:0.5>", {}, {}, {}, ("`x.safetensors` is named twice",)),
    ("too many loras", "a pony " + " ".join(f"<lora:l{i}:1>" for i in range(6)), {}, {}, {},
     ("At most 5 LoRAs per prompt; you named 6",)),
    ("lora not allowed", "a pony <lora:bad:1>", {}, {"allowed_loras": frozenset({"good"})}, {},
     ("does not allow the LoRA `bad.safetensors`", "Allowed: `good`")),
    ("lora on a workflow without LoRAs", "a pony <lora:x:1> --workflow test-pattern", {}, {}, {},
     ("The `test-pattern` workflow does not take LoRAs", "remove the `<lora:…>` tags")),
    # --- server policy ------------------------------------------------------------------------
    ("blocked word", "a gore scene", {}, {"blocked_words": ("gore",)}, {},
     ("does not allow `gore` in prompts",)),
    ("blocked word in capitals", "a GORE scene", {}, {"blocked_words": ("gore",)}, {},
     ("`gore`",)),
    ("blocked phrase", "a pony, blood   bath", {}, {"blocked_words": ("blood bath",)}, {},
     ("`blood bath`",)),
    ("blocked word in full-width letters", "a ｇｏｒｅ scene", {}, {"blocked_words": ("gore",)}, {},
     ("`gore`",)),
    # --- images -------------------------------------------------------------------------------
    ("workflow that needs an image", "a pony --workflow pony-v6-xl-img2img", {}, {}, {},
     ("starts from an image", "attach one with the `image` option")),
    ("image on a workflow without one", "a pony --workflow test-pattern", {}, {}, {"image": SQUARE},
     ("The `test-pattern` workflow does not use an attached image", "`pony-v6-xl-img2img`")),
    ("image and hires", "a pony --hires", {}, {}, {"image": SQUARE},
     ("The `pony-v6-xl-img2img` workflow has no hires pass", "`pony-v6-xl-upscale`")),
    ("image and count", "a pony --count 2", {}, {}, {"image": SQUARE},
     ("`--count` has no effect on the `pony-v6-xl-img2img` workflow",)),
    ("upscale scale over the pixel limit", "a pony --hires 1.5",
     {"workflow": "pony-v6-xl-upscale"}, {}, {"image": ImageInput("big.png", 1216, 1216)},
     ("Upscaling this 1216x1216 image by 1.5 makes 1824x1824 images", "try `--hires 1.25`")),
    ("upscale of an image at the limit", "a pony", {"workflow": "pony-v6-xl-upscale"}, {},
     {"image": ImageInput("big.png", 1536, 1536)},
     ("This 1536x1536 image is already about as large as this server's limit",
      "cannot be upscaled")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "options", "policy", "extra", "expected"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_refused(
    text: str, options: dict, policy: dict, extra: dict, expected: tuple[str, ...]
) -> None:
    with pytest.raises(PromptError) as caught:
        run(text, options, policy, **extra)
    message = str(caught.value)
    for part in expected:
        assert part in message
    # Short enough for an ephemeral reply, and formatted as the member typed it.
    assert "\n" not in message and len(message) <= 300


def test_seed_minus_one_asks_for_a_random_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bot.prompt.values, "random_seed", lambda: 1234)
    assert run("a pony --seed -1").seed == 1234
    assert run("a pony", {"seed": -1}).seed == 1234
    assert run("a pony --seed 5").seed == 5


def test_without_a_seed_each_request_gets_its_own() -> None:
    seeds = {parse("a pony", library=LIBRARY, policy=ContentPolicy()).seed for _ in range(20)}
    assert len(seeds) > 1 and all(0 <= s < 2**32 for s in seeds)


def test_output_size_follows_the_hires_scale() -> None:
    assert run("a pony --hires 1.5 --ar 16:9").output_size == (2016, 1152)
    assert run("a pony").output_size == (1024, 1024)
    upscale = run("a pony", {"workflow": "pony-v6-xl-upscale"}, image=SQUARE)
    assert upscale.output_size == (1536, 1536)


@pytest.mark.parametrize(
    "text",
    [
        "a pony --seed 5",
        "<lora:style:0.8> a pony --hires 1.25 --no text",
        "a pony --ar 16:9 --count 2 --sampler DPM++ 2M Karras --raw",
    ],
)
def test_requests_survive_a_round_trip_through_the_job_row(text: str) -> None:
    request = run(text)
    assert GenerationRequest.from_json(request.to_json()) == request


def test_an_attached_image_survives_a_round_trip_through_the_job_row() -> None:
    request = run("a pony <lora:style:0.5> --denoise 0.4", image=LANDSCAPE)
    assert GenerationRequest.from_json(request.to_json()) == request


def test_values_feed_every_parameter_of_the_chosen_workflow() -> None:
    """No mapped parameter is left to a template literal that a member's request should set."""
    cases = [
        run("a pony <lora:x:1>"),
        run("a pony --hires"),
        run("a pony", image=LANDSCAPE),
        run("a pony", {"workflow": "pony-v6-xl-upscale"}, image=SQUARE),
        run("--workflow test-pattern"),
    ]
    for request in cases:
        template = LIBRARY.get(request.template)
        assert set(template.parameters) <= set(request.values()), request.template


def test_infinite_typed_numbers_are_refused_not_crashed() -> None:
    for options in ({"cfg": math.inf}, {"hires": math.nan}, {"denoise": -math.inf}):
        with pytest.raises(PromptError):
            run("a pony --hires", options)


def test_suggested_workflows_fit_whether_an_image_is_attached() -> None:
    with pytest.raises(PromptError) as with_image:
        run("a pony --count 2", image=SQUARE)
    assert str(with_image.value).endswith("workflow; drop it.")
    with pytest.raises(PromptError) as without_image:
        run("a pony --denoise 0.5")
    assert "`pony-v6-xl-hires`" in str(without_image.value)
    assert "img2img" not in str(without_image.value)


def test_the_upscale_button_reruns_the_original_on_its_image() -> None:
    original = run(
        "a pony <lora:style:0.7> --ar 16:9 --count 2 --seed 9 --steps 30 --cfg 6 "
        "--sampler DPM++ 2M Karras --no text --raw"
    )
    result = ImageInput("job-3-1.png", 1344, 768)
    upscale = revise(
        original,
        image=result,
        workflow="pony-v6-xl-upscale",
        library=LIBRARY,
        policy=ContentPolicy(),
    )
    assert upscale.template == "pony-v6-xl-upscale" and upscale.image == result
    assert (upscale.prompt, upscale.negative, upscale.loras, upscale.raw) == (
        original.prompt,
        original.negative,
        original.loras,
        True,
    )
    same = ("seed", "steps", "cfg", "sampler", "scheduler", "positive_text", "negative_text")
    assert {k: getattr(upscale, k) for k in same} == {k: getattr(original, k) for k in same}
    assert (upscale.count, upscale.output_size) == (1, (2016, 1152))


def test_the_upscale_button_obeys_todays_limits() -> None:
    original = run("a pony --ar 16:9")
    with pytest.raises(PromptError, match=r"This 1344x768 image is already about as large"):
        revise(
            original,
            image=ImageInput("job-3-1.png", 1344, 768),
            workflow="pony-v6-xl-upscale",
            library=LIBRARY,
            policy=ContentPolicy(max_pixels=1024 * 1024),
        )


def test_the_vary_button_redraws_the_image_with_a_new_seed() -> None:
    original = run("a pony <lora:style:0.7> --ar 16:9 --count 2 --seed 9")
    vary = revise(
        original,
        image=ImageInput("job-3-2.png", 1344, 768),
        workflow="pony-v6-xl-img2img",
        library=LIBRARY,
        policy=ContentPolicy(),
        seed=77,
        denoise=0.55,
    )
    assert (vary.template, vary.seed, vary.denoise) == ("pony-v6-xl-img2img", 77, 0.55)
    assert (vary.width, vary.height, vary.count) == (1344, 768, 1)
    assert (vary.prompt, vary.loras) == (original.prompt, original.loras)


def test_reroll_keeps_everything_but_the_seed() -> None:
    original = run(
        "a pony <lora:style:0.7> --ar 16:9 --count 2 --seed 9 --steps 30 --cfg 6 "
        "--sampler DPM++ 2M Karras --no text --raw --hires 1.25"
    )
    again = revise(original, library=LIBRARY, policy=ContentPolicy(), seed=10)
    assert again.seed == 10
    kept = (
        "template",
        "prompt",
        "negative",
        "positive_text",
        "negative_text",
        "loras",
        "raw",
        "width",
        "height",
        "count",
        "steps",
        "cfg",
        "sampler",
        "scheduler",
        "hires_scale",
        "denoise",
    )
    assert {k: getattr(again, k) for k in kept} == {k: getattr(original, k) for k in kept}


def test_reroll_obeys_todays_limits() -> None:
    original = run("a pony --steps 40")
    with pytest.raises(PromptError, match="40"):
        revise(original, library=LIBRARY, policy=ContentPolicy(max_steps=30), seed=1)


def test_as_text_parses_back_to_the_same_request() -> None:
    original = run(
        "a pony <lora:style:0.7> --raw --no text --ar 16:9 --steps 28 --cfg 5 "
        "--sampler DPM++ 2M Karras --count 2 --hires 1.2 --style watercolor"
    )
    text = as_text(original)
    assert text.startswith("a pony <lora:style.safetensors:0.7> --raw --style watercolor ")
    back = run(text, {"negative": original.negative})
    assert back == original


def test_as_text_of_an_image_job_lets_the_image_set_the_size() -> None:
    for original in (
        run("a pony --denoise 0.4", image=LANDSCAPE),
        run("a pony --workflow pony-v6-xl-upscale --hires 1.3", image=LANDSCAPE),
    ):
        text = as_text(original)
        assert "--size" not in text and f"--workflow {original.template}" in text
        assert run(text, image=LANDSCAPE) == original


# --- model families: each template's own prompt rules, the server's policy over all of them ---

EVERY_FAMILY = load_library(endpoints=("default", "flux", "sdxl"))
FLUX = {"workflow": "flux1-dev-fp8"}
SDXL = {"workflow": "sdxl"}
SDXL_SAFE_NEGATIVE = "nsfw, nude, naked, explicit"


def run_any(text: str, options: dict, policy: dict, *, nsfw: bool = False) -> GenerationRequest:
    return parse(
        text,
        library=EVERY_FAMILY,
        policy=ContentPolicy(**policy),
        options=Options(**options),
        channel_nsfw=nsfw,
        seed=42,
    )


# (id, text, typed options, policy, extra keyword arguments, expected fields)
FAMILY_ACCEPTED: list[tuple[str, str, dict, dict, dict, dict[str, Any]]] = [
    ("flux: the model card's settings and the member's words alone", "a pony astronaut", FLUX,
     {}, {"nsfw": True}, {
        "template": "flux1-dev-fp8", "positive_text": "a pony astronaut", "steps": 20,
        "cfg": 3.5, "sampler": "euler", "scheduler": "simple", "checkpoint": None,
        "spoiler": False,
    }),
    ("flux outside an age-restricted channel is spoilered: it has no safe terms",
     "a pony astronaut", FLUX, {}, {},
     {"positive_text": "a pony astronaut", "spoiler": True}),
    ("flux under nsfw_policy off is not spoilered", "a pony", FLUX, {"nsfw_policy": "off"}, {},
     {"spoiler": False}),
    ("flux: the server's CFG is a CFG, not Flux guidance", "a pony", FLUX,
     {"default_cfg": 7.0, "default_steps": 30}, {}, {"cfg": 3.5, "steps": 30}),
    ("flux: a member's cfg sets the guidance", "a pony --cfg 2.5", FLUX, {}, {}, {"cfg": 2.5}),
    ("flux: the Pony quality settings never reach it", "a pony", FLUX,
     {"quality_tags": "score_9", "default_negative": "blurry"}, {"nsfw": True},
     {"positive_text": "a pony"}),
    ("flux named by flag", "a pony --workflow flux1-dev-fp8", {}, {}, {},
     {"template": "flux1-dev-fp8"}),
    ("sdxl: plain words, safe terms in the negative", "a pony astronaut", SDXL, {}, {}, {
        "template": "sdxl", "positive_text": "a pony astronaut",
        "negative_text": SDXL_SAFE_NEGATIVE, "steps": 25, "cfg": 7.0, "sampler": "dpmpp_2m",
        "scheduler": "karras", "checkpoint": None, "spoiler": False,
    }),
    ("sdxl: the member's negative after the safe terms", "a pony --no text, watermark", SDXL, {},
     {}, {"negative": "text, watermark",
          "negative_text": f"{SDXL_SAFE_NEGATIVE}, text, watermark"}),
    ("sdxl in an age-restricted channel: no safe terms", "a pony", SDXL, {}, {"nsfw": True},
     {"positive_text": "a pony", "negative_text": ""}),
    ("sdxl: the Pony quality settings never reach it", "a pony", SDXL,
     {"quality_tags": "score_9", "default_negative": "blurry"}, {},
     {"positive_text": "a pony", "negative_text": SDXL_SAFE_NEGATIVE}),
    ("sdxl: the server's CFG applies", "a pony", SDXL, {"default_cfg": 5.5}, {}, {"cfg": 5.5}),
    ("pony: the server's quality settings still win", "a pony", {},
     {"quality_tags": "score_9", "default_negative": "blurry"}, {"nsfw": True},
     {"positive_text": "score_9, a pony", "negative_text": "blurry"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "options", "policy", "extra", "expected"),
    [case[1:] for case in FAMILY_ACCEPTED],
    ids=[case[0] for case in FAMILY_ACCEPTED],
)
def test_each_family_gets_its_own_prompt_rules(
    text: str, options: dict, policy: dict, extra: dict, expected: dict[str, Any]
) -> None:
    request = run_any(text, options, policy, **extra)
    assert {name: getattr(request, name) for name in expected} == expected


# (id, text, typed options, policy, substrings the message must hold)
FAMILY_REFUSED: list[tuple[str, str, dict, dict, tuple[str, ...]]] = [
    ("flux: --no, naming workflows that take one", "a pony --no text", FLUX, {},
     ("`--no` has no effect on the `flux1-dev-fp8` workflow", "`pony-v6-xl`", "`sdxl`")),
    ("flux: a typed negative", "a pony", {**FLUX, "negative": "text"}, {},
     ("The `negative` option has no effect on the `flux1-dev-fp8` workflow",)),
    ("flux: --raw", "a pony --raw", FLUX, {}, ("adds no quality tags", "drop `--raw`")),
    ("flux: LoRAs (the worker image ships none)", "<lora:style:1> a pony", FLUX, {},
     ("does not take LoRAs",)),
    ("flux: --hires", "a pony --hires", FLUX, {}, ("has no hires pass",)),
    ("flux: cfg out of range, with Flux's own advice", "a pony --cfg 40", FLUX, {},
     ("`--cfg 40` is outside 1 to 30", "FLUX.1 works best at 2–5", "`--cfg 3.5`")),
    ("flux: blocked words", "a gore pony", FLUX, {"blocked_words": ("gore",)},
     ("does not allow `gore`",)),
    ("sdxl: cfg out of range, with SDXL's own advice", "a pony --cfg 0.5", SDXL, {},
     ("SDXL works best at 5–9", "`--cfg 7`")),
    ("sdxl: --raw", "a pony --raw", SDXL, {}, ("adds no quality tags",)),
    ("pony keeps its advice", "a pony --cfg 31", {}, {}, ("Pony works best at 5–8, e.g. `--cfg 6.5`",)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "options", "policy", "expected"),
    [case[1:] for case in FAMILY_REFUSED],
    ids=[case[0] for case in FAMILY_REFUSED],
)
def test_each_family_refuses_what_it_cannot_do(
    text: str, options: dict, policy: dict, expected: tuple[str, ...]
) -> None:
    with pytest.raises(PromptError) as caught:
        run_any(text, options, policy)
    message = str(caught.value)
    for part in expected:
        assert part in message
    assert "\n" not in message and len(message) <= 300


def test_operator_quality_settings_override_the_pony_templates_only_when_changed(
    tmp_path: Path,
) -> None:
    default = ContentPolicy.from_settings(make_settings(tmp_path))
    changed = ContentPolicy.from_settings(
        make_settings(tmp_path, QUALITY_TAGS="score_9", DEFAULT_NEGATIVE="blurry")
    )
    assert (default.quality_tags, default.default_negative) == (None, None)
    pony = parse("a pony", library=LIBRARY, policy=default, channel_nsfw=True, seed=1)
    assert (pony.positive_text, pony.negative_text) == (f"{QUALITY}, a pony", NEGATIVE)
    pony = parse("a pony", library=LIBRARY, policy=changed, channel_nsfw=True, seed=1)
    assert (pony.positive_text, pony.negative_text) == ("score_9, a pony", "blurry")


def test_a_flux_reroll_keeps_everything_but_the_seed() -> None:
    original = run_any("a red fox --ar 16:9 --cfg 2.5 --steps 28", FLUX, {}, nsfw=True)
    again = revise(
        original, library=EVERY_FAMILY, policy=ContentPolicy(), seed=7, channel_nsfw=True
    )
    assert again == replace(original, seed=7)
