"""Charts as attachments and their figures as text: the same numbers for eyes and for screen readers.

A helper, not an extension: /usage, /quota top and /stats use it.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Iterable
from typing import Any

import discord
from discord import app_commands

from bot import charts
from bot.stats import OUTCOMES, ServerFigures, SpendFigures, UsageFigures
from cogs.common import outgoing
from cogs.common.render import dollars

THEME_CHOICES = [
    app_commands.Choice(name="dark (Discord's dark theme)", value="dark"),
    app_commands.Choice(name="light (Discord's light theme)", value="light"),
]


def theme(name: str | None) -> charts.Theme:
    return charts.THEMES.get(name or "dark", charts.DARK)


async def chart_file(filename: str, draw: Callable[..., bytes], *args: Any) -> discord.File:
    """Draw in a worker thread: the event loop keeps answering while matplotlib works."""
    png = await asyncio.to_thread(draw, *args)
    return discord.File(
        io.BytesIO(png), filename=filename, description="A chart; its figures are in the text."
    )


def with_chart(embed: discord.Embed, file: discord.File) -> discord.Embed:
    return embed.set_image(url=f"attachment://{file.filename}")


def usage_lines(figures: UsageFigures) -> list[str]:
    lines = []
    for start, used, bonus, refunded in zip(
        figures.window.day_starts, figures.allowance, figures.bonus, figures.refunded, strict=True
    ):
        parts = [f"{used}"]
        if bonus:
            parts.append(f"+ {bonus} bonus")
        if refunded:
            parts.append(f"({refunded} refunded)")
        lines.append(f"`{charts.day_label(start)}` {' '.join(parts)}")
    return lines


def _jobs(n: int) -> str:
    return f"{n} job" if n == 1 else f"{n} jobs"


def spend_lines(figures: SpendFigures) -> list[str]:
    return [
        f"{n}. <@{m.user_id}> — {m.credits} credit{'s' if m.credits != 1 else ''} · "
        f"{m.gpu_seconds:.1f} GPU-s · {dollars(m.usd)} · {_jobs(m.jobs)}"
        for n, m in enumerate(figures.members, start=1)
    ]


def server_day_lines(figures: ServerFigures) -> list[str]:
    lines = []
    for day, start in enumerate(figures.window.day_starts):
        counts = " · ".join(
            f"{figures.outcomes[o][day]} {o}" for o in OUTCOMES if figures.outcomes[o][day]
        )
        lines.append(
            f"`{charts.day_label(start)}` {counts or 'no jobs'} · {dollars(figures.usd[day])} · "
            f"{figures.gpu_seconds[day]:.0f} GPU-s"
        )
    return lines


def server_embed(figures: ServerFigures, days: int) -> discord.Embed:
    budget = f"{dollars(figures.daily_budget)} per day" if figures.daily_budget else "none set"
    embed = discord.Embed(
        title=f"Server activity, last {days} days",
        description=outgoing.lines_within(server_day_lines(figures), outgoing.DESCRIPTION_LIMIT),
    )
    embed.add_field(
        name="Totals",
        value=f"{_jobs(figures.jobs)} · {dollars(sum(figures.usd))} · "
        f"{sum(figures.gpu_seconds):.0f} GPU-s · budget {budget}",
        inline=False,
    )
    embed.add_field(
        name="Median wait (queue + cold start) / run, per workflow",
        value=_joined(
            f"{t.template}: {t.median_wait:.1f} s / {t.median_run:.1f} s ({_jobs(t.jobs)})"
            for t in figures.templates
        )
        or "no finished jobs",
        inline=False,
    )
    embed.add_field(
        name="Why jobs failed",
        value=_joined(f"{words}: {count}" for words, count in figures.causes) or "no failures",
        inline=False,
    )
    return embed


def _joined(lines: Iterable[str]) -> str:
    return outgoing.lines_within(list(lines), outgoing.FIELD_VALUE_LIMIT)
