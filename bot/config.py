"""Settings from the environment and `.env`; every problem reported at once, secrets masked."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from bot.model_files import ModelNameError, model_file_name

DEFAULT_QUALITY_TAGS = "score_9, score_8_up, score_7_up, score_6_up, score_5_up, score_4_up"
DEFAULT_NEGATIVE = "score_1, score_2, score_3"
NSFW_POLICIES = ("safe_tags", "refuse", "spoiler", "off")


class Secret:
    """A string that never shows itself in a repr, str or f-string."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


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


@dataclass(frozen=True)
class Setting:
    """One environment variable: its default, how to parse it, and one line of help."""

    name: str
    default: str | None
    help: str
    parse: Callable[[str], Any] = str
    secret: bool = False


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be 1 or more")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise ValueError("must be a number, 0 or more")
    return value


def _hour(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 23:
        raise ValueError("must be an hour from 0 to 23 (UTC)")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return parse


def _log_level(text: str) -> str:
    return _choice("debug", "info", "warning", "error")(text).upper()


def _api_base(text: str) -> str:
    value = text.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with https:// (or http:// for a local proxy)")
    return value


def _endpoint_id(text: str) -> str:
    value = text.strip()
    if not value or not all(c.isalnum() or c in "-_" for c in value):
        raise ValueError("must be the endpoint id from the RunPod console (letters and digits)")
    return value


def _model_file(text: str) -> str:
    try:
        return model_file_name(text, default_extension=None)
    except ModelNameError as exc:
        raise ValueError(
            f"is not a file name on the volume: {exc} (a subfolder like "
            "pony/ponyDiffusionV6XL.safetensors is fine)"
        ) from None


def _pixels(text: str) -> int:
    value = int(text)
    if value < 512 * 512:
        raise ValueError("must be at least 262144 (512x512)")
    return value


def _credential(text: str) -> str:
    value = text.strip()
    if not value.isascii() or not value.isprintable() or " " in value:
        raise ValueError("must be copied exactly as shown, with no spaces or accented letters")
    return value


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.strip().lower() for w in text.split(",") if w.strip())


def _optional_path(text: str) -> Path | None:
    return Path(text).expanduser() if text.strip() else None


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "DISCORD_TOKEN",
        None,
        "Bot token from the Discord developer portal (Bot tab).",
        _credential,
        secret=True,
    ),
    Setting(
        "RUNPOD_API_KEY", None, "RunPod API key (Settings > API Keys).", _credential, secret=True
    ),
    Setting(
        "RUNPOD_ENDPOINT_ID", None, "Id of the worker-comfyui serverless endpoint.", _endpoint_id
    ),
    Setting("RUNPOD_API_BASE", "https://api.runpod.ai/v2", "RunPod API base URL.", _api_base),
    Setting("DATABASE_PATH", "stablehand.db", "SQLite file for jobs, quotas and settings.", Path),
    Setting(
        "CHECKPOINT",
        "ponyDiffusionV6XL.safetensors",
        "Checkpoint file name on the volume (Civitai's download is often "
        "ponyDiffusionV6XL_v6StartWithThisOne.safetensors).",
        _model_file,
    ),
    Setting("LOG_LEVEL", "INFO", "debug, info, warning or error.", _log_level),
    Setting(
        "HEARTBEAT_INTERVAL",
        "30",
        "Seconds between heartbeats in DATABASE_PATH.heartbeat, which `python -m bot health` checks.",
        _positive_int,
    ),
    Setting("QUALITY_TAGS", DEFAULT_QUALITY_TAGS, "Tags put before every Pony prompt."),
    Setting("DEFAULT_NEGATIVE", DEFAULT_NEGATIVE, "Negative prompt every Pony job starts with."),
    Setting("DEFAULT_WORKFLOW", "pony-v6-xl", "Workflow used when a member names none."),
    Setting("WORKFLOWS_DIR", "", "Directory of extra workflow templates (*.json).", _optional_path),
    Setting(
        "MAX_JOBS_IN_FLIGHT", "4", "Jobs sent to RunPod at once, across all servers.", _positive_int
    ),
    Setting(
        "MEMBER_MAX_IN_FLIGHT", "1", "Jobs one member may have running at once.", _positive_int
    ),
    Setting(
        "MEMBER_MAX_QUEUED", "4", "Jobs one member may have waiting or running.", _positive_int
    ),
    Setting("RUNPOD_REQUESTS_PER_SECOND", "50", "Budget for all calls to RunPod.", _positive_int),
    Setting(
        "QUEUE_TIMEOUT",
        "1800",
        "Seconds a job may wait for a GPU before it is cancelled.",
        _positive_int,
    ),
    Setting("EXECUTION_TIMEOUT", "600", "Seconds one job may run on the GPU.", _positive_int),
    Setting(
        "DAILY_CREDITS",
        "25",
        "Credits per member per period unless moderators set otherwise (1 credit = one 1024x1024, 25-step image).",
        _non_negative_int,
    ),
    Setting(
        "QUOTA_PERIOD",
        "daily",
        "How often allowances reset: daily or weekly.",
        _choice("daily", "weekly"),
    ),
    Setting(
        "QUOTA_RESET_HOUR", "0", "UTC hour at which allowances and daily budgets reset.", _hour
    ),
    Setting(
        "GPU_PRICE_PER_SECOND",
        "0.00031",
        "Estimated US dollars per GPU-second, for spend figures and budgets (an estimate: set your real price).",
        _non_negative_float,
    ),
    Setting(
        "DAILY_BUDGET_USD",
        "0",
        "Operator-wide daily GPU budget in dollars across all servers; 0 means no budget.",
        _non_negative_float,
    ),
    Setting(
        "NSFW_POLICY",
        "safe_tags",
        "Outside age-restricted channels: " + ", ".join(NSFW_POLICIES),
        _choice(*NSFW_POLICIES),
    ),
    Setting("BLOCKED_WORDS", "", "Comma-separated words that refuse a prompt.", _words),
    Setting("MAX_STEPS", "50", "Most sampling steps a member may ask for.", _positive_int),
    Setting("MAX_COUNT", "4", "Most images in one job.", _positive_int),
    Setting(
        "MAX_PIXELS",
        "2359296",
        "Most pixels per image (width x height), 1536x1536 by default.",
        _pixels,
    ),
    Setting("MAX_PROMPT_LENGTH", "1500", "Longest prompt accepted, in characters.", _positive_int),
)


