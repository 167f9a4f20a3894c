"""A real process running the job manager is SIGKILLed; a new one on the same database finishes."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.fakes import fake_runpod as fr
from tests.fakes.fake_runpod import FakeRunPod, Outcome
from tests.told_modes import MODES, mode_settings

ROOT = Path(__file__).resolve().parent.parent


async def _spawn(
    fake: FakeRunPod, db: Path, outcomes: Path, *extra: str
) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.manager_process",
        "--db",
        str(db),
        "--api-base",
        fake.api_base,
        "--endpoint",
        fake.endpoint_id,
        "--key",
        fake.api_key,
        "--outcomes",
        str(outcomes),
        *extra,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    assert line.strip() == b"READY", (line, await process.stderr.read())
    return process


def _states(db: Path) -> Counter[str]:
    with sqlite3.connect(db) as conn:
        return Counter(state for (state,) in conn.execute("SELECT state FROM jobs"))


async def _until(predicate, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def _kill(process: asyncio.subprocess.Process) -> None:
    process.send_signal(signal.SIGKILL)
    assert await process.wait() == -signal.SIGKILL


@pytest.mark.parametrize("mode", MODES)
async def test_sigkill_with_20_jobs_in_flight_loses_nothing_and_runs_nothing_twice(
    tmp_path: Path, fake_runpod: FakeRunPod, mode: str
) -> None:
    db, outcomes = tmp_path / "crash.db", tmp_path / "outcomes.log"
    # The jobs run until the first process is dead, however slow this machine: held in
    # long-polls, waiting for webhook calls, or polled, as the mode has it.
    fake_runpod.default_outcome = Outcome(status="STUCK")
    settings = [f"--setting={name}={value}" for name, value in mode_settings(mode).items()]
    first = await _spawn(fake_runpod, db, outcomes, "--submit", "20", *settings)
    # Kill only once every submission was answered and recorded in the database.
    await _until(lambda: _states(db)["submitted"] + _states(db)["running"] == 20)
    await _kill(first)
    assert not outcomes.exists() or outcomes.read_text() == ""
    for runpod_id in fake_runpod.jobs:
        fake_runpod.finish(runpod_id)

    second = await _spawn(fake_runpod, db, outcomes, "--exit-when-done", *settings)
    assert await asyncio.wait_for(second.wait(), 60) == 0
    assert _states(db) == Counter({"done": 20})
    delivered = Counter(
        line.split()[1] for line in outcomes.read_text().splitlines() if line.startswith("deliver")
    )
    assert len(delivered) == 20 and set(delivered.values()) == {1}, delivered
    assert len(fake_runpod.requests_for("run")) == 20


async def test_sigkill_inside_the_run_request_never_resends(
    tmp_path: Path, fake_runpod: FakeRunPod
) -> None:
    db, outcomes = tmp_path / "crash.db", tmp_path / "outcomes.log"
    fake_runpod.inject("run", fr.delay(60))  # RunPod creates the job but its answer never arrives
    first = await _spawn(fake_runpod, db, outcomes, "--submit", "1")
    await fake_runpod.wait_for_requests("run", 1, timeout=30)
    await _until(lambda: _states(db)["submitting"] == 1)
    await _kill(first)

    second = await _spawn(fake_runpod, db, outcomes, "--exit-when-done")
    assert await asyncio.wait_for(second.wait(), 60) == 0
    assert _states(db) == Counter({"failed": 1})
    assert outcomes.read_text().split() == ["notify", "1", "failed"]
    assert len(fake_runpod.requests_for("run")) == 1, "the uncertain job was not sent again"
    with sqlite3.connect(db) as conn:
        failure = conn.execute("SELECT failure FROM jobs").fetchone()[0]
    assert "restarted" in failure
