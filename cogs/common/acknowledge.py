"""Discord's three seconds, whatever the database does: slow work is answered with a deferral.

A write may wait out another process's lock and its retries for much longer than the three seconds
Discord gives an interaction; the member would see "The application did not respond" while the
job is still accepted and charged behind their back. So a command's database work runs here, and
if it is not done by `Pacing.ack_deadline`, the interaction is deferred before the work goes on.
Under a burst the one database connection serves the commands one after another, so waiting on
it would queue each answer behind everyone's work: with more than `Pacing.ack_crowd` commands
already waiting for their first answer, a new one is deferred at once.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

import discord

from cogs.common import outgoing

if TYPE_CHECKING:
    from bot.app import Stablehand

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Unanswered:
    """One bot's interactions whose work runs in `in_time` and that have no answer yet."""

    def __init__(self) -> None:
        self.ids: set[int] = set()
        self.crowded = asyncio.Event()

    def add(self, interaction_id: int, crowd: int) -> None:
        self.ids.add(interaction_id)
        if len(self.ids) > crowd:
            self.crowded.set()

    def discard(self, interaction_id: int, crowd: int) -> None:
        self.ids.discard(interaction_id)
        if len(self.ids) <= crowd:
            self.crowded.clear()


_unanswered: weakref.WeakKeyDictionary[discord.Client, _Unanswered] = weakref.WeakKeyDictionary()


async def in_time(
    interaction: discord.Interaction[Stablehand], work: Awaitable[T], *, ephemeral: bool = True
) -> T:
    """The result of `work`, deferring the interaction first if `work` outlasts the deadline or a
    crowd of commands waits for answers (then before `work` even starts: the answer comes first).

    `work` must not answer the interaction itself; afterwards, answer through the paths that work
    both before and after a deferral (`outgoing.answer`, `launch`). `ephemeral=False` defers with
    a public "thinking..." that the answer then takes the place of.
    """
    pacing = interaction.client.pacing
    unanswered = _unanswered.setdefault(interaction.client, _Unanswered())
    task: asyncio.Future[T] | None = None
    try:
        if not interaction.response.is_done():
            unanswered.add(interaction.id, pacing.ack_crowd)
            if not unanswered.crowded.is_set():
                task = asyncio.ensure_future(work)
                await _first_of(task, unanswered.crowded, timeout=pacing.ack_deadline)
            if task is None or not task.done():
                await _defer_unless_answered(interaction, ephemeral=ephemeral)
            unanswered.discard(interaction.id, pacing.ack_crowd)
        task = task or asyncio.ensure_future(work)
        return await task
    finally:
        unanswered.discard(interaction.id, pacing.ack_crowd)
        # Only when the caller itself is cancelled is the work still running (or unstarted) here.
        (task or asyncio.ensure_future(work)).cancel()


async def _first_of(task: asyncio.Future, event: asyncio.Event, *, timeout: float) -> None:
    """Until `task` is done, `event` is set or `timeout` has passed, whichever comes first."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({task, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


async def defer(interaction: discord.Interaction, *, ephemeral: bool = True) -> None:
    """Acknowledge now with "thinking...", unless the interaction is already acknowledged."""
    if not interaction.response.is_done():
        await outgoing.defer(interaction, ephemeral=ephemeral)


async def _defer_unless_answered(interaction: discord.Interaction, *, ephemeral: bool) -> None:
    try:
        await defer(interaction, ephemeral=ephemeral)
    except Exception as exc:
        # Whatever failed, the work must end on its own terms rather than be cancelled halfway (a
        # job committed but never shown). Its answer then fails too, and the caller undoes what
        # it stored: `launch` withdraws and refunds the job.
        log.warning("could not defer interaction %s: %r", interaction.id, exc)
