"""Backend failures become one short sentence a member understands; raw text never reaches them."""

from __future__ import annotations

import json

import pytest

from bot.failures import FailedJob, explain_failed_job, explain_worker_error
from bot.services import Services
from tests.conftest import RecordingDelivery, wait_for_state
from tests.fakes import fake_runpod as fr
from tests.fakes.fake_runpod import FakeRunPod, Outcome

SAMPLER_VALIDATION = (
    "Workflow validation failed:\n"
    "• Node 3 (errors): [{'type': 'value_not_in_list', 'message': 'Value not in list', "
    "'details': \"sampler_name: 'euler_a' not in (list of length 44)\", 'extra_info': {}}]\n"
    "• Node 3 (dependent_outputs): ['9']\n"
    "• Node 3 (class_type): KSampler\n"
)
STEPS_VALIDATION = (
    "Workflow validation failed:\n"
    "• Node 3 (errors): [{'type': 'value_bigger_than_max', 'message': 'Value 20000 bigger than max of 10000', "
    "'details': 'steps', 'extra_info': {}}]\n"
    "• Node 3 (class_type): KSampler\n"
)
LORA_VALIDATION = (
    "Workflow validation failed:\n"
    "• Node 11 (errors): [{'type': 'value_not_in_list', 'message': 'Value not in list', "
    "'details': \"lora_name: 'detail.safetensors' not in []\", 'extra_info': {}}]\n"
    "• Node 11 (class_type): LoraLoader\n"
)
HANDLER_OOM = json.dumps(
    {
        "error_type": "<class 'torch.OutOfMemoryError'>",
        "error_message": "CUDA out of memory. Tried to allocate 2.00 GiB",
        "error_traceback": "Traceback (most recent call last):\n  File ...",
    }
)


@pytest.mark.parametrize(
    ("raw", "kind", "says"),
    [
        (
            fr.ERROR_VALIDATION,
            "model_missing",
            "checkpoint `missing.safetensors` is not on the endpoint's volume",
        ),
        (
            LORA_VALIDATION,
            "model_missing",
            "LoRA `detail.safetensors` is not on the endpoint's volume",
        ),
        (
            SAMPLER_VALIDATION,
            "validation",
            "input `sampler_name` of node 3 (KSampler) is not one of the allowed values",
        ),
        (STEPS_VALIDATION, "validation", "input `steps` of node 3 (KSampler) is above the maximum"),
        (fr.ERROR_UNKNOWN_NODE, "missing_node", "lacks the node `Bad`"),
        (fr.ERROR_JOB_PROCESSING, "worker", "cause in the bot's log"),
        (HANDLER_OOM, "oom", "ran out of memory"),
        ("CUDA error: out of memory", "oom", "smaller size or fewer images"),
        (fr.ERROR_COMFY_UNREACHABLE, "worker", "did not start"),
        ("WebSocket communication error: Connection closed", "worker", "lost contact"),
        (fr.ERROR_MISSING_WORKFLOW, "bug", "bug"),
        ("An unexpected error occurred: KeyError('x')", "worker", "reported an error"),
        ({"weird": ["dict", "error"]}, "worker", "reported an error"),
    ],
)
def test_each_real_worker_error_becomes_one_plain_sentence(raw, kind: str, says: str) -> None:
    failure = explain_worker_error(raw)
    assert failure.kind == kind
    assert says in failure.message
    assert len(failure.message) < 200
    for leaked in ("Traceback", "{'type'", "error_traceback", "<class"):
        assert leaked not in failure.message


def execution_error(node_type: str, message: str) -> str:
    """A `details` line as worker-comfyui writes it for a node that raised."""
    return f"Workflow execution error: Node Type: {node_type}, Node ID: 4, Message: {message}"


MISSING_LORA_FILE = execution_error(
    "LoraLoader",
    "[Errno 2] No such file or directory: '/runpod-volume/models/loras/pony/detail.safetensors'",
)
UNKNOWN_MODEL = execution_error(
    "CheckpointLoaderSimple",
    "ERROR: Could not detect model type of: /runpod-volume/models/checkpoints/odd.safetensors",
)


