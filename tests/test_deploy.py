"""Deployment without Docker: the Dockerfile lints clean, its commands run, SIGTERM stops cleanly."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path, PurePosixPath

import yaml
from dotenv import dotenv_values

from bot import heartbeat
from bot.config import load_settings
from tests.conftest import ROOT, run_cli
from tests.fakes import HANG_GUARD
from tests.fakes.fake_runpod import Outcome
from tests.fakes.sandbox import sandbox

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instruction(name: str) -> list[str]:
    """The exec-form command of a Dockerfile instruction, e.g. CMD ["python", "-m", "bot"]."""
    match = re.search(rf"^{name} .*?(\[.*\])\s*$", DOCKERFILE, re.MULTILINE)
    assert match, name
    return json.loads(match.group(1))


def _run(command: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert command[:3] == ["python", "-m", "bot"], command
    return run_cli(*command[3:], cwd=tmp_path)


def test_the_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or "hadolint"
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_as_a_non_root_user_with_the_database_on_a_volume() -> None:
    assert re.search(r"^USER 10001$", DOCKERFILE, re.MULTILINE)
    assert 'VOLUME ["/data"]' in DOCKERFILE and "DATABASE_PATH=/data/stablehand.db" in DOCKERFILE
    assert "FROM python:3.11-slim" in DOCKERFILE


def _image_env() -> dict[str, str]:
    """The variables the image's ENV instructions set (`ENV A=1 \\` continued lines included)."""
    env: dict[str, str] = {}
    for line in DOCKERFILE.replace("\\\n", " ").splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line.removeprefix("ENV ")):
                name, equals, value = pair.partition("=")
                assert equals, f"use ENV NAME=value: {line}"
                env[name] = value
    return env


def _interpolated(value: str, project_env: dict[str, str | None]) -> str:
    """Compose's `${VAR}` / `${VAR:-default}` from the project's .env (the shell adds nothing)."""
    return re.sub(
        r"\$\{(\w+)(?::-([^}]*))?\}",
        lambda m: project_env.get(m[1]) or m[2] or "",
        value,
    )


def _container_env(dotenv: Path, name: str = "stablehand") -> dict[str, str]:
    """A service's environment with `dotenv` as the operator's .env.

    Compose's precedence, lowest first: the image's ENV, then `env_file`, then `environment`
    (https://docs.docker.com/compose/how-tos/environment-variables/envvars-precedence/).
    """
    service = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"][name]
    project_env = dotenv_values(dotenv)
    env = _image_env()
    env_files = service.get("env_file", [])
    for entry in [env_files] if isinstance(env_files, str) else env_files:
        assert (entry if isinstance(entry, str) else entry["path"]) == ".env", entry
        env.update({k: v for k, v in project_env.items() if v is not None})
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    env.update(
        {k: _interpolated(str(v), project_env) for k, v in environment.items() if v is not None}
    )
    return env


def test_the_example_env_puts_the_database_on_the_volume_the_container_user_owns(
    tmp_path: Path,
) -> None:
    """Copy .env.example to .env, change nothing: the database lands where uid 10001 can write."""
    dotenv = tmp_path / ".env"
    shutil.copy(ROOT / ".env.example", dotenv)
    setting = PurePosixPath(_container_env(dotenv)["DATABASE_PATH"])
    workdir = PurePosixPath(re.findall(r"^WORKDIR (\S+)$", DOCKERFILE, re.MULTILINE)[-1])
    database = setting if setting.is_absolute() else workdir / setting
    assert database == PurePosixPath("/data/stablehand.db")

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["stablehand"]
    mounted = {PurePosixPath(volume.split(":")[1]) for volume in compose["volumes"]}
    assert database.parent in mounted and f'VOLUME ["{database.parent}"]' in DOCKERFILE
    user = re.search(r"^USER (\d+)$", DOCKERFILE, re.MULTILINE)
    owner = re.search(rf"useradd .*--uid {user[1]} (\w+)", DOCKERFILE)
    assert owner and f"chown {owner[1]}:{owner[1]} {database.parent}" in DOCKERFILE


