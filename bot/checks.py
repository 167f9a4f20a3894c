"""`python -m bot check`: one line per check, a fix for each failure, non-zero exit if any failed."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import discord

from bot import __version__
from bot.config import (
    DEFAULT_ENDPOINT,
    RUN_REQUIRES,
    ConfigError,
    Secret,
    Settings,
    load_settings,
)
from bot.database_url import shown
from bot.db import Database
from bot.engine import open_postgresql
from bot.runpod import (
    RunPodAuthError,
    RunPodClient,
    RunPodError,
    RunPodNotFound,
    RunPodTransportError,
)
from bot.workflows import TemplateError, load_library

# View Channels, Send Messages, Send Messages in Threads, Embed Links, Attach Files,
# Read Message History: what posting and editing results needs.
BOT_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
)


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    skipped: bool = False


def invite_url(application_id: int | str) -> str:
    return (
        f"https://discord.com/oauth2/authorize?client_id={application_id}"
        f"&scope=bot+applications.commands&permissions={BOT_PERMISSIONS.value}"
    )


async def run_checks(
    environ: dict[str, str] | None = None, print_line: Callable[[str], None] = print
) -> int:
    """Run every check that can run, print each result, and return the exit status."""
    results: list[CheckResult] = []
    # The first line of every bug report's check output says which release it came from.
    print_line(f"Stablehand {__version__}")

    def report(result: CheckResult) -> None:
        results.append(result)
        mark = "skip" if result.skipped else ("ok  " if result.ok else "FAIL")
        print_line(f"[{mark}] {result.name}: {result.detail}")
        if result.fix:
            print_line(f"       fix: {result.fix}")

    try:
        settings = load_settings(RUN_REQUIRES, environ=environ)
        report(CheckResult("settings", True, "every required setting is present"))
    except ConfigError as exc:
        for problem in exc.problems:
            name, _, fix = problem.partition(": ")
            report(CheckResult("settings", False, name, fix))
        try:
            settings = load_settings(environ=environ)
        except ConfigError:
            print_line(
                "The other checks need valid settings: fix the ones above and run check again."
            )
            return 1

    for check in (_check_database, _check_workflows, _check_runpod, _check_discord):
        found = await check(settings)
        for result in found if isinstance(found, list) else [found]:
            report(result)
    failed = sum(not r.ok and not r.skipped for r in results)
    print_line("All checks passed." if not failed else f"{failed} check(s) failed.")
    return 1 if failed else 0


async def _check_database(settings: Settings) -> CheckResult:
    """The engine, its version and the schema version the bot's state is at."""
    if settings.database_url is not None:
        return await _check_postgresql(settings.database_url)
    try:
        db = await Database.open(settings.database_path)
    except Exception as exc:
        return CheckResult(
            "database",
            False,
            f"cannot open {settings.database_path}: {exc}",
            "make sure DATABASE_PATH points into a directory that exists and is writable",
        )
    try:
        version = await db.schema_version()
    finally:
        await db.close()
    return CheckResult(
        "database",
        True,
        f"SQLite {sqlite3.sqlite_version} at {settings.database_path} (schema version {version})",
    )


async def _check_postgresql(url: Secret) -> CheckResult:
    try:
        db = await open_postgresql(url)
    except ConfigError as exc:
        detail, _, fix = exc.problems[0].rpartition(": ")
        return CheckResult("database", False, detail, fix)
    try:
        server, version = await db.server_version(), await db.schema_version()
    finally:
        await db.close()
    return CheckResult(
        "database", True, f"PostgreSQL {server} at {shown(url)} (schema version {version})"
    )


async def _check_workflows(settings: Settings) -> CheckResult:
    try:
        library = load_library(settings.workflows_dir, endpoints=settings.endpoint_names)
    except TemplateError as exc:
        return CheckResult("workflows", False, str(exc), "fix or remove that file in WORKFLOWS_DIR")
    if library.get(settings.default_workflow) is None:
        return CheckResult(
            "workflows",
            False,
            f"DEFAULT_WORKFLOW={settings.default_workflow!r} does not exist",
            f"set DEFAULT_WORKFLOW to one of: {', '.join(library.names())}",
        )
    return CheckResult("workflows", True, f"{len(library)} loaded: {', '.join(library.names())}")


