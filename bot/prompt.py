"""Prompt text + typed options + server policy -> a `GenerationRequest`, or a `PromptError`."""

from __future__ import annotations

import difflib
import json
import math
import random
import re
import unicodedata
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bot.config import DEFAULT_NEGATIVE, DEFAULT_QUALITY_TAGS, Settings
from bot.model_family import PONY_FAMILY, ModelFamily
from bot.model_files import ModelNameError, model_file_name
from bot.samplers import A1111_SAMPLERS, SAMPLERS, SCHEDULERS
from bot.workflows import Lora, Template, TemplateLibrary

MAX_SEED = 2**64 - 1
MAX_LORAS = 5
MAX_LORA_STRENGTH = 2.0
SIZE_MULTIPLE = 8
MIN_SIDE = 64
MAX_SIDE = 4096
CFG_RANGE = (1.0, 30.0)
HIRES_RANGE = (1.1, 2.0)
HIRES_DEFAULT = 1.5
DENOISE_RANGE = (0.05, 1.0)
RANDOM_SEED = -1  # A1111's "pick one for me"

# SDXL resolution buckets (~1 MP, multiples of 64) for a 1024x1024 base.
SDXL_BUCKETS: tuple[tuple[int, int], ...] = (
    (1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216),
    (1344, 768), (768, 1344), (1536, 640), (640, 1536),
)  # fmt: skip

# Allowed inside a prompt although they are format characters: emoji sequences need them.
_ALLOWED_FORMAT_CHARS = {"\u200d", "\ufe0f"}
# Phones turn `--` into an em or en dash, sometimes followed by a stray hyphen.
_FLAG = re.compile(r"(?:(?<=\s)|^)(?:-{2,}|[—–]-*)([A-Za-z][A-Za-z0-9_-]*)")
# Quotes and trailing commas members wrap flag values in (`--sampler "Euler a",`).
_VALUE_WRAPPERS = " ,;\"'“”‘’„«»"
_LORA_TAG = re.compile(r"<lora:([^>]*)>", re.IGNORECASE)


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


@dataclass(frozen=True)
class ImageInput:
    """An input image already verified and stored with the job; travels in `input.images`."""

    name: str
    width: int
    height: int


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
    style: str | None = None

    @property
    def output_size(self) -> tuple[int, int]:
        """The size of the images the workflow produces (after any hires or upscale pass)."""
        scale = self.hires_scale or 1.0
        return round(self.width * scale), round(self.height * scale)

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
        if data.get("image") is not None:
            data["image"] = ImageInput(**data["image"])
        return cls(**data)

    def with_seed(self, seed: int) -> GenerationRequest:
        return replace(self, seed=seed)


@dataclass
class _Draft:
    """Values gathered from the text before defaults and limits are applied."""

    prompt: str = ""
    flags: dict[str, str] = field(default_factory=dict)
    loras: list[Lora] = field(default_factory=list)


FLAG_NAMES = (
    "ar", "aspect", "size", "seed", "steps", "cfg", "sampler", "scheduler", "no", "count",
    "workflow", "raw", "hires", "denoise",
)  # fmt: skip
_FLAG_ALIASES = {"aspect": "ar", "n": "count", "batch": "count", "w": "workflow"}
_VALUELESS = {"raw"}
_OPTIONAL_VALUE = {"hires"}
_MULTI_WORD = {"no", "sampler"}
# Names members bring from A1111, Forge and Midjourney, and the flag that does that here.
_FLAG_HINTS = {
    "negative": "no", "neg": "no", "np": "no", "width": "size", "height": "size",
    "res": "size", "resolution": "size", "aspect_ratio": "ar", "ratio": "ar",
    "cfg_scale": "cfg", "guidance": "cfg", "model": "workflow", "checkpoint": "workflow",
    "v": "workflow", "version": "workflow", "niji": "workflow", "style": "raw",
    "upscale": "hires", "hr": "hires", "hires_fix": "hires", "highres": "hires",
    "strength": "denoise", "batch_size": "count", "repeat": "count", "r": "count",
    "schedule": "scheduler", "schedule_type": "scheduler",
}  # fmt: skip
_MIDJOURNEY_ONLY = frozenset(
    {
        "q",
        "quality",
        "s",
        "stylize",
        "c",
        "chaos",
        "tile",
        "iw",
        "weird",
        "stop",
        "sref",
        "cref",
        "v",
        "version",
        "niji",
        "p",
        "personalize",
        "draft",
        "video",
        "relax",
        "fast",
        "turbo",
    }
)


