"""Each setting from its typed option or its flag, checked against the template and the server."""

from __future__ import annotations

import difflib
import math
import re
from typing import Any

from bot.model_family import ModelFamily
from bot.prompt.flags import EXAMPLES, MAX_LORAS, Draft, clean_value, clip
from bot.prompt.request import (
    MAX_SEED,
    RANDOM_SEED,
    ContentPolicy,
    Options,
    PromptError,
    random_seed,
)
from bot.samplers import A1111_SAMPLERS, SAMPLERS, SCHEDULERS
from bot.workflows import Lora, Template

CFG_RANGE = (1.0, 30.0)

HIRES_RANGE = (1.1, 2.0)

HIRES_DEFAULT = 1.5

DENOISE_RANGE = (0.05, 1.0)


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
            f"`--{name} {clip(text, 20)}` is not a whole number; write it like {EXAMPLES[name]}."
        )
    return int(cleaned)


def _parse_float(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise PromptError(
            f"`--{name} {clip(text, 20)}` is not a number; write it like {EXAMPLES[name]}."
        )
    return value


def choose_steps(
    draft: Draft, options: Options, template: Template, policy: ContentPolicy
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


def choose_count(
    draft: Draft, options: Options, template: Template, policy: ContentPolicy
) -> int | None:
    if not template.accepts("count"):
        return None
    typed = options.count is not None
    if not typed and "count" not in draft.flags:
        return min(int(template.defaults.get("count", 1)), policy.max_count)
    value = options.count if typed else _parse_int("count", draft.flags["count"])
    _check_int_range("count", value, 1, policy.max_count, typed, "images per prompt")
    return value


def choose_cfg(
    draft: Draft, options: Options, template: Template, policy: ContentPolicy
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


def choose_seed(draft: Draft, options: Options, fixed: int | None) -> int:
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
            f"{_shown('seed', clip(str(value), 24), typed)} is not a seed: use a whole number "
            f"from 0 to {MAX_SEED}, or -1 for a random one."
        )
    return value


def choose_hires(draft: Draft, options: Options, template: Template) -> float | None:
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


def scale_asked(draft: Draft, options: Options) -> bool:
    return options.hires is not None or bool(draft.flags.get("hires"))


def choose_denoise(draft: Draft, options: Options, template: Template) -> float | None:
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


def choose_sampler(
    draft: Draft, options: Options, template: Template, policy: ContentPolicy
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
    name = clean_value(name)
    found = _SAMPLER_LOOKUP.get(_squash(name))
    if found is not None:
        return found
    squashed = {_squash(n): n for n in (*SAMPLERS, *A1111_SAMPLERS)}
    close = difflib.get_close_matches(_squash(name), squashed, n=1, cutoff=0.6)
    hint = f" Did you mean `{squashed[close[0]]}`?" if close else ""
    raise PromptError(
        f"`{clip(name)}` is not a sampler I know.{hint} "
        "Use a ComfyUI name like `euler_ancestral` or an A1111 name like `DPM++ 2M Karras`."
    )


def resolve_scheduler(name: str) -> str:
    cleaned = clean_value(name).lower().replace(" ", "_")
    if cleaned in SCHEDULERS:
        return cleaned
    close = difflib.get_close_matches(cleaned, SCHEDULERS, n=1, cutoff=0.6)
    hint = f" Did you mean `{close[0]}`?" if close else ""
    raise PromptError(
        f"`{clip(name)}` is not a scheduler I know.{hint} Schedulers: {', '.join(SCHEDULERS)}."
    )


def check_loras(loras: list[Lora], template: Template, policy: ContentPolicy) -> list[Lora]:
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
