"""The values a prompt becomes: the request, the typed options, the server's policy."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, replace
from typing import Any

from bot.config import DEFAULT_NEGATIVE, DEFAULT_QUALITY_TAGS, Settings
from bot.workflows import Lora

MAX_SEED = 2**64 - 1

RANDOM_SEED = -1  # A1111's "pick one for me"


class PromptError(ValueError):
    """A request that cannot run, with a message telling the member what to change."""


@dataclass(frozen=True)
class ContentPolicy:
    """What a server allows and defaults to; the parser's only source of limits."""

    nsfw_policy: str = "safe_tags"
    blocked_words: tuple[str, ...] = ()
    max_steps: int = 50
    max_count: int = 4
    max_pixels: int = 1536 * 1536
    max_prompt_length: int = 1500
    allowed_samplers: frozenset[str] | None = None
    allowed_templates: frozenset[str] | None = None
    allowed_loras: frozenset[str] | None = None
    default_template: str = "pony-v6-xl"
    default_steps: int | None = None
    default_cfg: float | None = None
    # The operator's QUALITY_TAGS and DEFAULT_NEGATIVE, when changed: they replace the Pony
    # family's prefix and negative; None leaves each template's own.
    quality_tags: str | None = None
    default_negative: str | None = None
    checkpoint: str = "ponyDiffusionV6XL.safetensors"

    @classmethod
    def from_settings(cls, settings: Settings) -> ContentPolicy:
        return cls(
            nsfw_policy=settings.nsfw_policy,
            blocked_words=settings.blocked_words,
            max_steps=settings.max_steps,
            max_count=settings.max_count,
            max_pixels=settings.max_pixels,
            max_prompt_length=settings.max_prompt_length,
            default_template=settings.default_workflow,
            quality_tags=_changed(settings.quality_tags, DEFAULT_QUALITY_TAGS),
            default_negative=_changed(settings.default_negative, DEFAULT_NEGATIVE),
            checkpoint=settings.checkpoint,
        )


def _changed(value: str, default: str) -> str | None:
    """A setting the operator changed, or None: the settings give no "unset" for these."""
    return None if value == default else value


@dataclass(frozen=True)
class Options:
    """Typed slash-command options; `None` means the member did not give it."""

    negative: str | None = None
    aspect: str | None = None
    count: int | None = None
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    workflow: str | None = None
    denoise: float | None = None
    hires: float | None = None
    style: str | None = None


@dataclass(frozen=True)
class ImageInput:
    """An input image already verified and stored with the job; travels in `input.images`."""

    name: str
    width: int
    height: int
    # Where the image can be downloaded again, so Edit can keep it: a Discord attachment.
    source_url: str | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """Everything needed to render a workflow and to show a member what they asked for."""

    template: str
    prompt: str
    negative: str
    positive_text: str
    negative_text: str
    seed: int
    width: int
    height: int
    count: int = 1
    steps: int | None = None
    cfg: float | None = None
    sampler: str | None = None
    scheduler: str | None = None
    checkpoint: str | None = None
    loras: tuple[Lora, ...] = ()
    raw: bool = False
    hires_scale: float | None = None
    denoise: float | None = None
    image: ImageInput | None = None
    spoiler: bool = False
    # A named style for the styles module to apply; carried as the member wrote it.
    style: str | None = None
    # What the member should know about how their text was read (ignored flags, overrides).
    notes: tuple[str, ...] = ()
    # Which values came from the member's /prefer (`aspect`, `count`, ...), for Details.
    from_preferences: tuple[str, ...] = ()

    @property
    def output_size(self) -> tuple[int, int]:
        """The size of the images the workflow produces (after any hires or upscale pass)."""
        return scaled_size(self.width, self.height, self.hires_scale, pixels=self.image is not None)

    def values(self) -> dict[str, Any]:
        """The template parameters this request sets."""
        values: dict[str, Any] = {
            "prompt": self.positive_text,
            "negative": self.negative_text,
            "seed": self.seed,
            "steps": self.steps,
            "cfg": self.cfg,
            "sampler": self.sampler,
            "scheduler": self.scheduler,
            "width": self.width,
            "height": self.height,
            "count": self.count,
            "checkpoint": self.checkpoint,
            "denoise": self.denoise,
            "scale": self.hires_scale,
            "image": self.image.name if self.image else None,
            "color": self.seed % 0x1000000,
        }
        return {k: v for k, v in values.items() if v is not None}

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> GenerationRequest:
        data = json.loads(text)
        data["loras"] = tuple(Lora(**lora) for lora in data.get("loras", ()))
        data["notes"] = tuple(data.get("notes", ()))
        data["from_preferences"] = tuple(data.get("from_preferences", ()))
        if data.get("image") is not None:
            data["image"] = ImageInput(**data["image"])
        return cls(**data)

    def with_seed(self, seed: int) -> GenerationRequest:
        return replace(self, seed=seed)


def scaled_size(width: int, height: int, scale: float | None, *, pixels: bool) -> tuple[int, int]:
    """The size ComfyUI makes from `width`x`height` enlarged by `scale`.

    A hires pass scales the latent (an eighth of the size, rounded: LatentUpscaleBy); an
    upscale scales the pixels (ImageScaleBy), then VAEEncode crops to a multiple of 8.
    """
    if not scale:
        return width, height
    if pixels:
        return round(width * scale) // 8 * 8, round(height * scale) // 8 * 8
    return round(width / 8 * scale) * 8, round(height / 8 * scale) * 8


def random_seed() -> int:
    return random.SystemRandom().randrange(2**32)