def random_seed() -> int:
    return random.SystemRandom().randrange(2**32)


def parse(
    text: str,
    *,
    library: TemplateLibrary,
    policy: ContentPolicy,
    options: Options | None = None,
    channel_nsfw: bool = False,
    image: ImageInput | None = None,
    seed: int | None = None,
) -> GenerationRequest:
    """Turn what the member typed into a request, or raise `PromptError` saying what to fix."""
    options = options or Options()
    _check_text(text, policy, "prompt")
    if options.negative:
        _check_text(options.negative, policy, "negative prompt")
    draft = _split_flags(_normalise(text))
    _check_blocked(draft.prompt, policy)

    template = _choose_template(draft, options, library, policy, image)
    if not draft.prompt and template.accepts("prompt"):
        raise PromptError("Describe what you want to see, e.g. `a pony astronaut on the moon`.")
    if policy.nsfw_policy == "refuse" and not channel_nsfw:
        raise PromptError(
            "On this server images can only be made in age-restricted channels. "
            "Try again in one of those."
        )
    _check_applies(draft, options, template, library, has_image=image is not None)

    width, height = _size(draft, options, template, image)
    hires = _hires(draft, options, template)
    if hires is not None and not _scale_asked(draft, options):
        hires = _fitting_scale(width, height, hires, policy)
    _check_pixels(width, height, hires, draft, template, policy)
    loras = _loras(draft.loras, template, policy)
    sampler, scheduler = _sampler(draft, options, template, policy)

    member_negative = _member_negative(draft, options)
    raw = "raw" in draft.flags
    safe = policy.nsfw_policy in ("safe_tags", "spoiler") and not channel_nsfw
    positive_text, negative_text = _compose(
        template, policy, draft.prompt, member_negative, raw=raw, safe=safe
    )
    # A model with no terms to keep it safe for work hides its images instead.
    unsteered = safe and template.accepts("prompt") and not template.model.steers_safe
    return GenerationRequest(
        template=template.name,
        prompt=draft.prompt,
        negative=member_negative,
        positive_text=positive_text,
        negative_text=negative_text,
        seed=_seed(draft, options, seed),
        width=width,
        height=height,
        count=_count(draft, options, template, policy) or 1,
        steps=_steps(draft, options, template, policy),
        cfg=_cfg(draft, options, template, policy),
        sampler=sampler,
        scheduler=scheduler,
        checkpoint=policy.checkpoint if template.accepts("checkpoint") else None,
        loras=tuple(loras),
        raw=raw,
        hires_scale=hires,
        denoise=_denoise(draft, options, template),
        image=image,
        spoiler=(policy.nsfw_policy == "spoiler" and not channel_nsfw) or unsteered,
    )


def as_text(request: GenerationRequest) -> str:
    """The words, LoRA tags and flags that parse back into `request` (for Edit and rebuilds)."""
    parts = [request.prompt]
    parts += [f"<lora:{lora.name}:{lora.strength!r}>" for lora in request.loras]
    if request.raw:
        parts.append("--raw")
    return " ".join(p for p in parts if p)


