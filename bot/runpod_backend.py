"""RunPod Serverless as a `GpuBackend`: RunPod's status words, ids and errors end here."""

from __future__ import annotations

import base64
import contextlib
import logging
import secrets
from collections.abc import Iterator, Sequence
from typing import Any

from bot.backend import (
    BackendAuthError,
    BackendError,
    BackendHealth,
    BackendJob,
    BackendNotFound,
    BackendRejected,
    BackendStatus,
    BackendUnavailable,
    OutputUnusable,
    SubmitUncertain,
)
from bot.config import DEFAULT_ENDPOINT
from bot.images import ImageFile
from bot.ratelimit import Turn
from bot.runpod import (
    JobStatus,
    OutputError,
    RunPodAuthError,
    RunPodClient,
    RunPodError,
    RunPodNotFound,
    RunPodRejected,
    decode_output,
    provably_not_created,
)
from bot.webhooks import WebhookReceiver

log = logging.getLogger(__name__)

STATUSES = {
    "IN_QUEUE": BackendStatus.QUEUED,
    "IN_PROGRESS": BackendStatus.RUNNING,
    "RUNNING": BackendStatus.RUNNING,
    "COMPLETED": BackendStatus.COMPLETED,
    "FAILED": BackendStatus.FAILED,
    "CANCELLED": BackendStatus.CANCELLED,
    "TIMED_OUT": BackendStatus.TIMED_OUT,
}


class RunPodBackend:
    """A RunPod Serverless endpoint running worker-comfyui, seen through the `GpuBackend` seam."""

    def __init__(
        self,
        client: RunPodClient,
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        webhooks: WebhookReceiver[BackendJob] | None = None,
    ) -> None:
        self.client = client
        self.endpoint = endpoint  # its name among the bot's endpoints, for the log
        # With a receiver, each job's /run carries a webhook URL of its own.
        self.webhooks = webhooks
        self._webhook_keys: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"RunPodBackend({self.endpoint}, {self.client!r})"

    async def submit(
        self,
        workflow: dict[str, Any],
        images: Sequence[tuple[str, bytes]],
        *,
        execution_timeout_ms: int,
        ttl_ms: int,
        turn: Turn | None = None,
    ) -> BackendJob:
        job_input: dict[str, Any] = {"workflow": workflow}
        if images:
            # worker-comfyui's input.images: each uploaded to ComfyUI under its name first.
            job_input["images"] = [
                {"name": name, "image": base64.b64encode(data).decode("ascii")}
                for name, data in images
            ]
        try:
            answer = await self._run(job_input, execution_timeout_ms, ttl_ms, turn)
        except RunPodAuthError as exc:
            raise BackendAuthError(str(exc)) from exc
        except RunPodNotFound as exc:
            setting = (
                "RUNPOD_ENDPOINT_ID"
                if self.endpoint == DEFAULT_ENDPOINT
                else f"RUNPOD_ENDPOINTS ({self.endpoint}=...)"
            )
            log.error(
                "RunPod answered 404 to /run on endpoint %s: %s is wrong", self.endpoint, setting
            )
            raise BackendNotFound(str(exc)) from exc
        except RunPodRejected as exc:
            raise BackendRejected(str(exc)) from exc
        except RunPodError as exc:
            if provably_not_created(exc):
                raise BackendUnavailable(str(exc)) from exc
            raise SubmitUncertain(str(exc)) from exc
        return _job(answer)

    async def ready_to_submit(self) -> Turn:
        return await self.client.reserve_run()

    async def _run(
        self, job_input: dict[str, Any], execution_timeout_ms: int, ttl_ms: int, turn: Turn | None
    ) -> JobStatus:
        """`/run`, with a webhook URL of the job's own when webhooks are on."""
        if self.webhooks is None:
            return await self.client.run(
                job_input, execution_timeout_ms=execution_timeout_ms, ttl_ms=ttl_ms, turn=turn
            )
        key = secrets.token_hex(8)
        try:
            answer = await self.client.run(
                job_input,
                execution_timeout_ms=execution_timeout_ms,
                ttl_ms=ttl_ms,
                webhook=self.webhooks.arm(key),
                turn=turn,
            )
        except BaseException:
            self.webhooks.disarm(key)
            raise
        self.webhooks.expect(key, answer.id)
        self._webhook_keys[answer.id] = key
        return answer

    def long_polls(self) -> bool:
        return self.client.status_sync_available is not False

    async def wait_status(self, job_id: str, seconds: float) -> BackendJob:
        with _translated():
            return _job(await self.client.status_sync(job_id, wait_ms=round(seconds * 1000)))

    def webhook_armed(self, job_id: str) -> bool:
        key = self._webhook_keys.get(job_id)
        return key is not None and self.webhooks is not None and self.webhooks.armed(key)

    def forget_webhook(self, job_id: str) -> None:
        key = self._webhook_keys.pop(job_id, None)
        if key is not None and self.webhooks is not None:
            self.webhooks.disarm(key)

    async def status(self, job_id: str) -> BackendJob:
        with _translated():
            return _job(await self.client.status(job_id))

    async def cancel(self, job_id: str) -> None:
        with _translated():
            await self.client.cancel(job_id)

    async def health(self) -> BackendHealth:
        with _translated():
            health = await self.client.health()
        return BackendHealth(
            total_workers=health.total_workers,
            ready_workers=health.available_workers,
            busy_workers=health.busy_workers,
        )

    async def outputs(self, job: BackendJob, *, expected: int) -> list[ImageFile]:
        try:
            return await decode_output(job.output, expected=expected, fetch=self.client.download)
        except OutputError as exc:
            raise OutputUnusable(str(exc), kind=exc.kind) from exc
        except RunPodError as exc:
            raise BackendError(str(exc)) from exc


def _job(answer: JobStatus) -> BackendJob:
    status = STATUSES.get(answer.status)
    if status is None:
        # Not an ending: the job is followed on, bounded by the manager's own deadlines.
        log.info("RunPod job %s: unknown status %r", answer.id, answer.status)
        status = BackendStatus.UNKNOWN
    return BackendJob(
        id=answer.id,
        status=status,
        delay_ms=answer.delay_ms,
        execution_ms=answer.execution_ms,
        output=answer.output,
        error=answer.error,
    )


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """RunPod's errors as the seam's: 401 is auth, 404 not found, anything else passing."""
    try:
        yield
    except RunPodAuthError as exc:
        raise BackendAuthError(str(exc)) from exc
    except RunPodNotFound as exc:
        raise BackendNotFound(str(exc)) from exc
    except RunPodError as exc:
        raise BackendError(str(exc)) from exc


def webhook_receiver(public_url: str, listen: tuple[str, int]) -> WebhookReceiver[BackendJob]:
    """The receiver of RunPod's webhook calls: each body is checked as a `/status` answer."""
    host, port = listen
    return WebhookReceiver(
        public_url=public_url,
        host=host,
        port=port,
        parse=lambda data, expected: _job(
            JobStatus.parse(data, op="webhook", expected_id=expected)
        ),
        ended=lambda job: job.status.ended,
        invalid=(RunPodError,),
    )
