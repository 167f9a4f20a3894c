"""/prefer: each member's own defaults for /imagine, shown, set and reset in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.preferences import Preferences
from bot.store.preferences import PREFERENCE_NAMES
from cogs.common import acknowledge, outgoing, render
from cogs.imagine import ASPECTS

if TYPE_CHECKING:
    from bot.app import Stablehand

NOT_SET = "not set"


def describe(preferences: Preferences) -> discord.Embed:
    """Every preference and what it is now, defaults included."""
    negative = render.quote_prompt(preferences.negative, 300) if preferences.negative else NOT_SET
    lines = [
        f"**Aspect:** {preferences.aspect or NOT_SET}",
        f"**Negative:** {negative}",
        f"**Images:** {preferences.count or NOT_SET}",
        f"**Style:** {render.quote_prompt(preferences.style, 100) if preferences.style else NOT_SET}",
        f"**Ping me when a slow result lands:** {'yes' if preferences.pings else 'no'}",
        f"**Results by DM:** {'yes' if preferences.by_dm else 'no'}",
    ]
    embed = discord.Embed(title="Your preferences", description="\n".join(lines))
    embed.set_footer(
        text="They apply to /imagine unless you type that option or flag. "
        "Change one with /prefer set, undo with /prefer reset."
    )
    return embed


class Prefer(commands.Cog):
    """A member's own /imagine defaults, the same in every server."""

    prefer = app_commands.Group(name="prefer", description="Your own defaults for /imagine.")

    def __init__(self, bot: Stablehand) -> None:
        self.bot = bot

    @prefer.command(name="show", description="Your preferences as they are now.")
    async def show(self, interaction: discord.Interaction[Stablehand]) -> None:
        current = await acknowledge.in_time(
            interaction, self.bot.services.preferences.get(interaction.user.id)
        )
        await outgoing.answer(interaction, embed=describe(current))

    @prefer.command(name="set", description="Set one or more of your /imagine defaults.")
    @app_commands.describe(
        aspect="Shape of your images when you do not say --ar",
        negative="What to keep out of your images when you do not say --no",
        count="How many images when you do not say --count",
        style="A style of this bot to use by default",
        ping="Ping me when a result lands after a wait",
        dm="Send my results by DM instead of in the channel",
    )
    @app_commands.choices(aspect=[app_commands.Choice(name=a, value=a) for a in ASPECTS])
    async def set_(
        self,
        interaction: discord.Interaction[Stablehand],
        aspect: str | None = None,
        negative: app_commands.Range[str, 1, 2000] | None = None,
        count: app_commands.Range[int, 1, 4] | None = None,
        style: app_commands.Range[str, 1, 100] | None = None,
        ping: bool | None = None,
        dm: bool | None = None,
    ) -> None:
        given = {
            "aspect": aspect,
            "negative": negative,
            "count": count,
            "style": style,
            "ping": ping,
            "dm": dm,
        }
        changes = {name: value for name, value in given.items() if value is not None}
        store = self.bot.services.preferences
        if not changes:
            current = await acknowledge.in_time(interaction, store.get(interaction.user.id))
            await outgoing.answer(
                interaction, "Nothing to change: pick at least one option.", embed=describe(current)
            )
            return
        updated = await acknowledge.in_time(interaction, store.set(interaction.user.id, **changes))
        await outgoing.answer(interaction, f"Saved: {', '.join(changes)}.", embed=describe(updated))

    @prefer.command(name="reset", description="Back to the bot's defaults: one preference or all.")
    @app_commands.describe(which="The preference to forget (all of them if left out)")
    @app_commands.choices(
        which=[app_commands.Choice(name=name, value=name) for name in PREFERENCE_NAMES]
    )
    async def reset(
        self, interaction: discord.Interaction[Stablehand], which: str | None = None
    ) -> None:
        names = (which,) if which else PREFERENCE_NAMES
        updated = await acknowledge.in_time(
            interaction, self.bot.services.preferences.reset(interaction.user.id, names)
        )
        said = f"Reset {which}." if which else "Reset all your preferences."
        await outgoing.answer(interaction, said, embed=describe(updated))


async def setup(bot: Stablehand) -> None:
    await bot.add_cog(Prefer(bot))
