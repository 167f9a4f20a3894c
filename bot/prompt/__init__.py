"""Prompt text + typed options + server policy -> a `GenerationRequest`, or a `PromptError`.

flags splits the text, values checks each setting, sizes picks the size, templates picks the
workflow, compose puts them together; request holds the values they all share.
"""

from bot.prompt.compose import as_text, parse, revise
from bot.prompt.flags import FLAG_NAMES, MAX_LORA_STRENGTH, MAX_LORAS, flags_in
from bot.prompt.request import (
    MAX_SEED,
    RANDOM_SEED,
    ContentPolicy,
    GenerationRequest,
    ImageInput,
    Options,
    PromptError,
    random_seed,
)
from bot.prompt.sizes import (
    MAX_SIDE,
    MIN_SIDE,
    SDXL_BUCKETS,
    SIZE_MULTIPLE,
    aspect_to_size,
    nearest_bucket,
    parse_size,
)
from bot.prompt.values import (
    CFG_RANGE,
    DENOISE_RANGE,
    HIRES_DEFAULT,
    HIRES_RANGE,
    resolve_sampler,
    resolve_scheduler,
)

__all__ = [
    "CFG_RANGE",
    "DENOISE_RANGE",
    "FLAG_NAMES",
    "HIRES_DEFAULT",
    "HIRES_RANGE",
    "MAX_LORAS",
    "MAX_LORA_STRENGTH",
    "MAX_SEED",
    "MAX_SIDE",
    "MIN_SIDE",
    "RANDOM_SEED",
    "SDXL_BUCKETS",
    "SIZE_MULTIPLE",
    "ContentPolicy",
    "GenerationRequest",
    "ImageInput",
    "Options",
    "PromptError",
    "as_text",
    "aspect_to_size",
    "flags_in",
    "nearest_bucket",
    "parse",
    "parse_size",
    "random_seed",
    "resolve_sampler",
    "resolve_scheduler",
    "revise",
]