def revise(
    original: GenerationRequest,
    *,
    library: TemplateLibrary,
    policy: ContentPolicy,
    channel_nsfw: bool = False,
    workflow: str | None = None,
    image: ImageInput | None = None,
    seed: int | None = None,
    denoise: float | None = None,
) -> GenerationRequest:
    """A finished request run again (Reroll, Vary, Upscale): its words, LoRAs and settings,
    optionally on one of its images, checked against today's policy like any new request."""
    flags = [] if original.scheduler is None else [f"--scheduler {original.scheduler}"]
    if image is None and workflow is None:
        width, height = original.width, original.height
        flags.append(f"--size {width}x{height}")
        if original.hires_scale:
            flags.append(f"--hires {original.hires_scale:g}")
    options = Options(
        negative=original.negative or None,
        seed=original.seed if seed is None else seed,
        steps=original.steps,
        count=original.count if image is None and workflow is None else None,
        denoise=denoise
        if denoise is not None
        else (original.denoise if workflow is None else None),
        cfg=original.cfg,
        sampler=original.sampler,
        workflow=workflow or original.template,
    )
    return parse(
        " ".join([as_text(original), *flags]),
        library=library,
        policy=policy,
        options=options,
        channel_nsfw=channel_nsfw,
        image=image,
    )


def _check_text(text: str, policy: ContentPolicy, what: str) -> None:
    if len(text) > policy.max_prompt_length:
        raise PromptError(
            f"Your {what} is {len(text):,} characters long; the limit is "
            f"{policy.max_prompt_length:,}. Shorten it and try again."
        )
    for char in text:
        if char in "\n\t\r" or char in _ALLOWED_FORMAT_CHARS:
            continue
        category = unicodedata.category(char)
        if category in ("Cc", "Cf", "Co", "Cs"):
            name = unicodedata.name(char, "a control character")
            raise PromptError(
                f"Your {what} contains an invisible character (U+{ord(char):04X}, {name.lower()}). "
                "Retype it without copying from elsewhere."
            )


def _normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _split_flags(text: str) -> _Draft:
    draft = _Draft()
    text = _LORA_TAG.sub(lambda m: _take_lora(m, draft), text)
    matches = list(_FLAG.finditer(text))
    draft.prompt = _tidy(text[: matches[0].start()] if matches else text)
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        raw_name = match.group(1)
        name = _FLAG_ALIASES.get(raw_name.lower(), raw_name.lower())
        value = _clean_value(text[match.end() : end])
        if name not in FLAG_NAMES:
            raise PromptError(_unknown_flag(raw_name))
        if name in draft.flags:
            raise PromptError(f"`--{name}` appears twice; keep one.")
        if name in _VALUELESS and value:
            raise PromptError(
                f"`--{name}` takes no value, but `{_clip(value)}` follows it. "
                "Put flags at the end of the prompt."
            )
        if not value and name not in _VALUELESS | _OPTIONAL_VALUE:
            raise PromptError(f"`--{name}` needs a value, e.g. {_EXAMPLES[name]}.")
        if name not in _MULTI_WORD and len(value.split()) > 1:
            raise PromptError(
                f"`--{name}` takes one value but got `{_clip(value)}`. "
                f"Put flags at the end of the prompt, e.g. {_EXAMPLES[name]}."
            )
        draft.flags[name] = value
    return draft


def _clean_value(value: str) -> str:
    """A flag's value without the quotes and trailing commas members put around it."""
    return value.strip(_VALUE_WRAPPERS)


_EXAMPLES = {
    "ar": "`--ar 16:9`",
    "size": "`--size 832x1216`",
    "seed": "`--seed 42`",
    "steps": "`--steps 30`",
    "cfg": "`--cfg 6.5`",
    "sampler": "`--sampler DPM++ 2M Karras`",
    "scheduler": "`--scheduler karras`",
    "no": "`--no text, watermark`",
    "count": "`--count 2`",
    "workflow": "`--workflow pony-v6-xl`",
    "raw": "`--raw`",
    "hires": "`--hires 1.5`",
    "denoise": "`--denoise 0.5`",
}


def _clip(text: str, limit: int = 40) -> str:
    """Member input quoted back in a message: one line, printable, no backticks, not too long."""
    text = "".join(
        "\ufffd" if unicodedata.category(c) in ("Cc", "Cf", "Co", "Cs") else c
        for c in " ".join(text.split()).replace("`", "'")
    )
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _tidy(text: str) -> str:
    return " ".join(text.split()).strip(" ,")


