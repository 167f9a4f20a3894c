"""The jobs' rows: each job, its append-only events, its input images and its fetched outputs.

The state machine and its rules stay in `bot/jobs/`; this module reads and writes what they
decided. Every change of state is a compare-and-set that appends its event in the same
transaction, so the trail and the row never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

from bot.db import Database
from bot.db import Transaction as SqliteTransaction
from bot.images import ImageFile
from bot.jobs.model import TERMINAL, Job, JobState, NewJob
from bot.prompt import GenerationRequest
from bot.store.base import Transaction

# The fields a state change may set beside the state itself.
CHANGEABLE = frozenset(
    {
        "channel_id",
        "message_id",
        "backend_id",
        "submitted_at",
        "started_at",
        "finished_at",
        "delay_ms",
        "execution_ms",
        "not_before",
        "failure",
        "error",
        "delivered_at",
    }
)
Event = tuple[str | None, str, str | None]  # from state, to state, detail
# The columns an accepted job is stored with, in the order of `new_job_row`.
NEW_JOB_COLUMNS = (
    "guild_id, channel_id, user_id, state, template, request, workflow,"
    " cost, filesize_limit, created_at, updated_at, role_ids, endpoint"
)


class JobStore(Protocol):
    """The jobs' tables; every write joins the caller's transaction."""

    async def unfinished_count(self, tx: Transaction, user_id: int) -> int:
        """Jobs of this member that have not ended, in every server together."""
        ...

    async def add(self, tx: Transaction, new: NewJob, *, at: float) -> Job:
        """Store an accepted job, its input images and its first event."""
        ...

    async def change_state(
        self,
        tx: Transaction,
        job_id: int,
        from_states: Collection[JobState],
        to_state: JobState,
        *,
        fields: Mapping[str, Any],
        at: float,
        detail: str | None,
    ) -> tuple[JobState, Job] | None:
        """Compare-and-set: move the job from one of `from_states`; None if it was elsewhere."""
        ...

    async def relocate(
        self, tx: Transaction, job_id: int, channel_id: int, message_id: int, *, at: float
    ) -> bool:
        """Record a job's fresh progress message; False if there is no such job."""
        ...

    async def drop_inputs(self, tx: Transaction, job_id: int) -> None: ...

    async def add_outputs(
        self, tx: Transaction, job_id: int, images: Sequence[ImageFile]
    ) -> None: ...

    async def drop_outputs(self, tx: Transaction, job_id: int) -> None: ...

    async def mark_notified(self, tx: Transaction, job_id: int, *, at: float) -> None:
        """Record that the member was told how the job ended (once: a later call is ignored)."""
        ...

    async def ended_among(self, tx: Transaction, job_ids: Sequence[int]) -> list[Job]: ...

    async def get(self, job_id: int) -> Job | None: ...

    async def events(self, job_id: int) -> list[Event]: ...

    async def recent(
        self, guild_id: int | None, user_id: int | None, limit: int, offset: int = 0
    ) -> list[Job]:
        """A server's jobs, newest first, skipping `offset`; one member's, or everyone's (None)."""
        ...

    async def active(self, guild_id: int | None, user_id: int | None) -> list[Job]: ...

    async def unfinished(self, *, undelivered: bool) -> list[Job]:
        """Jobs not ended, oldest first; with `undelivered`, also ended ones never shown."""
        ...

    async def submit_attempts(self, job_id: int) -> int:
        """How many times the job has been handed to the backend, this time included."""
        ...

    async def inputs(self, job_id: int) -> list[tuple[str, bytes]]: ...

    async def outputs(self, job_id: int) -> list[ImageFile]: ...

    async def durations(self, limit: int) -> list[tuple[GenerationRequest, str, int]]:
        """The newest jobs' requests, endpoints and how long they ran (ms), oldest first."""
        ...


