"""Deployment without Docker: the Dockerfile lints clean, its commands run, SIGTERM stops cleanly."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bot import heartbeat
from tests.conftest import ROOT, run_cli
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


def test_the_containers_command_says_what_to_set(tmp_path: Path) -> None:
    result = _run(_instruction("CMD"), tmp_path)
    assert result.returncode == 2 and "DISCORD_TOKEN is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_healthcheck_follows_the_heartbeat(tmp_path: Path) -> None:
    command = _instruction(
        "HEALTHCHECK --interval=60s --timeout=10s --start-period=90s --retries=3 CMD"
    )
    missing = _run(command, tmp_path)
    assert missing.returncode == 1 and "not running" in missing.stderr
    path = heartbeat.heartbeat_path(tmp_path / "stablehand.db")
    beat = heartbeat.Beat(
        at=time.time(), interval=30, connected=True, tasks=12, rss_mb=80.0, active_jobs=2
    )
    heartbeat.write(path, beat)
    fresh = _run(command, tmp_path)
    assert fresh.returncode == 0 and "alive: 2 active jobs" in fresh.stdout
    heartbeat.write(path, heartbeat.Beat(**{**beat.__dict__, "at": time.time() - 120}))
    stale = _run(command, tmp_path)
    # The check itself takes a moment to start on a busy machine: the age is 120 s or a little more.
    age = re.search(r"heartbeat is (\d+) s old", stale.stderr)
    assert stale.returncode == 1 and age and 120 <= int(age.group(1)) < 180, stale.stderr


async def test_sigterm_stops_within_seconds_and_the_next_start_finishes_the_job() -> None:
    lines: list[str] = []
    async with sandbox(show=lines.append) as box:
        box.runpod.script(Outcome(status="HANG"))
        await box.start_bot(HEARTBEAT_INTERVAL="1")
        await box.imagine("a pony that takes forever")
        await box.runpod.wait_for_requests("run", 1, timeout=30)
        database = box.workdir / "sandbox.db"
        async with asyncio.timeout(10):
            while not (
                (beat := heartbeat.read(heartbeat.heartbeat_path(database))) and beat.connected
            ):
                await asyncio.sleep(0.1)
        assert beat.active_jobs == 1
        started = time.monotonic()
        assert await box.stop_bot(signal.SIGTERM) == 0
        assert time.monotonic() - started < 10
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
