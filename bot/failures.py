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
# ComfyUI's own words for memory exhaustion: CUDA, torch 2.5+, and the CPU allocator.
_OOM = re.compile(
    r"out of memory|OutOfMemoryError|can't allocate memory|DefaultCPUAllocator", re.IGNORECASE
)
# A model file that is there but cannot be read: safetensors' header errors, a pickle that is
# not one, and ComfyUI failing to recognise the architecture.
_DAMAGED_MODEL = re.compile(
    r"deserializing header|HeaderTooLarge|HeaderTooSmall|MetadataIncompleteBuffer|"
    r"Could not detect model type|invalid load key|not a zip file|unsupported checkpoint",
    re.IGNORECASE,
)
_MISSING_FILE = re.compile(r"No such file or directory: '([^']+)'|FileNotFoundError: (\S+)")
_MODEL_PATH = re.compile(r"Could not detect model type of: (\S+)")
# worker-comfyui's wording for a node that raised while the workflow ran.
_EXECUTION_ERROR = re.compile(r"Node Type: (\S+), Node ID: (\S+), Message: (.*)", re.DOTALL)
DETAIL_LOG_LIMIT = 500

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

# What kind of file each loader node reads, for "the LoRA file ... is damaged".
LOADER_FILES = {
    "CheckpointLoaderSimple": "checkpoint",
    "CheckpointLoader": "checkpoint",
    "ImageOnlyCheckpointLoader": "checkpoint",
    "UNETLoader": "model",
    "LoraLoader": "LoRA",
    "LoraLoaderModelOnly": "LoRA",
    "VAELoader": "VAE",
    "UpscaleModelLoader": "upscale model",
    "CLIPLoader": "text encoder",
    "ControlNetLoader": "ControlNet",
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
# Which address or setting refused it is for the operator's log, not for members.
FORBIDDEN_OUTPUT_URL = Failure(
    "forbidden_url",
    "The GPU worker put the images somewhere the bot will not fetch from, so there is nothing "
    "to show. The operator has the details.",
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


@dataclass(frozen=True)
class FailedJob:
    """A FAILED job explained: the member's sentence and the raw text for the row and the log."""

    failure: Failure
    raw: str


def explain_failed_job(error: str | None, output: object) -> FailedJob:
    """Read a FAILED job's `error` and `output.details` (where worker-comfyui puts the cause)."""
    details = _details(output)
    failure = next(filter(None, map(_explain_execution, details)), None)
    if failure is None:
        failure = explain_worker_error("\n".join([error or "", *details]))
    head = error or "FAILED with no error text"
    if not details:
        return FailedJob(failure, head)
    # The first detail goes on the first line, so the operator's one log line shows the cause.
    first = (
        details[0] if len(details[0]) <= DETAIL_LOG_LIMIT else details[0][:DETAIL_LOG_LIMIT] + "…"
    )
    return FailedJob(failure, "\n".join([f"{head}: {first}", *details]))


def _details(output: object) -> list[str]:
    """`output.details` as a list of strings, however the worker shaped it."""
    if not isinstance(output, dict):
        return []
    details = output.get("details")
    if details is None:
        return []
    items = details if isinstance(details, list) else [details]
    return [d if isinstance(d, str) else json.dumps(d, default=str) for d in items if d]


def _explain_execution(detail: str) -> Failure | None:
    """One `Workflow execution error: Node Type: ..., Message: ...` line, or None if unknown."""
    found = _EXECUTION_ERROR.search(detail)
    node_type, message = (found.group(1), found.group(3)) if found else ("", detail)
    node_type = node_type.rstrip(",")
    if _OOM.search(message):
        return OOM
    kind = LOADER_FILES.get(node_type, "model")
    if _DAMAGED_MODEL.search(message):
        path = _MODEL_PATH.search(message)
        named = f" `{_file_name(path.group(1))}`" if path else ""
        return Failure(
            "damaged_model",
            f"The {kind} file{named} on the endpoint is damaged or not a model ComfyUI can load. "
            "An operator needs to replace it.",
        )
    missing = _MISSING_FILE.search(message)
    if missing and node_type in LOADER_FILES:
        name = _file_name(missing.group(1) or missing.group(2))
        return Failure(
            "model_missing",
            f"The {kind} `{name}` is not on the endpoint's volume. "
            "An operator needs to upload it or fix the name.",
        )
    return None


def _file_name(path: str) -> str:
    return re.split(r"[\\/]", path.strip("'\""))[-1]


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
    if "Failed to upload one or more input images" in text:
        return Failure(
            "worker", "The GPU worker could not take the input image. Try again, or another image."
        )
    if "Job processing failed" in text:
        return Failure(
            "worker",
            "ComfyUI stopped with an error while generating. The operator can see the cause in "
            "the bot's log.",
        )
    if "not reachable" in text:
        return Failure("worker", "The GPU worker did not start properly. Try again in a minute.")
    if "WebSocket communication error" in text:
        return Failure(
            "worker",
            "The GPU worker lost contact with ComfyUI in the middle of the job (ComfyUI may have "
            "crashed). Try again.",
        )
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
