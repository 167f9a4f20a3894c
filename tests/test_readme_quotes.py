"""The README's troubleshooting table quotes what the bot says: every quoted sentence comes from
the code, so a reworded message cannot leave the README quoting one the bot no longer says."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Stands for a value the code fills in (an f-string's `{…}`); the README writes `…` there.
HOLE = "\x00"


@functools.cache
def _code_strings() -> tuple[str, ...]:
    """Every string literal of the bot and its cogs; an f-string's fields become holes (read once
    per run: every quote is looked up among the same strings)."""
    found = []
    for path in [*(ROOT / "bot").rglob("*.py"), *(ROOT / "cogs").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append(node.value)
            elif isinstance(node, ast.JoinedStr):
                found.append(
                    "".join(
                        part.value if isinstance(part, ast.Constant) else HOLE
                        for part in node.values
                    )
                )
    return tuple(found)


def _quoted() -> list[str]:
    """The italic quotes in the first column of the troubleshooting table."""
    text = (ROOT / "README.md").read_text("utf-8")
    section = text.split("## Troubleshooting", 1)[1].split("\n## ", 1)[0]
    quotes = []
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| What you see"):
            first_cell = line.split(" | ", 1)[0]
            quotes += re.findall(r"(?<![*\w])\*([^*]+)\*(?![*\w])", first_cell)
    return quotes


def _pieces(quote: str) -> list[str]:
    """The sentences a quote joins with ` / ` (one row may quote several messages)."""
    return [p.strip(" .") for p in re.split(r"\s/\s", quote) if p.strip(" .")]


QUOTES = _quoted()


def test_the_troubleshooting_table_quotes_something() -> None:
    assert len(QUOTES) >= 10


def _reach(states: dict[int, int], j: int, words: int) -> None:
    states[j] = max(states.get(j, -1), words)


def said_by(piece: str, message: str) -> bool:
    """Whether `piece` can be read somewhere in `message`: a field of the message stands for any
    text (the README may name the value, `The checkpoint` for `The {kind}`), the README's `…`
    for a field or for words left out; at least half of the piece must be the message's words."""
    # Where in `message` the reading has got to, and how many characters were its own words.
    states = dict.fromkeys(range(len(message) + 1), 0)
    for char in piece:
        following: dict[int, int] = {}
        reach = functools.partial(_reach, following)
        for j, words in states.items():
            if char == "…":
                for k in range(j, len(message) + 1):
                    reach(k, words)
                    if k < len(message) and message[k] == HOLE:
                        reach(k + 1, words)
                continue
            if j < len(message) and message[j] == HOLE:
                reach(j, words)  # the field takes this character
                reach(j + 1, words)  # ... and ends with it
                if j + 1 < len(message) and message[j + 1] == char:
                    reach(j + 2, words + 1)  # an empty field
            elif j < len(message) and message[j] == char:
                reach(j + 1, words + 1)
        states = following
        if not states:
            return False
    return max(states.values()) >= 0.5 * len(piece.replace("…", ""))


def test_a_piece_matches_a_message_only_as_the_code_says_it() -> None:
    assert said_by("The checkpoint `x` is not on", f"The {HOLE} `{HOLE}` is not on the volume")
    assert not said_by("The checkpoint is missing", f"The {HOLE} `{HOLE}` is not on the volume")
    assert said_by("The LoRA file `…` on it", f"The {HOLE} file{HOLE} on it")
    assert not said_by("refused the bot's RunPod key", "The GPU service refused the bot's key")
    assert not said_by("Converted to WebP", f"{HOLE} to {HOLE}")
    assert said_by("made in #…", f"can be made in {HOLE}.")


@pytest.mark.parametrize("quote", QUOTES)
def test_each_quoted_sentence_is_one_the_bot_says(quote: str) -> None:
    strings = _code_strings()
    for piece in _pieces(quote):
        ends = piece.strip("…")
        candidates = [m for m in strings if ends[:3] in m or ends[-3:] in m or HOLE in m]
        assert any(said_by(piece, m) for m in candidates), (
            f"the README quotes {piece!r}, which no message of the bot says"
        )
