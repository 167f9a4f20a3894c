"""Starting a job from any interaction: accept it, post its public progress message, attach it."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import discord

from bot.config import AGE_RESTRICTED_ONLY
from bot.images import MAX_INPUT_BYTES, ImageError, VerifiedImage, prepare_input_image
from bot.jobs import Job, NewJob
from bot.quotas import Balance
from cogs.common import acknowledge, faces, outgoing, render
from cogs.common.errors import MemberError
from cogs.common.permissions import member_role_ids

if TYPE_CHECKING:
    from bot.app import Stablehand

NOT_SHOWN = "its progress message could not be posted"
AGE_RESTRICTED_ONLY_REFUSAL = (
    "On this server images can only be made in age-restricted channels. Try again in one of those."
)


def channel_is_nsfw(channel: object) -> bool:
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


async def read_image(attachment: discord.Attachment, *, max_pixels: int) -> VerifiedImage:
    """Download and check an image a member gave us; refusals explain what was wrong."""
    if attachment.size > MAX_INPUT_BYTES:
        raise MemberError(
            f"That image is {attachment.size / 2**20:.0f} MB; the limit is {MAX_INPUT_BYTES // 2**20} MB."
        )
    try:
        data = await attachment.read()
    except discord.HTTPException:
        raise MemberError(
            "I could not download that image from Discord; try attaching it again."
        ) from None
    try:
        image = prepare_input_image(data, max_pixels=max_pixels, max_bytes=MAX_INPUT_BYTES)
    except ImageError as exc:
        raise MemberError(str(exc)) from None
    return replace(image, source_url=attachment.url)


async def launch(interaction: discord.Interaction[Stablehand], new_job: NewJob) -> Job:
    """Charge and store the job, then show it as the interaction's public answer (after a public
    deferral, in its place); an interaction answered already gets a public followup."""
    services = interaction.client.services
    job, balance = await acknowledge.in_time(
        interaction, _accept(interaction, new_job), ephemeral=False
    )
    try:
        text = render.accepted_text(
            job, render.cost_line(job, balance.remaining, services.quotas.this_period)
        )
        if outgoing.holds_public_placeholder(interaction):
            shown = await outgoing.fill_public_placeholder(
                interaction, text, view=faces.progress_view(job.id)
            )
            channel_id, message_id = interaction.channel_id, shown.id
        elif interaction.response.is_done():
            # Answered already, not deferred (a batch's Start updated its confirmation): each of
            # its jobs is a public followup of its own, on the interaction's webhook, not a post.
            shown = await outgoing.follow_up_publicly(
                interaction, text, view=faces.progress_view(job.id)
            )
            channel_id, message_id = interaction.channel_id, shown.id
        else:
            callback = await outgoing.respond(
                interaction, text, view=faces.progress_view(job.id), ephemeral=False
            )
            channel_id, message_id = interaction.channel_id, callback.message_id
    except BaseException:
        await services.jobs.abandon(job.id, NOT_SHOWN)
        raise
    await services.jobs.attach_message(job.id, channel_id, message_id)
    return job


async def _accept(
    interaction: discord.Interaction[Stablehand], new_job: NewJob
) -> tuple[Job, Balance]:
    """Everything `launch` asks of the database before it can answer: may outlast the deadline."""
    services = interaction.client.services
    settings = await services.guild_settings.get(interaction.guild_id)
    if not settings.allows_channel(interaction.channel_id):
        channels = outgoing.summarise(
            [f"<#{c}>" for c in settings.allowed_channels or ()], empty="no channel yet"
        )
        raise MemberError(f"On this server images can be made in {channels}.")
    nsfw_mode = settings.policy(services.policy()).nsfw_policy
    if nsfw_mode == AGE_RESTRICTED_ONLY and not channel_is_nsfw(interaction.channel):
        raise MemberError(AGE_RESTRICTED_ONLY_REFUSAL)
    job = await services.jobs.accept(new_job)
    try:
        return job, await services.quotas.balance(job.guild_id, job.user_id, job.role_ids)
    except BaseException:
        await services.jobs.abandon(job.id, NOT_SHOWN)
        raise


def requester(interaction: discord.Interaction) -> dict:
    """Who asks, where, and under which policy: the parts of a NewJob an interaction supplies."""
    return {
        "user_id": interaction.user.id,
        "guild_id": interaction.guild_id,
        "channel_id": interaction.channel_id,
        "channel_nsfw": channel_is_nsfw(interaction.channel),
        "filesize_limit": interaction.filesize_limit,
        "role_ids": member_role_ids(interaction.user),
    }
