"""Image sizes: `--ar` to the nearest SDXL bucket, `--size`, and the server's pixel limit."""

from __future__ import annotations

import math
import re

from bot.prompt.flags import Draft, clean_value, clip
from bot.prompt.request import ContentPolicy, ImageInput, Options, PromptError, scaled_size
from bot.prompt.values import HIRES_RANGE
from bot.workflows import Template

SIZE_MULTIPLE = 8

MIN_SIDE = 64

MAX_SIDE = 4096

# SDXL resolution buckets (~1 MP, multiples of 64) for a 1024x1024 base.
SDXL_BUCKETS: tuple[tuple[int, int], ...] = (
    (1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216),
    (1344, 768), (768, 1344), (1536, 640), (640, 1536),
)  # fmt: skip


def choose_size(
    draft: Draft, options: Options, template: Template, image: ImageInput | None
) -> tuple[int, int]:
    if not template.accepts("width"):
        if image is not None:
            return image.width, image.height
        return template.base_width, template.base_height
    if options.aspect:
        return aspect_to_size(options.aspect, template)
    if "ar" in draft.flags and "size" in draft.flags:
        raise PromptError("Use either `--ar` or `--size`, not both.")
    if "ar" in draft.flags:
        return aspect_to_size(draft.flags["ar"], template)
    if "size" in draft.flags:
        return parse_size(draft.flags["size"])
    if image is not None and image.width > 0 and image.height > 0:
        # An attached image keeps its shape: the nearest bucket, cropped to it.
        return nearest_bucket(image.width / image.height, template)
    return int(template.defaults.get("width", template.base_width)), int(
        template.defaults.get("height", template.base_height)
    )


def fitting_scale(
    width: int, height: int, scale: float, policy: ContentPolicy, *, pixels: bool
) -> float:
    """The largest scale up to the default, in 0.05 steps, whose result fits the pixel limit:
    a member who named no scale gets what is allowed (or, if nothing is, the default refused)."""
    fitted = scale
    while _pixels(width, height, fitted, pixels) > policy.max_pixels:
        fitted = round(fitted - 0.05, 2)
        if fitted < HIRES_RANGE[0]:
            return scale
    return fitted


def _pixels(width: int, height: int, scale: float | None, pixels: bool) -> int:
    made_width, made_height = scaled_size(width, height, scale, pixels=pixels)
    return made_width * made_height


def check_pixels(
    width: int,
    height: int,
    scale: float | None,
    draft: Draft,
    template: Template,
    policy: ContentPolicy,
) -> None:
    if _pixels(width, height, scale, template.needs_image) <= policy.max_pixels:
        return
    side = math.isqrt(policy.max_pixels)
    limit = f"this server's limit of {policy.max_pixels:,} pixels (about {side}x{side})"
    made = "{}x{}".format(*scaled_size(width, height, scale, pixels=template.needs_image))
    if scale is not None:
        fits = math.floor(math.sqrt(policy.max_pixels / (width * height)) * 20) / 20
        if template.needs_image and fits < HIRES_RANGE[0]:
            raise PromptError(
                f"This {width}x{height} image is already about as large as {limit}; "
                "it cannot be upscaled here."
            )
        if template.needs_image:
            raise PromptError(
                f"Upscaling this {width}x{height} image by {scale:g} makes {made} images, "
                f"more than {limit}; try `--hires {fits:g}`."
            )
        fix = f"try `--hires {fits:g}`" if fits >= HIRES_RANGE[0] else "drop `--hires`"
        raise PromptError(f"`--hires {scale:g}` makes {made} images, more than {limit}; {fix}.")
    if "size" in draft.flags:
        factor = math.sqrt(policy.max_pixels / (width * height))
        fit = f"{_floor_to(width * factor, 64)}x{_floor_to(height * factor, 64)}"
        raise PromptError(f"`--size {made}` is more than {limit}; try `--size {fit}`.")
    raise PromptError(f"{made} images are more than {limit}; choose a smaller `--ar` or `--size`.")


def parse_size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d{1,6})\s*[xX×*]\s*(\d{1,6})", text.strip())
    if not match:
        raise PromptError(f"`--size {clip(text)}` is not a size: write it like `--size 832x1216`.")
    width, height = int(match.group(1)), int(match.group(2))
    for side in (width, height):
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise PromptError(
                f"`--size {width}x{height}`: each side must be from {MIN_SIDE} to {MAX_SIDE} pixels."
            )
    if width % SIZE_MULTIPLE or height % SIZE_MULTIPLE:
        fixed = f"{_round_to(width, 64)}x{_round_to(height, 64)}"
        raise PromptError(
            f"`--size {width}x{height}`: sides must be multiples of {SIZE_MULTIPLE} "
            f"(64 works best); try `--size {fixed}`."
        )
    return width, height


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


def _floor_to(value: float, multiple: int) -> int:
    return max(multiple, math.floor(value / multiple) * multiple)


def aspect_to_size(text: str, template: Template) -> tuple[int, int]:
    """The SDXL bucket nearest to `W:H`, scaled to the template's base resolution."""
    text = clean_value(text)
    # `16:9`, or Midjourney's decimal shorthand `1.78` (width over height).
    match = re.fullmatch(r"(\d{1,5}(?:\.\d+)?)(?:\s*[:/xX]\s*(\d{1,5}(?:\.\d+)?))?", text)
    if not match or float(match.group(1)) <= 0 or float(match.group(2) or 1) <= 0:
        raise PromptError(f"`{clip(text)}` is not an aspect ratio: write it like `--ar 16:9`.")
    ratio = float(match.group(1)) / float(match.group(2) or 1)
    widest = max(w / h for w, h in SDXL_BUCKETS)
    if ratio > widest * 1.05:
        raise PromptError(
            f"`--ar {clip(text)}` is wider than {widest:.1f}:1, the widest shape the model draws well; "
            "try `--ar 21:9`."
        )
    if ratio < (1 / widest) / 1.05:
        raise PromptError(
            f"`--ar {clip(text)}` is taller than 1:{widest:.1f}, the tallest shape the model draws well; "
            "try `--ar 9:21`."
        )
    return nearest_bucket(ratio, template)


def nearest_bucket(ratio: float, template: Template) -> tuple[int, int]:
    """The SDXL bucket whose shape is closest to `ratio`, scaled to the template's base size."""
    width, height = min(SDXL_BUCKETS, key=lambda b: abs(math.log((b[0] / b[1]) / ratio)))
    scale = math.sqrt(template.base_width * template.base_height) / 1024
    if scale == 1:
        return width, height
    return _round_to(width * scale, 32), _round_to(height * scale, 32)
