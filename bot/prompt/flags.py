"""The member's text split into words, `--flags` and `<lora:…>` tags, and the wording of its errors."""

from __future__ import annotations

import difflib
import math
import re
import unicodedata
from dataclasses import dataclass, field

from bot.model_files import ModelNameError, model_file_name
from bot.prompt.request import ContentPolicy, PromptError
from bot.workflows import Lora

MAX_LORAS = 5

MAX_LORA_STRENGTH = 2.0

# Allowed inside a prompt although they are format characters: emoji sequences need them.
_ALLOWED_FORMAT_CHARS = {"\u200d", "\ufe0f"}

# Phones turn `--` into an em or en dash, sometimes followed by a stray hyphen.
FLAG = re.compile(r"(?:(?<=\s)|^)(?:-{2,}|[—–]-*)([A-Za-z][A-Za-z0-9_-]*)")

# Quotes and trailing commas members wrap flag values in (`--sampler "Euler a",`).
_VALUE_WRAPPERS = " ,;\"'“”‘’„«»"

_LORA_TAG = re.compile(r"<lora:([^>]*)>", re.IGNORECASE)


@dataclass
class Draft:
    """Values gathered from the text before defaults and limits are applied."""

    prompt: str = ""
    flags: dict[str, str] = field(default_factory=dict)
    loras: list[Lora] = field(default_factory=list)
    # Midjourney flags with no equivalent here, as the member wrote them (`--v 6`).
    ignored: list[str] = field(default_factory=list)


FLAG_NAMES = (
    "ar", "aspect", "size", "seed", "steps", "cfg", "sampler", "scheduler", "no", "count",
    "workflow", "raw", "hires", "denoise", "style",
)  # fmt: skip

_FLAG_ALIASES = {"aspect": "ar", "n": "count", "batch": "count", "w": "workflow"}

_VALUELESS = {"raw"}

_OPTIONAL_VALUE = {"hires"}

_MULTI_WORD = {"no", "sampler", "style"}

# Names members bring from A1111 and Forge, and the flag that does that here.
_FLAG_HINTS = {
    "negative": "no", "neg": "no", "np": "no", "width": "size", "height": "size",
    "res": "size", "resolution": "size", "aspect_ratio": "ar", "ratio": "ar",
    "cfg_scale": "cfg", "guidance": "cfg", "model": "workflow", "checkpoint": "workflow",
    "upscale": "hires", "hr": "hires", "hires_fix": "hires", "highres": "hires",
    "strength": "denoise", "batch_size": "count",
    "schedule": "scheduler", "schedule_type": "scheduler",
}  # fmt: skip

# Midjourney's flags with no equivalent here: ignored, and named in one note.
MIDJOURNEY_ONLY = frozenset(
    {
        "q", "quality", "s", "stylize", "c", "chaos", "tile", "iw", "weird", "stop",
        "sref", "sw", "sv", "cref", "cw", "oref", "ow", "v", "version", "niji", "p",
        "personalize", "draft", "video", "motion", "relax", "fast", "turbo", "hd",
        "test", "testp", "uplight", "upbeta", "public", "stealth", "exp",
    }
)  # fmt: skip
# Handled before parsing, by `midjourney.expand`: each repeat is a job of its own.
REPEAT_FLAGS = frozenset({"repeat", "r"})


def check_text(text: str, policy: ContentPolicy, what: str) -> None:
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


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def split_flags(text: str) -> Draft:
    draft = Draft()
    text = _LORA_TAG.sub(lambda m: _take_lora(m, draft), text)
    matches = list(FLAG.finditer(text))
    draft.prompt = _tidy(text[: matches[0].start()] if matches else text)
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        raw_name = match.group(1)
        name = _FLAG_ALIASES.get(raw_name.lower(), raw_name.lower())
        value = clean_value(text[match.end() : end])
        if name in MIDJOURNEY_ONLY or (name == "style" and value.lower() == "raw"):
            draft.ignored.append(f"--{raw_name} {value}".strip())
            continue
        if name not in FLAG_NAMES:
            raise PromptError(_unknown_flag(raw_name))
        if name == "no" and name in draft.flags:
            # Midjourney merges repeated `--no`; so do we.
            draft.flags["no"] = ", ".join(p for p in (draft.flags["no"], value) if p)
            continue
        if name in draft.flags:
            raise PromptError(f"`--{name}` appears twice; keep one.")
        if name in _VALUELESS and value:
            raise PromptError(
                f"`--{name}` takes no value, but `{clip(value)}` follows it. "
                "Put flags at the end of the prompt."
            )
        if not value and name not in _VALUELESS | _OPTIONAL_VALUE:
            raise PromptError(f"`--{name}` needs a value, e.g. {EXAMPLES[name]}.")
        if name not in _MULTI_WORD and len(value.split()) > 1:
            raise PromptError(
                f"`--{name}` takes one value but got `{clip(value)}`. "
                f"Put flags at the end of the prompt, e.g. {EXAMPLES[name]}."
            )
        draft.flags[name] = value
    return draft


def flags_in(text: str) -> frozenset[str]:
    """The flags `text` sets, by their canonical names; none if it does not parse (`parse` says why)."""
    try:
        return frozenset(split_flags(normalise(text)).flags)
    except PromptError:
        return frozenset()


def clean_value(value: str) -> str:
    """A flag's value without the quotes and trailing commas members put around it."""
    return value.strip(_VALUE_WRAPPERS)


EXAMPLES = {
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
    "style": "`--style watercolor`",
}


def clip(text: str, limit: int = 40) -> str:
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
    if lowered in REPEAT_FLAGS:
        return f"`--{clip(name, 20)}` works in `/imagine` only; here, make one request at a time."
    suggestion = _FLAG_HINTS.get(lowered)
    if suggestion is None:
        candidates = list(FLAG_NAMES) + list(_FLAG_ALIASES)
        close = difflib.get_close_matches(lowered, candidates, n=1, cutoff=0.6)
        suggestion = _FLAG_ALIASES.get(close[0], close[0]) if close else None
    if suggestion:
        return f"`--{clip(name, 20)}` is not a flag I know. Did you mean `--{suggestion}`?"
    known = ", ".join(f"--{n}" for n in FLAG_NAMES if n != "aspect")
    return f"`--{clip(name, 20)}` is not a flag I know. Flags: {known}."


def _take_lora(match: re.Match[str], draft: Draft) -> str:
    body = match.group(1)
    name, _, strength_text = body.partition(":")
    name = name.strip()
    try:
        file_name = model_file_name(name)
    except ModelNameError as exc:
        raise PromptError(
            f"`<lora:{clip(body, 30)}>` is not a LoRA tag I can use: {exc}. Write "
            "`<lora:name:0.8>`, or `<lora:folder/name:0.8>` for one in a subfolder."
        ) from None
    strength = 1.0
    if strength_text.strip():
        try:
            strength = float(strength_text)
        except ValueError:
            raise PromptError(
                f"The strength in `<lora:{clip(body, 30)}>` must be a number, e.g. `<lora:{name}:0.8>`."
            ) from None
        if not math.isfinite(strength) or abs(strength) > MAX_LORA_STRENGTH:
            raise PromptError(
                f"LoRA strength `{clip(strength_text.strip(), 20)}` is out of range: use "
                f"-{MAX_LORA_STRENGTH:g} to {MAX_LORA_STRENGTH:g} (0.6–1.0 is typical)."
            )
    if any(lora.name == file_name for lora in draft.loras):
        raise PromptError(f"The LoRA `{file_name}` is named twice; keep one.")
    draft.loras.append(Lora(file_name, strength))
    return " "
