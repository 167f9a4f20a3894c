"""Settings from the environment and `.env`; every problem reported at once, secrets masked."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import Field, dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from dotenv import dotenv_values

from bot.model_files import ModelNameError, model_file_name

DEFAULT_QUALITY_TAGS = "score_9, score_8_up, score_7_up, score_6_up, score_5_up, score_4_up"
DEFAULT_NEGATIVE = "score_1, score_2, score_3"
# Outside age-restricted channels: add safe tags; make nothing at all; safe tags and spoilered
# images; nothing added.
AGE_RESTRICTED_ONLY = "age_restricted_only"
NSFW_POLICIES = ("safe_tags", AGE_RESTRICTED_ONLY, "spoiler", "off")
# Earlier names of NSFW modes, still read (with a deprecation line in the log).
RENAMED_NSFW_POLICIES = MappingProxyType({"refuse": AGE_RESTRICTED_ONLY})
T = TypeVar("T")

log = logging.getLogger(__name__)


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


def _nsfw_policy(text: str) -> str:
    value = text.strip().lower()
    return _choice(*NSFW_POLICIES)(RENAMED_NSFW_POLICIES.get(value, value))


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


# RUNPOD_ENDPOINT_ID's name among the endpoints; a further endpoint may not take it.
DEFAULT_ENDPOINT = "default"
_ENDPOINT_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def parse_endpoints(text: str) -> Mapping[str, str]:
    """Further endpoints as `name=endpoint-id,...` (e.g. `flux=abc123,sdxl=def456`), read-only."""
    endpoints: dict[str, str] = {}
    problems: list[str] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        name, equals, endpoint_id = (piece.strip() for piece in entry.partition("="))
        name = name.lower()
        if not equals:
            problems.append(f"{entry!r} is not name=endpoint-id")
        elif not _ENDPOINT_NAME.fullmatch(name):
            problems.append(
                f"{name!r} is not a name: use a letter, then letters, digits, - or _ (32 at most)"
            )
        elif name == DEFAULT_ENDPOINT:
            problems.append(f"{name!r} is RUNPOD_ENDPOINT_ID's name: choose another")
        elif name in endpoints:
            problems.append(f"names {name!r} twice: give each endpoint its own name")
        else:
            try:
                endpoints[name] = _endpoint_id(endpoint_id)
            except ValueError as exc:
                problems.append(f"{name}={endpoint_id!r}: the id {exc}")
    if problems:
        raise ValueError(
            "must list endpoints as name=endpoint-id, comma-separated, like flux=abc123,sdxl=def456: "
            + "; ".join(problems)
        )
    return MappingProxyType(endpoints)


def _per_endpoint(parse: Callable[[str], T]) -> Callable[[str], Mapping[str, T]]:
    """A parser of `name=value,...` by endpoint name (`default` included), read-only."""

    def parse_all(text: str) -> Mapping[str, T]:
        values: dict[str, T] = {}
        problems: list[str] = []
        for entry in (part.strip() for part in text.split(",")):
            if not entry:
                continue
            name, equals, value = (piece.strip() for piece in entry.partition("="))
            name = name.lower()
            if not equals or not _ENDPOINT_NAME.fullmatch(name):
                problems.append(f"{entry!r} is not endpoint-name=value")
            elif name in values:
                problems.append(f"names {name!r} twice")
            else:
                try:
                    values[name] = parse(value)
                except ValueError as exc:
                    problems.append(f"{name}={value!r} {_reason(exc)}")
        if problems:
            raise ValueError(
                "must list endpoint-name=value, comma-separated, like flux=2: "
                + "; ".join(problems)
            )
        return MappingProxyType(values)

    return parse_all


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


def _hosts(text: str) -> tuple[str, ...]:
    hosts = _words(text)
    if not all(_is_host(host) for host in hosts):
        raise ValueError("must list host names like minio or localhost, with no scheme or port")
    return hosts


def _is_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return all(
            part and part.replace("-", "").replace("_", "").isalnum() for part in text.split(".")
        )
    return True


def _database_url(text: str) -> str | None:
    # Imported here: bot.database_url builds on this module's Secret.
    from bot.database_url import parse_database_url

    return parse_database_url(text)


# Long-polls hold connections of the pool of 50: keep some for runs, reads and downloads.
MAX_LONG_POLLS = 40


def _long_polls(text: str) -> int:
    value = _non_negative_int(text)
    if value > MAX_LONG_POLLS:
        raise ValueError(
            f"must be at most {MAX_LONG_POLLS} (the rest of the connections serve runs)"
        )
    return value


def _public_url(text: str) -> str | None:
    value = text.strip().rstrip("/")
    if not value:
        return None
    if not value.startswith(("https://", "http://")) or any(c in value for c in "?#@ "):
        raise ValueError(
            "must be a URL like https://bot.example.org/hooks (https through a reverse proxy; "
            "no query, fragment or user name)"
        )
    return value


def _listen_address(text: str) -> tuple[str, int]:
    host, colon, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be host:port, like 127.0.0.1:8080 or 0.0.0.0:8080")
    return host, int(port)


def _optional_path(text: str) -> Path | None:
    return Path(text).expanduser() if text.strip() else None


@dataclass(frozen=True)
class Setting:
    """One environment variable as declared on `Settings`: default, parser and documentation."""

    name: str
    default: str | None
    description: str
    parse: Callable[[str], Any]
    section: str
    secret: bool = False
    # For a setting with no default: where to find its value when a command needs it.
    missing_help: str = ""

    @property
    def required(self) -> bool:
        return self.default is None


_SETTING = "stablehand.setting"

# Headings of `.env.example`, in the order the settings are declared under them.
REQUIRED = "Required to run the bot"
RUNPOD = "RunPod and storage"
MODEL = "Model, prompts and logging"
SCHEDULING = "Scheduling and deadlines"
QUOTAS = "Quotas and budgets (dollar figures are estimates: set your real price)"
CONTENT = "Content policy and limits (server defaults; moderators can narrow them)"


def setting(
    section: str,
    default: str,
    description: str,
    parse: Callable[[str], T] = str,
    *,
    secret: bool = False,
) -> Any:
    """Declare one setting as a `Settings` field; its name is the field's name in capitals.

    A secret one is read as a `Secret` (None when empty) and never quoted in an error.
    """
    declared = Setting("", default, description, parse, section, secret)
    return field(metadata={_SETTING: declared})


def required_setting(
    description: str, missing_help: str, parse: Callable[[str], T], *, secret: bool = False
) -> Any:
    """A setting with no default that some commands need; a secret one is read as a `Secret`."""
    declared = Setting("", None, description, parse, REQUIRED, secret, missing_help)
    return field(metadata={_SETTING: declared})


@dataclass(frozen=True)
class Settings:
    """Every setting, declared once and parsed. Secrets are `Secret`s and never show in a repr."""

    discord_token: Secret | None = required_setting(
        "Bot token from the Discord developer portal (Bot tab).",
        "copy it from https://discord.com/developers/applications > your app > Bot > Reset Token",
        _credential,
        secret=True,
    )
    runpod_api_key: Secret | None = required_setting(
        "RunPod API key (Settings > API Keys).",
        "create one at https://www.runpod.io/console/user/settings > API Keys",
        _credential,
        secret=True,
    )
    runpod_endpoint_id: str | None = required_setting(
        "Id of the worker-comfyui serverless endpoint.",
        "copy the id shown on your endpoint's page in the RunPod console",
        _endpoint_id,
    )
    runpod_api_base: str = setting(
        RUNPOD,
        "https://api.runpod.ai/v2",
        "RunPod API base URL; the bot calls `{RUNPOD_API_BASE}/{RUNPOD_ENDPOINT_ID}/run` etc.",
        _api_base,
    )
    runpod_endpoints: Mapping[str, str] = setting(
        RUNPOD,
        "",
        "Further endpoints by name, comma-separated: `flux=abc123,sdxl=def456`. A template's "
        "`endpoint` names the one it runs on; `default` is RUNPOD_ENDPOINT_ID. Bundled "
        "templates for an endpoint not named here are not offered.",
        parse_endpoints,
    )
    worker_output_http_hosts: tuple[str, ...] = setting(
        RUNPOD,
        "",
        "Hosts (comma-separated, e.g. `minio,localhost`) whose `s3_url` images the bot may fetch "
        "over plain http and at private or loopback addresses, for local testing. Any other "
        "image URL must be https to a public address; redirects are checked the same way.",
        _hosts,
    )
    database_path: Path = setting(
        RUNPOD,
        "stablehand.db",
        "SQLite file for jobs, quotas and settings. Back it up (see "
        "[Upgrading and backing up](#upgrading-and-backing-up)); under Docker, compose.yaml "
        "keeps it on the /data volume.",
        Path,
    )
    database_url: Secret | None = setting(
        RUNPOD,
        "",
        "PostgreSQL instead of SQLite, for several bot processes on one database: "
        "`postgresql://user:password@host:5432/database` (needs `pip install '.[postgresql]'`; "
        "`python -m bot migrate-db` copies the SQLite file over). Empty: `DATABASE_PATH`.",
        _database_url,
        secret=True,
    )
    webhook_public_url: str | None = setting(
        RUNPOD,
        "",
        "Public https URL that reaches `WEBHOOK_LISTEN` through your reverse proxy, e.g. "
        "`https://bot.example.org/hooks`; when set, RunPod calls it the moment a job ends "
        "(see [Long-polls and webhooks](#long-polls-and-webhooks)). Empty: no webhooks, long-polls and polls only.",
        _public_url,
    )
    webhook_listen: tuple[str, int] = setting(
        RUNPOD,
        "127.0.0.1:8080",
        "Address and port the bot serves webhooks on when `WEBHOOK_PUBLIC_URL` is set; your "
        "reverse proxy forwards to it.",
        _listen_address,
    )
    checkpoint: str = setting(
        MODEL,
        "ponyDiffusionV6XL.safetensors",
        "Checkpoint file name on the volume (Civitai's download is often "
        "`ponyDiffusionV6XL_v6StartWithThisOne.safetensors`); a subfolder is written as "
        "ComfyUI lists it, `pony/ponyDiffusionV6XL.safetensors`.",
        _model_file,
    )
    log_level: str = setting(
        MODEL,
        "INFO",
        "debug, info, warning or error. Logs go to stderr, one line per event, with job, "
        "member and server ids.",
        _log_level,
    )
    heartbeat_interval: int = setting(
        MODEL,
        "30",
        "Seconds between heartbeats written to `DATABASE_PATH.heartbeat` (time, connected, "
        "tasks, memory, active jobs, each loop's last beat); `python -m bot health` checks it.",
        _positive_int,
    )
    quality_tags: str = setting(
        MODEL,
        DEFAULT_QUALITY_TAGS,
        "Tags put before every Pony prompt (the model card's full quality string).",
    )
    default_negative: str = setting(
        MODEL, DEFAULT_NEGATIVE, "Negative prompt every Pony job starts with."
    )
    default_workflow: str = setting(MODEL, "pony-v6-xl", "Workflow used when a member names none.")
    workflows_dir: Path | None = setting(
        MODEL,
        "",
        "Directory of extra workflow templates (`*.json`); they may replace bundled ones "
        "(see [Your own workflows](#your-own-workflows)).",
        _optional_path,
    )
    styles_dir: Path | None = setting(
        MODEL,
        "",
        "Directory of style presets (`*.json`, one style per file, named by the file) offered "
        "in every server (see [Styles](#styles)).",
        _optional_path,
    )
    loras_file: Path | None = setting(
        MODEL,
        "",
        "JSON list of the LoRAs on the endpoint (name, trigger words, default weight, NSFW) for "
        "`/loras` and the `lora` option; when set, a LoRA not on it is refused (see "
        "[LoRAs](#loras)).",
        _optional_path,
    )
    max_jobs_in_flight: int = setting(
        SCHEDULING,
        "4",
        "Jobs sent to each RunPod endpoint at once, across all servers; the rest wait here, in "
        "fair order.",
        _positive_int,
    )
    endpoint_max_jobs_in_flight: Mapping[str, int] = setting(
        SCHEDULING,
        "",
        "Caps for single endpoints, replacing MAX_JOBS_IN_FLIGHT there: `flux=2,default=6`.",
        _per_endpoint(_positive_int),
    )
    member_max_in_flight: int = setting(
        SCHEDULING,
        "1",
        "Jobs one member may have running at once. A member is a Discord user: their jobs in "
        "every server count together.",
        _positive_int,
    )
    member_max_queued: int = setting(
        SCHEDULING,
        "4",
        "Jobs one member may have waiting or running, in every server together.",
        _positive_int,
    )
    runpod_requests_per_second: int = setting(
        SCHEDULING,
        "50",
        "Budget for all calls to RunPod, polling included (RunPod allows 100 `/run` and 200 "
        "`/status` per second).",
        _positive_int,
    )
    runpod_long_polls: int = setting(
        SCHEDULING,
        "24",
        "Running jobs of each endpoint followed at once by long-poll (`/status-sync`, answered "
        "the moment a job ends); each holds one of the 50 connections to RunPod. Further jobs "
        "are polled. 0 turns long-polls off.",
        _long_polls,
    )
    queue_timeout: int = setting(
        SCHEDULING,
        "1800",
        "Seconds a job may wait for a GPU before it is cancelled at RunPod and refunded.",
        _positive_int,
    )
    execution_timeout: int = setting(
        SCHEDULING,
        "600",
        "Most seconds one job may run on the GPU (each job also gets a limit from its expected "
        "time). The member is refunded when it passes; the worker may still finish the image "
        "(see [Cancelling and timeouts](#cancelling-and-timeouts)).",
        _positive_int,
    )
    daily_credits: int = setting(
        QUOTAS,
        "25",
        "Credits per member per period unless moderators set otherwise. One credit is one "
        "1024×1024, 25-step image; cost scales with pixels × steps × images.",
        _non_negative_int,
    )
    quota_period: str = setting(
        QUOTAS,
        "daily",
        "How often allowances reset: `daily` or `weekly` (weeks start on Monday).",
        _choice("daily", "weekly"),
    )
    quota_reset_hour: int = setting(
        QUOTAS, "0", "UTC hour at which allowances and daily budgets reset.", _hour
    )
    gpu_price_per_second: float = setting(
        QUOTAS,
        "0.00031",
        "Estimated US dollars per GPU-second, for spend figures and budgets (an estimate: set "
        "your real price).",
        _non_negative_float,
    )
    endpoint_gpu_prices: Mapping[str, float] = setting(
        QUOTAS,
        "",
        "Dollars per GPU-second for single endpoints, replacing GPU_PRICE_PER_SECOND there (GPU "
        "types differ): `flux=0.00044`.",
        _per_endpoint(_non_negative_float),
    )
    daily_budget_usd: float = setting(
        QUOTAS,
        "0",
        "Operator-wide daily GPU budget in dollars across all servers; `0` means none.",
        _non_negative_float,
    )
    nsfw_policy: str = setting(
        CONTENT,
        "safe_tags",
        "Outside age-restricted channels: `safe_tags` (add safe tags), `age_restricted_only` "
        "(make no images there; formerly `refuse`), `spoiler` (safe tags and spoilered images) "
        "or `off` (see [For members](#for-members)).",
        _nsfw_policy,
    )
    blocked_words: tuple[str, ...] = setting(
        CONTENT,
        "",
        "Comma-separated words that refuse a prompt, in every server (moderators add their "
        "own with `/settings words`).",
        _words,
    )
    max_steps: int = setting(
        CONTENT, "50", "Most sampling steps a member may ask for.", _positive_int
    )
    max_count: int = setting(CONTENT, "4", "Most images in one job.", _positive_int)
    max_pixels: int = setting(
        CONTENT,
        "2359296",
        "Most pixels per image (width × height), 1536×1536 by default.",
        _pixels,
    )
    max_prompt_length: int = setting(
        CONTENT, "1500", "Longest prompt accepted, in characters.", _positive_int
    )

    @property
    def endpoint_names(self) -> tuple[str, ...]:
        """The endpoints templates may run on: `default` and those RUNPOD_ENDPOINTS names."""
        return (DEFAULT_ENDPOINT, *self.runpod_endpoints)

    @property
    def endpoints(self) -> Mapping[str, str]:
        """Every endpoint by name: `default` (RUNPOD_ENDPOINT_ID, when set) and RUNPOD_ENDPOINTS."""
        default = {DEFAULT_ENDPOINT: self.runpod_endpoint_id} if self.runpod_endpoint_id else {}
        return MappingProxyType({**default, **self.runpod_endpoints})


def secrets(settings: Settings) -> list[Secret]:
    """Every secret the settings hold, the database password included: what logs must mask."""
    from bot.database_url import secrets as database_secrets

    held = [getattr(settings, s.name.lower()) for s in SETTINGS if s.secret]
    found = [s for s in held if isinstance(s, Secret)] + database_secrets(settings.database_url)
    return list(dict.fromkeys(found))


def _declared(attribute: Field[Any]) -> Setting:
    if _SETTING not in attribute.metadata:
        raise TypeError(f"Settings.{attribute.name} must be declared with setting()")
    return replace(attribute.metadata[_SETTING], name=attribute.name.upper())


SETTINGS: tuple[Setting, ...] = tuple(_declared(attribute) for attribute in fields(Settings))

# What each command needs; everything else has a default.
RUN_REQUIRES = ("DISCORD_TOKEN", "RUNPOD_API_KEY", "RUNPOD_ENDPOINT_ID")
SYNC_REQUIRES = ("DISCORD_TOKEN",)
GENERATE_REQUIRES = ("RUNPOD_API_KEY", "RUNPOD_ENDPOINT_ID")


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
                problems.append(f"{setting.name} is not set: {setting.missing_help}.")
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
        parsed[setting.name] = Secret(value) if setting.secret and value is not None else value
    problems += _cross_checks(parsed)
    if problems:
        raise ConfigError(problems)
    _warn_renamed(raw)
    return Settings(**{setting.name.lower(): parsed[setting.name] for setting in SETTINGS})


def _reason(exc: ValueError) -> str:
    text = str(exc)
    if text.startswith("invalid literal") or text.startswith("could not convert"):
        return "is not a number"
    return text


def _warn_renamed(raw: Mapping[str, str]) -> None:
    old = raw.get("NSFW_POLICY", "").strip().lower()
    if old in RENAMED_NSFW_POLICIES:
        log.warning(
            "NSFW_POLICY=%s is deprecated: it is now called %s (same behaviour); "
            "set NSFW_POLICY=%s",
            old,
            RENAMED_NSFW_POLICIES[old],
            RENAMED_NSFW_POLICIES[old],
        )


def _cross_checks(parsed: Mapping[str, Any]) -> list[str]:
    problems = []
    if {"MEMBER_MAX_IN_FLIGHT", "MEMBER_MAX_QUEUED"} <= parsed.keys() and (
        parsed["MEMBER_MAX_QUEUED"] < parsed["MEMBER_MAX_IN_FLIGHT"]
    ):
        problems.append(
            "MEMBER_MAX_QUEUED is smaller than MEMBER_MAX_IN_FLIGHT: "
            "raise MEMBER_MAX_QUEUED to at least the same number."
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
