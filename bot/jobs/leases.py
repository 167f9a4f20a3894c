"""Leases: on a database shared by several bot processes, each unfinished job is carried forward
by the one process holding its lease; the lease is renewed while that process lives, and another
process takes the job over once it has run out. On SQLite (one process) every lease is its own."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Collection, Sequence

from bot.jobs.core import JobCore, every
from bot.jobs.model import TERMINAL, Job, JobState
from bot.ratelimit import TokenBucket
from bot.store.base import Transaction
from bot.store.leases import LeaseStore
from bot.supervisor import Loop

log = logging.getLogger(__name__)


def process_name() -> str:
    """This process among the bot's processes: host, pid and a random tail (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Leases:
    """The leases this process holds, taken on accepting or adopting a job, renewed in a loop."""

    def __init__(
        self,
        core: JobCore,
        store: LeaseStore,
        owner: str,
        *,
        budgets: Sequence[TokenBucket] = (),
    ) -> None:
        self.core = core
        self.store = store
        self.owner = owner
        # The RunPod request budgets, each split evenly between the processes alive.
        self.budgets = list(budgets)
        self.processes = 1
        self.held = 0
        # Wall-clock time this process last claimed a job: sent a queued one, or took one over.
        self.last_claim: float | None = None
        # Claims that found no job free to send: the caps full, or nothing queued.
        self.empty_claims = 0

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

    async def claim_next(self, skip: Collection[int]) -> Job | None:
        """The next queued job in member rotation across every process, moved to submitting and
        leased here; None while the caps are full or nothing waits."""
        core = self.core
        now = core.clock()
        caps = {name: core.limits.in_flight_on(name) for name in core.backends}

        async def claim(tx: Transaction) -> tuple[JobState, Job] | None:
            job_id = await self.store.claim_next(
                tx,
                self.owner,
                caps=caps,
                per_member=core.limits.member_max_in_flight,
                skip=skip,
                now=now,
                until=now + core.timing.lease_ttl,
            )
            if job_id is None:
                return None
            return await core.store.change_state(
                tx, job_id, {JobState.QUEUED}, JobState.SUBMITTING, fields={}, at=now, detail=None
            )

        changed = await core.db.write(claim)
        if changed is None:
            self.empty_claims += 1
            return None
        job = changed[1]
        self.last_claim = now
        log.info(
            "job %d queued -> submitting (guild=%s user=%s): claimed by %s",
            job.id,
            job.guild_id,
            job.user_id,
            self.owner,
        )
        return job

    async def queue_positions(self) -> dict[int, int]:
        """Every queued job's 1-based place in the order `claim_next` hands them out, whichever
        process accepted it."""
        return {job_id: place for place, job_id in enumerate(await self.store.queue_order(), 1)}

    async def in_flight(self) -> int:
        """Jobs being sent or at the backend, this process's and every other's."""
        return await self.store.in_flight()

    async def lapsed(self) -> list[int]:
        """Unfinished jobs whose process stopped renewing their leases: ready to be taken over."""
        ended = [state.value for state in TERMINAL]
        return await self.store.lapsed(now=self.core.clock(), ended=ended)

    async def renew_loop(self, loop: Loop) -> None:
        """Renew every lease a third of the way to its expiry, so one late renewal loses none."""
        await every(loop, lambda: self.core.timing.lease_ttl / 3, self.renew, "renewing job leases")

    async def budget_loop(self, loop: Loop) -> None:
        """Recount the processes every `budget_interval`, so a process joining or leaving changes
        every process's share within one interval (the fleet overshoots the budget until then)."""
        await every(
            loop,
            lambda: self.core.timing.budget_interval,
            self.share_budgets,
            "counting the bot processes (the budget share stays)",
        )

    async def share_budgets(self) -> None:
        """Take this process's share of each request budget: the whole over the processes alive."""
        processes = await self.store.processes()
        if processes != self.processes:
            log.info("%d bot process(es) share the RunPod request budget", processes)
        self.processes = processes
        for budget in self.budgets:
            budget.share(processes)

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
