""".env.example and the README's settings table, generated from the settings' one declaration."""

from __future__ import annotations

import re
from itertools import groupby
from pathlib import Path

from bot.config import SETTINGS, Setting

ENV_EXAMPLE_HEADER = (
    "# Stablehand settings. Copy this file to .env and fill in the first three; the rest have\n"
    "# defaults. Real environment variables win over this file. More in README.md > Settings.\n"
)
TABLE_HEADER = "| Setting | Default | What it does |\n|---|---|---|\n"
# A link to a README section reads as its title in a plain-text file.
_README_LINK = re.compile(r"\[([^\]]+)\]\(#[^)]+\)")


def env_example(settings: tuple[Setting, ...] = SETTINGS) -> str:
    """Every setting under its section, each with its description and default."""
    blocks = [ENV_EXAMPLE_HEADER]
    for section, members in groupby(settings, key=lambda setting: setting.section):
        lines = [f"# --- {section} ---"]
        for setting in members:
            lines.append(f"# {_plain(setting.description)}")
            lines.append(f"{setting.name}={setting.default or ''}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def readme_table(settings: tuple[Setting, ...] = SETTINGS) -> str:
    """The README's settings table, one row per setting."""
    rows = [f"| `{s.name}` | {_shown_default(s)} | {s.description} |\n" for s in settings]
    return TABLE_HEADER + "".join(rows)


def with_readme_table(readme: str, settings: tuple[Setting, ...] = SETTINGS) -> str:
    """The README with its settings table replaced by the generated one."""
    start = readme.index(TABLE_HEADER)
    end = start + len(TABLE_HEADER)
    while readme.startswith("|", end):
        end = readme.index("\n", end) + 1
    return readme[:start] + readme_table(settings) + readme[end:]


def write_docs(root: Path) -> list[Path]:
    """Rewrite `.env.example` and the README's table under `root`; the files that changed."""
    changed = []
    for path, text in (
        (root / ".env.example", env_example()),
        (root / "README.md", with_readme_table((root / "README.md").read_text())),
    ):
        if path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed


def _plain(description: str) -> str:
    return _README_LINK.sub(r"README > \1", description)


def _shown_default(setting: Setting) -> str:
    if setting.required:
        return "*(required)*"
    return f"`{setting.default}`" if setting.default else "*(empty)*"


if __name__ == "__main__":
    # Run from a checkout after changing a setting: python -m bot.settings_docs
    for rewritten in write_docs(Path(__file__).resolve().parent.parent):
        print(f"rewrote {rewritten}")
