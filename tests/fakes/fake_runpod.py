"""A fake RunPod Serverless cloud: a real HTTP server on 127.0.0.1 speaking the /v2 contract.

Job state is computed lazily from `time.monotonic()` on every read, so no timer tasks run and
thousands of jobs cost little. Run it as a process with `python -m tests.fakes.fake_runpod`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import io
import json
import math
import random
import signal
import socket
import ssl
import struct
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import aiohttp
from aiohttp import web
from PIL import Image

from tests.fakes import HANG_GUARD

TERMINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
OUTCOME_STATUSES = frozenset({"COMPLETED", "FAILED", "TIMED_OUT", "HANG", "STUCK"})
OUTPUT_FORMATS = frozenset(
    {
        "current",
        "s3_url",
        "local_path",
        "legacy_message",
        "legacy_error",
        "bare_base64",
        "data_uri",
        "no_images",
        "webp",
    }
)
OPS = frozenset(
    {"run", "runsync", "status", "status-sync", "cancel", "retry", "health", "purge-queue"}
)
JOB_OPS = frozenset({"status", "status-sync", "cancel", "retry"})
FAULT_OPS = OPS | {"s3", "other"}
DEFAULT_WORKERS = {
    "idle": 1,
    "ready": 1,
    "running": 0,
    "initializing": 0,
    "throttled": 0,
    "unhealthy": 0,
}

DEFAULT_EXECUTION_TIMEOUT_MS = 600_000
DEFAULT_TTL_MS = 86_400_000
DEFAULT_RUNSYNC_WAIT_MS = 90_000
# `/status-sync?wait=MS`: RunPod holds the request 1 to 90 seconds.
STATUS_SYNC_MIN_WAIT_MS = 1_000
STATUS_SYNC_MAX_WAIT_MS = 90_000
# RunPod's webhook: one call when the job ends, then up to 2 more, 10 s apart, until one gets 200.
WEBHOOK_RETRIES = 2
WEBHOOK_RETRY_DELAY = 10.0
WEBHOOK_TIMEOUT = 10.0
WEBHOOK_FAULTS = frozenset({"drop", "never", "duplicate"})
RUNSYNC_RETENTION = 60.0
RUN_BODY_LIMIT = 10 * 1024 * 1024
RUNSYNC_BODY_LIMIT = 20 * 1024 * 1024
# Above RunPod's own limits, so the fake (not aiohttp) decides when to answer 413.
SERVER_BODY_LIMIT = 64 * 1024 * 1024
MAX_SIDE = 16384
WORKER_ID = "fakeworker0001"

# Real worker-comfyui error texts (reference/worker-comfyui.md), for scripting FAILED outcomes.
ERROR_MISSING_WORKFLOW = "Missing 'workflow' parameter"
ERROR_JOB_PROCESSING = "Job processing failed"
ERROR_VALIDATION = (
    "Workflow validation failed:\n"
    "• Node 4 (errors): [{'type': 'value_not_in_list', 'message': 'Value not in list', "
    "'details': \"ckpt_name: 'missing.safetensors' not in ['ponyDiffusionV6XL.safetensors']\", "
    "'extra_info': {}}]\n"
    "• Node 4 (dependent_outputs): ['9']\n"
    "• Node 4 (class_type): CheckpointLoaderSimple\n"
    "\n"
    "Available checkpoint models: ponyDiffusionV6XL.safetensors"
)
ERROR_UNKNOWN_NODE = (
    'Cannot execute because node Bad does not exist.. Raw response: {"error": '
    '{"type": "invalid_prompt", "message": "Cannot execute because node Bad does not exist."}}'
)
ERROR_COMFY_UNREACHABLE = "ComfyUI server (127.0.0.1:8188) not reachable after multiple retries."
LEGACY_ERROR_MESSAGE = "ComfyUI output file not found"
# A node that raised while the workflow ran: worker-comfyui answers {"error": ERROR_JOB_PROCESSING,
# "details": [...]} and runpod-python's run_job moves everything but `error` into `output`.
DETAIL_CPU_OUT_OF_MEMORY = (
    "Workflow execution error: Node Type: RepeatImageBatch, Node ID: 2, Message: [enforce fail at "
    "alloc_cpu.cpp:127] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate "
    "115964116992 bytes. Error code 12 (Cannot allocate memory)"
)
DETAIL_CUDA_OUT_OF_MEMORY = (
    "Workflow execution error: Node Type: KSampler, Node ID: 3, Message: CUDA out of memory. "
    "Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 23.65 GiB of which 1.05 GiB is free."
)
DETAIL_DAMAGED_CHECKPOINT = (
    "Workflow execution error: Node Type: CheckpointLoaderSimple, Node ID: 4, Message: Error "
    "while deserializing header: header too small"
)

PALETTE = (
    (220, 60, 60),
    (60, 160, 80),
    (50, 90, 200),
    (230, 190, 40),
    (150, 70, 180),
    (40, 180, 190),
    (240, 130, 40),
    (120, 120, 120),
)


def op_for_path(path: str) -> str:
    """Name the RunPod operation a request path addresses ("other" if none)."""
    parts = path.strip("/").split("/")
    if parts[0] == "s3" and len(parts) >= 2:
        return "s3"
    if parts[0] == "v2" and len(parts) >= 3 and parts[2] in OPS:
        return parts[2]
    return "other"


def most_in_one_second(times: Sequence[float]) -> int:
    """The most of `times` (in seconds, any order) that fall within one second of each other."""
    ordered = sorted(times)
    most, first = 0, 0
    for last, at in enumerate(ordered):
        while at - ordered[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it; headers have lower-case names."""

    method: str
    path: str
    query: dict[str, str]
    json: Any | None
    headers: dict[str, str]
    at: float

    @property
    def op(self) -> str:
        return op_for_path(self.path)


