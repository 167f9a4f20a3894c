"""/jobs and /cancel: a member's own jobs, and stopping one (moderators may stop anyone's)."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.jobs import Job, JobState
from cogs.common import acknowledge, cancelling, outgoing, render
from cogs.common.errors import MemberError, handle_interaction_error
from cogs.common.permissions import NOT_MODERATOR, NotModerator, is_moderator

if TYPE_CHECKING:
    from bot.app import Stablehand


PAGE_SIZE = 5
WHOSE = {"mine": "Your jobs", "all": "Everyone's jobs"}
# How long /jobs waits for a result message to read its thumbnail from.
THUMBNAIL_TIMEOUT = 2.0


async def _page(
    interaction: discord.Interaction[Stablehand], whose: str, page: int
) -> tuple[list[Job], bool]:
    """One page of jobs, newest first, and whether older ones follow; moderators see everyone's."""
    if whose == "all" and not await is_moderator(interaction):
        raise NotModerator(NOT_MODERATOR)
    user_id = None if whose == "all" else interaction.user.id
    manager = interaction.client.services.jobs
    jobs = await manager.recent(
        interaction.guild_id, user_id, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE
    )
    return jobs[:PAGE_SIZE], len(jobs) > PAGE_SIZE


async def _thumbnail(bot: Stablehand, job: Job) -> str | None:
    """The first image of a delivered job, read from its message; spoilered results show none."""
    if job.state is not JobState.DONE or job.request.spoiler or job.message_id is None:
        return None
    assert job.channel_id is not None
    channel = bot.get_partial_messageable(job.channel_id)
    try:
        async with asyncio.timeout(THUMBNAIL_TIMEOUT):
            message = await channel.fetch_message(job.message_id)
    except (discord.HTTPException, TimeoutError):
        return None  # deleted, or Discord is slow: the list is still worth showing
    images = [a.url for a in message.attachments if a.width]
    return images[0] if images else None


def _job_embed(
    job: Job, position: int | None, thumbnail: str | None, *, whose: str, model: str
) -> discord.Embed:
    state = render.state_words(job.state, position)
    who = f"<@{job.user_id}> · " if whose == "all" else ""
    embed = discord.Embed(
        title=render.choice_label(f"{render.state_icon(job.state)} #{job.id} · {state}", 256),
        url=render.job_link(job),
        description=f"{render.quote_prompt(job.request.prompt, 200)}\n{model} · {who}{render.relative(job.created_at)}",
    )
    if thumbnail:
        embed.set_thumbnail(url=thumbnail)
    return embed


async def jobs_message(
    interaction: discord.Interaction[Stablehand], whose: str, page: int
) -> tuple[list[discord.Embed], discord.ui.View]:
    """A heading, one embed per job (with its first image) and the page buttons of /jobs."""
    jobs, more = await _page(interaction, whose, page)
    manager = interaction.client.services.jobs
    thumbnails = await asyncio.gather(*(_thumbnail(interaction.client, job) for job in jobs))
    if not jobs:
        about = (
            "No jobs on this page."
            if page > 1
            else "You have not made any images here yet."
            if whose == "mine"
            else "Nobody has made images here yet."
        )
    else:
        about = f"Page {page}, newest first."
        if any(not job.terminal for job in jobs):
            about += " Stop one with /cancel."
    embeds = [discord.Embed(title=WHOSE[whose], description=about)]
    embeds += [
        _job_embed(
            job,
            manager.position(job.id),
            thumbnail,
            whose=whose,
            model=render.model_of(job, interaction.client.services.templates),
        )
        for job, thumbnail in zip(jobs, thumbnails, strict=True)
    ]
    view = discord.ui.View(timeout=None)
    view.add_item(JobsPage(whose, page - 1, label="◀ Newer", disabled=page <= 1))
    view.add_item(JobsPage(whose, page + 1, label="Older ▶", disabled=not more))
    view.stop()  # the dynamic item answers every click, also after a restart
    return embeds, view


class JobsPage(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"shjobs:(?P<whose>mine|all):(?P<page>[0-9]+)",
):
    """A page button of /jobs: it names the list and the page, so it works after a restart too."""

    def __init__(
        self, whose: str, page: int, *, label: str = "Page", disabled: bool = False
    ) -> None:
        super().__init__(
            discord.ui.Button(
                label=label,
                style=discord.ButtonStyle.secondary,
                custom_id=f"shjobs:{whose}:{max(page, 1)}",
                disabled=disabled,
            )
        )
        self.whose, self.page = whose, max(page, 1)

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> JobsPage:
        return cls(match["whose"], int(match["page"]))

    async def callback(self, interaction: discord.Interaction[Stablehand]) -> None:
        try:
            embeds, view = await acknowledge.in_time(
                interaction, jobs_message(interaction, self.whose, self.page)
            )
            await outgoing.update(interaction, embeds=embeds, view=view)
        except Exception as error:
            await handle_interaction_error(interaction, error)


class Jobs(commands.Cog):
    """What a member has asked for, and how to stop it."""

    def __init__(self, bot: Stablehand) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(JobsPage)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(JobsPage)

    @app_commands.command(
        name="jobs", description="Recent image jobs with their first image, a page at a time."
    )
    @app_commands.describe(
        whose="Yours, or everyone's on this server (moderators)", page="Which page (1 is newest)"
    )
    @app_commands.choices(
        whose=[
            app_commands.Choice(name="mine", value="mine"),
            app_commands.Choice(name="everyone's (moderators)", value="all"),
        ]
    )
    @app_commands.guild_only()
    async def jobs(
        self,
        interaction: discord.Interaction[Stablehand],
        whose: str = "mine",
        page: app_commands.Range[int, 1, 1000] = 1,
    ) -> None:
        if whose not in WHOSE:
            raise MemberError("Pick `mine` or `everyone's` from the list.")
        embeds, view = await acknowledge.in_time(
            interaction, jobs_message(interaction, whose, page)
        )
        await outgoing.answer(interaction, embeds=embeds, view=view)

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
        manager = self.bot.services.jobs
        active = await manager.active(
            interaction.guild_id, None if everyone else interaction.user.id
        )
        choices = []
        for job in reversed(active):
            state = render.state_words(job.state, manager.position(job.id))
            label = f"#{job.id} {state} — {' '.join(job.request.prompt.split())}"
            if current.strip().lstrip("#") in label:
                choices.append(app_commands.Choice(name=render.choice_label(label), value=job.id))
        return choices[:25]


async def setup(bot: Stablehand) -> None:
    await bot.add_cog(Jobs(bot))
