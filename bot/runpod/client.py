"""The RunPod Serverless endpoint client: one shared httpx client, bounded retries, a budget."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

import httpx

from bot.config import Secret
from bot.ratelimit import Turn
from bot.runpod.answers import JOB_ID, Health, JobStatus
from bot.runpod.budget import CallStats, RequestBudget, RetryPolicy, Sleep
from bot.runpod.downloads import (
    MAX_OUTPUT_IMAGE_BYTES,
    OutputDownloader,
    Resolve,
    megabytes,
    read_capped,
    resolve_host,
)
from bot.runpod.errors import (
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

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 40 * 2**20
# `/status-sync`'s wait, in ms, as RunPod bounds it.
STATUS_SYNC_MIN_WAIT_MS = 1_000
STATUS_SYNC_MAX_WAIT_MS = 90_000
# The long-poll's HTTP read may last its wait plus this much before it counts as unanswered.
STATUS_SYNC_READ_MARGIN = 15.0


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
        self._downloads = OutputDownloader(
            http=self._http,
            retry=self._retry,
            sleep=sleep,
            output_http_hosts=output_http_hosts,
            resolve=resolve,
            download_timeout=download_timeout,
        )
        self.stats = CallStats()
        # None until RunPod first answers `/status-sync`: True, or False once seen to be absent.
        self.status_sync_available: bool | None = None

    @property
    def budget(self) -> RequestBudget | None:
        """The request budget every call takes from (shared between processes on PostgreSQL)."""
        return self._budget

    async def reserve_run(self) -> Turn:
        """Wait until the budget allows a `/run`; `run(turn=...)` then goes out without waiting.

        A job is marked as being submitted only once nothing but the request itself is left, so
        a process that dies while the job waits for its turn has provably not sent it.
        """
        return Turn() if self._budget is None else await self._budget.take_turn()

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
        turn: Turn | None = None,
    ) -> JobStatus:
        """Queue a job. Raises `SubmitUncertain` when it may exist at RunPod without an answer.

        With `webhook`, RunPod POSTs the job's `/status` answer to that URL when it ends. A `turn`
        from `reserve_run` pays the first attempt; retries wait for the budget.
        """
        body = _run_body(job_input, execution_timeout_ms, ttl_ms)
        if webhook is not None:
            body["webhook"] = webhook
        try:
            data = await self._call(
                "POST", "/run", op="run", json_body=body, resend_safe=False, turn=turn
            )
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
        return await self._downloads.download(url, max_bytes=max_bytes)

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
        turn: Turn | None = None,
    ) -> Any:
        """One operation with bounded retries; only resend-safe failures are retried for writes."""
        attempt = 0
        while True:
            try:
                if turn is None or not turn.use():
                    await self._wait_for_budget()
                return await self._once(method, path, op, json_body, params, read_timeout)
            except RunPodError as exc:
                attempt += 1
                if attempt >= self._retry.attempts or not _retryable(exc, resend_safe):
                    raise
                retry_after = exc.retry_after if isinstance(exc, RunPodRateLimited) else None
                delay = self._retry.delay(attempt - 1, retry_after)
                log.info("RunPod %s failed (%s); retrying in %.2fs", op, exc, delay)
                await self._sleep(delay)

    async def _wait_for_budget(self) -> None:
        if self._budget is not None:
            await self._budget.acquire()

    async def _once(
        self,
        method: str,
        path: str,
        op: str,
        json_body: Any,
        params: Mapping[str, str] | None,
        read_timeout: float | None,
    ) -> Any:
        self.stats.count(op)
        headers = {"Authorization": f"Bearer {self._key.reveal()}"}
        extra = {"timeout": read_timeout} if read_timeout is not None else {}
        try:
            async with self._http.stream(
                method, self._base + path, json=json_body, params=params, headers=headers, **extra
            ) as response:
                _raise_for_status(op, response)
                body = await read_capped(response, MAX_RESPONSE_BYTES, _oversized_answer(op))
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


def _oversized_answer(op: str) -> Callable[[int], RunPodError]:
    return lambda limit: RunPodMalformed(op, f"longer than {megabytes(limit)}", "")


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
