"""Several jobs from one /imagine (`{a, b}`, `--repeat`): their total cost confirmed before any runs."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord

from bot.jobs import Job, JobError, NewJob
from cogs.common import acknowledge, outgoing, render
from cogs.common.errors import MemberError, handle_interaction_error, member_message
from cogs.common.launch import launch

if TYPE_CHECKING:
    from bot.app import Stablehand

# Long enough to read the list; short enough that prices and policy have not moved much.
CONFIRM_SECONDS = 600.0
EXPIRED = "This confirmation has expired (or the bot restarted); run `/imagine` again."


@dataclass(frozen=True)
class PendingBatch:
    """Jobs checked and costed, waiting for their member's yes."""

    user_id: int
    jobs: tuple[NewJob, ...]
    expires_at: float


class PendingBatches:
    """Confirmations in memory: after a restart their buttons say they expired."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, ttl: float = CONFIRM_SECONDS
    ) -> None:
        self._clock, self._ttl = clock, ttl
        self._pending: dict[str, PendingBatch] = {}

    def add(self, user_id: int, jobs: Sequence[NewJob]) -> str:
        now = self._clock()
        self._pending = {k: p for k, p in self._pending.items() if p.expires_at > now}
        key = secrets.token_hex(8)
        self._pending[key] = PendingBatch(user_id, tuple(jobs), now + self._ttl)
        return key

    def take(self, key: str, user_id: int) -> PendingBatch:
        pending = self._pending.get(key)
        if pending is None or pending.expires_at <= self._clock():
            self._pending.pop(key, None)
            raise MemberError(EXPIRED)
        if pending.user_id != user_id:
            raise MemberError("Only the member who asked for these images can start them.")
        return self._pending.pop(key)


def _batches(interaction: discord.Interaction[Stablehand]) -> PendingBatches:
    """The confirmations the /imagine cog keeps (one per process)."""
    cog = interaction.client.get_cog("Imagine")
    batches = getattr(cog, "batches", None)
    if not isinstance(batches, PendingBatches):
        raise MemberError(EXPIRED)
    return batches


def confirmation_text(jobs: Sequence[NewJob], remaining: int | None) -> str:
    total = sum(job.cost for job in jobs)
    left = f" · you have {remaining} left" if remaining is not None else ""
    lines = [f"This makes **{len(jobs)} jobs**, **{render.credit_text(total)}** in all{left}:"]
    lines += [
        f"{i}. {render.quote_prompt(job.request.prompt, 120)} · seed `{job.request.seed}` · "
        f"{render.credit_text(job.cost)}"
        for i, job in enumerate(jobs, start=1)
    ]
    notes = dict.fromkeys(note for job in jobs for note in job.request.notes)
    lines += [f"ℹ️ {note}" for note in notes]
    lines.append("Nothing runs or is charged until you press Start.")
    return "\n".join(lines)


def confirmation_view(key: str, jobs: Sequence[NewJob]) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(BatchButton("run", key, len(jobs)))
    view.add_item(BatchButton("drop", key))
    return view


class BatchButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"sh:batch:(?P<action>run|drop):(?P<key>[0-9a-f]+)",
):
    """Start or drop a confirmed batch; the key names it in this process's memory."""

    def __init__(self, action: str, key: str, count: int = 0) -> None:
        label = f"Start {count} jobs" if action == "run" else "Cancel"
        style = discord.ButtonStyle.primary if action == "run" else discord.ButtonStyle.secondary
        super().__init__(
            discord.ui.Button(label=label, style=style, custom_id=f"sh:batch:{action}:{key}")
        )
        self.action, self.key = action, key

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> BatchButton:
        return cls(match["action"], match["key"])

    async def callback(self, interaction: discord.Interaction[Stablehand]) -> None:
        try:
            pending = _batches(interaction).take(self.key, interaction.user.id)
            if self.action == "drop":
                await outgoing.update(interaction, "Cancelled; nothing was started or charged.")
                return
            await outgoing.update(interaction, f"Starting {len(pending.jobs)} jobs…")
            await outgoing.edit_response(interaction, await _start(interaction, pending.jobs))
        except Exception as error:
            await handle_interaction_error(interaction, error)


async def _start(interaction: discord.Interaction[Stablehand], jobs: Sequence[NewJob]) -> str:
    """Each job accepted and posted like any /imagine; a refusal part-way stops the rest."""
    started: list[Job] = []
    stopped = ""
    for new_job in jobs:
        try:
            started.append(await launch(interaction, new_job))
        except (JobError, MemberError) as error:
            stopped = (
                f"\nThe other {len(jobs) - len(started)} did not start: {member_message(error)}"
            )
            break
    links = [
        f"#{job.id}" if (link := render.job_link(job)) is None else f"[#{job.id}]({link})"
        for job in [await interaction.client.services.jobs.get(j.id) or j for j in started]
    ]
    done = f"Started {len(started)} of {len(jobs)} jobs: {', '.join(links) or 'none'}."
    return done + stopped


async def offer(interaction: discord.Interaction[Stablehand], jobs: Sequence[NewJob]) -> None:
    """Ask the member to confirm several jobs, showing each one's cost and the total."""
    services = interaction.client.services
    balance, active = await acknowledge.in_time(
        interaction,
        asyncio.gather(
            services.quotas.balance(interaction.guild_id, interaction.user.id, jobs[0].role_ids),
            services.jobs.active(interaction.guild_id, interaction.user.id),
        ),
    )
    # Said before the list: a batch that cannot all start is not offered.
    most = services.jobs.limits.member_max_queued
    if len(jobs) + len(active) > most:
        raise MemberError(
            f"This makes {len(jobs)} jobs, but you can have at most {most} waiting or running at "
            f"once (you have {len(active)} now). Use fewer options in `{{…}}` or a smaller "
            "`--repeat`."
        )
    total = sum(job.cost for job in jobs)
    if total > balance.remaining:
        raise MemberError(
            f"These {len(jobs)} jobs need {render.credit_text(total)} but you have "
            f"{balance.remaining} left. Your credits come back {render.relative(balance.resets_at)}."
        )
    key = _batches(interaction).add(interaction.user.id, jobs)
    text = confirmation_text(jobs, balance.remaining if any(j.cost for j in jobs) else None)
    view = confirmation_view(key, jobs)
    await outgoing.answer(interaction, text, view=view)