@dataclass
class Outcome:
    """What a job does once it leaves the queue; HANG never leaves it, STUCK never finishes."""

    status: str = "COMPLETED"
    error: str | None = None
    output_format: str = "current"
    queue_delay: float | None = None
    run_delay: float | None = None
    image_count: int | None = None
    noise: bool = False
    progress_output: Any = None
    unknown_status: str | None = None
    warnings: list[str] | None = None
    # FAILED with ERROR_JOB_PROCESSING: the worker's `details` (the real cause).
    details: list[str] | None = None

    def __post_init__(self) -> None:
        if self.status not in OUTCOME_STATUSES:
            raise ValueError(f"unknown outcome status {self.status!r}")
        if self.output_format not in OUTPUT_FORMATS:
            raise ValueError(f"unknown output format {self.output_format!r}")

    @property
    def terminal_status(self) -> str:
        """The status reached on finishing; HANG/STUCK forced to finish count as COMPLETED."""
        return self.status if self.status in TERMINAL_STATUSES else "COMPLETED"


@dataclass(frozen=True)
class Fault:
    """A scripted misbehaviour for one request; build with http(), reset(), delay() etc."""

    kind: str
    status: int = 0
    retry_after: float | str | None = None
    body: Any = None
    seconds: float = 0.0
    gate: asyncio.Event | None = None


def http(
    status: int,
    retry_after: float | str | None = None,
    body: Any = None,
    *,
    gate: asyncio.Event | None = None,
) -> Fault:
    """Answer `status` without processing; `retry_after` (seconds, or an HTTP date) goes in a
    Retry-After header.

    With `gate`, the answer waits until the test sets it: a fault that lands at a chosen moment.
    """
    return Fault("http", status=status, retry_after=retry_after, body=body, gate=gate)


def reset() -> Fault:
    """Drop the connection (TCP RST) without processing or answering."""
    return Fault("reset")


def reset_after_processing() -> Fault:
    """Process the request (a run creates its job) and then drop the connection unanswered."""
    return Fault("reset_after_processing")


def delay(seconds: float) -> Fault:
    """Process the request at once but hold the answer back for `seconds`."""
    return Fault("delay", seconds=seconds)


def chunked() -> Fault:
    """Answer as usual, but stream the body in small pieces with no Content-Length."""
    return Fault("chunked")


@dataclass(frozen=True)
class WebhookCall:
    """One webhook delivery attempt; `answer` is the receiver's HTTP status, None if none came."""

    job_id: str
    url: str
    attempt: int
    body: Any
    answer: int | None
    at: float


@dataclass
class FakeJob:
    """One submitted job; times are time.monotonic() values, math.inf meaning never."""

    id: str
    input: dict[str, Any]
    policy: dict[str, Any]
    outcome: Outcome
    submitted_at: float
    started_at: float = math.inf
    completed_at: float = math.inf
    cancelled: bool = False
    retries: int = 0
    status_reads: int = 0
    final_status: str = "COMPLETED"
    queued_at: float = 0.0
    retention: float = 1800.0
    width: int = 64
    height: int = 64
    batch_size: int = 1
    # What a real worker's run_job returned (tests/fakes/real_worker.py); answered as is.
    reported: dict[str, Any] | None = None
    webhook: str | None = None

    @property
    def execution_timeout(self) -> float:
        """policy.executionTimeout in seconds."""
        return _policy_ms(self.policy, "executionTimeout", DEFAULT_EXECUTION_TIMEOUT_MS) / 1000

    @property
    def ttl(self) -> float:
        """policy.ttl in seconds."""
        return _policy_ms(self.policy, "ttl", DEFAULT_TTL_MS) / 1000

    @property
    def status(self) -> str:
        return self.status_at(time.monotonic())

    def status_at(self, now: float) -> str:
        """The RunPod status at monotonic time `now`."""
        if now >= self.completed_at:
            return self.final_status
        if now >= self.started_at:
            return "IN_PROGRESS"
        return "IN_QUEUE"

    def is_terminal(self, now: float) -> bool:
        return now >= self.completed_at

    def expired(self, now: float) -> bool:
        """True once the TTL or the post-completion retention has run out (RunPod answers 404)."""
        if now > self.submitted_at + self.ttl:
            return True
        return self.is_terminal(now) and now > self.completed_at + self.retention


@dataclass(frozen=True)
class _Encoded:
    data: bytes
    b64: str
    mime: str
    ext: str


class _Reject(Exception):
    """Ends a request with an HTTP error answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Signal:
    """Wakes every waiter when fired; waiters never miss a fire that happens after they look."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, seconds: float) -> None:
        """Return when fired or after `seconds`, whichever comes first."""
        event = self._event
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(seconds, 0.0)):
                await event.wait()


class _ImageFactory:
    """Encodes output images, cached so that thousands of jobs share a handful of files."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], _Encoded] = {}

    def get(self, width: int, height: int, index: int, *, webp: bool, noise: bool) -> _Encoded:
        fill: Any = ("noise", index) if noise else PALETTE[index % len(PALETTE)]
        key = (width, height, webp, fill)
        cached = self._cache.get(key)
        if cached is None:
            if noise:
                image = _noise_image(width, height, index)
            else:
                image = Image.new("RGB", (width, height), fill)
            cached = self._cache[key] = _encode(image, webp=webp, fast=noise)
        return cached


def _noise_image(width: int, height: int, index: int) -> Image.Image:
    pixels = random.Random(index).randbytes(width * height * 3)
    return Image.frombytes("RGB", (width, height), pixels)


def _encode(image: Image.Image, *, webp: bool, fast: bool) -> _Encoded:
    buffer = io.BytesIO()
    if webp:
        image.save(buffer, format="WEBP")
        mime, ext = "image/webp", "webp"
    else:
        # Noise does not compress anyway; level 1 saves most of the encoding time.
        image.save(buffer, format="PNG", compress_level=1 if fast else 6)
        mime, ext = "image/png", "png"
    data = buffer.getvalue()
    return _Encoded(data, base64.b64encode(data).decode("ascii"), mime, ext)


def _policy_ms(policy: dict[str, Any], key: str, default: float) -> float:
    value = policy.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return default


def _as_int(value: Any) -> int | None:
    """A positive int from a workflow input (ComfyUI coerces numbers), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, int | float) and math.isfinite(value) and value > 0:
        return int(value)
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _workflow_nodes(job_input: dict[str, Any]) -> list[dict[str, Any]]:
    workflow = job_input.get("workflow")
    if not isinstance(workflow, dict):
        return []
    return [node for node in workflow.values() if isinstance(node, dict)]


