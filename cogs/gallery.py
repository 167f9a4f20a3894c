"""The gallery: a Share button on results cross-posts an image, once; moderators can remove a share.

Both buttons carry what they need in their custom_id (`gallery:share:<job>:<image>`,
`gallery:remove:<share>`), so they keep working after a restart.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.gallery import Refusal, Source, refusal
from bot.store.gallery import Share
from cogs.common import acknowledge, faces, outgoing, render
from cogs.common.age import age_restricted, age_restricted_by_id
from cogs.common.errors import MemberError, handle_interaction_error
from cogs.common.permissions import is_moderator

if TYPE_CHECKING:
    from bot.app import Stablehand

log = logging.getLogger(__name__)

REFUSALS = {
    Refusal.NOT_IN_A_SERVER: "Images can only be shared to a server's gallery from that server.",
    Refusal.NO_GALLERY: "This server has no gallery yet; a member with Manage Server can set one with `/settings gallery`.",
    Refusal.NOT_YOURS: "Only the member who made this image, or a moderator, can share it.",
    Refusal.GALLERY_UNKNOWN: "I cannot reach this server's gallery channel; a member with Manage Server should check `/settings gallery`.",
    Refusal.AGE_RESTRICTED: "This image was made in an age-restricted channel and the gallery is not one, so it cannot be shared there.",
}


class ShareButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"gallery:share:(?P<job>[0-9]+):(?P<index>[0-9])",
):
    def __init__(self, job_id: int, index: int, *, count: int = 1) -> None:
        label = f"Share {index + 1}" if count > 1 else "Share"
        super().__init__(
            discord.ui.Button(
                label=label,
                emoji="🖼️",
                style=discord.ButtonStyle.secondary,
                custom_id=f"gallery:share:{job_id}:{index}",
                row=faces.SHARE_ROW if count > 1 else faces.SINGLE_IMAGE_ROW,
            )
        )
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> ShareButton:
        return cls(int(match["job"]), int(match["index"]))

    async def callback(self, interaction: discord.Interaction[Stablehand]) -> None:
        try:
            await acknowledge.defer(interaction)
            gallery_id, message = await share(interaction, self.job_id, self.index)
            await outgoing.answer(interaction, f"Shared to <#{gallery_id}>: {message.jump_url}")
        except Exception as error:
            await handle_interaction_error(interaction, error)


class RemoveShareButton(
    discord.ui.DynamicItem[discord.ui.Button], template=r"gallery:remove:(?P<share>[0-9]+)"
):
    def __init__(self, share_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Remove from gallery",
                style=discord.ButtonStyle.danger,
                custom_id=f"gallery:remove:{share_id}",
            )
        )
        self.share_id = share_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> RemoveShareButton:
        return cls(int(match["share"]))

    async def callback(self, interaction: discord.Interaction[Stablehand]) -> None:
        try:
            await remove(interaction, self.share_id)
        except Exception as error:
            await handle_interaction_error(interaction, error)


async def share(
    interaction: discord.Interaction[Stablehand], job_id: int, index: int
) -> tuple[int, discord.Message]:
    """Post image `index` of the job to the gallery, once; refusals raise `MemberError`."""
    services = interaction.client.services
    job = await services.jobs.get(job_id)
    if job is None or interaction.guild_id is None or job.guild_id != interaction.guild_id:
        raise MemberError("I no longer know this job.")
    settings = await services.guild_settings.get(interaction.guild_id)
    gallery_id = settings.gallery_channel_id
    source = Source(
        guild_id=interaction.guild_id,
        # A source Discord will not describe counts as age-restricted: the safe side.
        age_restricted=await age_restricted(interaction.client, interaction.channel) is not False,
        requester_id=interaction.user.id,
        author_id=job.user_id,
        moderator=await is_moderator(interaction),
    )
    gallery_age = await age_restricted_by_id(interaction.client, gallery_id) if gallery_id else None
    refused = refusal(source, gallery_id, gallery_age)
    if refused is not None:
        raise MemberError(REFUSALS[refused])
    assert gallery_id is not None
    images = [
        a for a in (interaction.message.attachments if interaction.message else []) if a.width
    ]
    if index >= len(images):
        raise MemberError("That image is no longer attached to this message.")
    claimed = await services.gallery.claim(
        interaction.guild_id, job_id, index, shared_by=interaction.user.id, channel_id=gallery_id
    )
    if claimed is None:
        raise MemberError(await _already(services, job_id, index))
    try:
        data = await images[index].read()
        name = images[index].filename.removeprefix("SPOILER_")
        # An image Discord hid where it was made stays hidden where it is shared.
        hidden = job.request.spoiler or images[index].is_spoiler()
        file = discord.File(io.BytesIO(data), filename=name, spoiler=hidden)
        link = interaction.message.jump_url if interaction.message else ""
        text = (
            f"🖼️ <@{job.user_id}> · job #{job.id}"
            + (
                f" · shared by <@{interaction.user.id}>"
                if interaction.user.id != job.user_id
                else ""
            )
            + f"\n> {render.quote_prompt(job.request.prompt)}\n{link}"
        )
        channel = interaction.client.get_partial_messageable(gallery_id, guild_id=job.guild_id)
        posted = await outgoing.send(channel, text, files=[file], view=_remove_view(claimed))
    except BaseException:
        await services.gallery.release(claimed)
        raise
    await services.gallery.posted(claimed, posted.id)
    return gallery_id, posted


async def remove(interaction: discord.Interaction[Stablehand], share_id: int) -> None:
    services = interaction.client.services
    found = await acknowledge.in_time(interaction, services.gallery.get(share_id))
    if found is None or found.guild_id != interaction.guild_id:
        raise MemberError("I no longer know this share.")
    if not await is_moderator(interaction):
        raise MemberError("Only moderators can remove an image from the gallery.")
    await services.gallery.remove(found, removed_by=interaction.user.id)
    if interaction.message is not None:
        with contextlib.suppress(discord.NotFound):
            await interaction.message.delete()
    await outgoing.answer(interaction, "Removed from the gallery; it cannot be shared again.")


def _remove_view(share: Share) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(RemoveShareButton(share.id))
    return view


async def _already(services, job_id: int, index: int) -> str:
    existing = await services.gallery.existing(job_id, index)
    if existing is not None and existing.removed_at is not None:
        return "A moderator removed this image from the gallery, so it cannot be shared again."
    if existing is not None and existing.message_id is not None:
        link = render.message_link(existing.guild_id, existing.channel_id, existing.message_id)
        return f"This image is already in the gallery: {link}"
    return "This image is being shared right now."


def share_buttons(job_id: int, image_count: int) -> list[ShareButton]:
    """One Share button per image (at most five, as Vary and Upscale)."""
    return [ShareButton(job_id, i, count=image_count) for i in range(min(image_count, 5))]


class GalleryCog(commands.Cog):
    """Registers the gallery's buttons so clicks on old messages still reach them."""

    def __init__(self, bot: Stablehand) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(ShareButton, RemoveShareButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(ShareButton, RemoveShareButton)


async def setup(bot: Stablehand) -> None:
    await bot.add_cog(GalleryCog(bot))
