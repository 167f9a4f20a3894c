"""Who may do what, checked when a command runs (default visibility alone can be changed by admins)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands

if TYPE_CHECKING:
    from bot.app import Stablehand

NOT_MODERATOR = (
    "Only moderators can do that: it needs Manage Server or this server's moderator role."
)


class NotModerator(app_commands.CheckFailure):
    """The member is neither a Manage Server holder nor in the configured moderator role."""


def member_role_ids(user: discord.abc.User) -> tuple[int, ...]:
    """The ids of a member's roles, straight from the interaction.

    `Member.roles` only lists roles of a guild discord.py has cached; the ids always arrive.
    """
    return tuple(getattr(user, "_roles", ()))


async def is_moderator(interaction: discord.Interaction[Stablehand]) -> bool:
    permissions = interaction.permissions
    if permissions.manage_guild or permissions.administrator:
        return True
    if interaction.guild_id is None:
        return False
    settings = await interaction.client.services.guild_settings.get(interaction.guild_id)
    role = settings.moderator_role_id
    return role is not None and role in member_role_ids(interaction.user)


def moderators_only():
    """An app-command check: Manage Server, or the server's moderator role."""

    async def predicate(interaction: discord.Interaction[Stablehand]) -> bool:
        if interaction.guild_id is None:
            raise app_commands.NoPrivateMessage()
        if not await is_moderator(interaction):
            raise NotModerator(NOT_MODERATOR)
        return True

    return app_commands.check(predicate)
