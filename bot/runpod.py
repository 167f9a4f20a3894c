"""RunPod Serverless client (one shared httpx client) and worker-comfyui output decoding."""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from bot.config import Secret
from bot.images import EXTENSIONS, ImageFile, sniff_mime

log = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
MAX_DOWNLOAD_BYTES = 50 * 2**20

Sleep = Callable[[float], Awaitable[None]]


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


class OutputError(RunPodError):
    """A COMPLETED job whose output holds no usable images."""

    def __init__(self, message: str, *, kind: str = "no_images") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class JobStatus:
    """One answer from `/run`, `/runsync`, `/status`, `/cancel` or `/retry`."""

    id: str
    status: str
    delay_ms: int | None = None
    execution_ms: int | None = None
    output: Any = None
    error: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def parse(cls, data: Any) -> JobStatus:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise RunPodError("RunPod answered without a job id")
        error = data.get("error")
        if error is not None and not isinstance(error, str):
            error = json.dumps(error, default=str)
        return cls(
            id=data["id"],
            status=str(data.get("status", "UNKNOWN")).upper(),
            delay_ms=_optional_int(data.get("delayTime")),
            execution_ms=_optional_int(data.get("executionTime")),
            output=data.get("output"),
            error=error,
        )


def _optional_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Health:
    """`/health`: job counts and an open map of worker counts."""

    jobs: Mapping[str, int]
    workers: Mapping[str, int]

    @property
    def available_workers(self) -> int:
        return self.workers.get("idle", 0) + self.workers.get("ready", 0)

    @property
    def busy_workers(self) -> int:
        return self.workers.get("running", 0)

    @property
    def total_workers(self) -> int:
        return sum(self.workers.values())

    @property
    def cold(self) -> bool:
        """No worker can take a job now, so a queued job waits for one to start."""
        return self.available_workers == 0 and self.busy_workers == 0

    @classmethod
    def parse(cls, data: Any) -> Health:
        data = data if isinstance(data, dict) else {}
        return cls(_int_map(data.get("jobs")), _int_map(data.get("workers")))


def _int_map(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, int) and not isinstance(v, bool)}


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter; `Retry-After` wins when given."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


class RequestBudget:
    """A token bucket shared by every call to RunPod, so polling stays far below its limits."""

    def __init__(
        self, per_second: float, *, burst: int | None = None, clock=time.monotonic
    ) -> None:
        self.per_second = per_second
        # A small bucket: in any one second at most per_second + burst calls go out.
        self.burst = burst if burst is not None else max(1, int(per_second) // 10)
        self._clock = clock
        self._tokens = float(self.burst)
        self._updated = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                self._tokens = min(
                    self.burst, self._tokens + (now - self._updated) * self.per_second
                )
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.per_second)


