"""Discord's three seconds, whatever the database does: slow work is answered with a deferral.

A write may wait out another process's lock and its retries for much longer than the three seconds
Discord gives an interaction; the member would see "The application did not respond" while the
job is still accepted and charged behind their back. So a command's database work runs here, and
if it is not done by `Pacing.ack_deadline`, the interaction is deferred before the work goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

import discord

if TYPE_CHECKING:
    from bot.app import Stablehand

log = logging.getLogger(__name__)

T = TypeVar("T")


async def in_time(
    interaction: discord.Interaction[Stablehand], work: Awaitable[T], *, ephemeral: bool = True
) -> T:
    """The result of `work`, deferring the interaction first if `work` outlasts the deadline.

    `work` must not answer the interaction itself; afterwards, answer through the paths that work
    both before and after a deferral (`outgoing.answer`, `launch`'s fresh progress message).
    """
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=interaction.client.pacing.ack_deadline)
        if not done:
            await _defer_unless_answered(interaction, ephemeral=ephemeral)
        return await task
    finally:
        # Only when the caller itself is cancelled is the work still running here.
        task.cancel()


async def defer(interaction: discord.Interaction, *, ephemeral: bool = True) -> None:
    """Acknowledge now with "thinking...", unless the interaction is already acknowledged."""
    if not interaction.response.is_done():
        await interaction.response.defer(ephemeral=ephemeral, thinking=True)


async def _defer_unless_answered(interaction: discord.Interaction, *, ephemeral: bool) -> None:
    try:
        await defer(interaction, ephemeral=ephemeral)
    except Exception as exc:
        # Whatever failed, the work must end on its own terms rather than be cancelled halfway (a
        # job committed but never shown). Its answer then fails too, and the caller undoes what
        # it stored: `launch` withdraws and refunds the job.
        log.warning("could not defer interaction %s: %r", interaction.id, exc)
