"""The one way out to Discord: every message the bot sends or edits is fitted to Discord's limits.

Discord refuses a whole message (HTTP 400) when one text in it is too long, and the member then
sees "application did not respond". Every send, reply and edit goes through here, so whatever a
cog built, what leaves fits; lists are summarised where they are built (`summarise`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import discord
from discord.utils import MISSING

from cogs.common.render import NO_MENTIONS

# Marks (in `Interaction.extras`) a public deferral whose "thinking..." nothing has replaced yet.
PUBLIC_PLACEHOLDER = "stablehand.public_placeholder"

# https://discord.com/developers/docs/resources/message#create-message and .../embed-limits
CONTENT_LIMIT = 2000
TITLE_LIMIT = 256
DESCRIPTION_LIMIT = 4096
FIELD_NAME_LIMIT = 256
FIELD_VALUE_LIMIT = 1024
FOOTER_LIMIT = 2048
AUTHOR_LIMIT = 256
FIELDS_LIMIT = 25
EMBED_TOTAL_LIMIT = 6000
ELLIPSIS = "…"


def clip(text: str, limit: int) -> str:
    """`text` if it fits, else its first `limit - 1` characters and an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def summarise(items: Sequence[str], *, most: int = 10, empty: str = "none") -> str:
    """`#general, #art and #memes`, or past `most` items `#general, #art and 88 more`."""
    if not items:
        return empty
    if len(items) <= most:
        return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
    return f"{', '.join(items[:most])} and {len(items) - most} more"


def lines_within(lines: Sequence[str], limit: int, *, line_limit: int = 400) -> str:
    """Whole lines (each clipped to `line_limit`) while they fit, then how many were left out."""
    clipped = [clip(line, line_limit) for line in lines]
    joined = "\n".join(clipped)
    if len(joined) <= limit:
        return joined
    room = limit - len(f"{ELLIPSIS} and {len(lines)} more") - 1
    kept: list[str] = []
    for line in clipped:
        if sum(len(k) + 1 for k in kept) + len(line) > room:
            break
        kept.append(line)
    return "\n".join([*kept, f"{ELLIPSIS} and {len(lines) - len(kept)} more"])


def fit_content(content: Any) -> Any:
    """Message text within 2,000 characters (None and MISSING pass through)."""
    if content is None or content is MISSING:
        return content
    return clip(str(content), CONTENT_LIMIT)


def fit_embed(embed: Any) -> Any:
    """A copy of `embed` within every embed limit; the longest texts give way to the 6,000 total."""
    if embed is None or embed is MISSING:
        return embed
    data = embed.to_dict()
    if "title" in data:
        data["title"] = clip(data["title"], TITLE_LIMIT)
    if "description" in data:
        data["description"] = clip(data["description"], DESCRIPTION_LIMIT)
    fields = data.get("fields", [])[:FIELDS_LIMIT]
    for field in fields:
        field["name"] = clip(field["name"], FIELD_NAME_LIMIT)
        field["value"] = clip(field["value"], FIELD_VALUE_LIMIT)
    if fields:
        data["fields"] = fields
    if "footer" in data and "text" in data["footer"]:
        data["footer"]["text"] = clip(data["footer"]["text"], FOOTER_LIMIT)
    if "author" in data and "name" in data["author"]:
        data["author"]["name"] = clip(data["author"]["name"], AUTHOR_LIMIT)
    _shrink_to_total(data)
    return discord.Embed.from_dict(data)


