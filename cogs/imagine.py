"""/imagine: turn a prompt into a job, answer at once, and let the job's message show the rest."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs import render
from cogs.delivery import NO_MENTIONS, ChannelPacer, DiscordDelivery, ProgressBoard
from cogs.errors import MemberError
from cogs.permissions import member_role_ids

if TYPE_CHECKING:
    from bot.app import Stablehand


def channel_is_nsfw(channel: object) -> bool:
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


class Imagine(commands.Cog):
    """Image requests and their delivery."""

    def __init__(self, bot: Stablehand) -> None:
        self.bot = bot
        pacing = bot.pacing
        self.pacer = ChannelPacer(burst=pacing.channel_burst, per_second=pacing.channel_per_second)
        self.board = ProgressBoard(bot, self.pacer, message_interval=pacing.message_interval)
        self.delivery = DiscordDelivery(bot, self.pacer, self.board)

    async def cog_load(self) -> None:
        self.bot.deliverer = self.delivery
        if self.bot.has_services:
            self.bot.services.jobs.subscribe(self.board.update)
            self.board.start()

    async def cog_unload(self) -> None:
        await self.board.stop()

    @app_commands.command(name="imagine", description="Make an image from a prompt.")
    @app_commands.describe(prompt="What to draw. Flags work too: --ar 16:9 --seed 42 --no text")
    @app_commands.guild_only()
    async def imagine(self, interaction: discord.Interaction, prompt: str) -> None:
        services = self.bot.services
        guild_settings = await services.guild_settings.get(interaction.guild_id)
        if not guild_settings.allows_channel(interaction.channel_id):
            channels = ", ".join(f"<#{c}>" for c in guild_settings.allowed_channels or ())
            raise MemberError(f"Images can be made in {channels or 'no channel'} on this server.")
        role_ids = member_role_ids(interaction.user)
        new_job = services.prepare(
            prompt,
            user_id=interaction.user.id,
            guild_id=interaction.guild_id,
            channel_id=interaction.channel_id,
            channel_nsfw=channel_is_nsfw(interaction.channel),
            policy=guild_settings.policy(services.policy()),
            filesize_limit=interaction.filesize_limit,
            role_ids=role_ids,
        )
        job = await services.jobs.accept(new_job)
        try:
            balance = await services.quotas.balance(job.guild_id, job.user_id, role_ids)
            cost = render.cost_line(job, balance.remaining, services.quotas.this_period)
            callback = await interaction.response.send_message(
                render.accepted_text(job, cost), allowed_mentions=NO_MENTIONS
            )
        except BaseException:
            await services.jobs.abandon(job.id, "the progress message could not be posted")
            raise
        await services.jobs.attach_message(job.id, interaction.channel_id, callback.message_id)


async def setup(bot: Stablehand) -> None:
    await bot.add_cog(Imagine(bot))
