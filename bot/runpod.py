"""RunPod Serverless client (one shared httpx client) and worker-comfyui output decoding."""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import ipaddress
import itertools
import json
import logging
import math
import random
import re
import socket
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from bot.config import Secret
from bot.images import EXTENSIONS, ImageError, ImageFile, PixelLimitError, verify_output_image
from bot.ratelimit import Clock, TokenBucket

log = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
# Ceilings on what RunPod may report: a job runs at most a day here, and waits at most its ttl.
MAX_EXECUTION_MS = 24 * 3600 * 1000
MAX_DELAY_MS = 7 * 24 * 3600 * 1000
MAX_WORKER_COUNT = 100_000
MAX_ERROR_CHARS = 16_000
# RunPod bounds a result at 20 MB (/runsync); twice that is garbage, not a bigger result.
MAX_RESPONSE_BYTES = 40 * 2**20
MAX_OUTPUT_IMAGE_BYTES = 50 * 2**20
MAX_OUTPUT_TOTAL_BYTES = 100 * 2**20
MAX_REDIRECTS = 3
MAX_URL_LENGTH = 8192
# `/status-sync`'s wait, in ms, as RunPod bounds it.
STATUS_SYNC_MIN_WAIT_MS = 1_000
STATUS_SYNC_MAX_WAIT_MS = 90_000
# The long-poll's HTTP read may last its wait plus this much before it counts as unanswered.
STATUS_SYNC_READ_MARGIN = 15.0
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
HOST_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")

Sleep = Callable[[float], Awaitable[None]]
Resolve = Callable[[str, int], Awaitable[list[str]]]


class Fetch(Protocol):
    """Downloads one output URL, refusing more than `max_bytes`."""

    def __call__(self, url: str, *, max_bytes: int) -> Awaitable[bytes]: ...


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, through the system resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


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


@dataclass(frozen=True)
class JobStatus:
    """One answer from `/run`, `/runsync`, `/status`, `/cancel` or `/retry`, checked on entry."""

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
    def parse(cls, data: Any, *, op: str = "status", expected_id: str | None = None) -> JobStatus:
        """Raise `RunPodMalformed` unless `data` is a job answer (about `expected_id`, if given)."""
        if not isinstance(data, dict):
            raise RunPodMalformed(op, "not a JSON object", data)
        job_id = data.get("id")
        if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
            raise RunPodMalformed(op, "no usable job id", data)
        if expected_id is not None and job_id != expected_id:
            raise RunPodMalformed(op, f"about job {job_id}, not {expected_id}", data)
        status = data.get("status", "UNKNOWN")
        if not isinstance(status, str) or not status.isascii() or not 0 < len(status) <= 64:
            raise RunPodMalformed(op, "status is not a short string", data)
        error = data.get("error")
        if error is not None and not isinstance(error, str):
            error = json.dumps(error, default=repr)
        return cls(
            id=job_id,
            status=status.upper(),
            delay_ms=_milliseconds(op, data, "delayTime", MAX_DELAY_MS),
            execution_ms=_milliseconds(op, data, "executionTime", MAX_EXECUTION_MS),
            # Kept raw: FAILED jobs carry the worker's details here, COMPLETED ones the images.
            output=data.get("output"),
            error=error[:MAX_ERROR_CHARS] if error is not None else None,
        )


def _milliseconds(op: str, data: dict[str, Any], key: str, ceiling: int) -> int | None:
    """An optional duration: a finite number of ms from 0 up to `ceiling`."""
    value = data.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= ceiling
    ):
        raise RunPodMalformed(op, f"{key} is not a duration from 0 to {ceiling} ms", data)
    return round(value)


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
        """Raise `RunPodMalformed` unless `data` holds sane counts."""
        if not isinstance(data, dict):
            raise RunPodMalformed("health", "not a JSON object", data)
        return cls(_counts(data, "jobs"), _counts(data, "workers"))


