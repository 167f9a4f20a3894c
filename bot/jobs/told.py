"""Told, not asking: long-polls and webhooks tell the poller that a running job has ended.

A running job is long-polled when its backend can hold a status request open and a slot of its
endpoint is free; the rest are polled as before. With webhooks, a running job is polled only
around its expected finish, in case its call never comes. Every answer and every fault goes
through the poller's own handling, exactly as a poll's would.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from bot.backend import BackendError, BackendJob
from bot.completion import CompletionWatcher
from bot.webhooks import WebhookReceiver

if TYPE_CHECKING:
    from bot.jobs.poller import Poller, Tracked

log = logging.getLogger(__name__)


@runtime_checkable
class Telling(Protocol):
    """A backend that can tell, not only answer: the optional half of `GpuBackend`."""

    def long_polls(self) -> bool:
        """Whether a status request can be held open now (False once seen to be absent)."""
        ...

    async def wait_status(self, job_id: str, seconds: float) -> BackendJob:
        """The job's status once it ends, or when `seconds` run out."""
        ...

    def webhook_armed(self, job_id: str) -> bool:
        """Whether the backend will call this process's webhook receiver when the job ends."""
        ...

    def forget_webhook(self, job_id: str) -> None: ...


class Told:
    """The poller's ears: per-endpoint long-poll watchers and the webhook receiver."""

    def __init__(
        self,
        poller: Poller,
        *,
        long_polls: int = 0,
        webhooks: WebhookReceiver[BackendJob] | None = None,
    ) -> None:
        self._poller = poller
        self.long_polls = long_polls  # per endpoint; 0: none
        self._webhooks = webhooks
        self._watchers: dict[str, CompletionWatcher[BackendJob]] = {}
        self._job_ids: dict[str, int] = {}
        if webhooks is not None:
            webhooks.on_status = self._webhook_called

    async def start(self) -> None:
        if self._webhooks is not None:
            await self._webhooks.start()

    async def stop(self) -> None:
        for watcher in self._watchers.values():
            await watcher.stop()
        if self._webhooks is not None:
            await self._webhooks.stop()

    def long_polled(self) -> int:
        return sum(len(watcher) for watcher in self._watchers.values())

    def next_running(self, tracked: Tracked, interval: float) -> float | None:
        """When to poll a running job next, or None when a long-poll follows it."""
        job = tracked.job
        backend = self._poller.core.backend(job)
        if job.backend_id is None or not isinstance(backend, Telling):
            return interval
        self._job_ids[job.backend_id] = job.id
        if backend.webhook_armed(job.backend_id):
            return max(
                interval,
                self._until_expected_finish(tracked) + self._poller.core.timing.webhook_grace,
            )
        watcher = self._watcher(job.endpoint, backend)
        if watcher is not None and watcher.watch(job.backend_id):
            return None
        return interval

    def forget(self, tracked: Tracked) -> None:
        backend_id = tracked.job.backend_id
        if backend_id is None:
            return
        self._job_ids.pop(backend_id, None)
        watcher = self._watchers.get(tracked.job.endpoint)
        if watcher is not None:
            watcher.forget(backend_id)
        backend = self._poller.core.backend(tracked.job)
        if isinstance(backend, Telling):
            backend.forget_webhook(backend_id)

    def _until_expected_finish(self, tracked: Tracked) -> float:
        estimate = self._poller.core.estimate(tracked.job)
        expected = estimate.seconds + (2 * estimate.spread if estimate.learned else 0.0)
        started = tracked.started if tracked.started is not None else time.monotonic()
        return expected - (time.monotonic() - started)

    def _watcher(self, endpoint: str, backend: Telling) -> CompletionWatcher[BackendJob] | None:
        if self.long_polls <= 0:
            return None
        watcher = self._watchers.get(endpoint)
        if watcher is None:
            watcher = self._watchers[endpoint] = CompletionWatcher(
                lambda backend_id, wait: self._long_poll(backend, backend_id, wait),
                ended=lambda answer: answer.status.ended,
                on_status=self._answered,
                on_fault=self._fault,
                on_release=self._release,
                slots=self.long_polls,
                wait=self._poller.core.timing.long_poll_wait,
                available=backend.long_polls,
            )
        return watcher

    async def _long_poll(self, backend: Telling, backend_id: str, wait: float) -> BackendJob:
        # Held no longer than the job's execution deadline, which is then enforced on the answer.
        tracked = self._tracked(backend_id)
        if tracked is not None and tracked.started is not None:
            core = self._poller.core
            limit = core.execution_limit(tracked.job) + core.timing.execution_grace
            wait = min(wait, max(1.0, limit - (time.monotonic() - tracked.started)))
        return await backend.wait_status(backend_id, wait)

    def _tracked(self, backend_id: str) -> Tracked | None:
        job_id = self._job_ids.get(backend_id)
        if job_id is not None:
            tracked = self._poller.tracked.get(job_id)
            if tracked is not None and tracked.job.backend_id == backend_id:
                return tracked
        for tracked in self._poller.tracked.values():
            if tracked.job.backend_id == backend_id:
                return tracked
        return None

    async def _answered(self, backend_id: str, answer: BackendJob) -> None:
        tracked = self._tracked(backend_id)
        if tracked is None:
            return  # ended or cancelled meanwhile: old news
        try:
            await self._poller.answered(tracked, answer, None)
        except Exception as exc:
            await self._poller.crashed(tracked.job.id, exc)

    async def _fault(self, backend_id: str, exc: Exception) -> None:
        tracked = self._tracked(backend_id)
        if tracked is None:
            return
        try:
            if not isinstance(exc, BackendError):
                raise exc
            await self._poller.answered(tracked, None, exc)
        except Exception as crash:
            await self._poller.crashed(tracked.job.id, crash)

    async def _release(self, backend_id: str) -> None:
        tracked = self._tracked(backend_id)
        if tracked is not None:
            log.info("job %d: long-polls are off for its endpoint; polling it", tracked.job.id)
            self._poller.poll_soon(tracked.job.id)

    async def _webhook_called(self, key: str, answer: BackendJob) -> None:
        await self._answered(answer.id, answer)