def _node_inputs(node: dict[str, Any]) -> dict[str, Any]:
    inputs = node.get("inputs")
    return inputs if isinstance(inputs, dict) else {}


def _empty_image_size(nodes: list[dict[str, Any]]) -> tuple[int, int, int] | None:
    """(width, height, batch) of the first empty latent (SD or SD3/Flux) or EmptyImage node."""
    for node in nodes:
        if node.get("class_type") not in ("EmptyLatentImage", "EmptySD3LatentImage", "EmptyImage"):
            continue
        inputs = _node_inputs(node)
        width, height = _as_int(inputs.get("width")), _as_int(inputs.get("height"))
        if width and height:
            return width, height, _as_int(inputs.get("batch_size")) or 1
    return None


def _decoded_size(data: Any) -> tuple[int, int] | None:
    """Size of a base64 image (data: URI prefix allowed), reading only its header."""
    if not isinstance(data, str):
        return None
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            return image.size
    except (binascii.Error, ValueError, OSError):
        return None


def _load_image_size(nodes: list[dict[str, Any]], images: Any) -> tuple[int, int] | None:
    """Size of the uploaded image the first LoadImage node names."""
    names = [
        _node_inputs(node).get("image") for node in nodes if node.get("class_type") == "LoadImage"
    ]
    if not names or not isinstance(images, list):
        return None
    for entry in images:
        if isinstance(entry, dict) and entry.get("name") == names[0]:
            return _decoded_size(entry.get("image"))
    return None


def _scale_factor(nodes: list[dict[str, Any]]) -> float:
    """Product of every LatentUpscaleBy/ImageScaleBy scale_by (hires fix chains them)."""
    factor = 1.0
    for node in nodes:
        if node.get("class_type") in ("LatentUpscaleBy", "ImageScaleBy"):
            factor *= _as_float(_node_inputs(node).get("scale_by")) or 1.0
    return factor


def _image_scale_size(nodes: list[dict[str, Any]]) -> tuple[int, int] | None:
    """The size an ImageScale node crops an input image to (img2img works at that size)."""
    for node in nodes:
        if node.get("class_type") == "ImageScale":
            inputs = _node_inputs(node)
            width, height = _as_int(inputs.get("width")), _as_int(inputs.get("height"))
            if width and height:
                return width, height
    return None


def plan_images(job_input: dict[str, Any]) -> tuple[int, int, int]:
    """(width, height, count) of the images the submitted workflow would save."""
    nodes = _workflow_nodes(job_input)
    planned = _empty_image_size(nodes)
    if planned is None:
        width, height = (
            _image_scale_size(nodes) or _load_image_size(nodes, job_input.get("images")) or (64, 64)
        )
        planned = (width, height, 1)
    width, height, batch = planned
    factor = _scale_factor(nodes)
    width = min(MAX_SIDE, max(1, round(width * factor)))
    height = min(MAX_SIDE, max(1, round(height * factor)))
    return width, height, batch


def _json_body(body: bytes) -> Any | None:
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _fault_response(fault: Fault) -> web.Response:
    headers = {}
    if fault.retry_after is not None:
        value = fault.retry_after
        headers["Retry-After"] = value if isinstance(value, str) else f"{value:g}"
    if fault.body is None:
        return web.json_response(
            {"error": _reason(fault.status)}, status=fault.status, headers=headers
        )
    if isinstance(fault.body, str | bytes):
        return web.Response(
            body=fault.body, status=fault.status, headers=headers, content_type="text/plain"
        )
    return web.json_response(fault.body, status=fault.status, headers=headers)


async def _stream_chunked(
    request: web.Request, response: web.Response, piece: int = 16 * 1024
) -> web.StreamResponse:
    """`response` sent as a streaming server sends it: chunked, its size known only at the end."""
    assert isinstance(response.body, bytes)
    streamed = web.StreamResponse(status=response.status)
    streamed.content_type = response.content_type
    streamed.enable_chunked_encoding()
    await streamed.prepare(request)
    # A client that stops reading part-way (a size cap) closes the connection: that is the point.
    with contextlib.suppress(ConnectionResetError):
        for start in range(0, len(response.body), piece):
            await streamed.write(response.body[start : start + piece])
        await streamed.write_eof()
    return streamed


