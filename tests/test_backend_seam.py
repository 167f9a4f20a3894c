"""The GPU backend seam: RunPod's words stay in its backend, and jobs stored before it still run."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from bot.db import Database, bundled_migrations
from bot.jobs import JobState
from tests.conftest import (
    OpenServices,
    RecordingDelivery,
    make_client,
    make_settings,
    wait_for_state,
)
from tests.fakes.fake_runpod import FakeRunPod, Outcome

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "bot"
RUNPOD_BACKEND = {*(CORE / "runpod").glob("*.py"), CORE / "runpod_backend.py"}
RUNPOD_WORDS = re.compile(
    r"""["'](IN_QUEUE|IN_PROGRESS|COMPLETED|FAILED|CANCELLED|TIMED_OUT)["']|runpod_id"""
)


def test_runpod_status_words_and_ids_appear_only_in_the_runpod_backend() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in CORE.rglob("*")
        if path.is_file()
        and path.suffix in {".py", ".sql"}
        and path not in RUNPOD_BACKEND
        # Migrations record history: the one that renamed the column names its old name.
        and "migrations" not in path.relative_to(CORE).parts
        for n, line in enumerate(path.read_text("utf-8").splitlines(), start=1)
        if RUNPOD_WORDS.search(line)
    ]
    assert found == []


def test_the_job_manager_reaches_runpod_only_through_the_seam() -> None:
    imports = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in (CORE / "jobs").rglob("*.py")
        for n, line in enumerate(path.read_text("utf-8").splitlines(), start=1)
        if re.match(r"\s*(from bot\.runpod|import bot\.runpod)", line)
    ]
    assert imports == []


async def test_jobs_stored_by_version_5_resume_after_the_upgrade_on_the_default_endpoint(
    tmp_path: Path,
    fake_runpod: FakeRunPod,
    open_services: OpenServices,
    delivery: RecordingDelivery,
) -> None:
    """One job waiting here and one already at RunPod, written before migration 0006, both finish."""
    settings = make_settings(tmp_path, fake_runpod, DATABASE_PATH=str(tmp_path / "old.db"))
    # The request and workflow as the bot renders them (prepared in memory, nothing stored).
    scratch = await open_services(make_settings(tmp_path, fake_runpod))
    new = scratch.prepare("a lighthouse at dusk", user_id=7, guild_id=1, channel_id=2)
    fake_runpod.default_outcome = Outcome(status="COMPLETED")
    at_runpod = await make_client(fake_runpod).run({"workflow": new.workflow})

    old = await Database.open(settings.database_path, migrations=bundled_migrations()[:5])
    now = time.time()
    async with old.transaction() as tx:
        for state, runpod_id in (("queued", None), ("submitted", at_runpod.id)):
            await tx.insert(
                "INSERT INTO jobs (guild_id, channel_id, message_id, user_id, state, template,"
                " request, workflow, cost, runpod_id, created_at, updated_at, submitted_at)"
                " VALUES (1, 2, 3, 7, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
                (
                    state,
                    new.request.template,
                    new.request.to_json(),
                    json.dumps(new.workflow),
                    runpod_id,
                    now,
                    now,
                    now if runpod_id else None,
                ),
            )
    await old.close()

    services = await open_services(settings)
    assert await services.db.schema_version() == len(bundled_migrations())
    await services.jobs.start(delivery)
    queued, submitted = await services.jobs.active(1)
    assert (submitted.backend_id, submitted.endpoint) == (at_runpod.id, "default")
    assert queued.endpoint == "default"
    for job in (queued, submitted):
        ended = await wait_for_state(services, job.id, JobState.DONE)
        assert delivery.delivered[ended.id], "its images reached the member"
    assert len(fake_runpod.jobs) == 2, "the job already at RunPod was followed, not sent again"
