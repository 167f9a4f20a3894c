"""The one place that turns backend failures into a sentence a member understands."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Failure:
    """Why a job did not deliver: a kind for code and stats, a sentence for the member."""

    kind: str
    message: str


_NOT_IN_LIST = re.compile(r"(\w+): '([^']*)' not in")
_NODE_ERRORS = re.compile(r"Node (\S+) \(errors\): (\[.*?\])\s*$", re.MULTILINE)
_NODE_CLASS = re.compile(r"Node (\S+) \(class_type\): (\S+)")
_MISSING_NODE = re.compile(r"node (\S+?)\.? does not exist", re.IGNORECASE)
_OOM = re.compile(r"out of memory|OutOfMemory|CUDA error: out of memory|allocat", re.IGNORECASE)

_REASON_WORDS = {
    "value_not_in_list": "is not one of the allowed values",
    "value_bigger_than_max": "is above the maximum",
    "value_smaller_than_min": "is below the minimum",
    "required_input_missing": "is missing",
    "bad_linked_input": "is wired to the wrong kind of node",
    "return_type_mismatch": "is wired to the wrong kind of output",
    "invalid_input_type": "has the wrong type",
}

FILE_INPUTS = {
    "ckpt_name": "checkpoint",
    "lora_name": "LoRA",
    "vae_name": "VAE",
    "image": "input image",
}

OOM = Failure("oom", "The GPU ran out of memory. Try a smaller size or fewer images.")
TIMED_OUT = Failure("timed_out", "The job took longer than the time limit and was stopped.")
CANCELLED = Failure("cancelled", "The job was cancelled.")


def cancelled(*, by_moderator: bool) -> Failure:
    """A cancel a member asked for, saying who stopped it."""
    return Failure(
        "cancelled",
        "Stopped by a moderator." if by_moderator else "Stopped by the member who asked for it.",
    )


EXPIRED = Failure(
    "expired",
    "RunPod no longer has this job (results are kept for 30 minutes), so it could not be "
    "delivered.",
)
NO_IMAGES = Failure("no_images", "The workflow finished without producing an image.")
QUEUE_TIMEOUT = Failure(
    "queue_timeout", "No GPU became free in time, so the job was withdrawn. Try again later."
)
INTERRUPTED = Failure(
    "interrupted",
    "The bot restarted while sending this job to the GPU. It was not resent, so that it can "
    "never run twice — please try again.",
)
SUBMIT_UNCERTAIN = Failure(
    "submit_uncertain",
    "RunPod did not confirm that it received this job, so it was not resent. Please try again.",
)
UNAVAILABLE = Failure(
    "unavailable",
    "RunPod could not be reached, or is not accepting jobs right now. Please try again in a few minutes.",
)
AUTH = Failure(
    "config",
    "The GPU service refused the bot's key, so no image can be made until the operator fixes it "
    "(they can see why in the bot's log).",
)
ENDPOINT = Failure(
    "config",
    "The GPU service does not know the bot's endpoint, so no image can be made until the operator "
    "fixes it (they can see why in the bot's log).",
)
REJECTED = Failure(
    "rejected", "RunPod refused the job as malformed. This is a bug in the bot; it has been logged."
)
UNUSABLE_OUTPUT = Failure(
    "bad_output",
    "The GPU finished, but what it sent back could not be read as images, so there is nothing "
    "to show.",
)
INTERNAL = Failure(
    "internal",
    "Something went wrong in the bot while following this job; it has been logged.",
)
UNDELIVERABLE = Failure(
    "undeliverable",
    "The images were made but could not be posted here (the bot may lack permission).",
)


def explain_worker_error(raw: object) -> Failure:
    """Map a FAILED job's `error` (worker-comfyui's texts) to a short member-facing failure."""
    text = raw if isinstance(raw, str) else json.dumps(raw, default=str)
    text = _unwrap_handler_exception(text)
    if "Workflow validation failed" in text:
        return _explain_validation(text)
    if "Missing 'workflow' parameter" in text:
        return Failure(
            "bug", "The bot sent the GPU an incomplete job. This is a bug; it has been logged."
        )
    missing = _MISSING_NODE.search(text)
    if missing and "Cannot execute" in text:
        return Failure(
            "missing_node",
            f"The endpoint's ComfyUI lacks the node `{missing.group(1)}` this workflow needs.",
        )
    if _OOM.search(text):
        return OOM
    if "Job processing failed" in text:
        return Failure(
            "worker",
            "ComfyUI failed while generating (often out of memory or a broken model file). "
            "Try a smaller size or fewer images.",
        )
    if "not reachable" in text:
        return Failure("worker", "The GPU worker did not start properly. Try again in a minute.")
    if "WebSocket communication error" in text:
        return Failure("worker", "The GPU worker lost contact with ComfyUI. Try again.")
    if re.search(r"timed? ?out|timeout", text, re.IGNORECASE):
        return TIMED_OUT
    return Failure("worker", "The GPU worker reported an error.")


def _unwrap_handler_exception(text: str) -> str:
    """A handler exception arrives as JSON with error_type / error_message: keep the message."""
    try:
        data = json.loads(text)
    except (ValueError, TypeError):
        return text
    if isinstance(data, dict) and ("error_message" in data or "error_type" in data):
        return f"{data.get('error_type', '')}: {data.get('error_message', '')}"
    return text


def _explain_validation(text: str) -> Failure:
    classes = dict(_NODE_CLASS.findall(text))
    for node, errors_text in _NODE_ERRORS.findall(text):
        try:
            errors = ast.literal_eval(errors_text)
        except (ValueError, SyntaxError):
            errors = []
        for error in errors if isinstance(errors, list) else []:
            if not isinstance(error, dict):
                continue
            details = str(error.get("details", ""))
            found = _NOT_IN_LIST.search(details)
            if found and found.group(1) in FILE_INPUTS:
                kind = FILE_INPUTS[found.group(1)]
                return Failure(
                    "model_missing",
                    f"The {kind} `{found.group(2)}` is not on the endpoint's volume. "
                    "An operator needs to upload it or fix the name.",
                )
            input_name = found.group(1) if found else details.split(":", 1)[0].strip()
            reason = _REASON_WORDS.get(str(error.get("type")), "was refused")
            where = f"node {node}" + (f" ({classes[node]})" if node in classes else "")
            return Failure(
                "validation",
                f"ComfyUI refused the workflow: input `{input_name}` of {where} {reason}.",
            )
    return Failure("validation", "ComfyUI refused the workflow as invalid.")