class SqliteJobStore:
    """`JobStore` on SQLite (`IS ?` matches a NULL guild: the command line)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def unfinished_count(self, tx: SqliteTransaction, user_id: int) -> int:
        row = await tx.fetchone(
            f"SELECT COUNT(*) FROM jobs WHERE user_id = ? AND {UNFINISHED}", (user_id,)
        )
        return int(row[0])

    async def add(self, tx: SqliteTransaction, new: NewJob, *, at: float) -> Job:
        job_id = await tx.insert(
            f"INSERT INTO jobs ({NEW_JOB_COLUMNS}) VALUES ({_placeholders(NEW_JOB_COLUMNS.split(','))})",
            new_job_row(new, at),
        )
        await tx.executemany(
            "INSERT INTO job_inputs (job_id, name, data) VALUES (?, ?, ?)",
            [(job_id, name, data) for name, data in new.input_images],
        )
        await _add_event(tx, job_id, at, None, JobState.ACCEPTED, None)
        return await _get(tx, job_id)

    async def change_state(
        self,
        tx: SqliteTransaction,
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
        row = await tx.fetchone("SELECT state FROM jobs WHERE id = ?", (job_id,))
        if row is None or row["state"] not in {s.value for s in from_states}:
            return None
        assignments = "".join(f", {name} = ?" for name in fields)
        changed = await tx.execute(
            f"UPDATE jobs SET state = ?, updated_at = ?{assignments} WHERE id = ? AND state = ?",
            (to_state.value, at, *fields.values(), job_id, row["state"]),
        )
        if changed != 1:
            return None
        await _add_event(tx, job_id, at, row["state"], to_state, detail)
        return JobState(row["state"]), await _get(tx, job_id)

    async def relocate(
        self, tx: SqliteTransaction, job_id: int, channel_id: int, message_id: int, *, at: float
    ) -> bool:
        row = await tx.fetchone("SELECT state FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            return False
        await tx.execute(
            "UPDATE jobs SET channel_id = ?, message_id = ?, updated_at = ? WHERE id = ?",
            (channel_id, message_id, at, job_id),
        )
        await _add_event(
            tx,
            job_id,
            at,
            row["state"],
            row["state"],
            f"message moved to channel={channel_id} message={message_id}",
        )
        return True

    async def drop_inputs(self, tx: SqliteTransaction, job_id: int) -> None:
        await tx.execute("DELETE FROM job_inputs WHERE job_id = ?", (job_id,))

    async def add_outputs(
        self, tx: SqliteTransaction, job_id: int, images: Sequence[ImageFile]
    ) -> None:
        await tx.executemany(
            "INSERT INTO job_outputs (job_id, idx, filename, mime, data) VALUES (?, ?, ?, ?, ?)",
            [(job_id, i, img.filename, img.mime, img.data) for i, img in enumerate(images)],
        )

    async def drop_outputs(self, tx: SqliteTransaction, job_id: int) -> None:
        await tx.execute("DELETE FROM job_outputs WHERE job_id = ?", (job_id,))

    async def mark_notified(self, tx: SqliteTransaction, job_id: int, *, at: float) -> None:
        await tx.execute(
            "UPDATE jobs SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL", (at, job_id)
        )

    async def ended_among(self, tx: SqliteTransaction, job_ids: Sequence[int]) -> list[Job]:
        ended = []
        for chunk in (job_ids[i : i + 500] for i in range(0, len(job_ids), 500)):
            rows = await tx.fetchall(
                f"SELECT * FROM jobs WHERE id IN ({_placeholders(chunk)}) "
                f"AND state IN ({_placeholders(TERMINAL)})",
                (*chunk, *TERMINAL),
            )
            ended += [job_from_row(row) for row in rows]
        return ended

    async def get(self, job_id: int) -> Job | None:
        row = await self.db.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return job_from_row(row) if row else None

    async def events(self, job_id: int) -> list[Event]:
        rows = await self.db.fetchall(
            "SELECT from_state, to_state, detail FROM job_events WHERE job_id = ? ORDER BY id",
            (job_id,),
        )
        return [(r["from_state"], r["to_state"], r["detail"]) for r in rows]

    async def recent(
        self, guild_id: int | None, user_id: int | None, limit: int, offset: int = 0
    ) -> list[Job]:
        rows = await self.db.fetchall(
            "SELECT * FROM jobs WHERE guild_id IS ? AND (? IS NULL OR user_id = ?)"
            " ORDER BY id DESC LIMIT ? OFFSET ?",
            (guild_id, user_id, user_id, limit, offset),
        )
        return [job_from_row(r) for r in rows]

    async def active(self, guild_id: int | None, user_id: int | None) -> list[Job]:
        sql = (
            f"SELECT * FROM jobs WHERE guild_id IS ? AND state IN ({_placeholders(_ACTIVE_STATES)})"
        )
        params: list[Any] = [guild_id, *_ACTIVE_STATES]
        if user_id is not None:
            sql += " AND user_id = ?"
            params.append(user_id)
        rows = await self.db.fetchall(sql + " ORDER BY id", params)
        return [job_from_row(r) for r in rows]

    async def unfinished(self, *, undelivered: bool) -> list[Job]:
        rows = await self.db.fetchall(
            f"SELECT * FROM jobs WHERE state NOT IN ({_placeholders(TERMINAL)})"
            + (" OR delivered_at IS NULL" if undelivered else "")
            + " ORDER BY id",
            tuple(TERMINAL),
        )
        return [job_from_row(r) for r in rows]

    async def submit_attempts(self, job_id: int) -> int:
        row = await self.db.fetchone(
            "SELECT COUNT(*) FROM job_events WHERE job_id = ? AND to_state = ?",
            (job_id, JobState.SUBMITTING.value),
        )
        return int(row[0]) if row else 1

    async def inputs(self, job_id: int) -> list[tuple[str, bytes]]:
        rows = await self.db.fetchall(
            "SELECT name, data FROM job_inputs WHERE job_id = ?", (job_id,)
        )
        return [(r["name"], r["data"]) for r in rows]

    async def outputs(self, job_id: int) -> list[ImageFile]:
        rows = await self.db.fetchall(
            "SELECT filename, mime, data FROM job_outputs WHERE job_id = ? ORDER BY idx", (job_id,)
        )
        return [ImageFile(r["filename"], r["mime"], r["data"]) for r in rows]

    async def durations(self, limit: int) -> list[tuple[GenerationRequest, str, int]]:
        rows = await self.db.fetchall(
            "SELECT request, endpoint, execution_ms FROM jobs WHERE execution_ms IS NOT NULL "
            "ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [
            (GenerationRequest.from_json(r["request"]), r["endpoint"], r["execution_ms"])
            for r in reversed(rows)
        ]


def new_job_row(new: NewJob, at: float) -> tuple[Any, ...]:
    """The values of an accepted job's row, in the order of `add`'s columns on every engine."""
    return (
        new.guild_id,
        new.channel_id,
        new.user_id,
        JobState.ACCEPTED.value,
        new.request.template,
        new.request.to_json(),
        json.dumps(new.workflow, separators=(",", ":"), ensure_ascii=False),
        new.cost,
        new.filesize_limit,
        at,
        at,
        json.dumps(list(new.role_ids)),
        new.endpoint,
    )


def job_from_row(row: Any) -> Job:
    """A job from its row, whichever engine read it."""
    return Job(
        id=row["id"],
        user_id=row["user_id"],
        guild_id=row["guild_id"],
        channel_id=row["channel_id"],
        message_id=row["message_id"],
        state=JobState(row["state"]),
        template=row["template"],
        request=GenerationRequest.from_json(row["request"]),
        workflow_json=row["workflow"],
        cost=row["cost"],
        filesize_limit=row["filesize_limit"],
        backend_id=row["backend_id"],
        created_at=row["created_at"],
        submitted_at=row["submitted_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        delay_ms=row["delay_ms"],
        execution_ms=row["execution_ms"],
        failure=row["failure"],
        error=row["error"],
        delivered_at=row["delivered_at"],
        role_ids=tuple(json.loads(row["role_ids"])),
        endpoint=row["endpoint"],
    )


async def _get(tx: SqliteTransaction, job_id: int) -> Job:
    return job_from_row(await tx.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,)))


async def _add_event(
    tx: SqliteTransaction,
    job_id: int,
    at: float,
    from_state: str | None,
    to_state: str,
    detail: str | None,
) -> None:
    await tx.insert(
        "INSERT INTO job_events (job_id, at, from_state, to_state, detail) VALUES (?, ?, ?, ?, ?)",
        (job_id, at, from_state, str(to_state), detail),
    )


def _placeholders(values: Iterable[Any]) -> str:
    return ", ".join("?" for _ in values)


_ACTIVE_STATES = tuple(s.value for s in JobState if s not in TERMINAL)
# Word for word the condition of the partial index `jobs_active`, so either engine uses that index.
UNFINISHED = "state NOT IN ({})".format(
    ", ".join(
        f"'{s.value}'"
        for s in (
            JobState.DONE,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.TIMED_OUT,
            JobState.EXPIRED,
        )
    )
)
