"""Backend failures become one short sentence a member understands; raw text never reaches them."""

from __future__ import annotations

import json

import pytest

from bot.failures import explain_worker_error
from tests.fakes import fake_runpod as fr

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
        (fr.ERROR_JOB_PROCESSING, "worker", "smaller size or fewer images"),
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
