"""`RunPodClient.status_sync`: RunPod's long-poll, checked like `/status`, with a fallback."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bot.checks import run_checks
from bot.runpod import RequestBudget, RunPodMalformed, RunPodNotFound
from tests.conftest import make_client
from tests.fakes import fake_runpod as fr
from tests.fakes.fake_runpod import FakeRunPod, Outcome

WORKFLOW = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48}}}


@pytest.fixture(autouse=True)
def short_holds(fake_runpod: FakeRunPod) -> None:
    fake_runpod.status_sync_time_scale = 0.01


async def test_long_poll_answers_with_the_finished_job(fake_runpod: FakeRunPod) -> None:
    fake_runpod.status_sync_time_scale = 1.0
    fake_runpod.script(Outcome(status="STUCK"))
    client = make_client(fake_runpod)
    job = await client.run({"workflow": WORKFLOW})
    held = asyncio.create_task(client.status_sync(job.id, wait_ms=90_000))
    await fake_runpod.wait_for_requests("status-sync", 1)
    fake_runpod.finish(job.id)
    status = await held
    assert status.id == job.id and status.status == "COMPLETED" and status.terminal
    assert status.execution_ms is not None and status.output["images"]
    assert client.status_sync_available is True
    assert fake_runpod.requests_for("status") == [], "no /status read was needed"
    await client.aclose()


async def test_long_poll_that_runs_out_returns_the_current_status(
    fake_runpod: FakeRunPod,
) -> None:
    fake_runpod.script(Outcome(status="STUCK"))
    client = make_client(fake_runpod)
    job = await client.run({"workflow": WORKFLOW})
    status = await client.status_sync(job.id, wait_ms=1_000)
    assert status.status == "IN_PROGRESS" and not status.terminal
    await client.aclose()


@pytest.mark.parametrize(("asked", "sent"), [(10, "1000"), (30_000, "30000"), (10**9, "90000")])
async def test_long_poll_wait_is_kept_within_runpods_bounds(
    fake_runpod: FakeRunPod, asked: int, sent: str
) -> None:
    client = make_client(fake_runpod)
    job = await client.run({"workflow": WORKFLOW})
    await client.status_sync(job.id, wait_ms=asked)
    assert fake_runpod.requests_for("status-sync")[0].query["wait"] == sent
    await client.aclose()


async def test_long_poll_answers_are_validated_like_status_answers(
    fake_runpod: FakeRunPod,
) -> None:
    client = make_client(fake_runpod)
    job = await client.run({"workflow": WORKFLOW})
    fr.garble(fake_runpod, executionTime=-5)
    with pytest.raises(RunPodMalformed, match=r"status-sync.*executionTime"):
        await client.status_sync(job.id, wait_ms=1_000)
    await client.aclose()


async def test_long_poll_takes_from_the_request_budget_and_retries_5xx(
    fake_runpod: FakeRunPod,
) -> None:
    budget = RequestBudget(1, burst=3, clock=lambda: 0.0)
    client = make_client(fake_runpod, budget=budget)
    job = await client.run({"workflow": WORKFLOW})
    fake_runpod.inject("status-sync", fr.http(503))
    assert (await client.status_sync(job.id, wait_ms=1_000)).status == "COMPLETED"
    assert client.stats.calls["status-sync"] == 2
    assert not budget.ready(), "the run and both long-polls each took a token"
    await client.aclose()


@pytest.mark.parametrize("answer", [404, 405])
async def test_an_endpoint_without_status_sync_falls_back_to_status_and_says_so_once(
    fake_runpod: FakeRunPod, caplog: pytest.LogCaptureFixture, answer: int
) -> None:
    fake_runpod.switch_off_status_sync(answer=answer)
    client = make_client(fake_runpod)
    jobs = [await client.run({"workflow": WORKFLOW}) for _ in range(3)]
    with caplog.at_level(logging.WARNING, logger="bot.runpod"):
        statuses = [await client.status_sync(job.id, wait_ms=1_000) for job in jobs]
    assert [s.status for s in statuses] == ["COMPLETED"] * 3
    assert client.status_sync_available is False
    assert len(fake_runpod.requests_for("status-sync")) == 1, "absence is learned once"
    assert len(fake_runpod.requests_for("status")) == 3
    warnings = [r.getMessage() for r in caplog.records if "status-sync" in r.getMessage()]
    assert len(warnings) == 1 and f"answered {answer}" in warnings[0]
    await client.aclose()


async def test_an_expired_job_is_not_found_and_does_not_switch_long_poll_off(
    fake_runpod: FakeRunPod,
) -> None:
    client = make_client(fake_runpod)
    job = await client.run({"workflow": WORKFLOW})
    await client.status_sync(job.id, wait_ms=1_000)
    fake_runpod.jobs[job.id].retention = 0.0
    fake_runpod.jobs[job.id].completed_at -= 1.0
    with pytest.raises(RunPodNotFound):
        await client.status_sync(job.id, wait_ms=1_000)
    assert client.status_sync_available is True
    await client.aclose()


async def test_probe_tells_a_missing_route_only_when_it_is_unambiguous(
    fake_runpod: FakeRunPod,
) -> None:
    client = make_client(fake_runpod)
    assert await client.probe_status_sync() is None, "404 for an unknown job says nothing"
    fake_runpod.switch_off_status_sync(answer=405)
    assert await client.probe_status_sync() is False
    await client.aclose()


async def test_check_says_when_the_endpoint_has_no_long_poll(
    tmp_path: Path, fake_runpod: FakeRunPod
) -> None:
    environ = {
        "RUNPOD_API_KEY": fake_runpod.api_key,
        "RUNPOD_ENDPOINT_ID": fake_runpod.endpoint_id,
        "RUNPOD_API_BASE": fake_runpod.api_base,
        "DATABASE_PATH": str(tmp_path / "check.db"),
    }
    fake_runpod.switch_off_status_sync(answer=405)
    lines: list[str] = []
    await run_checks(environ, print_line=lines.append)
    runpod_line = next(line for line in lines if "] RunPod:" in line)
    assert "no /status-sync (405): jobs are followed with /status polls" in runpod_line
