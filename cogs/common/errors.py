"""The one error handler: every failure becomes a short ephemeral message and a log line.

Not an extension: the bot installs `handle_interaction_error` in `setup_hook`, and cogs import
`MemberError` from here (an extension module is re-executed on every load, and its classes with it).
"""

from __future__ import annotations

import logging

import aiohttp
import discord
from discord import app_commands

from bot.db import is_transient
from bot.guild_settings import SettingsConflict
from bot.jobs import DatabaseBusy, JobError
from bot.prompt import PromptError
from bot.quotas import QuotaError
from cogs.common import outgoing, render

log = logging.getLogger(__name__)

UNEXPECTED = "Something went wrong on my side. It has been logged; please try again in a moment."
# Discord still offers the commands of an older version: only the operator can fix that.
COMMANDS_OUT_OF_DATE = (
    "My commands changed and Discord still shows the old ones, so retrying will not help. "
    "An operator needs to run `python -m bot sync`."
)


class MemberError(app_commands.AppCommandError):
    """An error raised by a cog whose text is written for the member."""


def member_message(error: BaseException) -> str:
    """The sentence a member reads for any error; unknown errors get a generic one."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, app_commands.CommandSignatureMismatch):
        return COMMANDS_OUT_OF_DATE
    if isinstance(error, app_commands.TransformerError):
        return f"I could not use `{discord.utils.escape_markdown(str(error.value))[:50]}` for that option; pick it from the list Discord offers."
    if isinstance(error, QuotaError):
        return render.refusal_text(error)
    if isinstance(error, PromptError | JobError | MemberError | SettingsConflict):
        return str(error)
    if is_transient(error):
        return str(DatabaseBusy())
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command only works in a server."
    if isinstance(error, app_commands.MissingPermissions | app_commands.CheckFailure):
        return str(error) or "You are not allowed to use this command."
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"Slow down: try again in {error.retry_after:.0f} s."
    return UNEXPECTED


UNKNOWN_INTERACTION = 10062  # Discord's code once the 3-second window (or the token) has passed


def interaction_expired(error: BaseException) -> bool:
    """Discord no longer takes answers to this interaction: nobody is left to tell."""
    original = getattr(error, "original", error)
    return isinstance(original, discord.NotFound) and original.code == UNKNOWN_INTERACTION


def discord_unreachable(error: BaseException) -> bool:
    """The connection to Discord failed (an outage, a dropped network): nobody can be told."""
    original = getattr(error, "original", error)
    return isinstance(original, aiohttp.ClientConnectionError | ConnectionError)


def is_expected(error: BaseException) -> bool:
    original = getattr(error, "original", error)
    return is_transient(original) or isinstance(
        original,
        PromptError | JobError | MemberError | SettingsConflict | app_commands.CheckFailure,
    )


async def reply_privately(interaction: discord.Interaction, text: str) -> None:
    """Answer ephemerally whether or not the interaction was already acknowledged."""
    try:
        await outgoing.answer(interaction, text)
    except (discord.HTTPException, aiohttp.ClientConnectionError, ConnectionError) as exc:
        log.warning("could not tell user %s about an error: %s", interaction.user.id, exc)


async def handle_interaction_error(interaction: discord.Interaction, error: BaseException) -> None:
    command = (
        interaction.command.qualified_name
        if interaction.command
        else (interaction.data or {}).get("custom_id", interaction.type.name)
    )
    context = f"interaction={interaction.id} user={interaction.user.id} guild={interaction.guild_id} command={command}"
    if discord_unreachable(error):
        log.warning("Discord could not be reached to answer (%s): %s", context, error)
        return
    if interaction_expired(error):
        # A slow machine or an outage, not a bug; whatever the command started was undone.
        log.warning("interaction expired before the bot could answer (%s)", context)
        return
    if isinstance(error, app_commands.CommandSignatureMismatch):
        log.warning("Discord's commands are out of date; run `python -m bot sync` (%s)", context)
    elif is_expected(error):
        log.info("refused (%s): %s", context, getattr(error, "original", error))
    else:
        log.error("unexpected error (%s)", context, exc_info=getattr(error, "original", error))
    await reply_privately(interaction, member_message(error))
