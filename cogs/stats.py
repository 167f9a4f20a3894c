"""/stats for moderators (the server's activity as a chart) and /queue for everyone."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import charts as drawing
from bot.queue_view import QueueEntry, QueueView, Stage, prompt_may_show, queue_view
from bot.stats import ServerFigures
from cogs.common import acknowledge, charts, outgoing, render
from cogs.common.age import age_restricted, age_restricted_by_id
from cogs.common.permissions import moderators_only

if TYPE_CHECKING:
    from bot.app import Stablehand

DAY_CHOICES = [app_commands.Choice(name=f"last {d} days", value=d) for d in (7, 14, 30)]
HIDDEN_PROMPT = "(prompt from another channel)"
QUEUE_SHOWN = 15


class Stats(commands.Cog):
    """What the community's GPU budget goes to, and what is running now."""

    def __init__(self, bot: Stablehand) -> None:
        self.bot = bot

    @app_commands.command(
        name="stats", description="Jobs, GPU spend, waits and failures per day (moderators)."
    )
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.choices(days=DAY_CHOICES, theme=charts.THEME_CHOICES)
    @app_commands.describe(days="how far back", theme="the chart's colours")
    @moderators_only()
    async def stats(
        self, interaction: discord.Interaction[Stablehand], days: int = 14, theme: str = "dark"
    ) -> None:
        figures, chart = await acknowledge.in_time(
            interaction, self._stats(interaction.guild_id, days, theme)
        )
        embed = charts.server_embed(figures, days)
        await outgoing.answer(interaction, embed=charts.with_chart(embed, chart), file=chart)

    async def _stats(
        self, guild_id: int, days: int, theme: str
    ) -> tuple[ServerFigures, discord.File]:
        figures = await self.bot.services.figures.server(guild_id, days)
        chart = await charts.chart_file(
            "stats.png", drawing.server_chart, figures, charts.theme(theme)
        )
        return figures, chart

    @app_commands.command(name="queue", description="What is being made now and what waits.")
    @app_commands.guild_only()
    async def queue(self, interaction: discord.Interaction[Stablehand]) -> None:
        (view, ages), here = await acknowledge.in_time(
            interaction,
            asyncio.gather(
                self._queue(interaction.guild_id), age_restricted(self.bot, interaction.channel)
            ),
        )
        embed = discord.Embed(title="Queue")
        if view.empty:
            embed.description = "Nothing is running or waiting. A good time for /imagine."
        else:
            embed.add_field(
                name=f"Running ({len(view.running)} of {view.slots} slots)",
                value=_lines(view.running, ages, here) or "nothing",
                inline=False,
            )
            embed.add_field(
                name=f"Waiting ({len(view.waiting)})",
                value=_lines(view.waiting, ages, here) or "nothing",
                inline=False,
            )
            embed.set_footer(text="Expected times are estimates from past jobs of the same kind.")
        await outgoing.answer(interaction, embed=embed)

    async def _queue(self, guild_id: int) -> tuple[QueueView, dict[int, bool | None]]:
        manager = self.bot.services.jobs
        jobs = await manager.active(guild_id)
        view = queue_view(
            jobs,
            {job.id: manager.position(job.id) for job in jobs},
            lambda job: manager.durations.expect(job.request, job.endpoint).seconds,
            slots=manager.limits.max_in_flight,
            now=time.time(),
        )
        channels = {e.channel_id for e in (*view.running, *view.waiting) if e.channel_id}
        ages = await asyncio.gather(*(age_restricted_by_id(self.bot, c) for c in channels))
        return view, dict(zip(channels, ages, strict=True))


def _lines(entries: tuple[QueueEntry, ...], ages: dict[int, bool | None], here: bool | None) -> str:
    lines = [_line(e, ages.get(e.channel_id or 0), here) for e in entries[:QUEUE_SHOWN]]
    if len(entries) > QUEUE_SHOWN:
        lines.append(f"… and {len(entries) - QUEUE_SHOWN} more")
    return outgoing.lines_within(lines, outgoing.FIELD_VALUE_LIMIT, line_limit=200)


def _line(entry: QueueEntry, source_age_restricted: bool | None, here: bool | None) -> str:
    prompt = (
        render.quote_prompt(entry.prompt, 60)
        if prompt_may_show(source_age_restricted, bool(here))
        else HIDDEN_PROMPT
    )
    if entry.stage is Stage.WAITING:
        place = f"#{entry.position} " if entry.position else ""
        when = (
            f"starts ~{render.relative(entry.expected_start)}"
            if entry.expected_start is not None
            else "start unknown"
        )
        return f"{place}`#{entry.job_id}` <@{entry.user_id}> · {prompt} · {when}"
    doing = "generating" if entry.stage is Stage.RUNNING else "waiting for a GPU worker"
    ends = f", done ~{render.relative(entry.expected_end)}" if entry.expected_end else ""
    return f"`#{entry.job_id}` <@{entry.user_id}> · {prompt} · {doing}{ends}"


async def setup(bot: Stablehand) -> None:
    await bot.add_cog(Stats(bot))
