"""The code stays `ruff` clean (configured in pyproject.toml) and the core in small modules."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Issue 12: no module of the core over about 400 lines; split by responsibility, not by trimming.
MAX_CORE_MODULE_LINES = 400


def _ruff(*args: str) -> subprocess.CompletedProcess[str]:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or "ruff"
    return subprocess.run([ruff, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_ruff_check_is_clean() -> None:
    result = _ruff("check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = _ruff("format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def _oversized_modules(core: Path) -> list[str]:
    """Each module under `core` longer than the limit, as `path: N lines`."""
    return [
        f"{path.relative_to(core.parent)}: {lines} lines"
        for path in sorted(core.rglob("*.py"))
        if (lines := len(path.read_text("utf-8").splitlines())) > MAX_CORE_MODULE_LINES
    ]


def test_no_module_of_the_core_is_over_400_lines() -> None:
    assert _oversized_modules(ROOT / "bot") == []


def test_a_core_module_over_400_lines_is_named(tmp_path: Path) -> None:
    core = tmp_path / "bot"
    (core / "room").mkdir(parents=True)
    (core / "room" / "big.py").write_text("x = 1\n" * (MAX_CORE_MODULE_LINES + 1), "utf-8")
    (core / "small.py").write_text("x = 1\n" * MAX_CORE_MODULE_LINES, "utf-8")
    assert _oversized_modules(core) == [f"bot/room/big.py: {MAX_CORE_MODULE_LINES + 1} lines"]
