"""The gallery's rows: which image of which job was shared where, and which shares were removed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from bot.db import Database
from bot.db import Transaction as SqliteTransaction
from bot.store.base import Transaction


@dataclass(frozen=True)
class Share:
    id: int
    guild_id: int
    job_id: int
    image_index: int
    shared_by: int
    channel_id: int
    message_id: int | None  # None while the post is being sent
    shared_at: float
    removed_by: int | None
    removed_at: float | None


class GalleryStore(Protocol):
    async def claim(
        self,
        guild_id: int,
        job_id: int,
        image_index: int,
        *,
        shared_by: int,
        channel_id: int,
        at: float,
        stale_before: float,
    ) -> Share | None:
        """Reserve the image for one post; None if it is (or was) shared already.

        A claim never completed (its post not recorded) since before `stale_before` is taken over.
        """
        ...

    async def posted(self, share_id: int, message_id: int) -> None: ...

    async def release(self, share_id: int) -> None:
        """Forget a claim whose post failed, so the image can be shared again."""
        ...

    async def get(self, share_id: int) -> Share | None: ...

    async def of_image(self, job_id: int, image_index: int) -> Share | None: ...

    async def remove(self, tx: Transaction, share_id: int, *, removed_by: int, at: float) -> bool:
        """Mark a share removed, in the caller's transaction; False if it already was."""
        ...


COLUMNS = (
    "id, guild_id, job_id, image_index, shared_by, channel_id, message_id, shared_at, "
    "removed_by, removed_at"
)


def share_from_row(row: Any) -> Share:
    """A row of `gallery_shares` (its `COLUMNS`), of either engine."""
    return Share(**{name.strip(): row[name.strip()] for name in COLUMNS.split(",")})


class SqliteGalleryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(
        self,
        guild_id: int,
        job_id: int,
        image_index: int,
        *,
        shared_by: int,
        channel_id: int,
        at: float,
        stale_before: float,
    ) -> Share | None:
        async def once(tx: SqliteTransaction) -> int | None:
            taken = await tx.execute(
                "UPDATE gallery_shares SET shared_by = ?, channel_id = ?, shared_at = ? "
                "WHERE job_id = ? AND image_index = ? AND message_id IS NULL "
                "AND removed_at IS NULL AND shared_at < ?",
                (shared_by, channel_id, at, job_id, image_index, stale_before),
            )
            if taken:
                row = await tx.fetchone(
                    "SELECT id FROM gallery_shares WHERE job_id = ? AND image_index = ?",
                    (job_id, image_index),
                )
                return row["id"]
            existing = await tx.fetchone(
                "SELECT id FROM gallery_shares WHERE job_id = ? AND image_index = ?",
                (job_id, image_index),
            )
            if existing is not None:
                return None
            return await tx.insert(
                "INSERT INTO gallery_shares (guild_id, job_id, image_index, shared_by, channel_id, "
                "shared_at) VALUES (?, ?, ?, ?, ?, ?)",
                (guild_id, job_id, image_index, shared_by, channel_id, at),
            )

        share_id = await self.db.write(once)
        return None if share_id is None else await self.get(share_id)

    async def posted(self, share_id: int, message_id: int) -> None:
        async def once(tx: SqliteTransaction) -> None:
            await tx.execute(
                "UPDATE gallery_shares SET message_id = ? WHERE id = ?", (message_id, share_id)
            )

        await self.db.write(once)

    async def release(self, share_id: int) -> None:
        async def once(tx: SqliteTransaction) -> None:
            await tx.execute(
                "DELETE FROM gallery_shares WHERE id = ? AND message_id IS NULL", (share_id,)
            )

        await self.db.write(once)

    async def get(self, share_id: int) -> Share | None:
        row = await self.db.fetchone(
            f"SELECT {COLUMNS} FROM gallery_shares WHERE id = ?", (share_id,)
        )
        return share_from_row(row) if row else None

    async def of_image(self, job_id: int, image_index: int) -> Share | None:
        row = await self.db.fetchone(
            f"SELECT {COLUMNS} FROM gallery_shares WHERE job_id = ? AND image_index = ?",
            (job_id, image_index),
        )
        return share_from_row(row) if row else None

    async def remove(
        self, tx: SqliteTransaction, share_id: int, *, removed_by: int, at: float
    ) -> bool:
        removed = await tx.execute(
            "UPDATE gallery_shares SET removed_by = ?, removed_at = ? "
            "WHERE id = ? AND removed_at IS NULL",
            (removed_by, at, share_id),
        )
        return bool(removed)