def test_the_postgresql_profile_runs_a_second_bot_on_the_other_shard_of_the_same_database(
    tmp_path: Path,
) -> None:
    """With .env set as compose.yaml's header says, the two bots share the database and the shard
    count, each serves its own shard, and each writes its heartbeat on its own volume."""
    dotenv = tmp_path / ".env"
    url = "postgresql://stablehand:pw@postgres:5432/stablehand"
    dotenv.write_text(
        (ROOT / ".env.example").read_text()
        + f"DATABASE_URL={url}\nPOSTGRES_PASSWORD=pw\nDISCORD_SHARD_COUNT=2\nDISCORD_SHARD_IDS=0\n"
    )
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    first, second = _container_env(dotenv), _container_env(dotenv, "stablehand-2")
    for env in (first, second):
        settings = load_settings(environ=env, dotenv_path=None)
        assert (settings.database_url is not None, settings.discord_shard_count) == (True, 2)
    shards = {load_settings(environ=e, dotenv_path=None).discord_shard_ids for e in (first, second)}
    assert shards == {(0,), (1,)}
    assert services["stablehand"].get("profiles") is None, "one bot on SQLite stays the default"
    assert services["stablehand-2"]["profiles"] == services["postgres"]["profiles"]
    volumes = [
        services[name]["volumes"][0].split(":")[0] for name in ("stablehand", "stablehand-2")
    ]
    assert len(set(volumes)) == 2
    assert services["postgres"]["environment"]["POSTGRES_USER"] in url
    assert '"./[postgresql]"' in DOCKERFILE, "the image carries the PostgreSQL driver"


def test_the_example_env_keeps_the_database_in_the_working_directory_without_docker(
    tmp_path: Path,
) -> None:
    dotenv = tmp_path / ".env"
    shutil.copy(ROOT / ".env.example", dotenv)
    settings = load_settings(environ={}, dotenv_path=dotenv)
    assert settings.database_path == Path("stablehand.db")


def test_the_containers_command_says_what_to_set(tmp_path: Path) -> None:
    result = _run(_instruction("CMD"), tmp_path)
    assert result.returncode == 2 and "DISCORD_TOKEN is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_healthcheck_follows_the_heartbeat(tmp_path: Path) -> None:
    """The image's HEALTHCHECK command, run as Docker runs it; no outcome depends on how fast."""
    command = _instruction(
        "HEALTHCHECK --interval=60s --timeout=10s --start-period=90s --retries=3 CMD"
    )
    missing = _run(command, tmp_path)
    assert missing.returncode == 1 and "not running" in missing.stderr
    path = heartbeat.heartbeat_path(tmp_path / "stablehand.db")
    # A beat that promises the next one within the hour is fresh however slowly the check starts.
    beat = heartbeat.Beat(
        at=time.time(), interval=3600, connected=True, tasks=12, rss_mb=80.0, active_jobs=2
    )
    heartbeat.write(path, beat)
    fresh = _run(command, tmp_path)
    assert fresh.returncode == 0 and "alive: 2 active jobs" in fresh.stdout
    # A day-old beat of a bot that beats every 30 s is stale whenever the check runs.
    heartbeat.write(path, replace(beat, at=time.time() - 86_400, interval=30))
    stale = _run(command, tmp_path)
    assert stale.returncode == 1 and "stuck or stopped" in stale.stderr
    assert "s old" in stale.stderr


def test_the_health_check_counts_three_missed_beats_as_stale(tmp_path: Path) -> None:
    """The age in the message and the staleness line, on a clock the test sets."""
    path = heartbeat.heartbeat_path(tmp_path / "stablehand.db")
    beat = heartbeat.Beat(
        at=1_700_000_000.0, interval=30, connected=True, tasks=12, rss_mb=80.0, active_jobs=2
    )
    heartbeat.write(path, beat)
    assert heartbeat.check(path, now=beat.at + 90)[0], "three intervals late is still alive"
    healthy, why = heartbeat.check(path, now=beat.at + 120)
    assert not healthy and "the last heartbeat is 120 s old" in why


async def test_sigterm_stops_within_seconds_and_the_next_start_finishes_the_job() -> None:
    lines: list[str] = []
    # Discord's 3-second rule would measure this machine's load, not the bot: it is tested elsewhere.
    async with sandbox(show=lines.append, ack_deadline=HANG_GUARD) as box:
        box.runpod.script(Outcome(status="HANG"))
        await box.start_bot(HEARTBEAT_INTERVAL="1")
        await box.imagine("a pony that takes forever")
        await box.runpod.wait_for_requests("run", 1, timeout=30)
        database = box.workdir / "sandbox.db"
        async with asyncio.timeout(60):  # a hang guard: a loaded machine starts Python slowly
            while not (
                (beat := heartbeat.read(heartbeat.heartbeat_path(database))) and beat.connected
            ):
                await asyncio.sleep(0.1)
        assert beat.active_jobs == 1
        # The job hangs forever: exiting at all (within compose's 30 s stop_grace_period, which
        # `stop_bot` waits) shows that the bot does not wait for jobs at RunPod.
        assert await box.stop_bot(signal.SIGTERM) == 0
        with sqlite3.connect(database) as conn:
            assert conn.execute("SELECT state FROM jobs").fetchone()[0] == "submitted"

        box.runpod.finish(next(iter(box.runpod.jobs)))
        await box.start_bot()
        await box.watch_until(
            lambda: any(m.attachments for m in box.discord.messages.values()), timeout=30
        )
        assert len(box.runpod.requests_for("run")) == 1
        assert await box.stop_bot(signal.SIGINT) == 0
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
