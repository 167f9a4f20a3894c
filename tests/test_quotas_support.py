"""Builders for ledger tests that need a NewJob without the rest of the bot."""

from __future__ import annotations

from bot.jobs import NewJob
from bot.prompt import ContentPolicy, parse
from bot.workflows import load_library


def new_job(user: int, cost: int, *, guild: int = 100) -> NewJob:
    request = parse("a pony", library=load_library(), policy=ContentPolicy(), seed=1)
    return NewJob(
        user_id=user, guild_id=guild, channel_id=1, request=request, workflow={}, cost=cost
    )
