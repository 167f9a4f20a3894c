"""Leases: which bot process carries each unfinished job forward, renewed while that process lives.

On PostgreSQL several processes share the jobs; a job is followed only by its lease holder, and
another process takes it over once the lease has run out. SQLite is one process: every lease is
its own, so nothing is stored (`SoleProcessLeases`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Protocol

from bot.store.base import Transaction


class LeaseStore(Protocol):
    """The leases of jobs; times are the bot's wall clock (processes' clocks kept in step by NTP)."""

    # Whether several processes share the jobs, so that leases are stored at all.
    shared: bool

    async def take(
        self, tx: Transaction, owner: str, job_id: int, *, now: float, until: float
    ) -> bool:
        """Lease the job to `owner` if no other owner holds a lease that runs past `now`."""
        ...

    async def renew(self, owner: str, *, until: float, finished: Collection[str]) -> list[int]:
        """Extend `owner`'s leases and return their jobs; drop those of jobs ended and told
        (state in `finished`)."""
        ...

    async def held(self, owner: str) -> int:
        """How many jobs are leased to `owner`."""
        ...

    async def lapsed(self, *, now: float, ended: Collection[str]) -> list[int]:
        """Jobs not yet ended (state not in `ended`) whose lease ran out before `now`: the
        process carrying them stopped renewing. (An ended job its member was not told of is
        taken up by the next process to start, as on SQLite.)"""
        ...

    async def processes(self) -> int:
        """How many bot processes are connected to the database now (this one included)."""
        ...

    async def queue_order(self) -> list[int]:
        """Every queued job, in the order `claim_next` would hand them out with the caps open."""
        ...

    async def in_flight(self) -> int:
        """How many jobs are being sent or at the backend, in every process together."""
        ...

    async def claim_next(
        self,
        tx: Transaction,
        owner: str,
        *,
        caps: Mapping[str, int],
        per_member: int,
        skip: Collection[int],
        now: float,
        until: float,
    ) -> int | None:
        """The next queued job in member rotation that may go to the backend now, leased to
        `owner`: on an endpoint of `caps` with fewer jobs in flight than its cap in every process
        together, of a member with fewer than `per_member`, not in `skip`, not stored to wait
        past `now` (its `not_before`); one claim at a time."""
        ...


class SoleProcessLeases:
    """`LeaseStore` for SQLite: one process, so every lease is granted and none is stored."""

    shared = False

    async def take(
        self, tx: Transaction, owner: str, job_id: int, *, now: float, until: float
    ) -> bool:
        return True

    async def renew(self, owner: str, *, until: float, finished: Collection[str]) -> list[int]:
        return []

    async def held(self, owner: str) -> int:
        return 0

    async def lapsed(self, *, now: float, ended: Collection[str]) -> list[int]:
        return []

    async def processes(self) -> int:
        return 1

    async def queue_order(self) -> list[int]:
        # Never asked: the one process's fair queue knows every waiting job's place.
        return []

    async def in_flight(self) -> int:
        # Never asked: the one process holds every slot.
        return 0

    async def claim_next(
        self,
        tx: Transaction,
        owner: str,
        *,
        caps: Mapping[str, int],
        per_member: int,
        skip: Collection[int],
        now: float,
        until: float,
    ) -> int | None:
        # Never asked: the one process's fair queue holds every waiting job and every slot.
        return None
