"""Leases: on a database shared by several bot processes, each unfinished job is carried forward
by the one process holding its lease; the lease is renewed while that process lives, and another
process takes the job over once it has run out. On SQLite (one process) every lease is its own."""

from __future__ import annotations

import logging
import os
import secrets
import socket

from bot.jobs.core import JobCore
from bot.jobs.model import TERMINAL, Job
from bot.store.base import Transaction
from bot.store.leases import LeaseStore
from bot.supervisor import Loop

log = logging.getLogger(__name__)


def process_name() -> str:
    """This process among the bot's processes: host, pid and a random tail (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Leases:
    """The leases this process holds, taken on accepting or adopting a job, renewed in a loop."""

    def __init__(self, core: JobCore, store: LeaseStore, owner: str) -> None:
        self.core = core
        self.store = store
        self.owner = owner
        self.held = 0
        # Wall-clock time this process last claimed a job: sent a queued one, or took one over.
        self.last_claim: float | None = None
        self._refused: set[int] = set()
        self.refusals = 0  # claims refused because other processes filled the caps

    @property
    def shared(self) -> bool:
        """Whether other processes may carry the same jobs (so leases are stored and renewed)."""
        return self.store.shared

    async def take(self, tx: Transaction, job_id: int) -> bool:
        """Lease a job this process has just accepted, in the transaction that stores it."""
        now = self.core.clock()
        taken = await self.store.take(
            tx, self.owner, job_id, now=now, until=now + self.core.timing.lease_ttl
        )
        if taken and self.shared:
            self.held += 1
        return taken

    async def take_over(self, job: Job) -> bool:
        """Lease a job found in the database; False while another living process holds it."""
        if not self.shared:
            return True
        taken = await self.core.db.write(lambda tx: self.take(tx, job.id))
        if taken:
            self.last_claim = self.core.clock()
        return taken

    async def claim(self, job: Job, tx: Transaction) -> bool:
        """Whether a queued job may be sent now under the in-flight caps of every process."""
        limits = self.core.limits
        claimed = await self.store.claim(
            tx,
            job.id,
            job.user_id,
            endpoint=job.endpoint,
            total=limits.in_flight_on(job.endpoint),
            per_member=limits.member_max_in_flight,
        )
        if claimed:
            self._refused.discard(job.id)
            self.last_claim = self.core.clock()
        else:
            self._refused.add(job.id)
            self.refusals += 1
        return claimed

    def refused(self, job_id: int) -> bool:
        """Whether the job's last claim was refused for the caps (asked once: the answer is cleared)."""
        if job_id in self._refused:
            self._refused.discard(job_id)
            return True
        return False

    async def renew_loop(self, loop: Loop) -> None:
        """Renew every lease a third of the way to its expiry, so one late renewal loses none."""
        while True:
            loop.beat()
            await loop.sleep(self.core.timing.lease_ttl / 3)
            try:
                await self.renew()
            except Exception:
                log.exception("renewing job leases failed; trying again")

    async def renew(self) -> None:
        """Extend the leases; let go of jobs another process has taken over meanwhile."""
        core = self.core
        carried = core.queue.waiting_keys() | set(core.poller.tracked)
        kept = await self.store.renew(
            self.owner,
            until=core.clock() + core.timing.lease_ttl,
            finished=[state.value for state in TERMINAL],
        )
        self.held = len(kept)
        for job_id in sorted(carried - set(kept)):
            log.warning("job %d: its lease ran out and another process took it over", job_id)
            core.forget(job_id)