@dataclass
class CallStats:
    """Counts of calls made, by operation: figures for benchmarks and `check`."""

    calls: dict[str, int] = field(default_factory=dict)

    def count(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1


class RunPodClient:
    """The RunPod Serverless endpoint API: run, runsync, status, cancel, retry, health, purge."""

    def __init__(
        self,
        *,
        api_base: str,
        endpoint_id: str,
        api_key: Secret,
        http: httpx.AsyncClient | None = None,
        retry: RetryPolicy | None = None,
        budget: RequestBudget | None = None,
        sleep: Sleep = asyncio.sleep,
        timeout: float = 30.0,
    ) -> None:
        self._base = f"{api_base.rstrip('/')}/{endpoint_id}"
        self._key = api_key
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
            headers={"User-Agent": "stablehand"},
        )
        self._retry = retry or RetryPolicy()
        self._budget = budget
        self._sleep = sleep
        self.stats = CallStats()

    def __repr__(self) -> str:
        return f"RunPodClient(base={self._base!r}, api_key={self._key!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def run(
        self,
        job_input: Mapping[str, Any],
        *,
        execution_timeout_ms: int | None = None,
        ttl_ms: int | None = None,
    ) -> JobStatus:
        """Queue a job. Raises `SubmitUncertain` when it may exist at RunPod without an answer."""
        body = _run_body(job_input, execution_timeout_ms, ttl_ms)
        try:
            data = await self._call("POST", "/run", op="run", json_body=body, resend_safe=False)
        except (RunPodServerError, RunPodTransportError) as exc:
            if provably_not_created(exc):
                raise
            raise SubmitUncertain(f"/run gave no usable answer: {exc}", status=exc.status) from exc
        try:
            return JobStatus.parse(data)
        except RunPodError as exc:
            # RunPod answered 2xx, so the job may well exist: never send it again.
            raise SubmitUncertain(f"/run answered without a usable job id: {exc}") from exc

    async def run_sync(
        self,
        job_input: Mapping[str, Any],
        *,
        wait_ms: int = 90_000,
        poll_interval: float = 1.0,
        max_wait: float = 600.0,
        execution_timeout_ms: int | None = None,
        ttl_ms: int | None = None,
    ) -> JobStatus:
        """Queue and hold up to `wait_ms`; if RunPod answers before the end, poll `/status` after."""
        body = _run_body(job_input, execution_timeout_ms, ttl_ms)
        try:
            data = await self._call(
                "POST",
                "/runsync",
                op="runsync",
                json_body=body,
                params={"wait": str(wait_ms)},
                resend_safe=False,
                read_timeout=wait_ms / 1000 + 30,
            )
        except (RunPodServerError, RunPodTransportError) as exc:
            if provably_not_created(exc):
                raise
            raise SubmitUncertain(
                f"/runsync gave no usable answer: {exc}", status=exc.status
            ) from exc
        status = JobStatus.parse(data)
        deadline = time.monotonic() + max_wait
        while not status.terminal and time.monotonic() < deadline:
            await self._sleep(poll_interval)
            status = await self.status(status.id)
        return status

    async def status(self, job_id: str) -> JobStatus:
        return JobStatus.parse(await self._call("GET", f"/status/{job_id}", op="status"))

    async def cancel(self, job_id: str) -> JobStatus:
        return JobStatus.parse(await self._call("POST", f"/cancel/{job_id}", op="cancel"))

    async def retry(self, job_id: str) -> JobStatus:
        return JobStatus.parse(await self._call("POST", f"/retry/{job_id}", op="retry"))

    async def health(self) -> Health:
        return Health.parse(await self._call("GET", "/health", op="health"))

    async def purge_queue(self) -> int:
        data = await self._call("POST", "/purge-queue", op="purge-queue")
        return int(data.get("removed", 0)) if isinstance(data, dict) else 0

    async def download(self, url: str, *, max_bytes: int = MAX_DOWNLOAD_BYTES) -> bytes:
        """Fetch an `s3_url` output (no RunPod key sent), refusing anything over `max_bytes`."""
        if not url.startswith(("https://", "http://")):
            raise OutputError(
                "the worker returned a local path instead of a URL", kind="bad_output"
            )
        for attempt in range(self._retry.attempts):
            try:
                async with self._http.stream("GET", url) as response:
                    if response.status_code >= 400:
                        raise RunPodError(
                            f"image download answered {response.status_code}",
                            status=response.status_code,
                        )
                    chunks, size = [], 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise OutputError(
                                "an output image is larger than the download cap", kind="too_large"
                            )
                        chunks.append(chunk)
                    return b"".join(chunks)
            except httpx.TransportError as exc:
                if attempt + 1 >= self._retry.attempts:
                    raise RunPodTransportError(
                        f"image download failed: {type(exc).__name__}", sent=True
                    ) from None
                await self._sleep(self._retry.delay(attempt))
        raise AssertionError("unreachable")

    async def _call(
        self,
        method: str,
        path: str,
        *,
        op: str,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
        resend_safe: bool = True,
        read_timeout: float | None = None,
    ) -> Any:
        """One operation with bounded retries; only resend-safe failures are retried for writes."""
        attempt = 0
        while True:
            try:
                return await self._once(method, path, op, json_body, params, read_timeout)
            except RunPodError as exc:
                attempt += 1
                if attempt >= self._retry.attempts or not _retryable(exc, resend_safe):
                    raise
                retry_after = exc.retry_after if isinstance(exc, RunPodRateLimited) else None
                delay = self._retry.delay(attempt - 1, retry_after)
                log.info("RunPod %s failed (%s); retrying in %.2fs", op, exc, delay)
                await self._sleep(delay)

    async def _once(
        self,
        method: str,
        path: str,
        op: str,
        json_body: Any,
        params: Mapping[str, str] | None,
        read_timeout: float | None,
    ) -> Any:
        if self._budget is not None:
            await self._budget.acquire()
        self.stats.count(op)
        headers = {"Authorization": f"Bearer {self._key.reveal()}"}
        extra = {"timeout": read_timeout} if read_timeout is not None else {}
        try:
            response = await self._http.request(
                method, self._base + path, json=json_body, params=params, headers=headers, **extra
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise RunPodTransportError(
                f"{op}: could not connect ({type(exc).__name__})", sent=False
            ) from None
        except httpx.TransportError as exc:
            raise RunPodTransportError(
                f"{op}: no answer ({type(exc).__name__})", sent=True
            ) from None
        return _decode_response(op, response)


def _run_body(
    job_input: Mapping[str, Any], execution_timeout_ms: int | None, ttl_ms: int | None
) -> dict[str, Any]:
    policy = {}
    if execution_timeout_ms is not None:
        policy["executionTimeout"] = int(execution_timeout_ms)
    if ttl_ms is not None:
        policy["ttl"] = int(ttl_ms)
    body: dict[str, Any] = {"input": dict(job_input)}
    if policy:
        body["policy"] = policy
    return body


def _decode_response(op: str, response: httpx.Response) -> Any:
    status = response.status_code
    if status == 401:
        raise RunPodAuthError(f"{op}: RunPod refused the API key (401)", status=401)
    if status == 404:
        raise RunPodNotFound(f"{op}: not found (404)", status=404)
    if status == 429:
        raise RunPodRateLimited(f"{op}: rate limited (429)", retry_after=_retry_after(response))
    if status >= 500:
        raise RunPodServerError(f"{op}: RunPod error {status}", status=status)
    if status >= 400:
        raise RunPodRejected(f"{op}: RunPod rejected the request ({status})", status=status)
    try:
        return response.json()
    except ValueError:
        raise RunPodServerError(
            f"{op}: RunPod answered {status} with a body that is not JSON", status=status
        ) from None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def _retryable(exc: RunPodError, resend_safe: bool) -> bool:
    if isinstance(exc, RunPodRateLimited):
        return True
    if isinstance(exc, RunPodServerError | RunPodTransportError):
        return resend_safe or provably_not_created(exc)
    return False


def provably_not_created(exc: RunPodError) -> bool:
    """Whether a failed `/run` certainly created no job: nothing was sent, or it was refused."""
    if isinstance(exc, RunPodRateLimited):
        return True
    if isinstance(exc, RunPodTransportError):
        return not exc.sent
    return exc.status == 503


async def decode_output(
    output: Any, *, expected: int, fetch: Callable[[str], Awaitable[bytes]]
) -> list[ImageFile]:
    """Every worker-comfyui output shape -> a list of images, or `OutputError` saying why not."""
    entries = _output_entries(output)
    if not entries:
        raise OutputError("the workflow finished without producing an image", kind="no_images")
    images = []
    for index, entry in enumerate(entries):
        data, filename = await _entry_bytes(entry, fetch)
        mime = sniff_mime(data)
        if mime is None:
            raise OutputError(f"output {index + 1} is not an image file", kind="bad_output")
        stem = filename.rsplit(".", 1)[0] if filename else f"image_{index + 1}"
        images.append(ImageFile(f"{stem}.{EXTENSIONS[mime]}", mime, data))
    if len(images) < expected:
        raise OutputError(
            f"the workflow produced {len(images)} of the {expected} images asked for",
            kind="missing_images",
        )
    return images


def _output_entries(output: Any) -> list[Any]:
    if output is None:
        return []
    if isinstance(output, list):
        return output
    if isinstance(output, str):
        return [output]
    if not isinstance(output, dict):
        raise OutputError("the worker's output has an unknown shape", kind="bad_output")
    if output.get("status") == "error":
        raise OutputError(f"the worker reported: {output.get('message')}", kind="worker")
    if isinstance(output.get("images"), list):
        return output["images"]
    if "message" in output:
        return [output["message"]]
    return []


async def _entry_bytes(
    entry: Any, fetch: Callable[[str], Awaitable[bytes]]
) -> tuple[bytes, str | None]:
    if isinstance(entry, dict):
        kind = entry.get("type", "base64")
        data = entry.get("data")
        filename = entry.get("filename") if isinstance(entry.get("filename"), str) else None
        if not isinstance(data, str):
            raise OutputError("an output entry has no data", kind="bad_output")
        if kind == "s3_url":
            return await fetch(data), filename
        return _b64(data), filename
    if isinstance(entry, str):
        if entry.startswith(("http://", "https://")):
            return await fetch(entry), None
        return _b64(entry), None
    raise OutputError("an output entry has an unknown shape", kind="bad_output")


def _b64(text: str) -> bytes:
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if ";base64" not in header:
            raise OutputError("an output data: URI is not base64", kind="bad_output")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise OutputError("an output image is not valid base64", kind="bad_output") from None
