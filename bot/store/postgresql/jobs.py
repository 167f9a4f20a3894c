"""`JobStore` on PostgreSQL, where processes change the same jobs at once."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from bot.images import ImageFile
from bot.jobs.model import TERMINAL, Job, JobState, NewJob
from bot.postgres import AdvisoryLock, PostgresDatabase, PostgresTransaction
from bot.prompt import GenerationRequest
from bot.store.jobs import (
    CHANGEABLE,
    NEW_JOB_COLUMNS,
    UNFINISHED,
    Event,
    job_from_row,
    new_job_row,
)

_TERMINAL = [state.value for state in TERMINAL]


class PostgresJobStore:
    """A state change locks its row (`FOR UPDATE`) before comparing, so of two processes moving
    the same job only one moves it and appends the event; the other waits, then sees the new state.

    `IS NOT DISTINCT FROM` matches a NULL guild (the command line), as SQLite's `IS ?` does.
    """

    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    async def unfinished_count(self, tx: PostgresTransaction, user_id: int) -> int:
        # Counting then adding is one decision: a second process accepting for anyone waits here.
        await tx.lock(AdvisoryLock.ADMISSION)
        row = await tx.fetchone(
            f"SELECT COUNT(*) FROM jobs WHERE user_id = $1 AND {UNFINISHED}", (user_id,)
        )
        assert row is not None
        return int(row[0])

    async def add(self, tx: PostgresTransaction, new: NewJob, *, at: float) -> Job:
        values = new_job_row(new, at)
        placeholders = ", ".join(f"${n}" for n in range(1, len(values) + 1))
        row = await tx.fetchone(
            f"INSERT INTO jobs ({NEW_JOB_COLUMNS}) VALUES ({placeholders}) RETURNING *", values
        )
        assert row is not None
        await tx.executemany(
            "INSERT INTO job_inputs (job_id, name, data) VALUES ($1, $2, $3)",
            [(row["id"], name, data) for name, data in new.input_images],
        )
        await _add_event(tx, row["id"], at, None, JobState.ACCEPTED, None)
        return job_from_row(row)

    async def change_state(
        self,
        tx: PostgresTransaction,
        job_id: int,
        from_states: Collection[JobState],
        to_state: JobState,
        *,
        fields: Mapping[str, Any],
        at: float,
        detail: str | None,
    ) -> tuple[JobState, Job] | None:
        unknown = set(fields) - CHANGEABLE
        if unknown:
            raise ValueError(f"not a field a state change sets: {', '.join(sorted(unknown))}")
        row = await tx.fetchone("SELECT state FROM jobs WHERE id = $1 FOR UPDATE", (job_id,))
        if row is None or row["state"] not in {s.value for s in from_states}:
            return None
        assignments = "".join(f", {name} = ${n}" for n, name in enumerate(fields, start=4))
        changed = await tx.fetchone(
            f"UPDATE jobs SET state = $1, updated_at = $2{assignments} WHERE id = $3 RETURNING *",
            (to_state.value, at, job_id, *fields.values()),
        )
        assert changed is not None
        await _add_event(tx, job_id, at, row["state"], to_state, detail)
        return JobState(row["state"]), job_from_row(changed)

    async def relocate(
        self, tx: PostgresTransaction, job_id: int, channel_id: int, message_id: int, *, at: float
    ) -> bool:
        row = await tx.fetchone(
            "UPDATE jobs SET channel_id = $1, message_id = $2, updated_at = $3 WHERE id = $4"
            " RETURNING state",
            (channel_id, message_id, at, job_id),
        )
        if row is None:
            return False
        await _add_event(
            tx,
            job_id,
            at,
            row["state"],
            row["state"],
            f"message moved to channel={channel_id} message={message_id}",
        )
        return True

    async def drop_inputs(self, tx: PostgresTransaction, job_id: int) -> None:
        await tx.execute("DELETE FROM job_inputs WHERE job_id = $1", (job_id,))

    async def add_outputs(
        self, tx: PostgresTransaction, job_id: int, images: Sequence[ImageFile]
    ) -> None:
        await tx.executemany(
            "INSERT INTO job_outputs (job_id, idx, filename, mime, data) VALUES ($1, $2, $3, $4, $5)",
            [(job_id, i, img.filename, img.mime, img.data) for i, img in enumerate(images)],
        )

    async def drop_outputs(self, tx: PostgresTransaction, job_id: int) -> None:
        await tx.execute("DELETE FROM job_outputs WHERE job_id = $1", (job_id,))

    async def mark_notified(self, tx: PostgresTransaction, job_id: int, *, at: float) -> None:
        await tx.execute(
            "UPDATE jobs SET delivered_at = $1 WHERE id = $2 AND delivered_at IS NULL",
            (at, job_id),
        )

    async def ended_among(self, tx: PostgresTransaction, job_ids: Sequence[int]) -> list[Job]:
        rows = await tx.fetchall(
            "SELECT * FROM jobs WHERE id = ANY($1::bigint[]) AND state = ANY($2::text[])"
            " ORDER BY id",
            (list(job_ids), _TERMINAL),
        )
        return [job_from_row(row) for row in rows]

    async def get(self, job_id: int) -> Job | None:
        row = await self.db.fetchone("SELECT * FROM jobs WHERE id = $1", (job_id,))
        return job_from_row(row) if row else None

    async def events(self, job_id: int) -> list[Event]:
        rows = await self.db.fetchall(
            "SELECT from_state, to_state, detail FROM job_events WHERE job_id = $1 ORDER BY id",
            (job_id,),
        )
        return [(r["from_state"], r["to_state"], r["detail"]) for r in rows]

    async def recent(
        self, guild_id: int | None, user_id: int | None, limit: int, offset: int = 0
    ) -> list[Job]:
        rows = await self.db.fetchall(
            "SELECT * FROM jobs WHERE guild_id IS NOT DISTINCT FROM $1"
            " AND ($2::bigint IS NULL OR user_id = $2) ORDER BY id DESC LIMIT $3 OFFSET $4",
            (guild_id, user_id, limit, offset),
        )
        return [job_from_row(r) for r in rows]

    async def active(self, guild_id: int | None, user_id: int | None) -> list[Job]:
        rows = await self.db.fetchall(
            f"SELECT * FROM jobs WHERE guild_id IS NOT DISTINCT FROM $1 AND {UNFINISHED}"
            " AND ($2::bigint IS NULL OR user_id = $2) ORDER BY id",
            (guild_id, user_id),
        )
        return [job_from_row(r) for r in rows]

    async def unfinished(self, *, undelivered: bool) -> list[Job]:
        rows = await self.db.fetchall(
            f"SELECT * FROM jobs WHERE {UNFINISHED}"
            + (" OR delivered_at IS NULL" if undelivered else "")
            + " ORDER BY id"
        )
        return [job_from_row(r) for r in rows]

    async def submit_attempts(self, job_id: int) -> int:
        row = await self.db.fetchone(
            "SELECT COUNT(*) FROM job_events WHERE job_id = $1 AND to_state = $2",
            (job_id, JobState.SUBMITTING.value),
        )
        return int(row[0]) if row else 1

    async def inputs(self, job_id: int) -> list[tuple[str, bytes]]:
        rows = await self.db.fetchall(
            "SELECT name, data FROM job_inputs WHERE job_id = $1", (job_id,)
        )
        return [(r["name"], r["data"]) for r in rows]

    async def outputs(self, job_id: int) -> list[ImageFile]:
        rows = await self.db.fetchall(
            "SELECT filename, mime, data FROM job_outputs WHERE job_id = $1 ORDER BY idx",
            (job_id,),
        )
        return [ImageFile(r["filename"], r["mime"], r["data"]) for r in rows]

    async def durations(self, limit: int) -> list[tuple[GenerationRequest, str, int]]:
        rows = await self.db.fetchall(
            "SELECT request, endpoint, execution_ms FROM jobs WHERE execution_ms IS NOT NULL"
            " ORDER BY id DESC LIMIT $1",
            (limit,),
        )
        return [
            (GenerationRequest.from_json(r["request"]), r["endpoint"], r["execution_ms"])
            for r in reversed(rows)
        ]


async def _add_event(
    tx: PostgresTransaction,
    job_id: int,
    at: float,
    from_state: str | None,
    to_state: str,
    detail: str | None,
) -> None:
    await tx.execute(
        "INSERT INTO job_events (job_id, at, from_state, to_state, detail)"
        " VALUES ($1, $2, $3, $4, $5)",
        (job_id, at, from_state, str(to_state), detail),
    )
