"""/loras: the LoRAs on the image endpoint, as the operator listed them (LORAS_FILE)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs.common import acknowledge, outgoing
from cogs.common.launch import channel_is_nsfw
from cogs.imagine import lora_label

if TYPE_CHECKING:
    from bot.app import Stablehand

NO_LIST = "The operator has not listed the endpoint's LoRAs, so any `<lora:name>` on its volume may be tried."


class Loras(commands.Cog):
    """What LoRAs members can add with `lora:` or `<lora:name:0.8>`."""

    def __init__(self, bot: Stablehand) -> None:
        self.bot = bot

    @app_commands.command(name="loras", description="The LoRAs you can add to a prompt.")
    @app_commands.guild_only()
    async def loras(self, interaction: discord.Interaction[Stablehand]) -> None:
        catalogue = self.bot.services.loras
        if catalogue is None:
            await outgoing.answer(interaction, NO_LIST)
            return
        policy = await acknowledge.in_time(
            interaction, self.bot.services.policy_for(interaction.guild_id)
        )
        nsfw_allowed = channel_is_nsfw(interaction.channel) or policy.nsfw_policy == "off"
        offered = catalogue.offered(nsfw_allowed=nsfw_allowed)
        lines = [lora_label(info) for info in offered]
        hidden = len(catalogue.loras) - len(offered)
        footer = f"{hidden} more for age-restricted channels only." if hidden else ""
        embed = discord.Embed(
            title="LoRAs",
            description=outgoing.lines_within(lines, outgoing.DESCRIPTION_LIMIT)
            or "None you can use here.",
        )
        embed.set_footer(
            text=f"Add one with the lora option or <lora:name:0.8> in the prompt. {footer}".strip()
        )
        await outgoing.answer(interaction, embed=embed)


async def setup(bot: Stablehand) -> None:
    await bot.add_cog(Loras(bot))
