"""`LeaseStore` on PostgreSQL: one statement per decision, so two processes never both hold a job."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping

from bot.jobs.model import IN_FLIGHT, JobState
from bot.postgres import PROCESS_PREFIX, AdvisoryLock, PostgresDatabase, PostgresTransaction

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

    async def claim_next(
        self,
        tx: PostgresTransaction,
        owner: str,
        *,
        caps: Mapping[str, int],
        per_member: int,
        skip: Collection[int],
        now: float,
        until: float,
    ) -> int | None:
        await tx.lock(AdvisoryLock.CLAIM)
        counts = await tx.fetchall(
            "SELECT endpoint, user_id, COUNT(*) AS n FROM jobs WHERE state = ANY($1::text[])"
            " GROUP BY endpoint, user_id",
            (_IN_FLIGHT,),
        )
        per_endpoint: Counter[str] = Counter()
        per_user: Counter[int] = Counter()
        for row in counts:
            per_endpoint[row["endpoint"]] += row["n"]
            per_user[row["user_id"]] += row["n"]
        open_endpoints = [name for name, cap in caps.items() if per_endpoint[name] < cap]
        if not open_endpoints:
            return None
        busy = [user for user, n in per_user.items() if n >= per_member]
        # The member whose last turn is oldest goes first, with their oldest job: a member just
        # served moves behind every other member waiting, whichever process accepted their jobs.
        # A job another transaction is changing (a cancel, say) is skipped, not waited for, and
        # so is one still waiting out the backoff of a refused submission.
        row = await tx.fetchone(
            "SELECT j.id, j.user_id FROM jobs AS j LEFT JOIN member_turns AS t"
            " ON t.user_id = j.user_id WHERE j.state = $1 AND j.endpoint = ANY($2::text[])"
            " AND NOT j.user_id = ANY($3::bigint[]) AND NOT j.id = ANY($4::bigint[])"
            " AND (j.not_before IS NULL OR j.not_before <= $5)"
            " ORDER BY COALESCE(t.turn, 0), j.id LIMIT 1 FOR UPDATE OF j SKIP LOCKED",
            (JobState.QUEUED.value, open_endpoints, busy, list(skip), now),
        )
        if row is None:
            return None
        await tx.execute(
            "INSERT INTO member_turns (user_id, turn)"
            " SELECT $1, COALESCE(MAX(turn), 0) + 1 FROM member_turns"
            " ON CONFLICT (user_id) DO UPDATE SET turn = excluded.turn",
            (row["user_id"],),
        )
        # The job goes to whoever sends it; the process that accepted it lets go at its renewal.
        await tx.execute(
            "INSERT INTO job_leases (job_id, owner, taken_at, expires_at) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (job_id) DO UPDATE SET owner = excluded.owner,"
            " taken_at = excluded.taken_at, expires_at = excluded.expires_at",
            (row["id"], owner, now, until),
        )
        return int(row["id"])

    async def queue_order(self) -> list[int]:
        # claim_next's order laid out whole: a member's turn comes round once per round, in the
        # order of (turn, oldest job) that claim_next follows, each turn taking their next job.
        rows = await self.db.fetchall(
            "SELECT j.id FROM jobs AS j LEFT JOIN member_turns AS t ON t.user_id = j.user_id"
            " WHERE j.state = $1 ORDER BY ROW_NUMBER() OVER (PARTITION BY j.user_id ORDER BY j.id),"
            " COALESCE(t.turn, 0), MIN(j.id) OVER (PARTITION BY j.user_id)",
            (JobState.QUEUED.value,),
        )
        return [int(r["id"]) for r in rows]

    async def in_flight(self) -> int:
        row = await self.db.fetchone(
            "SELECT COUNT(*) FROM jobs WHERE state = ANY($1::text[])", (_IN_FLIGHT,)
        )
        return int(row[0]) if row else 0

    async def processes(self) -> int:
        # A killed process's connections close with it, so it stops counting at once.
        row = await self.db.fetchone(
            "SELECT COUNT(DISTINCT application_name) FROM pg_stat_activity"
            " WHERE datname = current_database() AND starts_with(application_name, $1)",
            (PROCESS_PREFIX,),
        )
        return max(1, int(row[0])) if row else 1

    async def lapsed(self, *, now: float, ended: Collection[str]) -> list[int]:
        rows = await self.db.fetchall(
            "SELECT l.job_id FROM job_leases AS l JOIN jobs AS j ON j.id = l.job_id"
            " WHERE l.expires_at <= $1 AND NOT j.state = ANY($2::text[]) ORDER BY l.job_id",
            (now, list(ended)),
        )
        return [r["job_id"] for r in rows]

    async def held(self, owner: str) -> int:
        row = await self.db.fetchone("SELECT COUNT(*) FROM job_leases WHERE owner = $1", (owner,))
        return int(row[0]) if row else 0
