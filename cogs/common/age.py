"""Whether a channel is age-restricted, as Discord says; a thread is as its parent channel is.

discord.py answers a thread's `is_nsfw()` from its parent only when the parent is cached, and
False otherwise; that False would let an age-restricted channel's words out. So the parent is
looked up here, and a channel Discord will not show us is unknown (None), never "not restricted".
"""

from __future__ import annotations

import discord

from cogs.common.launch import channel_is_nsfw


async def age_restricted(client: discord.Client, channel: object) -> bool | None:
    if isinstance(channel, discord.Thread):
        parent = channel.parent or await _channel(client, channel.parent_id)
        return None if parent is None else channel_is_nsfw(parent)
    return channel_is_nsfw(channel) if channel is not None else None


async def age_restricted_by_id(client: discord.Client, channel_id: int) -> bool | None:
    return await age_restricted(client, await _channel(client, channel_id))


async def _channel(client: discord.Client, channel_id: int | None) -> object | None:
    if channel_id is None:
        return None
    found = client.get_channel(channel_id)
    if found is not None:
        return found
    try:
        return await client.fetch_channel(channel_id)
    except discord.HTTPException:
        return None
