"""/usage for members and /quota ... for moderators: credits, tiers, blocks, budgets, the audit trail."""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import audit
from bot import charts as drawing
from bot.jobs import Job
from bot.quotas import Balance, BudgetStatus, LimitScope, LimitSource
from bot.stats import SpendFigures, UsageFigures
from cogs.common import acknowledge, audit_lines, charts, outgoing, render
from cogs.common.errors import MemberError
from cogs.common.permissions import member_role_ids, moderators_only
from cogs.common.render import bonus_text, credit_text, dollars, job_link, relative

if TYPE_CHECKING:
    from bot.app import Stablehand

PERIODS = {"today": 86_400, "week": 7 * 86_400, "month": 30 * 86_400, "all time": None}
LIMIT_SOURCES = {
    LimitSource.MEMBER: "set for this member by a moderator",
    LimitSource.SERVER_DEFAULT: "this server's default",
    LimitSource.BOT_DEFAULT: "the bot's default",
}
_DURATION = re.compile(r"(\d+)\s*([mhdw])")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


class BadDuration(MemberError):
    """A block duration that cannot be read."""


def parse_duration(text: str) -> float:
    """`30m`, `12h`, `7d`, `1w`, or combinations like `1d12h`, as seconds."""
    cleaned = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(cleaned)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != cleaned:
        raise BadDuration(
            f"`{discord.utils.escape_markdown(text[:20])}` is not a duration: use e.g. `30m`, `12h`, `7d` or `1w`."
        )
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)
    if not 0 < seconds <= 366 * 86_400:
        raise BadDuration(
            "A block lasts from one minute to one year; leave the duration out for no end."
        )
    return float(seconds)


def limit_source_text(balance: Balance) -> str:
    if balance.limit_source is LimitSource.ROLE:
        return f"from the role <@&{balance.limit_role_id}>"
    return LIMIT_SOURCES[balance.limit_source]


def balance_lines(balance: Balance, period_word: str, this_period: str) -> list[str]:
    lines = [
        f"**{credit_text(balance.remaining)} left** · {balance.used} of {balance.limit} used {this_period}",
        f"Limit: {balance.limit} per {period_word}, {limit_source_text(balance)}",
        f"Resets {relative(balance.resets_at)}",
    ]
    if balance.bonus:
        lines.append(
            f"Bonus: {credit_text(balance.bonus)} (used after the allowance; they never expire)"
        )
    if balance.held:
        lines.append(f"Held for jobs still running: {credit_text(balance.held)}")
    if balance.block is not None:
        until = f", until {relative(balance.block.expires_at)}" if balance.block.expires_at else ""
        lines.append(
            f"⛔ Blocked by <@{balance.block.moderator_id}>{until}: {balance.block.reason}"
        )
    return lines


def job_line(job: Job) -> str:
    icon = render.state_icon(job.state)
    where = f" · [message]({job_link(job)})" if job_link(job) else ""
    return f"{icon} `#{job.id}` {render.state_words(job.state)}{where} · {relative(job.created_at)}"


