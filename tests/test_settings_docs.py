"""`.env.example` and the README's settings table are what the settings' declaration generates."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from bot.config import SETTINGS, load_settings
from bot.settings_docs import env_example, readme_table, with_readme_table, write_docs
from tests.conftest import ROOT

FIX = "run `python -m bot.settings_docs` and commit the result"


def test_env_example_is_generated_from_the_declaration() -> None:
    assert (ROOT / ".env.example").read_text() == env_example(), FIX


def test_readme_settings_table_is_generated_from_the_declaration() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme_table() in readme, FIX
    assert with_readme_table(readme) == readme, FIX


def test_a_changed_default_or_description_makes_the_committed_docs_stale() -> None:
    readme = (ROOT / "README.md").read_text()
    changed = tuple(
        replace(s, default="8", description="Changed.") if s.name == "MAX_COUNT" else s
        for s in SETTINGS
    )
    assert with_readme_table(readme, changed) != readme
    assert "| `MAX_COUNT` | `8` | Changed. |" in with_readme_table(readme, changed)
    assert "# Changed.\nMAX_COUNT=8\n" in env_example(changed)


def test_a_setting_missing_from_the_docs_makes_them_stale() -> None:
    without_one = tuple(s for s in SETTINGS if s.name != "BLOCKED_WORDS")
    assert "BLOCKED_WORDS" not in env_example(without_one)
    assert env_example(without_one) != (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "`BLOCKED_WORDS`" not in with_readme_table(readme, without_one)


def test_copying_env_example_unchanged_gives_every_default(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    shutil.copy(ROOT / ".env.example", dotenv)
    from_file = load_settings(environ={}, dotenv_path=dotenv)
    assert from_file == load_settings(environ={}, dotenv_path=None)


def test_the_generator_rewrites_stale_files_and_leaves_the_rest_of_the_readme(
    tmp_path: Path,
) -> None:
    readme = (ROOT / "README.md").read_text()
    (tmp_path / "README.md").write_text(
        readme.replace("| `MAX_COUNT` | `4` |", "| `MAX_COUNT` | `9` |")
    )
    (tmp_path / ".env.example").write_text("MAX_COUNT=9\n")
    assert sorted(p.name for p in write_docs(tmp_path)) == [".env.example", "README.md"]
    assert (tmp_path / "README.md").read_text() == readme
    assert (tmp_path / ".env.example").read_text() == (ROOT / ".env.example").read_text()
    assert write_docs(tmp_path) == []
