"""The gallery: members share a result's image to the server's gallery channel, once per image.

The age rule is the one /imagine follows: an image made in an age-restricted channel never goes to
a gallery that is not one. Claiming before posting makes a double click, or two members, post once;
a claim whose post never got recorded (the process died mid-post) is taken over after a while.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from bot import audit
from bot.db import Database, Transaction
from bot.store import stores_for
from bot.store.audit import AuditStore
from bot.store.gallery import GalleryStore, Share

# A claim older than this with no post recorded was left by a crash: someone may share again.
STALE_CLAIM_SECONDS = 300.0


class Refusal(StrEnum):
    NO_GALLERY = "no_gallery"
    NOT_IN_A_SERVER = "not_in_a_server"
    AGE_RESTRICTED = "age_restricted"  # from an age-restricted channel to a gallery that is not
    GALLERY_UNKNOWN = "gallery_unknown"  # the channel is gone or the bot cannot see it
    NOT_YOURS = "not_yours"


@dataclass(frozen=True)
class Source:
    """Where an image was shown and who asks to share it."""

    guild_id: int | None
    age_restricted: bool
    requester_id: int
    author_id: int
    moderator: bool


def refusal(
    source: Source, gallery_channel_id: int | None, gallery_age_restricted: bool | None
) -> Refusal | None:
    """Why this image may not be shared to this gallery, or None if it may."""
    if source.guild_id is None:
        return Refusal.NOT_IN_A_SERVER
    if gallery_channel_id is None:
        return Refusal.NO_GALLERY
    if source.requester_id != source.author_id and not source.moderator:
        return Refusal.NOT_YOURS
    if gallery_age_restricted is None:
        return Refusal.GALLERY_UNKNOWN
    if source.age_restricted and not gallery_age_restricted:
        return Refusal.AGE_RESTRICTED
    return None


class Gallery:
    def __init__(
        self,
        db: Database,
        *,
        clock: Callable[[], float] = time.time,
        store: GalleryStore | None = None,
        audit_store: AuditStore | None = None,
        stale_after: float = STALE_CLAIM_SECONDS,
    ) -> None:
        self._db = db
        engine = stores_for(db)
        self._store = store or engine.gallery
        self._audit_store = audit_store or engine.audit
        self._clock = clock
        self._stale_after = stale_after

    async def claim(
        self, guild_id: int, job_id: int, image_index: int, *, shared_by: int, channel_id: int
    ) -> Share | None:
        """The share to post, or None if this image is or was in the gallery already."""
        now = self._clock()
        return await self._store.claim(
            guild_id,
            job_id,
            image_index,
            shared_by=shared_by,
            channel_id=channel_id,
            at=now,
            stale_before=now - self._stale_after,
        )

    async def posted(self, share: Share, message_id: int) -> None:
        await self._store.posted(share.id, message_id)

    async def release(self, share: Share) -> None:
        await self._store.release(share.id)

    async def existing(self, job_id: int, image_index: int) -> Share | None:
        return await self._store.of_image(job_id, image_index)

    async def get(self, share_id: int) -> Share | None:
        return await self._store.get(share_id)

    async def remove(self, share: Share, *, removed_by: int) -> bool:
        """Take a share down for good; the moderator's action goes in the audit trail with it."""
        now = self._clock()

        async def body(tx: Transaction) -> bool:
            removed = await self._store.remove(tx, share.id, removed_by=removed_by, at=now)
            if removed:
                await audit.record(
                    self._audit_store,
                    tx,
                    guild_id=share.guild_id,
                    moderator_id=removed_by,
                    action="gallery.remove",
                    at=now,
                    target_id=share.shared_by,
                    facts={"job_id": share.job_id, "image": share.image_index + 1},
                )
            return removed

        return await self._db.write(body)