@dataclass(frozen=True)
class Settings:
    """Every setting, parsed. Secrets are `Secret` objects and never show in a repr."""

    discord_token: Secret | None
    runpod_api_key: Secret | None
    runpod_endpoint_id: str | None
    runpod_api_base: str
    database_path: Path
    checkpoint: str
    log_level: str
    heartbeat_interval: int
    quality_tags: str
    default_negative: str
    default_workflow: str
    workflows_dir: Path | None
    daily_credits: int
    quota_period: str
    quota_reset_hour: int
    gpu_price_per_second: float
    daily_budget_usd: float
    max_jobs_in_flight: int
    member_max_in_flight: int
    member_max_queued: int
    runpod_requests_per_second: int
    queue_timeout: int
    execution_timeout: int
    nsfw_policy: str
    blocked_words: tuple[str, ...]
    max_steps: int
    max_count: int
    max_pixels: int
    max_prompt_length: int


# What each command needs; everything else has a default.
RUN_REQUIRES = ("DISCORD_TOKEN", "RUNPOD_API_KEY", "RUNPOD_ENDPOINT_ID")
SYNC_REQUIRES = ("DISCORD_TOKEN",)
GENERATE_REQUIRES = ("RUNPOD_API_KEY", "RUNPOD_ENDPOINT_ID")

_MISSING_HELP = {
    "DISCORD_TOKEN": "copy it from https://discord.com/developers/applications > your app > Bot > Reset Token",
    "RUNPOD_API_KEY": "create one at https://www.runpod.io/console/user/settings > API Keys",
    "RUNPOD_ENDPOINT_ID": "copy the id shown on your endpoint's page in the RunPod console",
}


def read_environment(
    environ: Mapping[str, str] | None = None, dotenv_path: Path | str | None = ".env"
) -> dict[str, str]:
    """Merge `.env` under the real environment: the environment wins."""
    values: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        values.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    values.update(os.environ if environ is None else environ)
    return values


def load_settings(
    require: Iterable[str] = (),
    *,
    environ: Mapping[str, str] | None = None,
    dotenv_path: Path | str | None = ".env",
) -> Settings:
    """Parse every setting; raise one `ConfigError` listing all problems."""
    raw = read_environment(environ, dotenv_path)
    problems: list[str] = []
    parsed: dict[str, Any] = {}
    for setting in SETTINGS:
        text = raw.get(setting.name, "").strip()
        if not text:
            if setting.name in require:
                problems.append(f"{setting.name} is not set: {_MISSING_HELP[setting.name]}.")
            if setting.default is None:
                parsed[setting.name] = None
                continue
            text = setting.default
        try:
            value = setting.parse(text)
        except ValueError as exc:
            shown = "(hidden)" if setting.secret else repr(text)
            problems.append(f"{setting.name}={shown} {_reason(exc)}.")
            continue
        parsed[setting.name] = Secret(value) if setting.secret else value
    problems += _cross_checks(parsed)
    if problems:
        raise ConfigError(problems)
    return Settings(**{f.name: parsed[f.name.upper()] for f in fields(Settings)})


def _reason(exc: ValueError) -> str:
    text = str(exc)
    if text.startswith("invalid literal") or text.startswith("could not convert"):
        return "is not a number"
    return text


def _cross_checks(parsed: Mapping[str, Any]) -> list[str]:
    problems = []
    if {"MEMBER_MAX_IN_FLIGHT", "MEMBER_MAX_QUEUED"} <= parsed.keys() and (
        parsed["MEMBER_MAX_QUEUED"] < parsed["MEMBER_MAX_IN_FLIGHT"]
    ):
        problems.append(
            "MEMBER_MAX_QUEUED is smaller than MEMBER_MAX_IN_FLIGHT: "
            "raise MEMBER_MAX_QUEUED to at least the same number."
        )
    workflows_dir = parsed.get("WORKFLOWS_DIR")
    if workflows_dir is not None and not workflows_dir.is_dir():
        problems.append(
            f"WORKFLOWS_DIR={str(workflows_dir)!r} is not a directory: create it or unset it."
        )
    return problems