def _unknown_flag(name: str) -> str:
    lowered = name.lower()
    if lowered in _MIDJOURNEY_ONLY:
        return f"`--{_clip(name, 20)}` is a Midjourney flag with no equivalent here; drop it."
    suggestion = _FLAG_HINTS.get(lowered)
    if suggestion is None:
        candidates = list(FLAG_NAMES) + list(_FLAG_ALIASES)
        close = difflib.get_close_matches(lowered, candidates, n=1, cutoff=0.6)
        suggestion = _FLAG_ALIASES.get(close[0], close[0]) if close else None
    if suggestion:
        return f"`--{_clip(name, 20)}` is not a flag I know. Did you mean `--{suggestion}`?"
    known = ", ".join(f"--{n}" for n in FLAG_NAMES if n != "aspect")
    return f"`--{_clip(name, 20)}` is not a flag I know. Flags: {known}."


def _take_lora(match: re.Match[str], draft: _Draft) -> str:
    body = match.group(1)
    name, _, strength_text = body.partition(":")
    name = name.strip()
    try:
        file_name = model_file_name(name)
    except ModelNameError as exc:
        raise PromptError(
            f"`<lora:{_clip(body, 30)}>` is not a LoRA tag I can use: {exc}. Write "
            "`<lora:name:0.8>`, or `<lora:folder/name:0.8>` for one in a subfolder."
        ) from None
    strength = 1.0
    if strength_text.strip():
        try:
            strength = float(strength_text)
        except ValueError:
            raise PromptError(
                f"The strength in `<lora:{_clip(body, 30)}>` must be a number, e.g. `<lora:{name}:0.8>`."
            ) from None
        if not math.isfinite(strength) or abs(strength) > MAX_LORA_STRENGTH:
            raise PromptError(
                f"LoRA strength `{_clip(strength_text.strip(), 20)}` is out of range: use "
                f"-{MAX_LORA_STRENGTH:g} to {MAX_LORA_STRENGTH:g} (0.6–1.0 is typical)."
            )
    if any(lora.name == file_name for lora in draft.loras):
        raise PromptError(f"The LoRA `{file_name}` is named twice; keep one.")
    draft.loras.append(Lora(file_name, strength))
    return " "


def _choose_template(
    draft: _Draft,
    options: Options,
    library: TemplateLibrary,
    policy: ContentPolicy,
    image: ImageInput | None,
) -> Template:
    typed = (options.workflow or "").strip()
    template = _named_template(
        typed or draft.flags.get("workflow") or policy.default_template, library
    )
    hires_asked = "hires" in draft.flags or options.hires is not None
    reason = None
    if image is not None and not template.needs_image and "image" in template.variants:
        template, reason = _variant(template, "image", library), "An attached image"
    elif hires_asked and not template.accepts("scale") and "hires" in template.variants:
        template, reason = _variant(template, "hires", library), "`--hires`"
    if policy.allowed_templates is not None and template.name not in policy.allowed_templates:
        allowed = ", ".join(f"`{n}`" for n in sorted(policy.allowed_templates)) or "none"
        if reason:
            raise PromptError(
                f"{reason} uses the `{template.name}` workflow, which this server does not allow. "
                f"Allowed: {allowed}."
            )
        raise PromptError(
            f"This server does not allow the `{template.name}` workflow. Allowed: {allowed}."
        )
    _check_image(template, image, library)
    if hires_asked and not template.accepts("scale"):
        upscalers = _workflows_taking(library, "scale", image=True)
        hint = f" (to enlarge an image, use {upscalers})" if image and upscalers else ""
        raise PromptError(
            f"The `{template.name}` workflow has no hires pass; drop `--hires`{hint}."
        )
    return template


def _named_template(name: str, library: TemplateLibrary) -> Template:
    template = library.get(name)
    if template is None or template.hidden:
        close = difflib.get_close_matches(name.lower(), library.names(), n=1, cutoff=0.5)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise PromptError(
            f"There is no workflow called `{_clip(name, 40)}`.{hint} "
            f"Workflows: {', '.join(library.names())}."
        )
    return template


def _variant(template: Template, kind: str, library: TemplateLibrary) -> Template:
    # The loader checks that variants exist; a library built by hand may still lack one.
    return library.get(template.variants[kind]) or template


