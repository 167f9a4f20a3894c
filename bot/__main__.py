"""Command line: run (default) | check | sync | workflow | workflows | generate | migrate-db."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import discord

from bot import __version__, heartbeat, logs
from bot.app import Stablehand
from bot.checks import run_checks
from bot.config import (
    GENERATE_REQUIRES,
    RUN_REQUIRES,
    SYNC_REQUIRES,
    ConfigError,
    Settings,
    load_settings,
    secrets,
)
from bot.generate import EXIT_INTERRUPTED, generate
from bot.prompt import ContentPolicy, Options, PromptError, parse
from bot.workflows import TemplateError, load_library

EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "run"
    try:
        if command == "run":
            return _run(load_settings(RUN_REQUIRES))
        if command == "check":
            return asyncio.run(run_checks())
        if command == "sync":
            return asyncio.run(_sync(load_settings(SYNC_REQUIRES), args.guild))
        if command == "workflow":
            return _print_workflow(load_settings(), args)
        if command == "health":
            healthy, why = heartbeat.check(
                heartbeat.heartbeat_path(load_settings().database_path),
                stuck_after=args.stuck_after,
            )
            print(why, file=sys.stdout if healthy else sys.stderr)
            return 0 if healthy else 1
        if command == "workflows":
            return _print_workflows(load_settings())
        if command == "migrate-db":
            source = Path(args.source) if args.source else load_settings().database_path
            return _migrate_db(source, args.to)
        if command == "generate":
            settings = load_settings(GENERATE_REQUIRES)
            # The terminal shows the job's progress; the log only what went wrong (unless debugging).
            level = "DEBUG" if settings.log_level == "DEBUG" else "WARNING"
            logs.configure(level, secrets(settings))
            try:
                return asyncio.run(
                    generate(
                        settings,
                        args.prompt,
                        workflow=args.workflow,
                        out=Path(args.out),
                        image=Path(args.image) if args.image else None,
                    )
                )
            except KeyboardInterrupt:
                # Before a job exists (or at a second Ctrl-C): nothing to withdraw, no traceback.
                print("interrupted", file=sys.stderr)
                return EXIT_INTERRUPTED
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_CONFIG
    except TemplateError as exc:
        print(f"Stablehand cannot load a workflow template: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    raise AssertionError(f"unhandled command {command}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stablehand", description="Stablehand, the Discord image bot."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the bot (the default)")
    sub.add_parser("check", help="verify settings, database, RunPod and Discord")
    health = sub.add_parser(
        "health",
        help="exit 0 if the running bot wrote a heartbeat lately and every loop beats (for healthchecks)",
    )
    health.add_argument(
        "--stuck-after",
        type=_seconds,
        metavar="SECONDS",
        help="a loop without a beat for this long is stuck (default: what the bot wrote, 300)",
    )
    sync = sub.add_parser("sync", help="register the slash commands with Discord and exit")
    sync.add_argument(
        "--guild", type=int, help="register in one server only (instant; for testing)"
    )
    workflow = sub.add_parser("workflow", help="print the workflow JSON a prompt renders to")
    workflow.add_argument("prompt")
    workflow.add_argument("--workflow", help="workflow template name")
    workflow.add_argument(
        "--channel-nsfw", action="store_true", help="as if in an age-restricted channel"
    )
    sub.add_parser("workflows", help="list the workflow templates and their parameters")
    generate = sub.add_parser("generate", help="run one prompt on the endpoint and save the images")
    generate.add_argument("prompt")
    generate.add_argument("--workflow", help="workflow template name")
    generate.add_argument("--out", default="out", help="directory for the images (default: out)")
    generate.add_argument(
        "--image", help="input image for workflows that start from one (img2img, upscale)"
    )
    migrate = sub.add_parser(
        "migrate-db",
        help="copy the SQLite database, verified, into an empty PostgreSQL database",
    )
    migrate.add_argument("--to", required=True, metavar="postgresql://…", help="the empty target")
    migrate.add_argument(
        "--from", dest="source", metavar="PATH", help="the SQLite file (default: DATABASE_PATH)"
    )
    return parser


def _migrate_db(source: Path, dsn: str) -> int:
    try:
        from bot.store.postgresql.copy import CopyRefused, copy_sqlite_to_postgresql
    except ImportError:
        print("migrate-db needs asyncpg: pip install '.[postgresql]'", file=sys.stderr)
        return EXIT_CONFIG
    try:
        report = asyncio.run(copy_sqlite_to_postgresql(source, dsn))
    except CopyRefused as exc:
        print(f"migrate-db refused: {exc}", file=sys.stderr)
        return 1
    for table, rows in report.rows.items():
        print(f"{table}: {rows} rows")
    ledger = report.ledger
    print(
        f"verified: every row count, and the ledger ({sum(n for _, n, _ in ledger.holds_by_state)}"
        f" holds, {sum(c for _, _, c in ledger.holds_by_state)} credits held or spent,"
        f" {ledger.granted_credits} granted, ${ledger.usd_actual:.2f} charged);"
        f" PostgreSQL {report.server_version}, schema version {report.schema_version}"
    )
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def _run(settings: Settings) -> int:
    logs.configure(settings.log_level, secrets(settings))
    try:
        asyncio.run(_serve(settings))
    except discord.LoginFailure:
        print(
            "Discord refused DISCORD_TOKEN: reset the token in the developer portal and set it again.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    except (aiohttp.ClientError, OSError) as exc:
        print(
            f"Stablehand cannot reach Discord ({type(exc).__name__}: {exc}). Check the network.",
            file=sys.stderr,
        )
        return 1
    return 0


async def _serve(settings: Settings) -> None:
    """Run until the gateway ends or SIGTERM/SIGINT arrives; then shut down cleanly."""
    assert settings.discord_token is not None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bot = Stablehand(settings)
    async with bot:
        runner = asyncio.create_task(bot.start(settings.discord_token.reveal()), name="bot")
        stopper = asyncio.create_task(stop.wait(), name="stop-signal")
        done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if runner in done:
            runner.result()
        await bot.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def _sync(settings: Settings, guild_id: int | None) -> int:
    logs.configure(settings.log_level, secrets(settings))
    assert settings.discord_token is not None
    bot = Stablehand(settings, open_services=False)
    async with bot:
        try:
            await bot.login(settings.discord_token.reveal())
        except discord.LoginFailure:
            print(
                "Discord refused DISCORD_TOKEN: reset the token in the developer portal.",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        guild = discord.Object(guild_id) if guild_id else None
        if guild is not None:
            bot.tree.copy_global_to(guild=guild)
        commands = await bot.tree.sync(guild=guild)
    where = (
        f"server {guild_id}"
        if guild_id
        else "every server (global commands can take up to an hour to show)"
    )
    print(
        f"Registered {len(commands)} commands in {where}: "
        + ", ".join(f"/{c.name}" for c in commands)
    )
    return 0


def _print_workflow(settings: Settings, args: argparse.Namespace) -> int:
    library = load_library(settings.workflows_dir, endpoints=settings.endpoint_names)
    try:
        request = parse(
            args.prompt,
            library=library,
            policy=ContentPolicy.from_settings(settings),
            options=Options(workflow=args.workflow),
            channel_nsfw=args.channel_nsfw,
        )
    except PromptError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    template = library.get(request.template)
    assert template is not None
    print(
        json.dumps(template.render(request.values(), request.loras), indent=2, ensure_ascii=False)
    )
    return 0


def _print_workflows(settings: Settings) -> int:
    for template in load_library(settings.workflows_dir, endpoints=settings.endpoint_names):
        defaults = ", ".join(
            f"{k}=#{v:06x}" if k == "color" else f"{k}={v}" for k, v in template.defaults.items()
        )
        print(f"{template.name}  ({template.source})")
        print(f"  {template.description}")
        print(f"  model: {template.model.label}, endpoint: {template.endpoint}")
        print(f"  parameters: {', '.join(template.parameters)}")
        if defaults:
            print(f"  defaults: {defaults}")
        print(
            f"  cost multiplier: {template.cost_multiplier:g}"
            + ("  [hidden]" if template.hidden else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
