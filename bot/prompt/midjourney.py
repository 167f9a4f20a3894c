"""Midjourney habits: `{a, b}` permutations and `--repeat` as several requests, `a::2 b::-1` weights."""

from __future__ import annotations

import re

from bot.prompt.flags import FLAG, REPEAT_FLAGS, clean_value, clip
from bot.prompt.request import PromptError

# Each job is charged and queued on its own: a cap keeps one command from filling the queue.
MAX_JOBS_PER_COMMAND = 8

_INNERMOST_GROUP = re.compile(r"\{([^{}]*)\}")
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")
_MULTI_PROMPT = re.compile(r"::\s*(-?\d+(?:\.\d+)?)?")


def expand(text: str, *, cap: int = MAX_JOBS_PER_COMMAND) -> tuple[list[str], int]:
    """The prompts `{…}` permutations make, without `--repeat`, and how often each repeats."""
    text, repeat = _take_repeat(text, cap)
    texts = [text]
    while len(texts) * repeat <= cap and any(_INNERMOST_GROUP.search(t) for t in texts):
        texts = list(dict.fromkeys(expanded for t in texts for expanded in _expand_one(t)))
    if len(texts) * repeat > cap:
        # Expansion stops at the cap: `{a,b}` ten times over would be a thousand prompts.
        unfinished = any(_INNERMOST_GROUP.search(t) for t in texts)
        count = f"more than {cap}" if unfinished else str(len(texts) * repeat)
        made = "" if repeat == 1 else f" with `--repeat {repeat}`"
        raise PromptError(
            f"This makes {count} jobs{made}; one command can start at most {cap}. "
            "Use fewer options in `{…}` or a smaller `--repeat`."
        )
    return texts, repeat


def _expand_one(text: str) -> list[str]:
    """`text` once per option of its first innermost `{…}` group."""
    match = _INNERMOST_GROUP.search(text)
    if match is None:
        return [text]
    options = [o.strip().replace("\\,", ",") for o in _UNESCAPED_COMMA.split(match.group(1))]
    head, tail = text[: match.start()], text[match.end() :]
    return [" ".join(f"{head}{option}{tail}".split()) for option in options]


def _take_repeat(text: str, cap: int) -> tuple[str, int]:
    matches = list(FLAG.finditer(text))
    for i, match in enumerate(matches):
        if match.group(1).lower() not in REPEAT_FLAGS:
            continue
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        value = clean_value(text[match.end() : end])
        if not re.fullmatch(r"\d{1,3}", value) or not 1 <= int(value) <= cap:
            raise PromptError(
                f"`--repeat {clip(value, 20)}`: write a whole number from 1 to {cap}, "
                "e.g. `--repeat 2`."
            )
        if any(m.group(1).lower() in REPEAT_FLAGS for m in matches[i + 1 :]):
            raise PromptError("`--repeat` appears twice; keep one.")
        return " ".join(f"{text[: match.start()]} {text[end:]}".split()), int(value)
    return text, 1


def weigh(prompt: str) -> tuple[str, str]:
    """`a::2 b::-0.5` as ComfyUI emphasis: `(a:2)` for the positive, `b:0.5` for the negative."""
    if "::" not in prompt:
        return prompt, ""
    positive, negative = [], []
    pieces = _MULTI_PROMPT.split(prompt)
    # split() alternates text and captured weight; the last text has no `::` after it.
    for i in range(0, len(pieces), 2):
        words = pieces[i].strip(" ,")
        weight = float(pieces[i + 1]) if i + 1 < len(pieces) and pieces[i + 1] else 1.0
        if not words or weight == 0:
            continue
        target = positive if weight > 0 else negative
        target.append(words if abs(weight) == 1 else f"({words}:{abs(weight):g})")
    if not positive:
        raise PromptError(
            f"Every part of `{clip(prompt)}` has a negative weight; give at least one part "
            "a positive weight, e.g. `ocean::1 ship::-0.5`."
        )
    return ", ".join(positive), ", ".join(negative)


def ignored_note(flags: list[str]) -> str:
    shown = ", ".join(f"`{clip(flag, 30)}`" for flag in flags)
    return f"Ignored Midjourney flags with no equivalent here: {shown}."