def _drop_connection(request: web.Request) -> None:
    """Abort the connection with a TCP RST; the client sees a reset, never an answer."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class FakeRunPod:
    """The fake cloud: one endpoint, scripted outcomes and faults, every request recorded."""

    def __init__(
        self,
        *,
        api_key: str = "test-runpod-key",
        endpoint_id: str = "test-endpoint",
        queue_delay: float = 0.0,
        run_delay: float = 0.0,
        retention: float = 1800.0,
        host: str = "127.0.0.1",
        port: int = 0,
        run_jitter: float = 0.0,
        seed: int = 0,
        record_bodies: bool = True,
    ) -> None:
        self.api_key = api_key
        self.endpoint_id = endpoint_id
        self.queue_delay = queue_delay
        self.run_delay = run_delay
        self.retention = retention
        self.host = host
        self.port = port
        self.run_jitter = run_jitter
        self.record_bodies = record_bodies
        self.requests: list[RecordedRequest] = []
        self.jobs: dict[str, FakeJob] = {}
        self.default_outcome = Outcome()
        self.workers: dict[str, int] = dict(DEFAULT_WORKERS)
        self._script: deque[Outcome] = deque()
        self._faults: dict[str, deque[Fault]] = {}
        self._op_counts: Counter[str] = Counter()
        self._request_signal = _Signal()
        self._job_signal = _Signal()
        self._images = _ImageFactory()
        self._s3: dict[str, _Encoded] = {}
        self._rng = random.Random(seed)
        self._runner: web.AppRunner | None = None
        self.garbage = GarbageFaults()
        self._site: web.TCPSite | None = None
        # Set by tests/fakes/real_worker.py: hands each job to a real handler instead of a timer.
        self.job_runner: Callable[[FakeJob], None] | None = None
        # Further endpoints answered on this server (`also_serve`), by endpoint id.
        self._also: dict[str, FakeRunPod] = {}
        # Endpoint id -> the HTTP status `/status-sync` answers there instead (404 or 405).
        self.status_sync_off: dict[str, int] = {}
        # Tests shrink `/status-sync`'s holds: it waits wait_ms/1000 * this many seconds.
        self.status_sync_time_scale = 1.0
        self.webhook_calls: list[WebhookCall] = []
        self.webhook_retry_delay = WEBHOOK_RETRY_DELAY
        self._webhook_faults: deque[str] = deque()
        self._webhook_signal = _Signal()
        self._webhook_tasks: set[asyncio.Task[None]] = set()
        self._webhook_session: aiohttp.ClientSession | None = None
        # Most client connections open at once, as seen when a request arrived.
        self.peak_connections = 0

    async def start(self) -> None:
        """Start listening; `port` becomes the real port if 0 was asked for."""
        app = web.Application(client_max_size=SERVER_BODY_LIMIT)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await self._listen()
        self.port = self._runner.addresses[0][1]

    async def go_offline(self) -> None:
        """Become unreachable, job state kept: new connections are refused, open ones reset."""
        if self._site is not None:
            site, self._site = self._site, None
            await site.stop()
        server = self._runner.server if self._runner is not None else None
        for handler in server.connections if server is not None else ():
            if handler.transport is not None:
                handler.transport.abort()

    async def go_online(self) -> None:
        """Listen again on the same port after `go_offline`."""
        if self._site is None:
            await self._listen()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, self.host, self.port)
        await self._site.start()

    async def close(self) -> None:
        for task in list(self._webhook_tasks):
            task.cancel()
        await asyncio.gather(*self._webhook_tasks, return_exceptions=True)
        if self._webhook_session is not None:
            session, self._webhook_session = self._webhook_session, None
            await session.close()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeRunPod:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """http://HOST:PORT, the root that /v2 and /s3 hang off."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/v2"

    def also_serve(self, other: FakeRunPod) -> None:
        """Answer for `other`'s endpoint id too (its own jobs, workers and script), as RunPod
        serves every endpoint of an account under one API base. Requests are recorded here."""
        other.port = self.port
        self._also[other.endpoint_id] = other

    def requests_for(self, op: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.op == op]

    def script(self, *outcomes: Outcome) -> None:
        """The next len(outcomes) jobs submitted (or retried) take these outcomes, in order."""
        self._script.extend(outcomes)

    def inject(self, op: str, *faults: Fault) -> None:
        """The next len(faults) requests to `op` get these faults, in order."""
        if op not in FAULT_OPS:
            raise ValueError(f"unknown op {op!r}; expected one of {sorted(FAULT_OPS)}")
        self._faults.setdefault(op, deque()).extend(faults)

    def switch_off_status_sync(self, endpoint_id: str | None = None, answer: int = 404) -> None:
        """`/status-sync` on that endpoint (default: ours) answers `answer`, as if it did not exist."""
        if answer not in (404, 405):
            raise ValueError("a missing route answers 404 or 405")
        self.status_sync_off[endpoint_id or self.endpoint_id] = answer

    def inject_webhook(self, *faults: str) -> None:
        """The next webhook deliveries misbehave, one fault each, in order.

        One fault per attempt: "drop" loses it (it counts as failed and is retried); "never"
        ends the job's deliveries there; "duplicate" delivers the same call twice.
        """
        for fault in faults:
            if fault not in WEBHOOK_FAULTS:
                raise ValueError(
                    f"unknown webhook fault {fault!r}; one of {sorted(WEBHOOK_FAULTS)}"
                )
        self._webhook_faults.extend(faults)

    async def wait_for_webhook_calls(self, count: int, timeout: float = HANG_GUARD) -> None:
        """Return once `count` webhook attempts were made; TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        while len(self.webhook_calls) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"waited {timeout}s for {count} webhook calls, saw {len(self.webhook_calls)}"
                )
            await self._webhook_signal.wait(remaining)

    def finish(self, job_id: str, outcome: Outcome | None = None) -> None:
        """Force a job to its (new) outcome's terminal state now."""
        job = self.jobs[job_id]
        if outcome is not None:
            job.outcome = outcome
        now = time.monotonic()
        job.started_at = min(job.started_at, now)
        job.completed_at = now
        job.final_status = job.outcome.terminal_status
        job.cancelled = False
        self._job_signal.fire()

    def start_running(self, job_id: str) -> None:
        """Force a queued job to IN_PROGRESS now; its run delay counts from here."""
        job = self.jobs[job_id]
        now = time.monotonic()
        if job.started_at > now:
            self._schedule_run(job, now)
            self._job_signal.fire()

    async def wait_for_requests(self, op: str, count: int, timeout: float = HANG_GUARD) -> None:
        """Return once `count` requests to `op` have arrived; TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        while self._op_counts[op] < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"waited {timeout}s for {count} {op!r} requests, saw {self._op_counts[op]}"
                )
            await self._request_signal.wait(remaining)

    def snapshot(self) -> dict[str, Any]:
        """Job timings and request counts as JSON-able data (served at GET /_fake/state)."""
        jobs = {
            job.id: {
                "status": job.status,
                "submitted_at": job.submitted_at,
                "started_at": _finite(job.started_at),
                "completed_at": _finite(job.completed_at),
                "status_reads": job.status_reads,
                "retries": job.retries,
            }
            for job in self.jobs.values()
        }
        return {
            "jobs": jobs,
            "requests": dict(self._op_counts),
            "busiest_second": self.busiest_second(),
            "peak_connections": self.peak_connections,
        }

    def busiest_second(self) -> int:
        """The most endpoint API requests (not image downloads) that arrived within any one second."""
        return most_in_one_second([r.at for r in self.requests if op_for_path(r.path) != "s3"])

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self._site is None:  # offline: a kept-alive connection is cut, not answered
            _drop_connection(request)
            raise asyncio.CancelledError
        if request.path.startswith("/_fake/"):
            return web.json_response(self.snapshot())
        arrived = time.monotonic()
        if self._runner is not None and self._runner.server is not None:
            open_now = len(self._runner.server.connections)
            self.peak_connections = max(self.peak_connections, open_now)
        body = await request.read()
        op = op_for_path(request.path)
        payload = _json_body(body)
        self._record(request, op, payload, arrived)
        fault = self._next_fault(op)
        if fault is not None and fault.gate is not None:
            await fault.gate.wait()
        if fault is not None and fault.kind == "http":
            return _fault_response(fault)
        if fault is not None and fault.kind == "reset":
            _drop_connection(request)
            raise asyncio.CancelledError
        try:
            response = await self._dispatch(request, op, body, payload)
        except _Reject as reject:
            response = _error(reject.status, reject.message)
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
        if fault is not None and fault.kind == "reset_after_processing":
            _drop_connection(request)
            raise asyncio.CancelledError
        if fault is not None and fault.kind == "chunked":
            return await _stream_chunked(request, response)
        return response

    def _record(self, request: web.Request, op: str, payload: Any, arrived: float) -> None:
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                json=payload if self.record_bodies else None,
                headers={name.lower(): value for name, value in request.headers.items()},
                at=arrived,
            )
        )
        self._op_counts[op] += 1
        self._request_signal.fire()

    def _next_fault(self, op: str) -> Fault | None:
        faults = self._faults.get(op)
        return faults.popleft() if faults else None

    async def _dispatch(
        self, request: web.Request, op: str, body: bytes, payload: Any
    ) -> web.Response:
        if op == "s3":
            return self._serve_s3(request.path)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            raise _Reject(401, "Unauthorized")
        parts = request.path.strip("/").split("/")
        if op != "other" and parts[1] in self._also:
            return await self._also[parts[1]]._dispatch(request, op, body, payload)
        if op == "other" or parts[1] != self.endpoint_id:
            raise _Reject(404, "Not Found")
        job_id = parts[3] if len(parts) == 4 else None
        if (op in JOB_OPS) != (job_id is not None) or len(parts) > 4:
            raise _Reject(404, "Not Found")
        if op == "status-sync" and parts[1] in self.status_sync_off:
            raise _Reject(self.status_sync_off[parts[1]], "Not Found")
        _check_method(op, request.method)
        if op == "runsync":
            return web.json_response(await self._op_runsync(request, body, payload))
        if op == "status-sync":
            assert job_id is not None
            return web.json_response(await self._op_status_sync(request, job_id))
        return web.json_response(self._sync_op(op, job_id, body, payload))

    def _sync_op(self, op: str, job_id: str | None, body: bytes, payload: Any) -> dict[str, Any]:
        if op == "run":
            job = self._submit(body, payload, limit=RUN_BODY_LIMIT, sync=False)
            return {"id": job.id, "status": "IN_QUEUE"}
        if op == "health":
            return self._health()
        if op == "purge-queue":
            return self._purge_queue()
        assert job_id is not None
        if op == "status":
            return self._op_status(job_id)
        if op == "cancel":
            return self._op_cancel(job_id)
        return self._op_retry(job_id)

    def _submit(self, body: bytes, payload: Any, *, limit: int, sync: bool) -> FakeJob:
        if len(body) > limit:
            raise _Reject(413, f"request body exceeds {limit} bytes")
        if not isinstance(payload, dict) or not isinstance(payload.get("input"), dict):
            raise _Reject(400, "body must be a JSON object with an 'input' object")
        policy = payload.get("policy", {})
        if not isinstance(policy, dict):
            raise _Reject(400, "'policy' must be an object")
        webhook = payload.get("webhook")
        if webhook is not None and not (
            isinstance(webhook, str) and webhook.startswith(("http://", "https://"))
        ):
            raise _Reject(400, "'webhook' must be an http(s) URL")
        now = time.monotonic()
        job_input = payload["input"]
        width, height, batch = plan_images(job_input)
        job = FakeJob(
            id=f"sync-{uuid.uuid4()}-u1" if sync else f"{uuid.uuid4()}-u1",
            input=job_input if self.record_bodies else _without_image_data(job_input),
            policy=policy,
            outcome=self._next_outcome(),
            submitted_at=now,
            retention=min(self.retention, RUNSYNC_RETENTION) if sync else self.retention,
            width=width,
            height=height,
            batch_size=batch,
            webhook=webhook,
        )
        self._schedule(job, now)
        self.jobs[job.id] = job
        self._job_signal.fire()
        if webhook is not None:
            task = asyncio.create_task(self._call_webhook(job, webhook))
            self._webhook_tasks.add(task)
            task.add_done_callback(self._webhook_tasks.discard)
        return job

    async def _call_webhook(self, job: FakeJob, url: str) -> None:
        """When the job ends, POST its `/status` JSON to `url`; retry until one answer is 200."""
        now = time.monotonic()
        while not job.is_terminal(now):
            if self.jobs.get(job.id) is not job:
                return  # purged from the queue: it never ends
            await self._job_signal.wait(job.completed_at - now)
            now = time.monotonic()
        body = self._status_body(job, now)
        for attempt in range(1 + WEBHOOK_RETRIES):
            if attempt:
                await asyncio.sleep(self.webhook_retry_delay)
            fault = self._webhook_faults.popleft() if self._webhook_faults else None
            if fault == "never":
                return
            answer = None if fault == "drop" else await self._post_webhook(url, body)
            self._record_webhook(job, url, attempt, body, answer)
            if fault == "duplicate" and answer == 200:
                self._record_webhook(job, url, attempt, body, await self._post_webhook(url, body))
            if answer == 200:
                return

    async def _post_webhook(self, url: str, body: Any) -> int | None:
        if self._webhook_session is None:
            self._webhook_session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT)
            )
        try:
            async with self._webhook_session.post(url, json=body) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError):
            return None

    def _record_webhook(
        self, job: FakeJob, url: str, attempt: int, body: Any, answer: int | None
    ) -> None:
        self.webhook_calls.append(WebhookCall(job.id, url, attempt, body, answer, time.monotonic()))
        self._webhook_signal.fire()

    def _next_outcome(self) -> Outcome:
        return self._script.popleft() if self._script else self.default_outcome

    def _schedule(self, job: FakeJob, now: float) -> None:
        """Queue the job's current attempt at `now`, per its outcome's delays."""
        job.queued_at = now
        if self.job_runner is not None:
            job.started_at = job.completed_at = math.inf
            self.job_runner(job)
            return
        if job.outcome.status == "HANG":
            job.started_at = job.completed_at = math.inf
            return
        queue_delay = job.outcome.queue_delay
        self._schedule_run(job, now + (self.queue_delay if queue_delay is None else queue_delay))

    def _schedule_run(self, job: FakeJob, start: float) -> None:
        """Start the run at `start`; a run longer than executionTimeout ends TIMED_OUT."""
        job.started_at = start
        run = math.inf if job.outcome.status == "STUCK" else self._run_delay(job.outcome)
        if run > job.execution_timeout:
            job.completed_at = start + job.execution_timeout
            job.final_status = "TIMED_OUT"
        else:
            job.completed_at = start + run
            job.final_status = job.outcome.terminal_status

    def _run_delay(self, outcome: Outcome) -> float:
        if outcome.run_delay is not None:
            return outcome.run_delay
        jitter = self._rng.uniform(-self.run_jitter, self.run_jitter) if self.run_jitter else 0.0
        return max(0.0, self.run_delay + jitter)

    def _live_job(self, job_id: str, now: float) -> FakeJob:
        job = self.jobs.get(job_id)
        if job is None or job.expired(now):
            raise _Reject(404, "job not found")
        return job

    def _op_status(self, job_id: str) -> dict[str, Any]:
        now = time.monotonic()
        job = self._live_job(job_id, now)
        job.status_reads += 1
        return self._status_body(job, now)

    async def _op_status_sync(self, request: web.Request, job_id: str) -> dict[str, Any]:
        """`/status` held until the job is terminal or the wait (1-90 s) runs out."""
        wait_ms = _as_int(request.query.get("wait")) or STATUS_SYNC_MAX_WAIT_MS
        wait_ms = min(max(wait_ms, STATUS_SYNC_MIN_WAIT_MS), STATUS_SYNC_MAX_WAIT_MS)
        now = time.monotonic()
        job = self._live_job(job_id, now)
        deadline = now + wait_ms / 1000 * self.status_sync_time_scale
        while not job.is_terminal(now) and now < deadline and self.jobs.get(job_id) is job:
            await self._job_signal.wait(min(job.completed_at, deadline) - now)
            now = time.monotonic()
        job = self._live_job(job_id, now)
        job.status_reads += 1
        return self._status_body(job, now)

    async def _op_runsync(self, request: web.Request, body: bytes, payload: Any) -> dict[str, Any]:
        wait_ms = _as_int(request.query.get("wait")) or DEFAULT_RUNSYNC_WAIT_MS
        job = self._submit(body, payload, limit=RUNSYNC_BODY_LIMIT, sync=True)
        deadline = job.submitted_at + wait_ms / 1000
        now = time.monotonic()
        while not job.is_terminal(now) and now < deadline and job.id in self.jobs:
            await self._job_signal.wait(min(job.completed_at, deadline) - now)
            now = time.monotonic()
        return self._status_body(self._live_job(job.id, now), now)

    def _op_cancel(self, job_id: str) -> dict[str, Any]:
        now = time.monotonic()
        job = self._live_job(job_id, now)
        if not job.is_terminal(now):
            if job.started_at > now:
                job.started_at = math.inf
            job.completed_at = now
            job.final_status = "CANCELLED"
            job.cancelled = True
            self._job_signal.fire()
        return {"id": job.id, "status": job.status_at(now)}

    def _op_retry(self, job_id: str) -> dict[str, Any]:
        now = time.monotonic()
        job = self._live_job(job_id, now)
        status = job.status_at(now)
        if status not in ("FAILED", "TIMED_OUT"):
            raise _Reject(400, f"job is {status}; only FAILED or TIMED_OUT jobs can be retried")
        job.retries += 1
        job.outcome = self._next_outcome()
        self._schedule(job, now)
        self._job_signal.fire()
        return {"id": job.id, "status": "IN_QUEUE"}

    def _purge_queue(self) -> dict[str, Any]:
        now = time.monotonic()
        queued = [
            job.id
            for job in self.jobs.values()
            if not job.expired(now) and job.status_at(now) == "IN_QUEUE"
        ]
        for job_id in queued:
            del self.jobs[job_id]
        if queued:
            self._job_signal.fire()
        return {"removed": len(queued), "status": "completed"}

    def _health(self) -> dict[str, Any]:
        now = time.monotonic()
        counts = Counter(job.status_at(now) for job in self.jobs.values() if not job.expired(now))
        jobs = {
            "completed": counts["COMPLETED"],
            "failed": counts["FAILED"] + counts["TIMED_OUT"],
            "inProgress": counts["IN_PROGRESS"],
            "inQueue": counts["IN_QUEUE"],
            "retried": sum(1 for job in self.jobs.values() if job.retries),
        }
        return self.garbage.health_body({"jobs": jobs, "workers": dict(self.workers)})

    def _status_body(self, job: FakeJob, now: float) -> dict[str, Any]:
        """The /status answer for `job` at `now`."""
        status = job.status_at(now)
        outcome = job.outcome
        terminal = status in TERMINAL_STATUSES
        body: dict[str, Any] = {"id": job.id, "status": status}
        if not terminal and outcome.unknown_status:
            body["status"] = outcome.unknown_status
        if job.started_at <= now:
            body["delayTime"] = _ms(job.started_at - job.queued_at)
            body["workerId"] = WORKER_ID
            if terminal:
                body["executionTime"] = _ms(job.completed_at - job.started_at)
        if job.retries:
            body["retries"] = job.retries
        if status == "IN_PROGRESS" and outcome.progress_output is not None:
            body["output"] = outcome.progress_output
        elif status in ("COMPLETED", "FAILED") and job.reported is not None:
            body.update(job.reported)
        elif status == "COMPLETED":
            body["output"] = self._output(job)
        elif status == "FAILED":
            body["error"] = outcome.error or ERROR_JOB_PROCESSING
            if body["error"] == ERROR_JOB_PROCESSING:
                body["output"] = {"details": outcome.details or [DETAIL_CPU_OUT_OF_MEMORY]}
        elif terminal and outcome.error:
            body["error"] = outcome.error
        return self.garbage.status_body(body)

    def _job_images(self, job: FakeJob) -> list[_Encoded]:
        outcome = job.outcome
        count = job.batch_size if outcome.image_count is None else outcome.image_count
        webp = outcome.output_format == "webp"
        return [
            self._images.get(job.width, job.height, index, webp=webp, noise=outcome.noise)
            for index in range(count)
        ]

    def _output(self, job: FakeJob) -> dict[str, Any]:
        """A COMPLETED job's `output`, in the shape its outcome's output_format names."""
        fmt = job.outcome.output_format
        if fmt == "legacy_error":
            return {"status": "error", "message": LEGACY_ERROR_MESSAGE}
        if fmt == "no_images":
            return {"status": "success_no_images", "images": []}
        images = self._job_images(job)
        if fmt == "legacy_message":
            return {"status": "success", "message": images[0].b64 if images else ""}
        if fmt == "bare_base64":
            return {"images": [image.b64 for image in images]}
        if fmt == "data_uri":
            return {"images": [f"data:{image.mime};base64,{image.b64}" for image in images]}
        output: dict[str, Any] = {"images": self._image_entries(job, images)}
        if job.outcome.warnings:
            output["errors"] = list(job.outcome.warnings)
        return output

    def _image_entries(self, job: FakeJob, images: list[_Encoded]) -> list[dict[str, str]]:
        fmt = job.outcome.output_format
        entries = []
        for number, image in enumerate(images, start=1):
            filename = f"ComfyUI_{number:05d}_.{image.ext}"
            if fmt == "s3_url":
                kind, data = "s3_url", self._publish(f"{job.id}-{number}.{image.ext}", image)
            elif fmt == "local_path":
                kind, data = "s3_url", f"simulated_uploaded/{job.id[:8]}{number:02d}.{image.ext}"
            else:
                kind, data = "base64", image.b64
            entries.append({"filename": filename, "type": kind, "data": data})
        return entries

    def serve(self, key: str, data: bytes, content_type: str = "image/png") -> str:
        """Serve raw bytes at GET /s3/{key} (any content: an image, a secret, junk); its URL."""
        return self._publish(key, _Encoded(data, "", content_type, key.rsplit(".", 1)[-1]))

    def redirect(self, key: str, location: str) -> str:
        """Answer GET /s3/{key} with a 302 to `location`; the URL that redirects."""
        self.garbage.redirects[key] = location
        return f"{self.base_url}/s3/{key}"

    def _publish(self, key: str, image: _Encoded) -> str:
        """Store an image for GET /s3/{key} and return its URL (the presigned-URL stand-in)."""
        self._s3[key] = image
        return f"{self.base_url}/s3/{key}"

    def _serve_s3(self, path: str) -> web.Response:
        key = path.removeprefix("/s3/")
        if key in self.garbage.redirects:
            raise web.HTTPFound(self.garbage.redirects[key])
        image = self._s3.get(key)
        if image is None:
            raise _Reject(404, "NoSuchKey")
        return web.Response(body=image.data, content_type=image.mime)


# ----- garbage in answers: fault injection for the bot's boundary checks ----------------------

MISSING: Any = object()  # a field value meaning "leave this field out of the answer"


@dataclass
class Garbage:
    """Fields overwritten (MISSING: removed) in status answers while the job is in `when`."""

    fields: dict[str, Any]
    when: frozenset[str] | None = None
    times: int | None = None


class GarbageFaults:
    """What `FakeRunPod.garble*` scripted; the fake passes every answer body through it."""

    def __init__(self) -> None:
        self.status: list[Garbage] = []
        self.health: dict[str, Any] | None = None
        self.redirects: dict[str, str] = {}
        self.garbled = 0

    def status_body(self, body: dict[str, Any]) -> Any:
        for garbage in self.status:
            if garbage.times == 0 or (garbage.when and body.get("status") not in garbage.when):
                continue
            if garbage.times is not None:
                garbage.times -= 1
            self.garbled += 1
            return _overwrite(body, garbage.fields)
        return body

    def health_body(self, body: dict[str, Any]) -> Any:
        return body if self.health is None else _overwrite(body, self.health)


def _overwrite(body: dict[str, Any], fields: dict[str, Any]) -> Any:
    if "" in fields:  # the whole body replaced: a list, a string, null
        return fields[""]
    changed = {**body, **fields}
    return {key: value for key, value in changed.items() if value is not MISSING}


def garble(
    fake: FakeRunPod,
    when: str | Iterable[str] | None = "COMPLETED",
    times: int | None = None,
    **fields: Any,
) -> None:
    """Status answers (while a job is `when`; None: always) get `fields` for `times` answers.

    `garble(fake, executionTime=1e300)`; `garble(fake, id=MISSING)`; `garble(fake, **{"": []})`
    replaces the whole body.
    """
    statuses = None if when is None else frozenset([when] if isinstance(when, str) else when)
    fake.garbage.status.append(Garbage(dict(fields), statuses, times))


def garble_health(fake: FakeRunPod, **fields: Any) -> None:
    """Every /health answer gets `fields` (MISSING removes one; "" replaces the whole body)."""
    fake.garbage.health = dict(fields)


async def serve_tls(fake: FakeRunPod, ssl_context: ssl.SSLContext) -> int:
    """Also listen with TLS on another port of the same host (an https bucket); that port."""
    assert fake._runner is not None, "start the fake first"
    site = web.TCPSite(fake._runner, fake.host, 0, ssl_context=ssl_context)
    await site.start()
    return fake._runner.addresses[-1][1]


def images_output(*entries: Any) -> dict[str, Any]:
    """A worker-comfyui 5.x `output` holding these `images` entries."""
    return {"images": list(entries)}


def base64_entry(data: bytes, filename: str = "ComfyUI_00001_.png") -> dict[str, str]:
    return {"filename": filename, "type": "base64", "data": base64.b64encode(data).decode()}


def s3_entry(url: str, filename: str = "ComfyUI_00001_.png") -> dict[str, str]:
    return {"filename": filename, "type": "s3_url", "data": url}


def small_png(size: tuple[int, int] = (8, 8), color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def oversized_png(width: int = 13000, height: int = 13000, *, whole: bool = True) -> bytes:
    """A valid 1-bit PNG whose header declares width x height: tiny to send, huge to decode.

    `whole=False` cuts the image data short: only a header-first check refuses it for its size.
    """
    rows = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    data = b"".join(rows.compress(row * 256) for _ in range(height // 256))
    data += rows.compress(row * (height % 256)) + rows.flush()
    if not whole:
        data = data[:64]
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", data)
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


_METHODS = {
    "run": ("POST",),
    "runsync": ("POST",),
    "status": ("GET", "POST"),
    "status-sync": ("GET",),
    "cancel": ("POST",),
    "retry": ("POST",),
    "purge-queue": ("POST",),
    "health": ("GET",),
}


def _check_method(op: str, method: str) -> None:
    if method not in _METHODS[op]:
        raise _Reject(405, f"{method} not allowed for {op}")


def _without_image_data(job_input: dict[str, Any]) -> dict[str, Any]:
    """The input minus uploaded image payloads, so thousands of stored jobs stay small."""
    images = job_input.get("images")
    if not isinstance(images, list):
        return job_input
    names = [entry.get("name") for entry in images if isinstance(entry, dict)]
    return {**job_input, "images": [{"name": name} for name in names]}


def _parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve a fake RunPod Serverless endpoint.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default="test-runpod-key")
    parser.add_argument("--endpoint-id", default="test-endpoint")
    parser.add_argument("--queue-delay", type=float, default=0.0, help="seconds IN_QUEUE")
    parser.add_argument("--run-delay", type=float, default=0.0, help="seconds IN_PROGRESS")
    parser.add_argument("--run-jitter", type=float, default=0.0, help="± seconds per run")
    parser.add_argument("--seed", type=int, default=0, help="seed for the run jitter")
    parser.add_argument("--retention", type=float, default=1800.0, help="seconds after done")
    parser.add_argument("--output-format", default="current", choices=sorted(OUTPUT_FORMATS))
    parser.add_argument("--noise", action="store_true", help="incompressible noise images")
    parser.add_argument(
        "--no-record", action="store_true", help="keep no request bodies or input images"
    )
    parser.add_argument(
        "--no-status-sync", action="store_true", help="/status-sync answers 404, as if absent"
    )
    return parser.parse_args(None if argv is None else list(argv))


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeRunPod(
        api_key=args.api_key,
        endpoint_id=args.endpoint_id,
        queue_delay=args.queue_delay,
        run_delay=args.run_delay,
        retention=args.retention,
        host=args.host,
        port=args.port,
        run_jitter=args.run_jitter,
        seed=args.seed,
        record_bodies=not args.no_record,
    )
    fake.default_outcome = Outcome(output_format=args.output_format, noise=args.noise)
    if args.no_status_sync:
        fake.switch_off_status_sync()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with fake:
        print(f"READY {fake.api_base} {fake.endpoint_id} {fake.api_key}", flush=True)
        await stop.wait()


def main(argv: Iterable[str] | None = None) -> None:
    """Entry point of `python -m tests.fakes.fake_runpod`."""
    asyncio.run(_serve(_parse_args(argv)))


if __name__ == "__main__":
    main()