def _check_image(template: Template, image: ImageInput | None, library: TemplateLibrary) -> None:
    if template.needs_image and image is None:
        raise PromptError(
            f"The `{template.name}` workflow starts from an image: attach one with the `image` option."
        )
    if image is not None and not template.needs_image:
        takers = _workflows_taking(library, "image", image=True)
        hint = f", or use a workflow that does: {takers}" if takers else ""
        raise PromptError(
            f"The `{template.name}` workflow does not use an attached image; remove it{hint}."
        )


def _workflows_taking(library: TemplateLibrary, parameter: str, *, image: bool) -> str:
    """Up to three workflows that take `parameter`, among those that (do not) start from an image."""
    names = [
        f"`{t.name}`"
        for t in library
        if t.accepts(parameter) and not t.hidden and t.needs_image == image
    ]
    return ", ".join(names[:3])


_FLAG_PARAMETER = {
    "seed": "seed",
    "steps": "steps",
    "cfg": "cfg",
    "sampler": "sampler",
    "scheduler": "scheduler",
    "no": "negative",
    "count": "count",
    "ar": "width",
    "size": "width",
    "denoise": "denoise",
    "hires": "scale",
}


_OPTION_PARAMETER = {
    "negative": "negative",
    "aspect": "width",
    "count": "count",
    "seed": "seed",
    "steps": "steps",
    "cfg": "cfg",
    "sampler": "sampler",
    "denoise": "denoise",
    "hires": "scale",
}


def _check_applies(
    draft: _Draft,
    options: Options,
    template: Template,
    library: TemplateLibrary,
    *,
    has_image: bool,
) -> None:
    """Refuse what the member asked for that this workflow would silently ignore."""
    for flag in draft.flags:
        parameter = _FLAG_PARAMETER.get(flag)
        if parameter is not None and not template.accepts(parameter):
            takers = _workflows_taking(library, parameter, image=has_image)
            hint = f", or pick a workflow that takes it: {takers}" if takers else ""
            raise PromptError(
                f"`--{flag}` has no effect on the `{template.name}` workflow; drop it{hint}."
            )
        if flag == "raw" and not template.model.adds_tags:
            raise PromptError(f"The `{template.name}` workflow adds no quality tags; drop `--raw`.")
    for option, parameter in _OPTION_PARAMETER.items():
        if getattr(options, option) is not None and not template.accepts(parameter):
            raise PromptError(
                f"The `{option}` option has no effect on the `{template.name}` workflow; leave it out."
            )


def _default(name: str, template: Template, policy: ContentPolicy) -> Any:
    # A server's default CFG is a CFG: it means nothing as a distilled model's guidance.
    server_cfg = None if template.cfg_is_guidance else policy.default_cfg
    server = {"steps": policy.default_steps, "cfg": server_cfg}.get(name)
    return server if server is not None else template.defaults.get(name)


def _shown(name: str, value: object, typed: bool) -> str:
    """How the member wrote a value: as a typed option or as a flag in the text."""
    return f"`{name}: {value}`" if typed else f"`--{name} {value}`"


def _check_int_range(name: str, value: int, low: int, high: int, typed: bool, unit: str) -> None:
    if value > high:
        raise PromptError(
            f"{_shown(name, value, typed)} is more than this server allows ({high} {unit}); "
            f"use {_shown(name, high, typed)} or less."
        )
    if value < low:
        raise PromptError(
            f"{_shown(name, value, typed)} is too low; use {_shown(name, low, typed)} or more."
        )


def _parse_int(name: str, text: str) -> int:
    cleaned = text.replace(",", "").replace("_", "")
    if not re.fullmatch(r"[+-]?\d{1,30}", cleaned):
        raise PromptError(
            f"`--{name} {_clip(text, 20)}` is not a whole number; write it like {_EXAMPLES[name]}."
        )
    return int(cleaned)


