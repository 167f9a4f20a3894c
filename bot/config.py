"""Settings from the environment and `.env`; every problem reported at once, secrets masked."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType

from bot.settings_fields import (
    CONTENT,
    MODEL,
    QUOTAS,
    RUNPOD,
    SCHEDULING,
    Setting,
    declared_setting,
    required_setting,
    setting,
)
from bot.settings_load import ConfigError, parse_environment, read_environment
from bot.settings_values import (
    AGE_RESTRICTED_ONLY,
    DEFAULT_ENDPOINT,
    MAX_LONG_POLLS,
    NSFW_POLICIES,
    RENAMED_NSFW_POLICIES,
    Secret,
    _api_base,
    _choice,
    _credential,
    _database_url,
    _endpoint_id,
    _hosts,
    _hour,
    _listen_address,
    _log_level,
    _long_polls,
    _model_file,
    _non_negative_float,
    _non_negative_int,
    _nsfw_policy,
    _optional_path,
    _optional_positive_int,
    _per_endpoint,
    _pixels,
    _positive_int,
    _public_url,
    _shard_ids,
    _words,
    parse_endpoints,
)

__all__ = [
    "AGE_RESTRICTED_ONLY",
    "DEFAULT_ENDPOINT",
    "DEFAULT_NEGATIVE",
    "DEFAULT_QUALITY_TAGS",
    "GENERATE_REQUIRES",
    "MAX_LONG_POLLS",
    "NSFW_POLICIES",
    "RENAMED_NSFW_POLICIES",
    "RUN_REQUIRES",
    "SETTINGS",
    "SYNC_REQUIRES",
    "ConfigError",
    "Secret",
    "Setting",
    "Settings",
    "load_settings",
    "parse_endpoints",
    "read_environment",
    "secrets",
]

DEFAULT_QUALITY_TAGS = "score_9, score_8_up, score_7_up, score_6_up, score_5_up, score_4_up"
DEFAULT_NEGATIVE = "score_1, score_2, score_3"

log = logging.getLogger(__name__)


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
    discord_shard_count: int | None = setting(
        RUNPOD,
        "",
        "Discord shards of the whole bot, when several processes split them (each process sets "
        "the same count). Empty: one shard, in this process.",
        _optional_positive_int,
    )
    discord_shard_ids: tuple[int, ...] | None = setting(
        RUNPOD,
        "",
        "The shards this process connects, from 0 to `DISCORD_SHARD_COUNT` − 1: `0,1`. Empty: "
        "every shard. Any process delivers any job, whatever shard its channel is on.",
        _shard_ids,
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


SETTINGS: tuple[Setting, ...] = tuple(declared_setting(attribute) for attribute in fields(Settings))

# What each command needs; everything else has a default.
RUN_REQUIRES = ("DISCORD_TOKEN", "RUNPOD_API_KEY", "RUNPOD_ENDPOINT_ID")
SYNC_REQUIRES = ("DISCORD_TOKEN",)
GENERATE_REQUIRES = ("RUNPOD_API_KEY", "RUNPOD_ENDPOINT_ID")


def load_settings(
    require: Iterable[str] = (),
    *,
    environ: Mapping[str, str] | None = None,
    dotenv_path: Path | str | None = ".env",
) -> Settings:
    """Parse every setting; raise one `ConfigError` listing all problems."""
    raw = read_environment(environ, dotenv_path)
    parsed = parse_environment(SETTINGS, raw, require)
    _warn_renamed(raw)
    return Settings(**{entry.name.lower(): parsed[entry.name] for entry in SETTINGS})


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
