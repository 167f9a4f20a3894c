"""Stopping a job for whoever asks (/cancel or the progress message's button), in member words."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord

from bot.jobs import JobState
from cogs.common import render
from cogs.common.permissions import is_moderator

if TYPE_CHECKING:
    from bot.app import Stablehand


async def cancel(interaction: discord.Interaction[Stablehand], job_id: int) -> str:
    """Cancel a job of this server (moderators may cancel anyone's); the answer to show.

    Raises `JobError` with its member-facing text when the job cannot be cancelled.
    """
    moderator = await is_moderator(interaction)
    manager = interaction.client.services.jobs
    found = await manager.get(job_id)
    if found is None or found.guild_id != interaction.guild_id:
        return f"There is no job #{job_id} on this server."
    cancelled = await manager.cancel(job_id, by_user=interaction.user.id, moderator=moderator)
    whose = (
        "" if cancelled.user_id == interaction.user.id else f" (started by <@{cancelled.user_id}>)"
    )
    if cancelled.state is JobState.SUBMITTING:
        return f"Stopping job #{job_id}{whose}; its message will say so."
    refund = (
        f" {render.credit_text(cancelled.cost).capitalize()} refunded." if cancelled.cost else ""
    )
    return f"Cancelled job #{job_id}{whose}.{refund}"