def _counts(data: dict[str, Any], key: str) -> dict[str, int]:
    """An open map of counts: every number in it must be a whole count from 0 to a sane cap."""
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise RunPodMalformed("health", f"{key} is not an object", data)
    counts = {}
    for name, count in value.items():
        if isinstance(count, bool) or not isinstance(count, int | float):
            continue  # an open map: a field of another kind is someone else's news
        if not (isinstance(count, int) and 0 <= count <= MAX_WORKER_COUNT):
            raise RunPodMalformed("health", f"{key}.{clip(name, 40)} is not a count", data)
        counts[str(name)] = count
    return counts


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


class RequestBudget(TokenBucket):
    """A token bucket shared by every call to RunPod, so polling stays far below its limits."""

    def __init__(
        self, per_second: float, *, burst: int | None = None, clock: Clock = time.monotonic
    ) -> None:
        # A small bucket: in any one second at most per_second + burst calls go out.
        burst = burst if burst is not None else max(1, int(per_second) // 10)
        super().__init__(per_second=per_second, burst=burst, clock=clock)


@dataclass
class CallStats:
    """Counts of calls made, by operation: figures for benchmarks and `check`."""

    calls: dict[str, int] = field(default_factory=dict)

    def count(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1


class RunPodClient:
    """The RunPod Serverless endpoint API the bot uses: run, status, cancel, health, downloads."""

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
        output_http_hosts: Collection[str] = (),
        resolve: Resolve = resolve_host,
        download_timeout: float = 120.0,
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
        self._output_http_hosts = frozenset(h.lower() for h in output_http_hosts)
        self._resolve = resolve
        self._download_timeout = download_timeout
        self.stats = CallStats()
        # None until RunPod first answers `/status-sync`: True, or False once seen to be absent.
        self.status_sync_available: bool | None = None

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
        webhook: str | None = None,
    ) -> JobStatus:
        """Queue a job. Raises `SubmitUncertain` when it may exist at RunPod without an answer.

        With `webhook`, RunPod POSTs the job's `/status` answer to that URL when it ends.
        """
        body = _run_body(job_input, execution_timeout_ms, ttl_ms)
        if webhook is not None:
            body["webhook"] = webhook
        try:
            data = await self._call("POST", "/run", op="run", json_body=body, resend_safe=False)
        except (RunPodServerError, RunPodTransportError) as exc:
            if provably_not_created(exc):
                raise
            raise SubmitUncertain(f"/run gave no usable answer: {exc}", status=exc.status) from exc
        try:
            return JobStatus.parse(data, op="run")
        except RunPodError as exc:
            # RunPod answered 2xx, so the job may well exist: never send it again.
            raise SubmitUncertain(f"/run answered without a usable job id: {exc}") from exc

    async def status(self, job_id: str) -> JobStatus:
        return await self._job_op("GET", "status", job_id)

    async def cancel(self, job_id: str) -> JobStatus:
        return await self._job_op("POST", "cancel", job_id)

    async def status_sync(self, job_id: str, *, wait_ms: int) -> JobStatus:
        """Long-poll: the status once the job ends or `wait_ms` runs out; `/status` if absent.

        Absence is learned once per endpoint: 405, or a 404 while `/status` knows the job.
        """
        if self.status_sync_available is False:
            return await self.status(job_id)
        if not JOB_ID.fullmatch(job_id):
            raise RunPodRejected(f"status-sync: {clip(job_id, 80)} is not a RunPod job id")
        wait_ms = min(max(int(wait_ms), STATUS_SYNC_MIN_WAIT_MS), STATUS_SYNC_MAX_WAIT_MS)
        try:
            data = await self._call(
                "GET",
                f"/status-sync/{job_id}",
                op="status-sync",
                params={"wait": str(wait_ms)},
                read_timeout=wait_ms / 1000 + STATUS_SYNC_READ_MARGIN,
            )
        except RunPodNotFound:
            # An expired job and a missing route both answer 404: `/status` tells them apart.
            status = await self.status(job_id)
            self._status_sync_absent(404)
            return status
        except RunPodRejected as exc:
            if exc.status != 405:
                raise
            self._status_sync_absent(405)
            return await self.status(job_id)
        status = JobStatus.parse(data, op="status-sync", expected_id=job_id)
        self.status_sync_available = True
        return status

    def _status_sync_absent(self, http_status: int) -> None:
        if self.status_sync_available is None:
            log.warning(
                "RunPod endpoint %s has no /status-sync (it answered %d): its jobs are "
                "followed with /status polls",
                self._base.rsplit("/", 1)[-1],
                http_status,
            )
            self.status_sync_available = False

    async def probe_status_sync(self) -> bool | None:
        """Whether the endpoint offers `/status-sync`, asked without a job: None if undecided."""
        try:
            await self._call(
                "GET",
                "/status-sync/stablehand-probe",
                op="status-sync",
                params={"wait": str(STATUS_SYNC_MIN_WAIT_MS)},
                read_timeout=STATUS_SYNC_MIN_WAIT_MS / 1000 + STATUS_SYNC_READ_MARGIN,
            )
        except RunPodRejected as exc:
            return False if exc.status == 405 else None
        except RunPodNotFound:
            return None
        return True

    async def _job_op(self, method: str, op: str, job_id: str) -> JobStatus:
        if not JOB_ID.fullmatch(job_id):
            raise RunPodRejected(f"{op}: {clip(job_id, 80)} is not a RunPod job id")
        data = await self._call(method, f"/{op}/{job_id}", op=op)
        return JobStatus.parse(data, op=op, expected_id=job_id)

    async def health(self) -> Health:
        return Health.parse(await self._call("GET", "/health", op="health"))

    async def download(self, url: str, *, max_bytes: int = MAX_OUTPUT_IMAGE_BYTES) -> bytes:
        """Fetch an `s3_url` output: https to public addresses only, no credentials, capped."""
        target = self._output_url(url)
        for attempt in range(self._retry.attempts):
            try:
                async with asyncio.timeout(self._download_timeout):
                    return await self._follow(target, max_bytes)
            except (httpx.TransportError, OSError, TimeoutError) as exc:
                if attempt + 1 >= self._retry.attempts:
                    raise RunPodTransportError(
                        f"image download failed: {type(exc).__name__}", sent=True
                    ) from None
                await self._sleep(self._retry.delay(attempt))
            except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
                # A hostile answer (bad encoding, unusable Location...) is an output problem.
                raise OutputError(
                    f"the worker's image URL gave an unusable answer ({type(exc).__name__})",
                    kind="bad_output",
                ) from None
        raise AssertionError("unreachable")

    async def _follow(self, url: httpx.URL, max_bytes: int) -> bytes:
        """GET `url`, following at most MAX_REDIRECTS redirects, each hop checked afresh."""
        for _ in range(MAX_REDIRECTS + 1):
            address = await self._public_address(url)
            request = httpx.Request(
                "GET",
                url.copy_with(host=address),
                # Hand-built: no client cookies or default headers, no key; one use per connection,
                # so a connection pinned for one host name is never reused for another.
                headers={"Host": url.netloc.decode("ascii"), "Connection": "close"},
                extensions={
                    "timeout": self._http.timeout.as_dict(),
                    **(
                        {"sni_hostname": url.raw_host.decode("ascii")}
                        if url.scheme == "https"
                        else {}
                    ),
                },
            )
            response = await self._http.send(request, stream=True, follow_redirects=False)
            try:
                if response.is_redirect:
                    url = self._output_url(str(url.join(response.headers.get("Location", ""))))
                    continue
                if response.status_code >= 400:
                    raise RunPodError(
                        f"image download answered {response.status_code}",
                        status=response.status_code,
                    )
                return await _read_capped(response, max_bytes, _too_large_image)
            finally:
                await response.aclose()
        raise OutputError("the worker's image URL redirects too many times", kind="bad_output")

    def _output_url(self, text: str) -> httpx.URL:
        """The URL if it may be fetched at all: https (or http to an allowed host), no userinfo."""
        if not text.startswith(("https://", "http://")):
            raise OutputError(
                "the worker returned a local path instead of a URL", kind="bad_output"
            )
        try:
            if len(text) > MAX_URL_LENGTH:
                raise ValueError("too long")
            url = httpx.URL(text)
            host = url.raw_host.decode("ascii").lower()
            port = url.port
        except (httpx.InvalidURL, ValueError, UnicodeError):
            raise OutputError(
                "the worker returned an image URL that cannot be parsed", kind="bad_output"
            ) from None
        if url.userinfo:
            raise OutputError("the worker's image URL carries credentials", kind="bad_output")
        if not (_hostname(host) or _ip_literal(host)) or not 0 < (port or 1) < 65536:
            raise OutputError("the worker's image URL names no valid host", kind="bad_output")
        if url.scheme == "http" and host not in self._output_http_hosts:
            raise OutputError(
                "the worker's image URL is plain http to a host not in WORKER_OUTPUT_HTTP_HOSTS",
                kind="forbidden_url",
            )
        return url

    async def _public_address(self, url: httpx.URL) -> str:
        """The address to connect to: resolved once and checked, so DNS cannot change it after."""
        host = url.raw_host.decode("ascii").lower()
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = await self._resolve(host, port)
        if not addresses:
            raise OSError(f"{host} resolved to no address")
        if host not in self._output_http_hosts and not all(map(_public_ip, addresses)):
            raise OutputError(
                "the worker's image URL points at a private or local address",
                kind="forbidden_url",
            )
        return addresses[0]

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
            async with self._http.stream(
                method, self._base + path, json=json_body, params=params, headers=headers, **extra
            ) as response:
                _raise_for_status(op, response)
                body = await _read_capped(response, MAX_RESPONSE_BYTES, _oversized_answer(op))
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise RunPodTransportError(
                f"{op}: could not connect ({type(exc).__name__})", sent=False
            ) from None
        except httpx.TransportError as exc:
            raise RunPodTransportError(
                f"{op}: no answer ({type(exc).__name__})", sent=True
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise RunPodMalformed(
                op, "an answer httpx could not read", type(exc).__name__
            ) from None
        return _decode_json(op, response.status_code, body)


async def _read_capped(
    response: httpx.Response, limit: int, too_large: Callable[[int], RunPodError]
) -> bytes:
    """The body, refused as soon as its running total passes `limit` (or its length says so)."""
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large(limit)
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _oversized_answer(op: str) -> Callable[[int], RunPodError]:
    return lambda limit: RunPodMalformed(op, f"longer than {_mb(limit)}", "")


def _too_large_image(limit: int) -> OutputError:
    return OutputError(f"an output image is over the {_mb(limit)} cap", kind="too_large")


def _mb(size: int) -> str:
    return f"{size / 2**20:.0f} MB" if size >= 2**20 else f"{size} bytes"


def _hostname(host: str) -> bool:
    """A DNS name, checked label by label (linear time whatever the input)."""
    labels = host.removesuffix(".").split(".")
    return len(host) <= 253 and all(HOST_LABEL.fullmatch(label) for label in labels)


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# Well-known NAT64 prefix: its addresses reach whatever IPv4 address they embed.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _public_ip(address: str) -> bool:
    """Whether `address` is a global unicast address (IPv4 inside IPv6 judged as IPv4)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            ip = embedded
    return ip.is_global and not ip.is_multicast


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


def _raise_for_status(op: str, response: httpx.Response) -> None:
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


def _decode_json(op: str, status: int, body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise RunPodServerError(
            f"{op}: RunPod answered {status} with a body that is not JSON", status=status
        ) from None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (ValueError, TypeError, OverflowError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


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
    output: Any,
    *,
    expected: int,
    fetch: Fetch,
    max_image_bytes: int = MAX_OUTPUT_IMAGE_BYTES,
    max_total_bytes: int = MAX_OUTPUT_TOTAL_BYTES,
) -> list[ImageFile]:
    """Every worker-comfyui output shape -> a list of verified images, or `OutputError` saying why.

    At most `expected` entries are used; bytes are capped per image and in total (running), and
    each still image is refused from its header alone when it has too many pixels.
    """
    entries = _output_entries(output)
    if not entries:
        raise OutputError("the workflow finished without producing an image", kind="no_images")
    wanted = max(1, expected)
    if len(entries) > wanted:
        log.warning(
            "the worker returned %d outputs for %d images asked for; using the first %d",
            len(entries),
            wanted,
            wanted,
        )
        entries = entries[:wanted]
    images: list[ImageFile] = []
    total = 0
    for index, entry in enumerate(entries):
        left = max_total_bytes - total
        try:
            data, filename = await _entry_bytes(entry, fetch, min(max_image_bytes, left))
        except OutputError as exc:
            if exc.kind == "too_large" and left < max_image_bytes:
                raise OutputError(
                    f"the output images together are over the {_mb(max_total_bytes)} cap",
                    kind="too_large",
                ) from None
            raise
        total += len(data)
        images.append(_verified(index, data, filename))
    if len(images) < expected:
        raise OutputError(
            f"the workflow produced {len(images)} of the {expected} images asked for",
            kind="missing_images",
        )
    return images


def _verified(index: int, data: bytes, filename: str | None) -> ImageFile:
    try:
        mime = verify_output_image(data)
    except PixelLimitError as exc:
        raise OutputError(f"output {index + 1} {exc}", kind="too_many_pixels") from None
    except ImageError as exc:
        raise OutputError(f"output {index + 1} {exc}", kind="bad_output") from None
    return ImageFile(f"{_safe_stem(filename, index)}.{EXTENSIONS[mime]}", mime, data)


def _safe_stem(filename: str | None, index: int) -> str:
    """A file name stem Discord shows as is: the worker's, cleaned, or image_N."""
    stem = (filename or "").rsplit(".", 1)[0]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[:64]
    return stem or f"image_{index + 1}"


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
        message = output.get("message")
        text = clip(message, 500) if message is not None else "no message"
        raise OutputError(f"the worker reported: {text}", kind="worker")
    if isinstance(output.get("images"), list):
        return output["images"]
    if "message" in output:
        return [output["message"]]
    return []


async def _entry_bytes(entry: Any, fetch: Fetch, max_bytes: int) -> tuple[bytes, str | None]:
    if isinstance(entry, dict):
        kind = entry.get("type", "base64")
        data = entry.get("data")
        filename = entry.get("filename") if isinstance(entry.get("filename"), str) else None
        if not isinstance(data, str):
            raise OutputError("an output entry has no data", kind="bad_output")
        if kind == "s3_url":
            return await fetch(data, max_bytes=max_bytes), filename
        return _b64(data, max_bytes), filename
    if isinstance(entry, str):
        if entry.startswith(("http://", "https://")):
            return await fetch(entry, max_bytes=max_bytes), None
        return _b64(entry, max_bytes), None
    raise OutputError("an output entry has an unknown shape", kind="bad_output")


def _b64(text: str, max_bytes: int) -> bytes:
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if ";base64" not in header:
            raise OutputError("an output data: URI is not base64", kind="bad_output")
    # Base64 is 4 characters per 3 bytes: refuse by length before decoding anything.
    if len(text) // 4 * 3 > max_bytes + 2:
        raise _too_large_image(max_bytes)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise OutputError("an output image is not valid base64", kind="bad_output") from None
    if len(data) > max_bytes:
        raise _too_large_image(max_bytes)
    return data