def _parse_float(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise PromptError(
            f"`--{name} {_clip(text, 20)}` is not a number; write it like {_EXAMPLES[name]}."
        )
    return value


def _steps(
    draft: _Draft, options: Options, template: Template, policy: ContentPolicy
) -> int | None:
    if not template.accepts("steps"):
        return None
    typed = options.steps is not None
    if not typed and "steps" not in draft.flags:
        # A server cap below the template's default lowers the default rather than refusing.
        return min(int(_default("steps", template, policy) or 25), policy.max_steps)
    value = options.steps if typed else _parse_int("steps", draft.flags["steps"])
    _check_int_range("steps", value, 1, policy.max_steps, typed, "steps")
    return value


def _count(
    draft: _Draft, options: Options, template: Template, policy: ContentPolicy
) -> int | None:
    if not template.accepts("count"):
        return None
    typed = options.count is not None
    if not typed and "count" not in draft.flags:
        return min(int(template.defaults.get("count", 1)), policy.max_count)
    value = options.count if typed else _parse_int("count", draft.flags["count"])
    _check_int_range("count", value, 1, policy.max_count, typed, "images per prompt")
    return value


def _cfg(
    draft: _Draft, options: Options, template: Template, policy: ContentPolicy
) -> float | None:
    if not template.accepts("cfg"):
        return None
    typed = options.cfg is not None
    if typed:
        value = float(options.cfg)
    elif "cfg" in draft.flags:
        value = _parse_float("cfg", draft.flags["cfg"])
    else:
        return float(_default("cfg", template, policy) or 7.0)
    low, high = CFG_RANGE
    if not (math.isfinite(value) and low <= value <= high):
        raise PromptError(
            f"{_shown('cfg', f'{value:g}', typed)} is outside {low:g} to {high:g}"
            f"{_cfg_advice(template.model, typed)}."
        )
    return round(value, 2)


def _cfg_advice(model: ModelFamily, typed: bool) -> str:
    if model.recommended_cfg is None:
        return ""
    good_low, good_high = model.recommended_cfg
    example = _shown("cfg", f"{(good_low + good_high) / 2:g}", typed)
    name = model.label.split()[0]
    return f"; {name} works best at {good_low:g}–{good_high:g}, e.g. {example}"


def _seed(draft: _Draft, options: Options, fixed: int | None) -> int:
    typed = options.seed is not None
    if typed:
        value = options.seed
    elif "seed" in draft.flags:
        value = _parse_int("seed", draft.flags["seed"])
    else:
        return fixed if fixed is not None else random_seed()
    if value == RANDOM_SEED:
        return random_seed()
    if not 0 <= value <= MAX_SEED:
        raise PromptError(
            f"{_shown('seed', _clip(str(value), 24), typed)} is not a seed: use a whole number "
            f"from 0 to {MAX_SEED}, or -1 for a random one."
        )
    return value


def _hires(draft: _Draft, options: Options, template: Template) -> float | None:
    if not template.accepts("scale"):
        return None
    typed = options.hires is not None
    if typed:
        value = float(options.hires)
    elif draft.flags.get("hires"):
        value = _parse_float("hires", re.sub(r"\s*[xX×]$", "", draft.flags["hires"]))
    else:
        return float(template.defaults.get("scale", HIRES_DEFAULT))
    low, high = HIRES_RANGE
    if not low <= value <= high:
        raise PromptError(
            f"{_shown('hires', f'{value:g}', typed)} is outside {low:g} to {high:g}; "
            f"try {_shown('hires', HIRES_DEFAULT, typed)}."
        )
    return round(value, 2)


def _scale_asked(draft: _Draft, options: Options) -> bool:
    return options.hires is not None or bool(draft.flags.get("hires"))


def _fitting_scale(width: int, height: int, scale: float, policy: ContentPolicy) -> float:
    """The largest scale up to the default, in 0.05 steps, whose result fits the pixel limit:
    a member who named no scale gets what is allowed (or, if nothing is, the default refused)."""
    fitted = scale
    while _pixels(width, height, fitted) > policy.max_pixels:
        fitted = round(fitted - 0.05, 2)
        if fitted < HIRES_RANGE[0]:
            return scale
    return fitted


def _pixels(width: int, height: int, scale: float | None) -> int:
    return round(width * (scale or 1)) * round(height * (scale or 1))


def _denoise(draft: _Draft, options: Options, template: Template) -> float | None:
    if not template.accepts("denoise"):
        return None
    typed = options.denoise is not None
    if typed:
        value = float(options.denoise)
    elif "denoise" in draft.flags:
        value = _parse_float("denoise", draft.flags["denoise"])
    else:
        return float(template.defaults.get("denoise", 1.0))
    low, high = DENOISE_RANGE
    if not low <= value <= high:
        raise PromptError(
            f"{_shown('denoise', f'{value:g}', typed)} is outside {low:g} to {high:g} "
            f"(low keeps the image, high changes it); try {_shown('denoise', 0.5, typed)}."
        )
    return round(value, 2)


def _sampler(
    draft: _Draft, options: Options, template: Template, policy: ContentPolicy
) -> tuple[str | None, str | None]:
    if not template.accepts("sampler"):
        return None, None
    sampler = template.defaults.get("sampler")
    scheduler = template.defaults.get("scheduler")
    asked = options.sampler or draft.flags.get("sampler")
    if asked:
        sampler, paired = resolve_sampler(asked)
        scheduler = paired or scheduler
    if "scheduler" in draft.flags:
        # Named explicitly, the scheduler beats the one an A1111 sampler name implies.
        scheduler = resolve_scheduler(draft.flags["scheduler"])
    if policy.allowed_samplers is not None and sampler not in policy.allowed_samplers:
        allowed = ", ".join(f"`{s}`" for s in sorted(policy.allowed_samplers)) or "none"
        raise PromptError(
            f"This server does not allow the sampler `{sampler}`. Use one of: {allowed}."
        )
    return sampler, scheduler


def _squash(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.lower()).replace("+", "p")


_SAMPLER_LOOKUP: dict[str, tuple[str, str | None]] = {
    **{_squash(name): (name, None) for name in SAMPLERS},
    **{_squash(a1111): pair for a1111, pair in A1111_SAMPLERS.items()},
}


def resolve_sampler(name: str) -> tuple[str, str | None]:
    """A ComfyUI or A1111 sampler name -> (sampler, scheduler or None)."""
    name = _clean_value(name)
    found = _SAMPLER_LOOKUP.get(_squash(name))
    if found is not None:
        return found
    squashed = {_squash(n): n for n in (*SAMPLERS, *A1111_SAMPLERS)}
    close = difflib.get_close_matches(_squash(name), squashed, n=1, cutoff=0.6)
    hint = f" Did you mean `{squashed[close[0]]}`?" if close else ""
    raise PromptError(
        f"`{_clip(name)}` is not a sampler I know.{hint} "
        "Use a ComfyUI name like `euler_ancestral` or an A1111 name like `DPM++ 2M Karras`."
    )


def resolve_scheduler(name: str) -> str:
    cleaned = _clean_value(name).lower().replace(" ", "_")
    if cleaned in SCHEDULERS:
        return cleaned
    close = difflib.get_close_matches(cleaned, SCHEDULERS, n=1, cutoff=0.6)
    hint = f" Did you mean `{close[0]}`?" if close else ""
    raise PromptError(
        f"`{_clip(name)}` is not a scheduler I know.{hint} Schedulers: {', '.join(SCHEDULERS)}."
    )


def _size(
    draft: _Draft, options: Options, template: Template, image: ImageInput | None
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


def _check_pixels(
    width: int,
    height: int,
    scale: float | None,
    draft: _Draft,
    template: Template,
    policy: ContentPolicy,
) -> None:
    if _pixels(width, height, scale) <= policy.max_pixels:
        return
    side = math.isqrt(policy.max_pixels)
    limit = f"this server's limit of {policy.max_pixels:,} pixels (about {side}x{side})"
    made = f"{round(width * (scale or 1))}x{round(height * (scale or 1))}"
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
        raise PromptError(f"`--size {_clip(text)}` is not a size: write it like `--size 832x1216`.")
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
    text = _clean_value(text)
    match = re.fullmatch(r"(\d{1,5}(?:\.\d+)?)\s*[:/xX]\s*(\d{1,5}(?:\.\d+)?)", text)
    if not match or float(match.group(1)) <= 0 or float(match.group(2)) <= 0:
        raise PromptError(f"`{_clip(text)}` is not an aspect ratio: write it like `--ar 16:9`.")
    ratio = float(match.group(1)) / float(match.group(2))
    widest = max(w / h for w, h in SDXL_BUCKETS)
    if ratio > widest * 1.05:
        raise PromptError(
            f"`--ar {_clip(text)}` is wider than {widest:.1f}:1, the widest shape the model draws well; "
            "try `--ar 21:9`."
        )
    if ratio < (1 / widest) / 1.05:
        raise PromptError(
            f"`--ar {_clip(text)}` is taller than 1:{widest:.1f}, the tallest shape the model draws well; "
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


def _loras(loras: list[Lora], template: Template, policy: ContentPolicy) -> list[Lora]:
    if not loras:
        return []
    if not template.accepts_loras:
        raise PromptError(
            f"The `{template.name}` workflow does not take LoRAs; remove the `<lora:…>` tags."
        )
    if len(loras) > MAX_LORAS:
        raise PromptError(
            f"At most {MAX_LORAS} LoRAs per prompt; you named {len(loras)}. Remove some `<lora:…>` tags."
        )
    if policy.allowed_loras is not None:
        for lora in loras:
            if (
                lora.name not in policy.allowed_loras
                and lora.name.rsplit(".", 1)[0] not in policy.allowed_loras
            ):
                allowed = ", ".join(f"`{n}`" for n in sorted(policy.allowed_loras)) or "none"
                raise PromptError(
                    f"This server does not allow the LoRA `{lora.name}`. Allowed: {allowed}."
                )
    return loras


def _check_blocked(text: str, policy: ContentPolicy) -> None:
    """Refuse a prompt naming a blocked word; negatives may name them, to steer away from them."""
    lowered = text.lower()
    for word in policy.blocked_words:
        if re.search(rf"(?<!\w){re.escape(word.lower())}(?!\w)", lowered):
            raise PromptError(
                f"This server does not allow `{_clip(word, 30)}` in prompts; rephrase without it."
            )


def _member_negative(draft: _Draft, options: Options) -> str:
    """The typed negative and `--no`, together: both say what the member does not want."""
    parts = [_normalise(options.negative or ""), draft.flags.get("no", "")]
    return ", ".join(p.strip(" ,") for p in parts if p.strip(" ,"))


def _compose(
    template: Template, policy: ContentPolicy, prompt: str, negative: str, *, raw: bool, safe: bool
) -> tuple[str, str]:
    """The texts sent to the model: its own and its safe terms around the member's words."""
    model = template.model
    positive_parts, negative_parts, suffix_parts = [], [], []
    if not raw:
        prefix, default_negative = model.prompt_prefix, model.default_negative
        if model.family == PONY_FAMILY:
            prefix = _either(policy.quality_tags, prefix)
            default_negative = _either(policy.default_negative, default_negative)
        positive_parts.append(prefix)
        negative_parts.append(default_negative)
        suffix_parts.append(model.prompt_suffix)
    if safe:
        positive_parts.append(model.safe_positive)
        negative_parts.append(model.safe_negative)
    return (
        _join_tags(positive_parts, prompt, suffix_parts),
        _join_tags(negative_parts, negative),
    )


def _either(override: str | None, own: str) -> str:
    return own if override is None else override


def _join_tags(tag_groups: list[str], text: str, after: list[str] | None = None) -> str:
    """Tags before (and `after`) the member's text, leaving out any the member already wrote."""
    seen = {tag.strip().lower() for tag in text.split(",")}

    def fresh(groups: list[str]) -> list[str]:
        tags = []
        for group in groups:
            for tag in (t.strip() for t in group.split(",")):
                if tag and tag.lower() not in seen:
                    seen.add(tag.lower())
                    tags.append(tag)
        return tags

    before = fresh(tag_groups)
    return ", ".join([*before, *([text] if text else []), *fresh(after or [])])