def _texts(data: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """Every (holder, key) whose text counts towards the embed total."""
    texts = [(data, key) for key in ("title", "description") if data.get(key)]
    for field in data.get("fields", []):
        texts += [(field, "name"), (field, "value")]
    texts += [(data.get(part, {}), key) for part, key in (("footer", "text"), ("author", "name"))]
    return [(holder, key) for holder, key in texts if holder.get(key)]


def _shrink_to_total(data: dict[str, Any]) -> None:
    """Cap every text at one length, the largest that keeps the total within 6,000.

    Short texts (a title, "Seed", "`42`") stay whole; the longest ones are cut to the same size.
    """
    texts = _texts(data)
    lengths = [len(holder[key]) for holder, key in texts]
    if sum(lengths) <= EMBED_TOTAL_LIMIT:
        return
    low, high = 1, max(lengths)
    while low < high:
        cap = (low + high + 1) // 2
        if sum(min(length, cap) for length in lengths) <= EMBED_TOTAL_LIMIT:
            low = cap
        else:
            high = cap - 1
    for holder, key in texts:
        holder[key] = clip(holder[key], low)


# ----- the sending paths ------------------------------------------------------------------------


async def respond(
    interaction: discord.Interaction,
    content: str | None = None,
    *,
    embed: discord.Embed | None = MISSING,
    embeds: Sequence[discord.Embed] = MISSING,
    file: discord.File = MISSING,
    view: discord.ui.View = MISSING,
    ephemeral: bool = True,
) -> discord.InteractionCallbackResponse:
    """The interaction's first answer (private unless said otherwise)."""
    return await interaction.response.send_message(
        fit_content(content),
        **_embeds(embed, embeds),
        file=file,
        view=view,
        ephemeral=ephemeral,
        allowed_mentions=NO_MENTIONS,
    )


async def answer(
    interaction: discord.Interaction,
    content: str | None = None,
    *,
    embed: discord.Embed | None = MISSING,
    embeds: Sequence[discord.Embed] = MISSING,
    file: discord.File = MISSING,
    view: discord.ui.View = MISSING,
    ephemeral: bool = True,
) -> None:
    """Answer whether or not the interaction was already acknowledged (deferred or answered)."""
    if holds_public_placeholder(interaction):
        if ephemeral:
            # Discord keeps a deferral's visibility for the first followup: withdraw the public
            # "thinking..." so that this answer is a new message only the member sees.
            await interaction.delete_original_response()
        del interaction.extras[PUBLIC_PLACEHOLDER]
    if interaction.response.is_done():
        await interaction.followup.send(
            fit_content(content),
            **_embeds(embed, embeds),
            file=file,
            view=view,
            ephemeral=ephemeral,
            allowed_mentions=NO_MENTIONS,
        )
    else:
        await respond(
            interaction,
            content,
            embed=embed,
            embeds=embeds,
            file=file,
            view=view,
            ephemeral=ephemeral,
        )


async def update(
    interaction: discord.Interaction,
    content: str | None = None,
    *,
    embeds: Sequence[discord.Embed] = MISSING,
    view: discord.ui.View | None = None,
) -> None:
    """A button's answer that replaces the message it is on (its buttons removed unless given).

    If the click was deferred meanwhile, the answer comes as a new private message instead.
    """
    if interaction.response.is_done():
        await answer(interaction, content, embeds=embeds, view=view or MISSING)
        return
    await interaction.response.edit_message(
        content=fit_content(content),
        embeds=MISSING if embeds is MISSING else [fit_embed(e) for e in embeds],
        view=view,
        allowed_mentions=NO_MENTIONS,
    )


def _embeds(embed: discord.Embed | None, embeds: Sequence[discord.Embed]) -> dict[str, Any]:
    """discord.py takes `embed` or `embeds`, never both."""
    if embeds is not MISSING:
        return {"embeds": [fit_embed(e) for e in embeds]}
    return {"embed": fit_embed(embed)}


async def defer(interaction: discord.Interaction, *, ephemeral: bool) -> None:
    """Acknowledge with "thinking..."; a public one is kept for the answer to take its place."""
    await interaction.response.defer(ephemeral=ephemeral, thinking=True)
    if not ephemeral:
        interaction.extras[PUBLIC_PLACEHOLDER] = True


def holds_public_placeholder(interaction: discord.Interaction) -> bool:
    """The interaction was deferred publicly and nothing has taken the "thinking..." place yet."""
    return bool(interaction.extras.get(PUBLIC_PLACEHOLDER))


async def fill_public_placeholder(
    interaction: discord.Interaction, content: str, *, view: discord.ui.View = MISSING
) -> discord.InteractionMessage:
    """Turn the public "thinking..." into this message: the interaction's own answer, in place."""
    message = await interaction.edit_original_response(
        content=fit_content(content), view=view, allowed_mentions=NO_MENTIONS
    )
    # Only once it shows: should the edit fail, a private answer must still withdraw it first.
    interaction.extras.pop(PUBLIC_PLACEHOLDER, None)
    return message


async def follow_up_publicly(
    interaction: discord.Interaction, content: str, *, view: discord.ui.View = MISSING
) -> discord.WebhookMessage:
    """A new public message after the interaction's answer (which must not be a deferral: the
    first followup would take a "thinking..." place and its visibility instead)."""
    return await interaction.followup.send(
        fit_content(content), view=view, ephemeral=False, wait=True, allowed_mentions=NO_MENTIONS
    )


async def edit_response(
    interaction: discord.Interaction, content: str, *, view: discord.ui.View = MISSING
) -> None:
    """Replace the text (and, given one, the buttons) of the interaction's own answer."""
    await interaction.edit_original_response(
        content=fit_content(content), view=view, allowed_mentions=NO_MENTIONS
    )


async def send(
    target: discord.abc.Messageable,
    content: str | None = None,
    *,
    embed: discord.Embed | None = None,
    files: Sequence[discord.File] | None = None,
    view: discord.ui.View | None = None,
) -> discord.Message:
    """A new message in a channel or a DM, with the bot token."""
    return await target.send(
        fit_content(content),
        embed=fit_embed(embed),
        files=files,
        view=view,
        allowed_mentions=NO_MENTIONS,
    )


async def edit(
    message: discord.PartialMessage,
    *,
    content: str | None = MISSING,
    embed: discord.Embed | None = MISSING,
    attachments: Sequence[discord.File] = MISSING,
    view: discord.ui.View | None = MISSING,
) -> discord.Message:
    """Edit a message with the bot token (what is not given stays as it is)."""
    return await message.edit(
        content=fit_content(content),
        embed=fit_embed(embed),
        attachments=attachments,
        view=view,
        allowed_mentions=NO_MENTIONS,
    )


async def ping(
    target: discord.abc.Messageable,
    user_id: int,
    content: str,
    *,
    reply_to: discord.PartialMessage | None = None,
) -> discord.Message:
    """A message that notifies one member and nobody else (no roles, no everyone, no reply ping)."""
    only_them = discord.AllowedMentions(
        everyone=False, roles=False, users=[discord.Object(user_id)], replied_user=False
    )
    reference = reply_to.to_reference(fail_if_not_exists=False) if reply_to else None
    return await target.send(fit_content(content), allowed_mentions=only_them, reference=reference)
