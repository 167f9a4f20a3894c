"""Reading settings: `.env` under the environment, every value parsed, all problems at once."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from bot.settings_fields import Setting
from bot.settings_values import DEFAULT_ENDPOINT, Secret, _reason


class ConfigError(Exception):
    """All the settings problems found, each naming the variable and the fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        lines = ["Stablehand cannot start: fix these settings (in the environment or .env):"]
        lines += [f"  - {problem}" for problem in self.problems]
        lines.append("See .env.example for every setting with its default.")
        return "\n".join(lines)


def read_environment(
    environ: Mapping[str, str] | None = None, dotenv_path: Path | str | None = ".env"
) -> dict[str, str]:
    """Merge `.env` under the real environment: the environment wins."""
    values: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        values.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    return values


def parse_environment(
    declared: Iterable[Setting], raw: Mapping[str, str], require: Iterable[str] = ()
) -> dict[str, Any]:
    """Every declared setting's value by name; raise one `ConfigError` listing all problems."""
    problems: list[str] = []
    parsed: dict[str, Any] = {}
    for entry in declared:
        text = raw.get(entry.name, "").strip()
        if not text:
            if entry.name in require:
                problems.append(f"{entry.name} is not set: {entry.missing_help}.")
            if entry.default is None:
                parsed[entry.name] = None
                continue
            text = entry.default
        try:
            value = entry.parse(text)
        except ValueError as exc:
            shown = "(hidden)" if entry.secret else repr(text)
            problems.append(f"{entry.name}={shown} {_reason(exc)}.")
            continue
        parsed[entry.name] = Secret(value) if entry.secret and value is not None else value
    problems += _cross_checks(parsed)
    if problems:
        raise ConfigError(problems)
    return parsed


def _cross_checks(parsed: Mapping[str, Any]) -> list[str]:
    problems = []
    if {"MEMBER_MAX_IN_FLIGHT", "MEMBER_MAX_QUEUED"} <= parsed.keys() and (
        parsed["MEMBER_MAX_QUEUED"] < parsed["MEMBER_MAX_IN_FLIGHT"]
    ):
        problems.append(
            "MEMBER_MAX_QUEUED is smaller than MEMBER_MAX_IN_FLIGHT: "
            "raise MEMBER_MAX_QUEUED to at least the same number."
        )
    shard_ids, shard_count = parsed.get("DISCORD_SHARD_IDS"), parsed.get("DISCORD_SHARD_COUNT")
    if shard_ids is not None and shard_count is None:
        problems.append("DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT: set the bot's shard count.")
    elif shard_ids is not None and shard_count is not None and max(shard_ids) >= shard_count:
        problems.append(
            f"DISCORD_SHARD_IDS names shard {max(shard_ids)}, but DISCORD_SHARD_COUNT={shard_count} "
            f"numbers them 0 to {shard_count - 1}."
        )
    named = {DEFAULT_ENDPOINT, *parsed.get("RUNPOD_ENDPOINTS", {})}
    for name in ("ENDPOINT_MAX_JOBS_IN_FLIGHT", "ENDPOINT_GPU_PRICES"):
        unknown = sorted(set(parsed.get(name, {})) - named)
        if unknown:
            problems.append(
                f"{name} names {', '.join(unknown)}, which RUNPOD_ENDPOINTS does not: "
                f"use {', '.join(sorted(named))}."
            )
    workflows_dir = parsed.get("WORKFLOWS_DIR")
    if workflows_dir is not None and not workflows_dir.is_dir():
        problems.append(
            f"WORKFLOWS_DIR={str(workflows_dir)!r} is not a directory: create it or unset it."
        )
    styles_dir = parsed.get("STYLES_DIR")
    if styles_dir is not None and not styles_dir.is_dir():
        problems.append(
            f"STYLES_DIR={str(styles_dir)!r} is not a directory: create it or unset it."
        )
    loras_file = parsed.get("LORAS_FILE")
    if loras_file is not None and not loras_file.is_file():
        problems.append(
            f"LORAS_FILE={str(loras_file)!r} is not a file: write the list there or unset it."
        )
    return problems
