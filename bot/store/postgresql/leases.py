"""`LeaseStore` on PostgreSQL: one statement per decision, so two processes never both hold a job."""

from __future__ import annotations

from collections.abc import Collection

from bot.jobs.model import IN_FLIGHT, JobState
from bot.postgres import AdvisoryLock, PostgresDatabase, PostgresTransaction

_IN_FLIGHT = [state.value for state in IN_FLIGHT]


class PostgresLeaseStore:
    shared = True

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def take(
        self, tx: PostgresTransaction, owner: str, job_id: int, *, now: float, until: float
    ) -> bool:
        # The upsert locks the row: of two processes taking over one expired lease, the second
        # sees the first's fresh expiry and takes nothing.
        row = await tx.fetchone(
            "INSERT INTO job_leases (job_id, owner, taken_at, expires_at) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (job_id) DO UPDATE SET owner = excluded.owner,"
            " taken_at = CASE WHEN job_leases.owner = excluded.owner THEN job_leases.taken_at"
            " ELSE excluded.taken_at END, expires_at = excluded.expires_at"
            " WHERE job_leases.owner = excluded.owner OR job_leases.expires_at <= $3"
            " RETURNING job_id",
            (job_id, owner, now, until),
        )
        return row is not None

    async def renew(self, owner: str, *, until: float, finished: Collection[str]) -> list[int]:
        async with self.db.transaction() as tx:
            await tx.execute(
                "DELETE FROM job_leases AS l USING jobs AS j WHERE l.job_id = j.id"
                " AND l.owner = $1 AND j.state = ANY($2::text[]) AND j.delivered_at IS NOT NULL",
                (owner, list(finished)),
            )
            kept = await tx.fetchall(
                "UPDATE job_leases SET expires_at = $2 WHERE owner = $1 RETURNING job_id",
                (owner, until),
            )
        return [r["job_id"] for r in kept]

    async def claim(
        self,
        tx: PostgresTransaction,
        job_id: int,
        user_id: int,
        *,
        endpoint: str,
        total: int,
        per_member: int,
    ) -> bool:
        await tx.lock(AdvisoryLock.CLAIM)
        row = await tx.fetchone(
            "SELECT COUNT(*) FILTER (WHERE endpoint = $3) AS total,"
            " COUNT(*) FILTER (WHERE user_id = $1) AS mine FROM jobs"
            " WHERE state = ANY($2::text[])",
            (user_id, _IN_FLIGHT, endpoint),
        )
        assert row is not None
        if row["total"] >= total or row["mine"] >= per_member:
            return False
        # A job another transaction is changing (a cancel, say) is skipped, not waited for.
        queued = await tx.fetchone(
            "SELECT id FROM jobs WHERE id = $1 AND state = $2 FOR UPDATE SKIP LOCKED",
            (job_id, JobState.QUEUED.value),
        )
        return queued is not None

    async def held(self, owner: str) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM job_leases WHERE owner = $1", (owner,))
        return int(row[0]) if row else 0
