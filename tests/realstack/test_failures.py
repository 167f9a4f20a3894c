"""What a member is told when the real worker fails: each cause as worker-comfyui reports it.

Each test prints the job's status as RunPod would serve it (the handler's own words) beside the
sentence the bot gives, so a run with `-s` doubles as the record of the real texts.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from bot.jobs import Job
from bot.prompt import Options
from bot.services import Services
from tests.conftest import OpenServices, RecordingDelivery, make_settings
from tests.fakes.real_worker import ComfyUI, RealWorker

WORKFLOWS = Path(__file__).resolve().parent / "workflows"
# The file name Civitai's download has: the operator's likeliest CHECKPOINT mistake.
CIVITAI_NAME = "ponyDiffusionV6XL_v6StartWithThisOne.safetensors"
JOB_TIMEOUT = 300.0


async def _open(
    open_services: OpenServices, worker: RealWorker, tmp_path: Path, **env: str
) -> tuple[Services, RecordingDelivery]:
    """The bot's services on the emulator, running jobs (with the test workflows loaded)."""
    settings = make_settings(tmp_path, worker.fake, WORKFLOWS_DIR=str(WORKFLOWS), **env)
    services = await open_services(settings, charge=False)
    delivery = RecordingDelivery()
    await services.jobs.start(delivery)
    return services, delivery


async def _run(services: Services, delivery: RecordingDelivery, prompt: str, **options: Any) -> Job:
    """Submit a prompt and return the job once it has ended."""
    job = await _submit(services, prompt, **options)
    return await _ended(services, job, delivery)


async def _submit(services: Services, prompt: str, **options: Any) -> Job:
    new = services.prepare(
        prompt, user_id=1, guild_id=None, channel_id=None, options=Options(**options)
    )
    job = await services.jobs.accept(new)
    await services.jobs.attach_message(job.id, None, None)
    return job


async def _ended(services: Services, job: Job, delivery: RecordingDelivery) -> Job:
    await delivery.wait(job.id, timeout=JOB_TIMEOUT)
    ended = await services.jobs.get(job.id)
    assert ended is not None
    return ended


def _report(worker: RealWorker, job: Job) -> dict[str, Any]:
    """The job's status body as the emulator serves it, printed beside the member's sentence."""
    assert job.backend_id is not None
    fake_job = worker.fake.jobs[job.backend_id]
    body = {"status": fake_job.final_status, **(fake_job.reported or {})}
    print(f"\nworker: {json.dumps(body)}\nmember: {job.failure}\nlog/job row: {job.error}")
    return body


def _details(body: dict[str, Any]) -> str:
    return " ".join(body.get("output", {}).get("details", []))


async def test_a_checkpoint_missing_from_the_volume_is_named(
    open_services: OpenServices, real_worker: RealWorker, tmp_path: Path
) -> None:
    services, delivery = await _open(open_services, real_worker, tmp_path, CHECKPOINT=CIVITAI_NAME)
    ended = await _run(services, delivery, "a pony astronaut")

    body = _report(real_worker, ended)
    assert body["status"] == "FAILED"
    assert "Workflow validation failed" in body["error"]
    assert CIVITAI_NAME in (ended.failure or "")
    assert "not on the endpoint's volume" in (ended.failure or "")


async def test_a_lora_missing_from_the_volume_is_named(
    open_services: OpenServices, real_worker: RealWorker, tmp_path: Path
) -> None:
    services, delivery = await _open(open_services, real_worker, tmp_path)
    ended = await _run(services, delivery, "a pony astronaut <lora:notUploaded:0.8>")

    body = _report(real_worker, ended)
    assert "lora_name: 'notUploaded.safetensors' not in" in body["error"]
    assert "LoRA `notUploaded.safetensors` is not on the endpoint's volume" in (ended.failure or "")


async def test_a_damaged_checkpoint_is_called_damaged_not_out_of_memory(
    open_services: OpenServices, real_worker: RealWorker, tmp_path: Path
) -> None:
    services, delivery = await _open(open_services, real_worker, tmp_path)
    ended = await _run(services, delivery, "a pony astronaut")

    body = _report(real_worker, ended)
    # Either text, depending on whether ComfyUI had stored the prompt's history yet.
    assert body["error"].startswith("Job processing failed")
    assert "CheckpointLoaderSimple" in _details(body)
    assert "header too small" in _details(body)
    failure = (ended.failure or "").lower()
    assert "checkpoint" in failure
    assert "memory" not in failure


async def test_out_of_memory_is_called_out_of_memory(
    open_services: OpenServices, real_worker: RealWorker, tmp_path: Path
) -> None:
    services, delivery = await _open(open_services, real_worker, tmp_path)
    ended = await _run(services, delivery, "a test", workflow="oom-pattern")

    body = _report(real_worker, ended)
    assert body["error"].startswith("Job processing failed")
    assert "can't allocate memory" in _details(body)
    failure = (ended.failure or "").lower()
    assert "out of memory" in failure
    assert "model file" not in failure


async def _wait_until_running(comfy: ComfyUI, timeout: float = JOB_TIMEOUT) -> None:
    """Wait until ComfyUI is executing a prompt (its /queue shows one running)."""
    async with asyncio.timeout(timeout), httpx.AsyncClient() as client:
        while True:
            queue = (await client.get(f"{comfy.stack.comfy_url}/queue")).json()
            if queue["queue_running"]:
                return
            await asyncio.sleep(0.1)


async def test_comfyui_killed_mid_job_and_down_afterwards_are_told_apart(
    open_services: OpenServices, real_worker: RealWorker, comfy: ComfyUI, tmp_path: Path
) -> None:
    services, delivery = await _open(open_services, real_worker, tmp_path)
    job = await _submit(services, "a test", workflow="slow-pattern")
    await _wait_until_running(comfy)
    await asyncio.to_thread(comfy.kill)
    killed = await _ended(services, job, delivery)
    # The next job finds the PID file's process gone (a worker whose ComfyUI died).
    down = await _run(services, delivery, "a test", workflow="test-pattern")

    killed_body, down_body = _report(real_worker, killed), _report(real_worker, down)
    assert killed_body["error"].startswith("WebSocket communication error")
    assert "not reachable" in down_body["error"]
    assert (killed.state.value, down.state.value) == ("failed", "failed")
    assert "lost contact with ComfyUI" in (killed.failure or "")
    assert "did not start properly" in (down.failure or "")


async def test_a_cancel_ends_the_job_but_comfyui_finishes_the_prompt(
    open_services: OpenServices, real_worker: RealWorker, comfy: ComfyUI, tmp_path: Path
) -> None:
    services, delivery = await _open(open_services, real_worker, tmp_path)
    job = await _submit(services, "a test", workflow="slow-pattern")
    await _wait_until_running(comfy)
    await services.jobs.cancel(job.id, by_user=1)
    cancelled = await _ended(services, job, delivery)
    assert cancelled.backend_id is not None

    async with httpx.AsyncClient() as client:
        queue = (await client.get(f"{comfy.stack.comfy_url}/queue")).json()
    assert cancelled.state.value == "cancelled"
    assert queue["queue_running"], "the synchronous handler does not interrupt ComfyUI"
    async with asyncio.timeout(JOB_TIMEOUT):
        while cancelled.backend_id not in real_worker.results:
            await asyncio.sleep(0.1)
    finished = real_worker.results[cancelled.backend_id]
    print(f"\nafter /cancel the handler still returned: {json.dumps(finished)[:300]}")
    assert "images" in finished["output"]
    assert real_worker.fake.jobs[cancelled.backend_id].final_status == "CANCELLED"