@pytest.mark.parametrize(
    ("details", "kind", "says"),
    [
        ([fr.DETAIL_CPU_OUT_OF_MEMORY], "oom", "ran out of memory"),
        ([fr.DETAIL_CUDA_OUT_OF_MEMORY], "oom", "ran out of memory"),
        ([execution_error("KSampler", "torch.OutOfMemoryError: ...")], "oom", "out of memory"),
        (
            [fr.DETAIL_DAMAGED_CHECKPOINT],
            "damaged_model",
            "checkpoint file on the endpoint is damaged",
        ),
        (
            [UNKNOWN_MODEL],
            "damaged_model",
            "checkpoint file `odd.safetensors` on the endpoint is damaged",
        ),
        (
            [MISSING_LORA_FILE],
            "model_missing",
            "LoRA `detail.safetensors` is not on the endpoint's volume",
        ),
        (
            ["Prompt ID abc not found in history after execution.", fr.DETAIL_CUDA_OUT_OF_MEMORY],
            "oom",
            "out of memory",
        ),
        (
            [execution_error("KSampler", "ValueError: something new")],
            "worker",
            "cause in the bot's log",
        ),
        ([], "worker", "cause in the bot's log"),
    ],
)
def test_a_failed_jobs_details_name_the_real_cause(
    details: list[str], kind: str, says: str
) -> None:
    explained = explain_failed_job(fr.ERROR_JOB_PROCESSING, {"details": details})
    assert explained.failure.kind == kind
    assert says in explained.failure.message
    assert (
        "Node Type" not in explained.failure.message and "[Errno" not in explained.failure.message
    )


def test_the_generic_sentence_no_longer_guesses_a_cause() -> None:
    unknown = explain_failed_job(fr.ERROR_JOB_PROCESSING, None).failure.message
    assert "memory" not in unknown and "smaller" not in unknown


def test_the_raw_text_keeps_every_detail_and_leads_with_the_first_clipped() -> None:
    huge = execution_error("KSampler", "x" * 5000)
    explained = explain_failed_job(fr.ERROR_JOB_PROCESSING, {"details": [huge, "second"]})
    first_line, *rest = explained.raw.splitlines()
    assert first_line.startswith(
        "Job processing failed: Workflow execution error: Node Type: KSampler"
    )
    assert len(first_line) < 600 and first_line.endswith("…")
    assert rest == [huge, "second"]


@pytest.mark.parametrize(
    "output", [{"details": "one string"}, {"details": [{"odd": 1}]}, "text", 7]
)
def test_odd_details_shapes_are_read_without_crashing(output: object) -> None:
    explained = explain_failed_job(fr.ERROR_JOB_PROCESSING, output)
    assert isinstance(explained, FailedJob) and explained.raw.startswith("Job processing failed")


def test_a_plain_error_without_details_is_kept_as_it_was() -> None:
    explained = explain_failed_job(fr.ERROR_VALIDATION, None)
    assert explained.raw == fr.ERROR_VALIDATION
    assert explained.failure.kind == "model_missing"


async def test_a_damaged_checkpoint_reaches_member_row_and_log_through_the_fake_runpod(
    services: Services,
    delivery: RecordingDelivery,
    fake_runpod: FakeRunPod,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_runpod.script(Outcome(status="FAILED", details=[fr.DETAIL_DAMAGED_CHECKPOINT]))
    await services.jobs.start(delivery)
    new = services.prepare("a pony --workflow test-pattern", user_id=1, guild_id=10, channel_id=100)
    job = await services.jobs.accept(new)
    await services.jobs.attach_message(job.id, 100, 500)
    await delivery.wait(job.id)
    failed = await wait_for_state(services, job.id, "failed")
    assert failed.failure is not None and "damaged" in failed.failure
    assert failed.error is not None and fr.DETAIL_DAMAGED_CHECKPOINT in failed.error
    logged = [r.getMessage() for r in caplog.records if f"job {job.id} failed" in r.getMessage()]
    assert logged and "header too small" in logged[0]
