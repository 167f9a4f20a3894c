"""`GalleryStore` on PostgreSQL."""

from __future__ import annotations

from bot.postgres import PostgresDatabase, PostgresTransaction
from bot.store.gallery import COLUMNS, Share, share_from_row


class PostgresGalleryStore:
    def __init__(self, db: PostgresDatabase) -> None:
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
        async def once(tx: PostgresTransaction) -> int | None:
            taken = await tx.fetchone(
                "UPDATE gallery_shares SET shared_by = $1, channel_id = $2, shared_at = $3 "
                "WHERE job_id = $4 AND image_index = $5 AND message_id IS NULL "
                "AND removed_at IS NULL AND shared_at < $6 RETURNING id",
                (shared_by, channel_id, at, job_id, image_index, stale_before),
            )
            if taken is not None:
                return int(taken["id"])
            # A claim made meanwhile by another connection wins: this insert then does nothing.
            inserted = await tx.fetchone(
                "INSERT INTO gallery_shares (guild_id, job_id, image_index, shared_by, channel_id, "
                "shared_at) VALUES ($1, $2, $3, $4, $5, $6) "
                "ON CONFLICT (job_id, image_index) DO NOTHING RETURNING id",
                (guild_id, job_id, image_index, shared_by, channel_id, at),
            )
            return None if inserted is None else int(inserted["id"])

        share_id = await self.db.write(once)
        return None if share_id is None else await self.get(share_id)

    async def posted(self, share_id: int, message_id: int) -> None:
        async def once(tx: PostgresTransaction) -> None:
            await tx.execute(
                "UPDATE gallery_shares SET message_id = $1 WHERE id = $2", (message_id, share_id)
            )

        await self.db.write(once)

    async def release(self, share_id: int) -> None:
        async def once(tx: PostgresTransaction) -> None:
            await tx.execute(
                "DELETE FROM gallery_shares WHERE id = $1 AND message_id IS NULL", (share_id,)
            )

        await self.db.write(once)

    async def get(self, share_id: int) -> Share | None:
        row = await self.db.fetchone(
            f"SELECT {COLUMNS} FROM gallery_shares WHERE id = $1", (share_id,)
        )
        return share_from_row(row) if row else None

    async def of_image(self, job_id: int, image_index: int) -> Share | None:
        row = await self.db.fetchone(
            f"SELECT {COLUMNS} FROM gallery_shares WHERE job_id = $1 AND image_index = $2",
            (job_id, image_index),
        )
        return share_from_row(row) if row else None

    async def remove(
        self, tx: PostgresTransaction, share_id: int, *, removed_by: int, at: float
    ) -> bool:
        removed = await tx.execute(
            "UPDATE gallery_shares SET removed_by = $1, removed_at = $2 "
            "WHERE id = $3 AND removed_at IS NULL",
            (removed_by, at, share_id),
        )
        return bool(removed)
