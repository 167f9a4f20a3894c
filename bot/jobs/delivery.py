"""Delivery: a completed job's outputs stored, shown to its member, and the member told how it ended."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from dataclasses import asdict
from typing import Any

from bot import failures
from bot.backend import BackendError, BackendJob, OutputUnusable
from bot.db import Transaction, is_transient
from bot.failures import Failure
from bot.images import ImageFile
from bot.jobs.core import JobCore
from bot.jobs.model import (
    AT_BACKEND,
    DeliveryError,
    Job,
    JobState,
    JobUpdate,
    Settlement,
    UpdateKind,
)

log = logging.getLogger(__name__)


class Delivery:
    """Carries a job from its completed answer to its member, retrying what can pass."""

    def __init__(self, core: JobCore) -> None:
        self.core = core

    async def completed(self, job: Job, answer: BackendJob) -> None:
        core = self.core
        try:
            images = await core.backend(job).outputs(answer, expected=job.request.count)
        except OutputUnusable as exc:
            failure = {
                "no_images": failures.NO_IMAGES,
                "worker": failures.explain_worker_error(str(exc)),
                "forbidden_url": failures.FORBIDDEN_OUTPUT_URL,
            }.get(exc.kind, Failure(exc.kind, f"The GPU worker returned no usable image ({exc})."))
            await core.fail(job, failure, raw=f"{exc}; output={_shorten(answer.output)}")
            return
        except BackendError as exc:
            await core.fail(
                job,
                Failure("download", "The finished images could not be downloaded."),
                raw=f"{exc}; output={_shorten(answer.output)}",
            )
            return
        except Exception as exc:
            # Reading the same output again would fail the same way: fail once, never loop.
            await self._unusable(job, answer, exc)
            return

        async def store(tx: Transaction) -> None:
            await core.store.add_outputs(tx, job.id, images)

        now = core.clock()
        try:
            delivering = await core.transition(
                job.id,
                AT_BACKEND,
                JobState.DELIVERING,
                fields={
                    "delay_ms": answer.delay_ms if answer.delay_ms is not None else job.delay_ms,
                    "execution_ms": answer.execution_ms,
                    "finished_at": now,
                    "started_at": job.started_at or now,
                },
                detail=f"{len(images)} image{'s' if len(images) != 1 else ''}",
                after=store,
            )
        except Exception as exc:
            if is_transient(exc):
                raise  # the next poll finds it completed again
            await self._unusable(job, answer, exc)
            return
        if delivering is None:
            return
        core.poller.untrack(job.id)
        core.release_slot(job.id)
        if answer.execution_ms is not None:
            core.durations.observe(job.request, answer.execution_ms, job.endpoint)
        core.emit(JobUpdate(delivering, UpdateKind.DELIVERING))
        core.own(job.id, core.spawn_finishing(self.deliver(delivering), f"deliver-{job.id}"))

    async def _unusable(self, job: Job, answer: BackendJob, exc: Exception) -> None:
        log.error("job %d: its completed answer cannot be used", job.id, exc_info=exc)
        await self.core.fail(
            job,
            failures.UNUSABLE_OUTPUT,
            raw=f"{type(exc).__name__}: {exc}; answer={_shorten(asdict(answer), 2000)}",
        )

    async def deliver(self, job: Job) -> None:
        """Show the images; Discord being down or the database refusing only delays this."""
        core = self.core
        assert core.deliverer is not None
        timing = core.timing
        images: list[ImageFile] | None = None
        shown = False
        refusal: str | None = None  # why the images can never be shown, once that is known
        crashes = 0
        for attempt in itertools.count():
            if attempt:
                delay = timing.delivery_retry_delay * timing.growth ** min(attempt - 1, 10)
                await asyncio.sleep(min(delay, timing.delivery_max_backoff))
            try:
                current = await core.store.get(job.id)
                if current is None or current.state is not JobState.DELIVERING:
                    return
                if refusal is not None:
                    await self._undeliverable(current, refusal)
                    return
                if not shown:
                    images = images if images is not None else await core.store.outputs(job.id)
                    await core.deliverer.deliver(current, images)
                    shown = True
                await self._delivered(job.id)
                return
            except DeliveryError as exc:
                if exc.permanent:
                    refusal = str(exc)
                else:
                    log.info("job %d: delivery failed (%s); retrying", job.id, exc)
            except Exception as exc:
                if is_transient(exc):
                    log.warning("job %d: the database refused during delivery (%s)", job.id, exc)
                    continue
                # A bug, not an outage: retrying a few times is enough to be sure.
                crashes += 1
                log.exception("job %d: delivery crashed", job.id)
                if crashes >= timing.max_delivery_attempts:
                    refusal = f"{type(exc).__name__}: {exc}"

    async def _delivered(self, job_id: int) -> None:
        core = self.core
        done = await core.transition(
            job_id,
            {JobState.DELIVERING},
            JobState.DONE,
            fields={"delivered_at": core.clock()},
            settle=Settlement.CAPTURE,
            after=lambda tx: core.store.drop_outputs(tx, job_id),
        )
        if done is not None:
            core.emit(JobUpdate(done, UpdateKind.DONE))

    async def _undeliverable(self, job: Job, reason: str) -> None:
        core = self.core
        ended = await core.transition(
            job.id,
            {JobState.DELIVERING},
            JobState.FAILED,
            fields={
                "failure": failures.UNDELIVERABLE.message,
                "error": reason,
                "delivered_at": core.clock(),
            },
            detail="undeliverable",
            settle=Settlement.REFUND,
            after=lambda tx: core.store.drop_outputs(tx, job.id),
        )
        log.warning("job %d could not be delivered: %s", job.id, reason)
        if ended is not None:
            core.emit(JobUpdate(ended, UpdateKind.FAILED))

    async def notify(self, job: Job) -> None:
        """Show the member how a job ended, once; what still fails is retried on the next start."""
        core = self.core
        assert core.deliverer is not None
        timing = core.timing
        for attempt in range(timing.max_delivery_attempts):
            try:
                await core.deliverer.notify(job)
            except DeliveryError as exc:
                if exc.permanent:
                    log.warning("job %d: the member cannot be reached (%s)", job.id, exc)
                    await self._mark_notified(job.id)
                    return
                log.info("job %d: could not tell the member yet (%s)", job.id, exc)
                await asyncio.sleep(timing.delivery_retry_delay * timing.growth**attempt)
                continue
            except Exception:
                log.exception("job %d: telling the member crashed", job.id)
                break
            await self._mark_notified(job.id)
            return
        log.warning("job %d: the member could not be told how it ended", job.id)

    async def _mark_notified(self, job_id: int) -> None:
        at = self.core.clock()
        await self.core.db.write(lambda tx: self.core.store.mark_notified(tx, job_id, at=at))


def _shorten(value: Any, limit: int = 500) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "…"
