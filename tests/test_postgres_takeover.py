"""A process that dies mid-job on PostgreSQL: another takes its jobs over as soon as the leases
run out, found by the takeover sweep, without waiting for the (much longer) reconcile interval."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from bot.images import ImageFile
from bot.jobs import Job, JobManager, JobState
from bot.polling import Timing
from bot.services import Services
from tests.conftest import HANG_GUARD, RecordingDelivery, wait_for_state
from tests.fakes.fake_runpod import FakeRunPod, Outcome
from tests.test_postgres_processes import (
    LEASED,
    SharedClock,
    _manager,
    sent_by,
    two_processes,
    until,
)

__all__ = ["two_processes"]  # the fixture, shared with the other two-process tests

# The reconciler would take an hour: only the sweep can find the lapsed lease.
SWEEPING = dataclasses.replace(LEASED, reconcile_interval=3600.0, takeover_interval=0.01)


def _pair(
    processes: tuple[Services, Services], timing: Timing = SWEEPING
) -> tuple[SharedClock, JobManager, JobManager]:
    """The two processes' job managers, on one wall clock the test can move."""
    clock = SharedClock()
    return (
        clock,
        _manager(processes[0], clock, "a", timing=timing),
        _manager(processes[1], clock, "b", timing=timing),
    )


async def test_a_dead_process_s_job_is_taken_over_once_its_lease_runs_out_not_at_reconcile(
    two_processes: tuple[Services, Services], fake_runpod: FakeRunPod
) -> None:
    first_services, second_services = two_processes
    clock, first, second = _pair(two_processes)
    first_told, second_told = RecordingDelivery(), RecordingDelivery()
    fake_runpod.script(Outcome(status="HANG"))
    await first.start(first_told)
    try:
        job, backend_id = await sent_by(first, first_services)
        await second.start(second_told)
        await first.stop()  # it dies: its lease stays until it runs out

        # Still leased: the sweep finds nothing to take over however often it looks.
        assert await second.leases.lapsed() == []
        clock.offset += LEASED.lease_ttl + 1
        assert await second.leases.lapsed() == [job.id]
        await until(lambda: job.id in second._tracked)

        fake_runpod.finish(backend_id, Outcome())
        await second_told.wait(job.id)
        done = await wait_for_state(second_services, job.id, "done")
        assert done.state is JobState.DONE and first_told.delivered == {}
        assert len(second_told.delivered[job.id]) == 1
        assert len(fake_runpod.requests_for("run")) == 1, "never sent twice"
        await second.leases.renew()
        assert await second.leases.lapsed() == [], "delivered: nothing left to take over"
    finally:
        await first.stop()
        await second.stop()


class StuckDelivery(RecordingDelivery):
    """A deliverer whose posts never finish: its process dies with the job being delivered."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()

    async def deliver(self, job: Job, images: Sequence[ImageFile]) -> None:
        self.started.set()
        await asyncio.Event().wait()


async def test_reconciles_at_once_deliver_a_taken_over_job_once(
    two_processes: tuple[Services, Services], fake_runpod: FakeRunPod
) -> None:
    first_services, second_services = two_processes
    clock, first, second = _pair(two_processes, dataclasses.replace(SWEEPING, shutdown_grace=0.0))
    stuck, told = StuckDelivery(), RecordingDelivery()
    await first.start(stuck)
    try:
        job, _ = await sent_by(first, first_services)
        await asyncio.wait_for(stuck.started.wait(), HANG_GUARD)
        await first.stop()  # it dies while posting the images
        await second.start(told)
        clock.offset += LEASED.lease_ttl + 1

        # The sweep, the periodic reconcile and a start may run together; four make a double
        # adoption, were they not one at a time, near certain.
        await asyncio.gather(*(second._reconcile() for _ in range(4)))
        await told.wait(job.id)
        await wait_for_state(second_services, job.id, "done")
        assert len(told.delivered[job.id]) == 1, "shown once"
    finally:
        await first.stop()
        await second.stop()


async def test_an_ended_job_not_yet_told_does_not_count_as_lapsed(
    two_processes: tuple[Services, Services], fake_runpod: FakeRunPod
) -> None:
    first_services = two_processes[0]
    clock, first, second = _pair(two_processes)
    fake_runpod.script(Outcome(status="HANG"))
    await first.start(RecordingDelivery())
    try:
        job, _ = await sent_by(first, first_services)
        await first.stop()
        # Ended, but its member never told (every notice failed) when its process went away:
        # the sweep cannot adopt it, so counting it would reconcile every few seconds for good.
        await first_services.db.write(
            lambda tx: tx.execute(
                "UPDATE jobs SET state = 'failed', delivered_at = NULL WHERE id = $1", (job.id,)
            )
        )
        clock.offset += LEASED.lease_ttl + 1
        assert await second.leases.lapsed() == []
    finally:
        await first.stop()
        await second.stop()
