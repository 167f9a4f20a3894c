"""/jobs and /cancel: a member's own jobs, and stopping one (moderators may stop anyone's)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs import acknowledge, cancelling, outgoing, render
from cogs.permissions import is_moderator

if TYPE_CHECKING:
    from bot.app import Stablehand


class Jobs(commands.Cog):
    """What a member has asked for, and how to stop it."""

    def __init__(self, bot: Stablehand) -> None:
        self.bot = bot

    @app_commands.command(
        name="jobs", description="Your recent image jobs, with links to their messages."
    )
    @app_commands.guild_only()
    async def jobs(self, interaction: discord.Interaction[Stablehand]) -> None:
        manager = self.bot.services.jobs
        recent = await acknowledge.in_time(
            interaction, manager.recent(interaction.guild_id, interaction.user.id, limit=10)
        )
        lines = []
        for job in recent:
            link = render.job_link(job)
            place = manager.position(job.id)
            state = f"queued, position {place}" if place else job.state.value.replace("_", " ")
            prompt = render.quote_prompt(job.request.prompt, 40)
            shown = f"[{prompt}]({link})" if link else prompt
            lines.append(
                f"{render.state_icon(job.state)} `#{job.id}` {shown} · {state} · {render.relative(job.created_at)}"
            )
        embed = discord.Embed(
            title="Your jobs",
            description="\n".join(lines) or "You have not made any images here yet.",
        )
        if any(not job.terminal for job in recent):
            embed.set_footer(text="Stop one with /cancel.")
        await outgoing.answer(interaction, embed=embed)

    @app_commands.command(
        name="cancel", description="Stop a job that has not finished; its credits come back."
    )
    @app_commands.describe(job="The job to stop (moderators may stop anyone's)")
    @app_commands.guild_only()
    async def cancel(self, interaction: discord.Interaction[Stablehand], job: int) -> None:
        text = await acknowledge.in_time(interaction, cancelling.cancel(interaction, job))
        await outgoing.answer(interaction, text)

    @cancel.autocomplete("job")
    async def cancel_choices(
        self, interaction: discord.Interaction[Stablehand], current: str
    ) -> list[app_commands.Choice[int]]:
        everyone = await is_moderator(interaction)
        active = await self.bot.services.jobs.active(
            interaction.guild_id, None if everyone else interaction.user.id
        )
        choices = []
        for job in reversed(active):
            label = f"#{job.id} {job.state.value} — {' '.join(job.request.prompt.split())}"
            if current.strip().lstrip("#") in label:
                choices.append(app_commands.Choice(name=render.choice_label(label), value=job.id))
        return choices[:25]


async def setup(bot: Stablehand) -> None:
    await bot.add_cog(Jobs(bot))