class Quota(commands.Cog):
    """Credits: a member's own view, and the moderators' controls."""

    quota = app_commands.Group(
        name="quota",
        description="Manage members' image credits (moderators).",
        guild_only=True,
        default_permissions=discord.Permissions(manage_guild=True),
    )

    def __init__(self, bot: Stablehand) -> None:
        self.bot = bot

    async def _reply(
        self,
        interaction: discord.Interaction,
        text: str | None = None,
        *,
        embed: discord.Embed | None = None,
        file: discord.File = discord.utils.MISSING,
    ) -> None:
        await outgoing.answer(interaction, text, embed=embed, file=file)

    @app_commands.command(
        name="usage", description="Your image credits: what is left, when they reset, your jobs."
    )
    @app_commands.guild_only()
    @app_commands.describe(theme="the chart's colours")
    @app_commands.choices(theme=charts.THEME_CHOICES)
    async def usage(self, interaction: discord.Interaction, theme: str = "dark") -> None:
        services = self.bot.services
        balance, active, recent, chart, per_day = await acknowledge.in_time(
            interaction, self._usage(interaction, theme)
        )
        embed = discord.Embed(
            title="Your image credits",
            description="\n".join(
                balance_lines(balance, services.quotas.period_word, services.quotas.this_period)
            ),
        )
        embed.add_field(
            name="Running now", value=str(len(active)) if active else "nothing", inline=True
        )
        if recent:
            embed.add_field(
                name="Your last jobs",
                value="\n".join(job_line(job) for job in recent),
                inline=False,
            )
        embed.add_field(
            name="Credits per day",
            value=outgoing.lines_within(charts.usage_lines(per_day), outgoing.FIELD_VALUE_LIMIT),
            inline=False,
        )
        await self._reply(interaction, embed=charts.with_chart(embed, chart), file=chart)

    async def _usage(
        self, interaction: discord.Interaction, theme: str
    ) -> tuple[Balance, list[Job], list[Job], discord.File, UsageFigures]:
        services = self.bot.services
        guild, user = interaction.guild_id, interaction.user.id
        balance, active, recent = await asyncio.gather(
            services.quotas.balance(guild, user, member_role_ids(interaction.user)),
            services.jobs.active(guild, user),
            services.jobs.recent(guild, user, limit=5),
        )
        per_day = await services.figures.usage(guild, user, limit=balance.limit)
        chart = await charts.chart_file(
            "usage.png", drawing.usage_chart, per_day, charts.theme(theme)
        )
        return balance, active, recent, chart, per_day

    @quota.command(name="show", description="A member's credits, limit, bonus and block.")
    @app_commands.describe(user="the member")
    @moderators_only()
    async def show(self, interaction: discord.Interaction, user: discord.Member) -> None:
        services = self.bot.services
        balance, recent = await acknowledge.in_time(
            interaction,
            asyncio.gather(
                services.quotas.balance(interaction.guild_id, user.id, member_role_ids(user)),
                services.jobs.recent(interaction.guild_id, user.id, limit=5),
            ),
        )
        embed = discord.Embed(
            title=f"Credits of {user.display_name}",
            description="\n".join(
                balance_lines(balance, services.quotas.period_word, services.quotas.this_period)
            ),
        )
        if recent:
            embed.add_field(
                name="Last jobs", value="\n".join(job_line(job) for job in recent), inline=False
            )
        await self._reply(interaction, embed=embed)

    @quota.command(
        name="set",
        description="Give one member their own limit per period (leave limit out to remove it).",
    )
    @app_commands.describe(
        user="the member",
        limit="credits per period; leave out to go back to their role or the server default",
    )
    @moderators_only()
    async def set_member(
        self,
        interaction: discord.Interaction,
        user: discord.Member,
        limit: app_commands.Range[int, 0, 100_000] | None = None,
    ) -> None:
        await acknowledge.in_time(
            interaction,
            self.bot.services.quotas.set_limit(
                interaction.guild_id,
                interaction.user.id,
                scope=LimitScope.MEMBER,
                target_id=user.id,
                credits=limit,
            ),
        )
        period = self.bot.services.quotas.period_word
        text = (
            f"{user.mention} now has {credit_text(limit)} per {period}."
            if limit is not None
            else f"{user.mention} now follows their role or the server default."
        )
        await self._reply(interaction, text)

    @quota.command(name="grant", description="Give a member bonus credits, with a reason.")
    @app_commands.describe(
        user="the member", credits="bonus credits to add", reason="why (shown in the audit trail)"
    )
    @moderators_only()
    async def grant(
        self,
        interaction: discord.Interaction,
        user: discord.Member,
        credits: app_commands.Range[int, 1, 10_000],
        reason: app_commands.Range[str, 1, 200],
    ) -> None:
        await acknowledge.in_time(
            interaction,
            self.bot.services.quotas.grant(
                interaction.guild_id, interaction.user.id, user.id, credits, reason
            ),
        )
        await self._reply(
            interaction,
            f"Gave {user.mention} {bonus_text(credits)} ({discord.utils.escape_markdown(reason)}).",
        )

    @quota.command(
        name="reset", description="Give a member their whole allowance back for this period."
    )
    @app_commands.describe(user="the member")
    @moderators_only()
    async def reset(self, interaction: discord.Interaction, user: discord.Member) -> None:
        await acknowledge.in_time(
            interaction,
            self.bot.services.quotas.reset(interaction.guild_id, interaction.user.id, user.id),
        )
        await self._reply(
            interaction,
            f"{user.mention}'s allowance for this {self.bot.services.quotas.period_word} is full again.",
        )

    @quota.command(
        name="block",
        description="Stop a member from making images, with a reason and an optional duration.",
    )
    @app_commands.describe(
        user="the member",
        reason="why (they are told, and it goes in the audit trail)",
        duration="e.g. 30m, 12h, 7d, 1w; leave out for no end",
    )
    @moderators_only()
    async def block(
        self,
        interaction: discord.Interaction,
        user: discord.Member,
        reason: app_commands.Range[str, 1, 200],
        duration: str | None = None,
    ) -> None:
        seconds = parse_duration(duration) if duration else None
        await acknowledge.in_time(
            interaction,
            self.bot.services.quotas.block(
                interaction.guild_id, interaction.user.id, user.id, reason, duration=seconds
            ),
        )
        until = (
            f" The block ends {relative(time.time() + seconds)}."
            if seconds
            else " It lasts until `/quota unblock`."
        )
        await self._reply(
            interaction,
            f"Blocked {user.mention} from making images: {discord.utils.escape_markdown(reason)}.{until}",
        )

    @quota.command(name="unblock", description="Let a blocked member make images again.")
    @app_commands.describe(user="the member")
    @moderators_only()
    async def unblock(self, interaction: discord.Interaction, user: discord.Member) -> None:
        removed = await acknowledge.in_time(
            interaction,
            self.bot.services.quotas.unblock(interaction.guild_id, interaction.user.id, user.id),
        )
        await self._reply(
            interaction,
            f"Unblocked {user.mention}." if removed else f"{user.mention} was not blocked.",
        )

    @quota.command(
        name="default",
        description="Credits per period for members with no role tier or limit of their own.",
    )
    @app_commands.describe(limit="credits per period; leave out to use the bot's default")
    @moderators_only()
    async def default(
        self,
        interaction: discord.Interaction,
        limit: app_commands.Range[int, 0, 100_000] | None = None,
    ) -> None:
        quotas = self.bot.services.quotas
        await acknowledge.in_time(
            interaction,
            quotas.set_limit(
                interaction.guild_id,
                interaction.user.id,
                scope=LimitScope.DEFAULT,
                target_id=0,
                credits=limit,
            ),
        )
        value = limit if limit is not None else quotas.config.daily_credits
        await self._reply(
            interaction, f"The server default is now {credit_text(value)} per {quotas.period_word}."
        )

    @quota.command(
        name="role",
        description="Credits per period for members with a role (the best of their roles applies).",
    )
    @app_commands.describe(
        role="members with this role",
        limit="credits per period; leave out to remove this role's tier",
    )
    @moderators_only()
    async def role(
        self,
        interaction: discord.Interaction,
        role: discord.Role,
        limit: app_commands.Range[int, 0, 100_000] | None = None,
    ) -> None:
        quotas = self.bot.services.quotas
        await acknowledge.in_time(
            interaction,
            quotas.set_limit(
                interaction.guild_id,
                interaction.user.id,
                scope=LimitScope.ROLE,
                target_id=role.id,
                credits=limit,
            ),
        )
        text = (
            f"Members with {role.mention} now get {credit_text(limit)} per {quotas.period_word} (the best of their roles applies)."
            if limit is not None
            else f"{role.mention} no longer has a tier of its own."
        )
        await self._reply(interaction, text)

    @quota.command(
        name="budget", description="This server's daily GPU budget in dollars (0 = none)."
    )
    @app_commands.describe(amount="dollars per day, estimated from GPU time; 0 removes the budget")
    @moderators_only()
    async def budget(
        self, interaction: discord.Interaction, amount: app_commands.Range[float, 0, 10_000]
    ) -> None:
        await acknowledge.in_time(
            interaction,
            self.bot.services.quotas.set_budget(interaction.guild_id, interaction.user.id, amount),
        )
        text = (
            f"This server's daily GPU budget is now {dollars(amount)}, counted from estimated GPU "
            "time. When it is used up, new images are refused until it reopens at the next daily "
            "reset."
            if amount > 0
            else "This server no longer has a daily GPU budget."
        )
        await self._reply(interaction, text)

    @quota.command(
        name="top", description="Who spent the most: credits, GPU seconds and estimated dollars."
    )
    @app_commands.choices(period=[app_commands.Choice(name=name, value=name) for name in PERIODS])
    @app_commands.choices(theme=charts.THEME_CHOICES)
    @app_commands.describe(period="how far back to count", theme="the chart's colours")
    @moderators_only()
    async def top(
        self, interaction: discord.Interaction, period: str = "today", theme: str = "dark"
    ) -> None:
        quotas = self.bot.services.quotas
        span = PERIODS.get(period, 86_400)
        now = time.time()
        since = quotas.today_start(now) if period == "today" else (now - span if span else 0.0)
        spend, status, chart = await acknowledge.in_time(
            interaction, self._top(interaction, since, period, theme)
        )
        embed = discord.Embed(
            title=f"Top spenders ({period})",
            description=outgoing.lines_within(charts.spend_lines(spend), outgoing.DESCRIPTION_LIMIT)
            or "Nobody has spent anything yet.",
        )
        embed.add_field(
            name="This server today",
            value=_budget_line(status.guild_spent_usd, status.guild_budget_usd),
            inline=True,
        )
        embed.add_field(
            name="All servers today",
            value=_budget_line(status.total_spent_usd, status.total_budget_usd),
            inline=True,
        )
        embed.set_footer(text="Dollar figures are estimates from GPU time at the configured price.")
        await self._reply(interaction, embed=charts.with_chart(embed, chart), file=chart)

    async def _top(
        self, interaction: discord.Interaction, since: float, period: str, theme: str
    ) -> tuple[SpendFigures, BudgetStatus, discord.File]:
        services = self.bot.services
        spend, status = await asyncio.gather(
            services.figures.spend(interaction.guild_id, since),
            services.quotas.budget_status(interaction.guild_id),
        )
        names = await member_names(
            interaction, [m.user_id for m in spend.members[: drawing.MOST_MEMBERS]]
        )
        chart = await charts.chart_file(
            "top.png", drawing.spend_chart, spend, names, period, charts.theme(theme)
        )
        return spend, status, chart

    @quota.command(name="log", description="The audit trail: who changed what, when and why.")
    @app_commands.describe(user="only changes about this member")
    @moderators_only()
    async def log(
        self, interaction: discord.Interaction, user: discord.Member | None = None
    ) -> None:
        entries = await acknowledge.in_time(
            interaction,
            audit.entries(
                self.bot.services.db, interaction.guild_id, target_id=user.id if user else None
            ),
        )
        lines = []
        for entry in entries:
            why = f" — {discord.utils.escape_markdown(entry.reason)}" if entry.reason else ""
            lines.append(
                f"{relative(entry.at)} <@{entry.moderator_id}> {audit_lines.said(entry)}{why}"
            )
        title = f"Audit trail for {user.display_name}" if user else "Audit trail"
        description = (
            outgoing.lines_within(lines, outgoing.DESCRIPTION_LIMIT)
            or "No moderator actions recorded yet."
        )
        await self._reply(interaction, embed=discord.Embed(title=title, description=description))


async def member_names(interaction: discord.Interaction, user_ids: list[int]) -> dict[int, str]:
    """Display names for a chart's labels: the cache first, then Discord; unknown ones by id."""
    guild = interaction.guild

    async def name(user_id: int) -> str:
        member = guild.get_member(user_id) if guild is not None else None
        if member is None:
            try:
                member = await interaction.client.fetch_user(user_id)
            except discord.HTTPException:
                return f"member …{str(user_id)[-4:]}"
        return member.display_name

    return dict(zip(user_ids, await asyncio.gather(*(name(u) for u in user_ids)), strict=True))


def _budget_line(spent: float, budget: float | None) -> str:
    return f"{dollars(spent)} of {dollars(budget)}" if budget else f"{dollars(spent)} (no budget)"


async def setup(bot: Stablehand) -> None:
    await bot.add_cog(Quota(bot))
