"""Self-test of the fake RunPod cloud, driven over real sockets with httpx."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.fakes.fake_runpod import (
    DETAIL_DAMAGED_CHECKPOINT,
    ERROR_JOB_PROCESSING,
    ERROR_VALIDATION,
    LEGACY_ERROR_MESSAGE,
    FakeJob,
    FakeRunPod,
    Outcome,
    delay,
    http,
    plan_images,
    reset,
    reset_after_processing,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPO_ROOT = Path(__file__).resolve().parents[2]


def workflow(width: int = 64, height: int = 48, batch: int = 1) -> dict[str, Any]:
    """A trimmed Pony text-to-image workflow in API format."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "pony.safetensors"}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": width, "height": height, "batch_size": batch},
        },
        "3": {"class_type": "KSampler", "inputs": {"seed": 1, "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0]}},
    }


def png_b64(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


@pytest.fixture
async def fake() -> AsyncIterator[FakeRunPod]:
    async with FakeRunPod() as server:
        yield server


def make_client(fake: FakeRunPod, *, key: str | None = None, timeout: float = 2.0) -> Any:
    return httpx.AsyncClient(
        base_url=f"{fake.api_base}/{fake.endpoint_id}/",
        headers={"Authorization": f"Bearer {key or fake.api_key}"},
        timeout=timeout,
    )


@pytest.fixture
async def client(fake: FakeRunPod) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(fake) as http_client:
        yield http_client


async def submit(client: httpx.AsyncClient, wf: dict[str, Any] | None = None, **extra: Any) -> str:
    response = await client.post("run", json={"input": {"workflow": wf or workflow()}, **extra})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "IN_QUEUE"
    return response.json()["id"]


async def status(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await client.get(f"status/{job_id}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


async def test_job_walks_from_queue_to_completed_with_real_pngs(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    fake.default_outcome = Outcome(queue_delay=60, run_delay=60)
    job_id = await submit(client, workflow(1024, 1024, batch=4))

    queued = await status(client, job_id)
    assert queued == {"id": job_id, "status": "IN_QUEUE"}
    fake.start_running(job_id)
    running = await status(client, job_id)
    assert running["status"] == "IN_PROGRESS"
    assert "delayTime" in running and "executionTime" not in running
    fake.finish(job_id)
    done = await status(client, job_id)

    assert done["status"] == "COMPLETED" and done["executionTime"] >= 0
    images = done["output"]["images"]
    assert [entry["type"] for entry in images] == ["base64"] * 4
    blobs = [base64.b64decode(entry["data"]) for entry in images]
    assert all(blob.startswith(PNG_MAGIC) for blob in blobs)
    assert {image_size(blob) for blob in blobs} == {(1024, 1024)}
    assert len(set(blobs)) == 4
    assert fake.jobs[job_id].status_reads == 3


async def test_timings_follow_the_configured_delays() -> None:
    async with FakeRunPod(queue_delay=0.04, run_delay=0.03) as fake, make_client(fake) as client:
        job_id = await submit(client)
        job = fake.jobs[job_id]
        assert job.started_at == pytest.approx(job.submitted_at + 0.04)
        assert job.completed_at == pytest.approx(job.started_at + 0.03)
        assert job.status_at(job.submitted_at + 0.02) == "IN_QUEUE"
        assert job.status_at(job.submitted_at + 0.05) == "IN_PROGRESS"
        await asyncio.sleep(max(0.0, job.completed_at - time.monotonic()))
        done = await status(client, job_id)
    assert done["status"] == "COMPLETED"
    assert done["delayTime"] == 40 and done["executionTime"] == 30


async def test_wrong_or_missing_key_is_401_for_every_api_op(fake: FakeRunPod) -> None:
    job_id = "missing"
    async with make_client(fake, key="wrong") as bad:
        answers = [
            await bad.post("run", json={"input": {}}),
            await bad.get(f"status/{job_id}"),
            await bad.get("health"),
            await bad.post(f"cancel/{job_id}"),
        ]
    async with httpx.AsyncClient() as anonymous:
        answers.append(await anonymous.get(f"{fake.api_base}/{fake.endpoint_id}/health"))
    assert [answer.status_code for answer in answers] == [401] * 5
    assert fake.jobs == {}


async def test_unknown_job_wrong_endpoint_and_unknown_op_are_404(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    assert (await client.get("status/no-such-job")).status_code == 404
    assert (await client.get("stream/no-such-job")).status_code == 404
    other = f"{fake.api_base}/other-endpoint"
    assert (await client.post(f"{other}/run", json={"input": {}})).status_code == 404
    assert (await client.get(f"{other}/health")).status_code == 404
    assert (await client.get("run")).status_code == 405


async def test_results_expire_after_retention_and_ttl() -> None:
    async with FakeRunPod(retention=600) as fake, make_client(fake) as client:
        fake.default_outcome = Outcome(status="HANG")
        job_id = await submit(client)
        hung_id = await submit(client, policy={"ttl": 3_600_000})
        fake.finish(job_id, Outcome())
        assert (await status(client, job_id))["status"] == "COMPLETED"
        assert (await status(client, hung_id))["status"] == "IN_QUEUE"
        # Time passes by moving each job's clock readings back: no real waiting, no race.
        _age(fake.jobs[job_id], 599)
        _age(fake.jobs[hung_id], 3599)
        assert (await status(client, job_id))["status"] == "COMPLETED"
        assert (await status(client, hung_id))["status"] == "IN_QUEUE"
        _age(fake.jobs[job_id], 2)
        _age(fake.jobs[hung_id], 2)
        assert (await client.get(f"status/{job_id}")).status_code == 404
        assert (await client.get(f"status/{hung_id}")).status_code == 404


def _age(job: FakeJob, seconds: float) -> None:
    """Make `seconds` pass for one job of the fake (its times are monotonic readings)."""
    for name in ("submitted_at", "started_at", "completed_at", "queued_at"):
        setattr(job, name, getattr(job, name) - seconds)


def _entries(output: dict[str, Any], kind: str) -> list[bytes]:
    assert {entry["type"] for entry in output["images"]} == {kind}
    return [base64.b64decode(entry["data"]) for entry in output["images"]]


def _bare(output: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(data) for data in output["images"]]


def _data_uri(output: dict[str, Any]) -> list[bytes]:
    prefix = "data:image/png;base64,"
    assert all(data.startswith(prefix) for data in output["images"])
    return [base64.b64decode(data.removeprefix(prefix)) for data in output["images"]]


@pytest.mark.parametrize(
    ("fmt", "extract", "magic"),
    [
        ("current", lambda output: _entries(output, "base64"), PNG_MAGIC),
        ("webp", lambda output: _entries(output, "base64"), b"RIFF"),
        ("bare_base64", _bare, PNG_MAGIC),
        ("data_uri", _data_uri, PNG_MAGIC),
    ],
)
async def test_inline_output_formats_carry_every_image(
    fake: FakeRunPod,
    client: httpx.AsyncClient,
    fmt: str,
    extract: Callable[[dict[str, Any]], list[bytes]],
    magic: bytes,
) -> None:
    fake.script(Outcome(output_format=fmt))
    job_id = await submit(client, workflow(64, 48, batch=2))
    blobs = extract((await status(client, job_id))["output"])
    assert len(blobs) == 2
    assert all(blob.startswith(magic) for blob in blobs)
    assert {image_size(blob) for blob in blobs} == {(64, 48)}


async def test_webp_filenames_say_webp(fake: FakeRunPod, client: httpx.AsyncClient) -> None:
    fake.script(Outcome(output_format="webp"))
    job_id = await submit(client)
    entry = (await status(client, job_id))["output"]["images"][0]
    assert entry["filename"] == "ComfyUI_00001_.webp"
    assert base64.b64decode(entry["data"])[8:12] == b"WEBP"


async def test_s3_url_images_download_without_auth(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    fake.script(Outcome(output_format="s3_url"))
    job_id = await submit(client, workflow(32, 32, batch=2))
    entries = (await status(client, job_id))["output"]["images"]
    assert {entry["type"] for entry in entries} == {"s3_url"}
    async with httpx.AsyncClient() as anonymous:
        downloads = [await anonymous.get(entry["data"]) for entry in entries]
        missing = await anonymous.get(f"{fake.base_url}/s3/nothing.png")
    assert all(entry["data"].startswith(f"{fake.base_url}/s3/") for entry in entries)
    assert [download.status_code for download in downloads] == [200, 200]
    assert {image_size(download.content) for download in downloads} == {(32, 32)}
    assert downloads[0].headers["content-type"] == "image/png"
    assert missing.status_code == 404
    assert len(fake.requests_for("s3")) == 3


@pytest.mark.parametrize(
    ("fmt", "check"),
    [
        (
            "local_path",
            lambda output: (
                output["images"][0]["type"] == "s3_url"
                and output["images"][0]["data"].startswith("simulated_uploaded/")
            ),
        ),
        (
            "legacy_message",
            lambda output: (
                output["status"] == "success"
                and base64.b64decode(output["message"]).startswith(PNG_MAGIC)
            ),
        ),
        (
            "legacy_error",
            lambda output: output == {"status": "error", "message": LEGACY_ERROR_MESSAGE},
        ),
        ("no_images", lambda output: output == {"status": "success_no_images", "images": []}),
    ],
)
async def test_odd_output_formats_arrive_as_completed(
    fake: FakeRunPod,
    client: httpx.AsyncClient,
    fmt: str,
    check: Callable[[dict[str, Any]], bool],
) -> None:
    fake.script(Outcome(output_format=fmt))
    answer = await status(client, await submit(client))
    assert answer["status"] == "COMPLETED"
    assert check(answer["output"])


async def test_warnings_image_count_and_noise(fake: FakeRunPod, client: httpx.AsyncClient) -> None:
    fake.script(Outcome(image_count=3, noise=True, warnings=["node 12 skipped"]))
    output = (await status(client, await submit(client, workflow(48, 48))))["output"]
    blobs = _entries(output, "base64")
    assert output["errors"] == ["node 12 skipped"]
    assert len(blobs) == 3 and len(set(blobs)) == 3
    assert all(len(blob) > 48 * 48 * 3 for blob in blobs)


async def test_failed_jobs_carry_the_worker_error_text(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    fake.script(Outcome(status="FAILED", error=ERROR_VALIDATION), Outcome(status="FAILED"))
    validation = await status(client, await submit(client))
    generic = await status(client, await submit(client))
    assert validation["status"] == "FAILED" and validation["error"] == ERROR_VALIDATION
    assert "output" not in validation
    assert generic["error"] == ERROR_JOB_PROCESSING


# reference/worker-comfyui.md: a FAILED job as runpod-python 1.12's run_job makes it (seen).
REAL_EXECUTION_FAILURE = {
    "id": "...",
    "status": "FAILED",
    "delayTime": 0,
    "executionTime": 535,
    "error": "Job processing failed",
    "output": {
        "details": [
            "Workflow execution error: Node Type: RepeatImageBatch, Node ID: 2, Message: "
            "[enforce fail at alloc_cpu.cpp:127] ... DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 115964116992 bytes ..."
        ]
    },
}


def shape(value: Any) -> Any:
    """The keys and value types of a JSON document, without the values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value]
    return type(value).__name__


async def test_execution_failures_carry_their_cause_in_output_details_like_the_real_worker(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    fake.script(
        Outcome(status="FAILED"), Outcome(status="FAILED", details=[DETAIL_DAMAGED_CHECKPOINT])
    )
    default = await status(client, await submit(client))
    damaged = await status(client, await submit(client))
    default.pop("workerId", None)
    assert shape(default) == shape(REAL_EXECUTION_FAILURE)
    assert "can't allocate memory" in default["output"]["details"][0]
    assert damaged["output"] == {"details": [DETAIL_DAMAGED_CHECKPOINT]}


async def test_run_longer_than_execution_timeout_ends_timed_out(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    fake.script(Outcome(run_delay=60), Outcome(status="STUCK"))
    slow_id = await submit(client, policy={"executionTimeout": 20})
    stuck_id = await submit(client, policy={"executionTimeout": 20})
    slow = fake.jobs[slow_id]
    assert slow.completed_at == pytest.approx(slow.started_at + 0.02)
    assert (await status(client, stuck_id))["status"] == "IN_PROGRESS"
    await asyncio.sleep(max(0.0, fake.jobs[stuck_id].completed_at - time.monotonic()))
    answers = [await status(client, slow_id), await status(client, stuck_id)]
    assert [answer["status"] for answer in answers] == ["TIMED_OUT", "TIMED_OUT"]
    assert answers[0]["executionTime"] == 20


async def test_cancel_queued_running_and_finished_jobs(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    fake.script(Outcome(status="HANG"), Outcome(status="STUCK"), Outcome())
    queued_id, running_id, done_id = [await submit(client) for _ in range(3)]
    answers = [(await client.post(f"cancel/{job_id}")).json() for job_id in (queued_id, running_id)]
    kept = (await client.post(f"cancel/{done_id}")).json()

    assert answers == [
        {"id": queued_id, "status": "CANCELLED"},
        {"id": running_id, "status": "CANCELLED"},
    ]
    assert kept == {"id": done_id, "status": "COMPLETED"}
    assert "delayTime" not in await status(client, queued_id)
    assert "executionTime" in await status(client, running_id)
    assert fake.jobs[queued_id].cancelled and not fake.jobs[done_id].cancelled
    assert (await client.post("cancel/unknown")).status_code == 404


async def test_retry_requeues_a_failed_job_under_the_same_id(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    fake.script(Outcome(status="FAILED"), Outcome(queue_delay=60))
    job_id = await submit(client)
    assert (await status(client, job_id))["status"] == "FAILED"

    retried = await client.post(f"retry/{job_id}")
    assert retried.json() == {"id": job_id, "status": "IN_QUEUE"}
    assert (await status(client, job_id))["status"] == "IN_QUEUE"
    fake.finish(job_id)
    done = await status(client, job_id)
    assert done["status"] == "COMPLETED" and done["retries"] == 1
    assert fake.jobs[job_id].retries == 1
    assert (await client.post(f"retry/{job_id}")).status_code == 400


async def test_purge_queue_removes_only_queued_jobs(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    fake.script(Outcome(status="HANG"), Outcome(status="HANG"), Outcome())
    first, second, done = [await submit(client) for _ in range(3)]
    purged = await client.post("purge-queue")
    assert purged.json() == {"removed": 2, "status": "completed"}
    assert (await client.get(f"status/{first}")).status_code == 404
    assert (await client.get(f"status/{second}")).status_code == 404
    assert (await status(client, done))["status"] == "COMPLETED"


async def test_health_counts_jobs_and_reports_workers(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    fake.script(
        Outcome(status="HANG"), Outcome(status="STUCK"), Outcome(), Outcome(status="FAILED")
    )
    for _ in range(4):
        await submit(client)
    fake.workers = {"idle": 0, "running": 0, "throttled": 2}
    health = (await client.get("health")).json()
    assert health == {
        "jobs": {"completed": 1, "failed": 1, "inProgress": 1, "inQueue": 1, "retried": 0},
        "workers": {"idle": 0, "running": 0, "throttled": 2},
    }


async def test_runsync_answers_the_finished_job(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    fake.default_outcome = Outcome(run_delay=0.02)
    answer = await client.post("runsync", json={"input": {"workflow": workflow()}})
    body = answer.json()
    assert body["status"] == "COMPLETED" and body["id"].startswith("sync-")
    assert len(body["output"]["images"]) == 1


async def test_runsync_wait_runs_out_into_a_pollable_id(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    fake.script(Outcome(status="HANG"))
    answer = await client.post("runsync?wait=30", json={"input": {"workflow": workflow()}})
    body = answer.json()
    assert body == {"id": body["id"], "status": "IN_QUEUE"}
    assert fake.requests_for("runsync")[0].query == {"wait": "30"}
    fake.finish(body["id"])
    assert (await status(client, body["id"]))["status"] == "COMPLETED"


async def test_runsync_wakes_as_soon_as_the_job_finishes(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    fake.script(Outcome(status="STUCK"))
    call = asyncio.create_task(
        client.post("runsync?wait=5000", json={"input": {"workflow": workflow()}})
    )
    await fake.wait_for_requests("runsync", 1)
    fake.finish(next(iter(fake.jobs)))
    answer = await asyncio.wait_for(call, 1.0)
    assert answer.json()["status"] == "COMPLETED"


async def test_429_fault_carries_retry_after_and_creates_no_job(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    fake.inject("run", http(429, retry_after=2), http(502, body="<html>Bad gateway</html>"))
    limited = await client.post("run", json={"input": {"workflow": workflow()}})
    gateway = await client.post("run", json={"input": {"workflow": workflow()}})
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    assert gateway.status_code == 502 and gateway.text == "<html>Bad gateway</html>"
    assert fake.jobs == {}
    await submit(client)
    assert len(fake.jobs) == 1 and len(fake.requests_for("run")) == 3


async def test_status_faults_apply_only_to_status(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    job_id = await submit(client)
    fake.inject("status", http(503, retry_after=0.05))
    unavailable = await client.get(f"status/{job_id}")
    assert unavailable.status_code == 503 and unavailable.headers["Retry-After"] == "0.05"
    assert (await status(client, job_id))["status"] == "COMPLETED"


async def test_reset_drops_the_connection_and_creates_no_job(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    fake.inject("run", reset())
    with pytest.raises(httpx.TransportError):
        await client.post("run", json={"input": {"workflow": workflow()}})
    assert fake.jobs == {} and len(fake.requests_for("run")) == 1
    await submit(client)


async def test_offline_refuses_connections_and_keeps_every_job_for_when_it_is_back(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    job_id = await submit(client)
    await fake.go_offline()
    with pytest.raises(httpx.TransportError):
        await client.get(f"status/{job_id}")  # the kept-alive connection is cut
    with pytest.raises(httpx.ConnectError):
        await client.get(f"status/{job_id}")  # and no new one is accepted
    await fake.go_online()
    assert (await status(client, job_id))["status"] == "COMPLETED"


async def test_a_gated_fault_answers_only_once_the_gate_opens(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    gate = asyncio.Event()
    fake.inject("run", http(429, gate=gate))
    answer = asyncio.ensure_future(client.post("run", json={"input": {"workflow": workflow()}}))
    await fake.wait_for_requests("run", 1)
    assert not answer.done()
    gate.set()
    assert (await answer).status_code == 429 and fake.jobs == {}


async def test_reset_after_processing_creates_a_job_nobody_heard_of(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    fake.inject("run", reset_after_processing())
    with pytest.raises(httpx.TransportError):
        await client.post("run", json={"input": {"workflow": workflow()}})
    [job] = fake.jobs.values()
    assert job.status == "COMPLETED"


async def test_delay_fault_trips_the_client_read_timeout_after_creating_the_job(
    fake: FakeRunPod,
) -> None:
    fake.inject("run", delay(5))
    async with make_client(fake, timeout=0.05) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await impatient.post("run", json={"input": {"workflow": workflow()}})
    assert len(fake.jobs) == 1


async def test_delay_fault_still_answers(fake: FakeRunPod, client: httpx.AsyncClient) -> None:
    job_id = await submit(client)
    fake.inject("status", delay(0.03))
    started = time.monotonic()
    assert (await status(client, job_id))["status"] == "COMPLETED"
    assert time.monotonic() - started >= 0.03


async def test_bad_bodies_are_rejected(fake: FakeRunPod, client: httpx.AsyncClient) -> None:
    no_input = await client.post("run", json={"workflow": workflow()})
    not_json = await client.post("run", content=b"{nope")
    too_big = await client.post("run", json={"input": {"pad": "x" * (10 * 1024 * 1024)}})
    assert [no_input.status_code, not_json.status_code, too_big.status_code] == [400, 400, 413]
    assert fake.jobs == {}


async def test_requests_are_recorded_and_awaitable(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    job_id = await submit(client, policy={"executionTimeout": 90000})
    waiter = asyncio.create_task(fake.wait_for_requests("status", 2))
    await status(client, job_id)
    await status(client, job_id)
    await asyncio.wait_for(waiter, 1.0)

    run = fake.requests_for("run")[0]
    assert (run.method, run.path, run.op) == ("POST", "/v2/test-endpoint/run", "run")
    assert run.headers["authorization"] == "Bearer test-runpod-key"
    assert run.json["policy"] == {"executionTimeout": 90000}
    assert fake.jobs[job_id].execution_timeout == 90.0
    assert [request.op for request in fake.requests] == ["run", "status", "status"]
    with pytest.raises(TimeoutError):
        await fake.wait_for_requests("cancel", 1, timeout=0.02)


async def test_progress_output_and_unknown_status_show_while_running(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    fake.script(
        Outcome(status="STUCK", progress_output={"progress": 0.5}),
        Outcome(status="HANG", unknown_status="THROTTLED"),
    )
    progressing, throttled = await submit(client), await submit(client)
    running = await status(client, progressing)
    assert running["status"] == "IN_PROGRESS" and running["output"] == {"progress": 0.5}
    assert (await status(client, throttled))["status"] == "THROTTLED"
    fake.finish(throttled)
    assert (await status(client, throttled))["status"] == "COMPLETED"


async def test_no_record_mode_keeps_neither_bodies_nor_input_images() -> None:
    async with FakeRunPod(record_bodies=False) as fake, make_client(fake) as client:
        job_input = {
            "workflow": {"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}}},
            "images": [{"name": "in.png", "image": png_b64(40, 30)}],
        }
        job_id = (await client.post("run", json={"input": job_input})).json()["id"]
        output = (await status(client, job_id))["output"]
        state = (await client.get(f"{fake.base_url}/_fake/state")).json()
    assert fake.requests[0].json is None
    assert fake.jobs[job_id].input["images"] == [{"name": "in.png"}]
    assert image_size(_entries(output, "base64")[0]) == (40, 30)
    assert state["jobs"][job_id]["status"] == "COMPLETED"
    assert state["requests"] == {"run": 1, "status": 1}


async def test_state_reports_the_busiest_second_of_requests() -> None:
    async with FakeRunPod() as fake, make_client(fake) as client:
        for _ in range(3):
            await client.get("health")
        assert fake.snapshot()["busiest_second"] == 3
        # Requests more than a second apart never share a window, whatever the clock reads now.
        for n, request in enumerate(fake.requests):
            fake.requests[n] = dataclasses.replace(request, at=request.at + 1.5 * n)
        assert fake.snapshot()["busiest_second"] == 1


def test_image_plan_follows_the_workflow() -> None:
    hires = workflow(1024, 768, batch=2)
    hires["10"] = {"class_type": "LatentUpscaleBy", "inputs": {"scale_by": 1.5}}
    empty_image = {"1": {"class_type": "EmptyImage", "inputs": {"width": 80, "height": 8}}}
    load = {
        "workflow": {
            "1": {"class_type": "LoadImage", "inputs": {"image": "b.png"}},
            "2": {"class_type": "ImageScaleBy", "inputs": {"scale_by": 2}},
        },
        "images": [
            {"name": "a.png", "image": png_b64(5, 5)},
            {"name": "b.png", "image": "data:image/png;base64," + png_b64(20, 10)},
        ],
    }
    assert plan_images({"workflow": hires}) == (1536, 1152, 2)
    assert plan_images({"workflow": empty_image}) == (80, 8, 1)
    assert plan_images(load) == (40, 20, 1)
    assert plan_images({"prompt": "no workflow"}) == (64, 64, 1)


def test_typos_in_scripts_fail_loudly(fake: FakeRunPod) -> None:
    with pytest.raises(ValueError):
        Outcome(output_format="png")
    with pytest.raises(ValueError):
        Outcome(status="DONE")
    with pytest.raises(ValueError):
        fake.inject("runn", http(500))


async def test_runs_as_a_separate_process() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "tests.fakes.fake_runpod", "--port", "0", "--api-key", "k", "--no-record"),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 10)
        ready, api_base, endpoint_id, api_key = line.decode().split()
        assert (ready, endpoint_id, api_key) == ("READY", "test-endpoint", "k")
        async with httpx.AsyncClient(
            base_url=f"{api_base}/{endpoint_id}/", headers={"Authorization": "Bearer k"}
        ) as client:
            job_id = await submit(client, workflow(16, 16))
            answer = await status(client, job_id)
    finally:
        process.terminate()
        returncode = await asyncio.wait_for(process.wait(), 5)
    assert answer["status"] == "COMPLETED"
    assert image_size(base64.b64decode(answer["output"]["images"][0]["data"])) == (16, 16)
    assert returncode == 0
