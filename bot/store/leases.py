"""Leases: which bot process carries each unfinished job forward, renewed while that process lives.

On PostgreSQL several processes share the jobs; a job is followed only by its lease holder, and
another process takes it over once the lease has run out. SQLite is one process: every lease is
its own, so nothing is stored (`SoleProcessLeases`).
"""

from __future__ import annotations

from collections.abc import Collection
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

    async def claim(
        self,
        tx: Transaction,
        job_id: int,
        user_id: int,
        *,
        endpoint: str,
        total: int,
        per_member: int,
    ) -> bool:
        """Whether the queued job may go to the backend now: fewer than `total` jobs in flight on
        its endpoint in every process together, fewer than `per_member` of its member's (on
        every endpoint); one claim at a time."""
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

    async def claim(
        self,
        tx: Transaction,
        job_id: int,
        user_id: int,
        *,
        endpoint: str,
        total: int,
        per_member: int,
    ) -> bool:
        # The one process's fair queue already counts every job in flight.
        return True
