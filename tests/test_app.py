"""The bot as a whole: jobs resume only when it really runs; `sync` registers and touches nothing else."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from discord import app_commands

from bot.app import EXTENSIONS, Stablehand
from bot.config import ConfigError
from bot.jobs import JobState
from bot.services import Services
from tests.conftest import FAST, FAST_PACING, ROOT, make_settings, run_cli
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_runpod import FakeRunPod
from tests.fakes.sandbox import SITECUSTOMIZE


async def _leave_a_queued_job(settings) -> int:
    services = await Services.open(settings, timing=FAST)
    new = services.prepare("a pony", user_id=1, guild_id=2, channel_id=3)
    job = await services.jobs.accept(new)
    await services.jobs.attach_message(job.id, 3, 4)
    await services.close()
    return job.id


async def test_a_rest_only_login_does_not_resume_jobs(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> None:
    settings = make_settings(tmp_path, fake_runpod)
    job_id = await _leave_a_queued_job(settings)
    bot = Stablehand(settings, timing=FAST, pacing=FAST_PACING)
    await bot.login(fake_discord.token)
    await asyncio.sleep(0.05)
    assert not bot.services.jobs.running
    assert (await bot.services.jobs.get(job_id)).state is JobState.QUEUED
    assert fake_runpod.requests == []
    await bot.close()


async def test_sync_registers_commands_and_resumes_nothing(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> None:
    settings = make_settings(tmp_path, fake_runpod)
    job_id = await _leave_a_queued_job(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "RUNPOD_"))}
    env.update(
        DISCORD_TOKEN=fake_discord.token,
        DATABASE_PATH=str(settings.database_path),
        STABLEHAND_FAKE_DISCORD_URL=fake_discord.url,
        PYTHONPATH=os.pathsep.join([str(SITECUSTOMIZE), str(ROOT)]),
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "sync",
        "--guild",
        "1234",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    assert "Registered" in stdout.decode() and "/imagine" in stdout.decode()
    assert "imagine" in {c["name"] for c in fake_discord.guild_commands[1234]}
    assert fake_runpod.requests == []
    services = await Services.open(settings, timing=FAST)
    try:
        assert (await services.jobs.get(job_id)).state is JobState.QUEUED
    finally:
        await services.close()


async def test_close_stops_jobs_and_closes_the_database(bot: Stablehand) -> None:
    services = bot.services
    assert services.jobs.running
    await bot.close()
    assert not services.jobs.running and not bot.has_services


async def test_the_readme_documents_every_command_and_option(bot: Stablehand) -> None:
    readme = (ROOT / "README.md").read_text()
    for leaf in bot.tree.walk_commands():
        if isinstance(leaf, app_commands.Group):
            continue
        name = f"/{leaf.qualified_name}"
        params = " ".join(p.name if p.required else f"[{p.name}]" for p in leaf.parameters)
        usage = f"{name} {params}".strip()
        assert (
            f"| `{usage}` |" in readme or f"`{usage}` ·" in readme or f"· `{usage}` |" in readme
        ), name


async def test_every_option_explains_itself_in_discords_picker(bot: Stablehand) -> None:
    for leaf in bot.tree.walk_commands():
        if isinstance(leaf, app_commands.Group):
            continue
        for parameter in leaf.parameters:
            assert parameter.description not in ("…", ""), (
                f"/{leaf.qualified_name} {parameter.name}"
            )


async def test_an_unknown_default_workflow_or_an_unwritable_database_stops_the_start(
    tmp_path: Path,
) -> None:
    with pytest.raises(
        ConfigError, match=r"DEFAULT_WORKFLOW='nope' is not a workflow: use one of pony-v6-xl"
    ):
        await Services.open(make_settings(tmp_path, DEFAULT_WORKFLOW="nope"))
    with pytest.raises(
        ConfigError, match=r"x.db. cannot be opened: its directory must exist and be writable"
    ):
        await Services.open(
            make_settings(tmp_path, DATABASE_PATH=str(tmp_path / "missing" / "x.db"))
        )


def test_an_unreachable_discord_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    result = run_cli(
        cwd=tmp_path,
        DISCORD_TOKEN="a.b.c",
        RUNPOD_API_KEY="k",
        RUNPOD_ENDPOINT_ID="e",
        STABLEHAND_FAKE_DISCORD_URL="http://127.0.0.1:9",
        PYTHONPATH=os.pathsep.join([str(SITECUSTOMIZE), str(ROOT)]),
    )
    assert result.returncode == 1
    assert "cannot reach Discord" in result.stderr and "Check the network" in result.stderr
    assert "Traceback" not in result.stderr


def test_cogs_holds_the_extensions_the_bot_loads_and_common_holds_what_they_share() -> None:
    """A contributor can tell an extension from a shared helper by where it lives."""
    root = ROOT / "cogs"

    def has_setup(path: Path) -> bool:
        return "\nasync def setup(" in path.read_text("utf-8")

    extensions = {f"cogs.{p.stem}" for p in root.glob("*.py") if p.stem != "__init__"}
    assert extensions == set(EXTENSIONS)
    assert all(has_setup(root / f"{name.removeprefix('cogs.')}.py") for name in EXTENSIONS)
    assert [p.name for p in (root / "common").glob("*.py") if has_setup(p)] == []
