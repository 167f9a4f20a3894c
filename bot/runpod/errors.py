"""RunPod's failures as exceptions, and `clip` for quoting untrusted answers in them."""

from __future__ import annotations

import itertools
import json
from typing import Any


class RunPodError(Exception):
    """A call to RunPod that did not succeed; never carries the API key."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RunPodAuthError(RunPodError):
    """401: the API key was refused. A configuration error: never retried."""


class RunPodNotFound(RunPodError):
    """404: an unknown endpoint id, or a job RunPod no longer has."""


class RunPodRateLimited(RunPodError):
    """429: too many calls or a full queue; nothing was created."""

    def __init__(self, message: str, *, retry_after: float | None) -> None:
        super().__init__(message, status=429)
        self.retry_after = retry_after


class RunPodServerError(RunPodError):
    """5xx from RunPod."""


class RunPodRejected(RunPodError):
    """400, 413 or another 4xx: the request itself is wrong."""


class RunPodTransportError(RunPodError):
    """No HTTP answer: connect failure, timeout, or a dropped connection."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class SubmitUncertain(RunPodError):
    """`/run` may have reached RunPod but gave no answer: resending could run the GPU twice."""


class RunPodMalformed(RunPodError):
    """A 2xx answer that breaks the contract (types, ranges, ids): counted as a failed call."""

    def __init__(self, op: str, problem: str, raw: Any) -> None:
        super().__init__(f"{op}: malformed answer from RunPod ({problem}): {clip(raw)}")


class OutputError(RunPodError):
    """A COMPLETED job whose output holds no usable images."""

    def __init__(self, message: str, *, kind: str = "no_images") -> None:
        super().__init__(message)
        self.kind = kind


def clip(raw: Any, limit: int = 300) -> str:
    """A short, single-line rendering of untrusted data for a log line or an error."""
    if isinstance(raw, dict):
        raw = {str(k)[:40]: _shallow(v) for k, v in itertools.islice(raw.items(), 20)}
    if isinstance(raw, str):
        text = raw[: limit + 1]
    else:
        try:
            text = json.dumps(_shallow(raw) if isinstance(raw, list) else raw, default=repr)
        except ValueError:
            text = f"<{type(raw).__name__}>"
    text = text[: limit + 1].encode("unicode_escape", "replace").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "..."


def _shallow(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= 80 else value[:80] + "..."
    if isinstance(value, dict | list):
        return f"<{type(value).__name__} of {len(value)}>"
    return value
