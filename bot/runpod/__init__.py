"""RunPod Serverless client (one shared httpx client) and worker-comfyui output decoding.

The rooms: `client` (HTTP calls, retries), `budget` (backoff, request budget), `answers`
(checked `JobStatus`/`Health`), `errors`, `downloads` (SSRF-safe, capped) and `outputs`.
"""

from bot.runpod.answers import (
    JOB_ID,
    MAX_DELAY_MS,
    MAX_ERROR_CHARS,
    MAX_EXECUTION_MS,
    MAX_WORKER_COUNT,
    TERMINAL_STATUSES,
    Health,
    JobStatus,
)
from bot.runpod.budget import CallStats, RequestBudget, RetryPolicy, Sleep
from bot.runpod.client import (
    MAX_RESPONSE_BYTES,
    STATUS_SYNC_MAX_WAIT_MS,
    STATUS_SYNC_MIN_WAIT_MS,
    STATUS_SYNC_READ_MARGIN,
    RunPodClient,
    provably_not_created,
)
from bot.runpod.downloads import (
    HOST_LABEL,
    MAX_OUTPUT_IMAGE_BYTES,
    MAX_OUTPUT_TOTAL_BYTES,
    MAX_REDIRECTS,
    MAX_URL_LENGTH,
    NAT64,
    Fetch,
    OutputDownloader,
    Resolve,
    resolve_host,
)
from bot.runpod.errors import (
    OutputError,
    RunPodAuthError,
    RunPodError,
    RunPodMalformed,
    RunPodNotFound,
    RunPodRateLimited,
    RunPodRejected,
    RunPodServerError,
    RunPodTransportError,
    SubmitUncertain,
    clip,
)
from bot.runpod.outputs import decode_output

__all__ = [
    "HOST_LABEL",
    "JOB_ID",
    "MAX_DELAY_MS",
    "MAX_ERROR_CHARS",
    "MAX_EXECUTION_MS",
    "MAX_OUTPUT_IMAGE_BYTES",
    "MAX_OUTPUT_TOTAL_BYTES",
    "MAX_REDIRECTS",
    "MAX_RESPONSE_BYTES",
    "MAX_URL_LENGTH",
    "MAX_WORKER_COUNT",
    "NAT64",
    "STATUS_SYNC_MAX_WAIT_MS",
    "STATUS_SYNC_MIN_WAIT_MS",
    "STATUS_SYNC_READ_MARGIN",
    "TERMINAL_STATUSES",
    "CallStats",
    "Fetch",
    "Health",
    "JobStatus",
    "OutputDownloader",
    "OutputError",
    "RequestBudget",
    "Resolve",
    "RetryPolicy",
    "RunPodAuthError",
    "RunPodClient",
    "RunPodError",
    "RunPodMalformed",
    "RunPodNotFound",
    "RunPodRateLimited",
    "RunPodRejected",
    "RunPodServerError",
    "RunPodTransportError",
    "Sleep",
    "SubmitUncertain",
    "clip",
    "decode_output",
    "provably_not_created",
    "resolve_host",
]