def explain_runpod_error(
    exc: RunPodError, settings: Settings, endpoint: str = DEFAULT_ENDPOINT
) -> tuple[str, str]:
    """What went wrong reaching an endpoint, and what the operator should change."""
    if isinstance(exc, RunPodAuthError):
        return (
            "the API key was refused (401)",
            "create a key at https://www.runpod.io/console/user/settings and set RUNPOD_API_KEY",
        )
    if isinstance(exc, RunPodNotFound):
        where = (
            "RUNPOD_ENDPOINT_ID"
            if endpoint == DEFAULT_ENDPOINT
            else f"RUNPOD_ENDPOINTS ({endpoint}=...)"
        )
        return (
            f"endpoint {settings.endpoints.get(endpoint)} does not exist (404)",
            f"copy the id from your endpoint's page in the RunPod console into {where}",
        )
    if isinstance(exc, RunPodTransportError):
        return (
            f"{settings.runpod_api_base} is unreachable ({exc})",
            "check RUNPOD_API_BASE and the network",
        )
    return f"health check failed: {exc}", "try again; see status.runpod.io"


async def _check_runpod(settings: Settings) -> list[CheckResult]:
    """One line per endpoint: reachable, key accepted, and whether jobs wait with no workers."""
    if settings.runpod_api_key is None or settings.runpod_endpoint_id is None:
        return [
            CheckResult(
                "RunPod", False, "needs RUNPOD_API_KEY and RUNPOD_ENDPOINT_ID", skipped=True
            )
        ]
    return [await _check_endpoint(settings, name) for name in settings.endpoints]


async def _check_endpoint(settings: Settings, endpoint: str) -> CheckResult:
    assert settings.runpod_api_key is not None
    name = "RunPod" if endpoint == DEFAULT_ENDPOINT else f"RunPod {endpoint}"
    endpoint_id = settings.endpoints[endpoint]
    client = RunPodClient(
        api_base=settings.runpod_api_base,
        endpoint_id=endpoint_id,
        api_key=settings.runpod_api_key,
        timeout=15.0,
    )
    try:
        health = await client.health()
        long_poll = await _long_poll_note(client)
    except RunPodError as exc:
        detail, fix = explain_runpod_error(exc, settings, endpoint)
        return CheckResult(name, False, detail, fix)
    finally:
        await client.aclose()
    workers = ", ".join(f"{k}={v}" for k, v in sorted(health.workers.items())) or "none"
    queued = health.jobs.get("inQueue", 0)
    detail = (
        f"endpoint {endpoint_id} reachable, key accepted; workers: {workers}; jobs in queue: "
        f"{queued}; {long_poll}"
    )
    if health.total_workers == 0 and queued:
        return CheckResult(
            name,
            False,
            detail,
            "jobs are waiting with no workers: raise the endpoint's max workers in the RunPod console",
        )
    return CheckResult(name, True, detail)


async def _long_poll_note(client: RunPodClient) -> str:
    """What `/status-sync` looks like from here; a 404 for a made-up job cannot tell."""
    offered = await client.probe_status_sync()
    if offered is False:
        return "no /status-sync (405): jobs are followed with /status polls"
    if offered:
        return "/status-sync answers: jobs are long-polled"
    return "/status-sync is tried on the first job (the log says if it falls back to /status)"


async def _check_discord(settings: Settings) -> CheckResult:
    if settings.discord_token is None:
        return CheckResult("Discord", False, "needs DISCORD_TOKEN", skipped=True)
    client = discord.Client(intents=discord.Intents.none())
    try:
        await client.login(settings.discord_token.reveal())
        app = await client.application_info()
    except discord.LoginFailure:
        return CheckResult(
            "Discord",
            False,
            "the token was refused",
            "reset the token on the Bot tab of https://discord.com/developers/applications",
        )
    except (discord.HTTPException, OSError) as exc:
        return CheckResult("Discord", False, f"cannot reach Discord ({exc})", "check the network")
    finally:
        await client.close()
    user = client.user
    return CheckResult(
        "Discord",
        True,
        f"logged in as {user} (id {user.id if user else '?'}); invite: {invite_url(app.id)}",
    )
