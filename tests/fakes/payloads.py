"""The one factory for fake Discord payloads (gateway events, REST objects, interactions).

Pure functions returning plain dicts shaped like Discord API v10 JSON, as discord.py 2.7 parses
them. Shared ids are module constants so tests, the fake server and cogs agree on them.
"""

from __future__ import annotations

import datetime
import itertools
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DISCORD_EPOCH_MS = 1_420_070_400_000

GUILD_ID = 1_100_000_000_000_000_001
CHANNEL_ID = 1_100_000_000_000_000_002
APPLICATION_ID = 1_100_000_000_000_000_003
BOT_USER_ID = APPLICATION_ID
MEMBER_ID = 1_100_000_000_000_000_004
MODERATOR_ID = 1_100_000_000_000_000_005
MODERATOR_ROLE_ID = 1_100_000_000_000_000_006
OWNER_ID = 1_100_000_000_000_000_007
DM_CHANNEL_ID = 1_100_000_000_000_000_008

# Permission bits (https://discord.com/developers/docs/topics/permissions).
ADD_REACTIONS = 1 << 6
MANAGE_GUILD = 1 << 5
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
USE_EXTERNAL_EMOJIS = 1 << 18
USE_APPLICATION_COMMANDS = 1 << 31
SEND_MESSAGES_IN_THREADS = 1 << 38

PERM_MEMBER = (
    VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | ADD_REACTIONS
    | USE_EXTERNAL_EMOJIS
    | USE_APPLICATION_COMMANDS
    | SEND_MESSAGES_IN_THREADS
)
PERM_MANAGE_GUILD = PERM_MEMBER | MANAGE_GUILD
PERM_BOT = PERM_MEMBER | MANAGE_MESSAGES

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024

# Application command option types.
SUB_COMMAND = 1
SUB_COMMAND_GROUP = 2
STRING = 3
INTEGER = 4
BOOLEAN = 5
USER = 6
CHANNEL = 7
ROLE = 8
MENTIONABLE = 9
NUMBER = 10
ATTACHMENT = 11

_increment = itertools.count()


@dataclass(frozen=True)
class Typed:
    """An option value with an explicit option type, e.g. ``Typed(USER, 123)``."""

    type: int
    value: Any


def snowflake(at: float | None = None) -> int:
    """A unique snowflake whose timestamp part encodes ``at`` (epoch seconds, default now)."""
    ms = int((time.time() if at is None else at) * 1000)
    return ((ms - DISCORD_EPOCH_MS) << 22) | (next(_increment) & 0x3FFFFF)


def snowflake_time(value: int | str) -> float:
    """Return the creation time (epoch seconds) encoded in a snowflake."""
    return ((int(value) >> 22) + DISCORD_EPOCH_MS) / 1000


def iso(at: float | None = None) -> str:
    """Return ``at`` (epoch seconds, default now) as Discord's ISO-8601 timestamp."""
    moment = time.time() if at is None else at
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).isoformat()


def user(id: int | None = None, name: str = "member", bot: bool = False) -> dict[str, Any]:
    """A user object (defaults to the shared member)."""
    return {
        "id": str(MEMBER_ID if id is None else id),
        "username": name,
        "global_name": None if bot else name,
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
    }


def _default_user() -> dict[str, Any]:
    """The shared member's user object (for parameters that shadow ``user``)."""
    return user()


def bot_user() -> dict[str, Any]:
    """The bot's own user object, as ``GET /users/@me`` returns it."""
    data = user(BOT_USER_ID, "Stablehand", bot=True)
    data.update({"verified": True, "mfa_enabled": False, "flags": 0, "locale": "en-US"})
    return data


def moderator_user() -> dict[str, Any]:
    """The shared moderator's user object."""
    return user(MODERATOR_ID, "moderator")


def member(
    user: Mapping[str, Any] | None = None,
    roles: Iterable[int | str] = (),
    permissions: int = PERM_MEMBER,
    *,
    nick: str | None = None,
) -> dict[str, Any]:
    """A guild member with ``user``, as interaction payloads carry it (``permissions`` included)."""
    return {
        "user": dict(user) if user is not None else _default_user(),
        "roles": [str(r) for r in roles],
        "joined_at": iso(time.time() - 86_400),
        "premium_since": None,
        "nick": nick,
        "avatar": None,
        "deaf": False,
        "mute": False,
        "pending": False,
        "flags": 0,
        "communication_disabled_until": None,
        "permissions": str(permissions),
    }


def moderator_member() -> dict[str, Any]:
    """The shared moderator: the moderator role and Manage Server."""
    return member(moderator_user(), roles=(MODERATOR_ROLE_ID,), permissions=PERM_MANAGE_GUILD)


def guild_channel(
    id: int | None = None,
    guild_id: int = GUILD_ID,
    name: str = "general",
    nsfw: bool = False,
    type: int = 0,
    *,
    position: int = 0,
    parent_id: int | None = None,
) -> dict[str, Any]:
    """A guild channel object (text channel by default)."""
    return {
        "id": str(CHANNEL_ID if id is None else id),
        "type": type,
        "guild_id": str(guild_id),
        "name": name,
        "position": position,
        "nsfw": nsfw,
        "topic": None,
        "parent_id": None if parent_id is None else str(parent_id),
        "permission_overwrites": [],
        "rate_limit_per_user": 0,
        "last_message_id": None,
        "flags": 0,
    }


def dm_channel(id: int | None = None, recipient: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A DM channel (type 1) with one recipient."""
    return {
        "id": str(DM_CHANNEL_ID if id is None else id),
        "type": 1,
        "recipients": [dict(recipient) if recipient is not None else user()],
        "last_message_id": None,
        "flags": 0,
    }


def role(
    id: int | None = None,
    name: str = "role",
    permissions: int = 0,
    *,
    position: int = 1,
    color: int = 0,
    mentionable: bool = False,
) -> dict[str, Any]:
    """A role object."""
    return {
        "id": str(snowflake() if id is None else id),
        "name": name,
        "color": color,
        "colors": {"primary_color": color, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "icon": None,
        "unicode_emoji": None,
        "position": position,
        "permissions": str(permissions),
        "managed": False,
        "mentionable": mentionable,
        "flags": 0,
    }


def guild(
    id: int = GUILD_ID,
    name: str = "Stable",
    *,
    channels: Sequence[Mapping[str, Any]] | None = None,
    roles: Sequence[Mapping[str, Any]] | None = None,
    members: Sequence[Mapping[str, Any]] | None = None,
    owner_id: int = OWNER_ID,
    premium_tier: int = 0,
    features: Sequence[str] = (),
) -> dict[str, Any]:
    """A GUILD_CREATE payload: the guild with its channels, roles (@everyone first) and members."""
    if channels is None:
        channels = [guild_channel(CHANNEL_ID if id == GUILD_ID else snowflake(), guild_id=id)]
    if roles is None:
        roles = [role(MODERATOR_ROLE_ID, "Moderator", PERM_MANAGE_GUILD)]
    if members is None:
        members = [
            member(bot_user(), permissions=PERM_BOT),
            member(user()),
            moderator_member(),
        ]
    everyone = role(id, "@everyone", PERM_MEMBER, position=0)
    return {
        "id": str(id),
        "name": name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(owner_id),
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "premium_tier": premium_tier,
        "premium_subscription_count": 0,
        "preferred_locale": "en-US",
        "system_channel_id": None,
        "system_channel_flags": 0,
        "features": list(features),
        "roles": [everyone, *(dict(r) for r in roles)],
        "emojis": [],
        "stickers": [],
        "joined_at": iso(time.time() - 86_400),
        "large": False,
        "unavailable": False,
        "member_count": len(members),
        "channels": [{k: v for k, v in c.items() if k != "guild_id"} for c in channels],
        "threads": [],
        "members": [{k: v for k, v in m.items() if k != "permissions"} for m in members],
        "voice_states": [],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    }


def attachment(
    id: int | None,
    filename: str,
    size: int,
    url: str,
    content_type: str | None = None,
    width: int | None = None,
    height: int | None = None,
) -> dict[str, Any]:
    """An attachment object (as in messages and in resolved slash-command options)."""
    data: dict[str, Any] = {
        "id": str(snowflake() if id is None else id),
        "filename": filename,
        "size": size,
        "url": url,
        "proxy_url": url,
        "flags": 8 if filename.startswith("SPOILER_") else 0,
    }
    if content_type is not None:
        data["content_type"] = content_type
    if width is not None and height is not None:
        data["width"] = width
        data["height"] = height
    return data


def message(
    id: int | None,
    channel_id: int = CHANNEL_ID,
    content: str = "",
    author: Mapping[str, Any] | None = None,
    embeds: Sequence[Mapping[str, Any]] = (),
    attachments: Sequence[Mapping[str, Any]] = (),
    components: Sequence[Mapping[str, Any]] = (),
    *,
    guild_id: int | None = None,
    flags: int = 0,
    type: int = 0,
    webhook_id: int | None = None,
    edited_at: float | None = None,
) -> dict[str, Any]:
    """A message object (author defaults to the bot)."""
    message_id = snowflake() if id is None else id
    data: dict[str, Any] = {
        "id": str(message_id),
        "channel_id": str(channel_id),
        "type": type,
        "content": content,
        "author": dict(author) if author is not None else bot_user(),
        "timestamp": iso(snowflake_time(message_id)),
        "edited_timestamp": None if edited_at is None else iso(edited_at),
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [dict(a) for a in attachments],
        "embeds": [dict(e) for e in embeds],
        "components": [dict(c) for c in components],
        "pinned": False,
        "flags": flags,
    }
    if guild_id is not None:
        data["guild_id"] = str(guild_id)
    if webhook_id is not None:
        data["webhook_id"] = str(webhook_id)
        data["application_id"] = str(webhook_id)
    return data


def _infer_type(value: Any) -> int:
    """Option type of a Python value or payload dict."""
    if isinstance(value, Typed):
        return value.type
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INTEGER
    if isinstance(value, float):
        return NUMBER
    if isinstance(value, str):
        return STRING
    if isinstance(value, Mapping):
        if "filename" in value:
            return ATTACHMENT
        if "username" in value or "user" in value:
            return USER
        if "type" in value and "name" in value:
            return CHANNEL
        if "permissions" in value and "name" in value:
            return ROLE
    raise TypeError(f"cannot infer the option type of {value!r}; wrap it in Typed(type, value)")


def _resolve(kind: int, value: Any, resolved: dict[str, dict[str, Any]]) -> str | Any:
    """Put a snowflake option's object into ``resolved``; return the option value."""
    obj = value.value if isinstance(value, Typed) else value
    if kind not in (USER, CHANNEL, ROLE, MENTIONABLE, ATTACHMENT):
        return obj
    if not isinstance(obj, Mapping):
        default = _DEFAULT_OBJECTS.get(kind)
        if default is None:
            return str(obj)
        obj = default(int(obj))
    if kind == ATTACHMENT:
        resolved.setdefault("attachments", {})[obj["id"]] = dict(obj)
    elif kind == CHANNEL:
        channel = {k: obj[k] for k in ("id", "name", "type") if k in obj}
        channel.update(
            permissions=str(obj.get("permissions", PERM_MEMBER)), nsfw=obj.get("nsfw", False)
        )
        resolved.setdefault("channels", {})[obj["id"]] = channel
    elif "username" in obj or "user" in obj:
        the_user = obj.get("user", obj)
        resolved.setdefault("users", {})[the_user["id"]] = dict(the_user)
        if "user" in obj:
            partial = {k: v for k, v in obj.items() if k != "user"}
            resolved.setdefault("members", {})[the_user["id"]] = partial
        return the_user["id"]
    else:
        resolved.setdefault("roles", {})[obj["id"]] = dict(obj)
    return obj["id"]


_DEFAULT_OBJECTS = {
    USER: lambda id: user(id, f"user{id}"),
    CHANNEL: lambda id: guild_channel(id, name=f"channel{id}"),
    ROLE: lambda id: role(id, f"role{id}"),
}


def _options(
    values: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    resolved: dict[str, dict[str, Any]],
    focused: str | None = None,
) -> list[dict[str, Any]]:
    """Typed option list from ``{name: value}`` (or a raw option list, passed through)."""
    if not isinstance(values, Mapping):
        return [dict(option) for option in values]
    options = []
    for name, value in values.items():
        kind = _infer_type(value)
        option: dict[str, Any] = {"name": name, "type": kind}
        option["value"] = _resolve(kind, value, resolved)
        if name == focused:
            option["focused"] = True
        options.append(option)
    return options


def _nest(options: list[dict[str, Any]], subcommand: str | None, group: str | None) -> list:
    """Wrap options in a subcommand (and group) the way Discord nests them."""
    if subcommand is not None:
        options = [{"name": subcommand, "type": SUB_COMMAND, "options": options}]
    if group is not None:
        options = [{"name": group, "type": SUB_COMMAND_GROUP, "options": options}]
    return options


def _interaction(
    type: int,
    data: dict[str, Any] | None,
    *,
    user: Mapping[str, Any] | None,
    guild_id: int | None,
    channel: Mapping[str, Any] | None,
    permissions: int,
    roles: Iterable[int | str],
    application_id: int,
    created_at: float | None,
    attachment_size_limit: int,
    locale: str,
    app_permissions: int = PERM_BOT,
) -> dict[str, Any]:
    """The envelope every interaction payload shares (guild or DM)."""
    who = dict(user) if user is not None else _default_user()
    payload: dict[str, Any] = {
        "id": str(snowflake(created_at)),
        "application_id": str(application_id),
        "type": type,
        "token": f"aW50ZXJhY3Rpb24.{secrets.token_urlsafe(48)}",
        "version": 1,
        "attachment_size_limit": attachment_size_limit,
        "app_permissions": str(app_permissions),
        "locale": locale,
        "entitlements": [],
    }
    if data is not None:
        payload["data"] = data
    if guild_id is not None:
        the_member = who if "user" in who else member(who, roles, permissions)
        the_channel = dict(channel) if channel is not None else guild_channel(guild_id=guild_id)
        the_channel.setdefault("permissions", the_member.get("permissions", str(permissions)))
        payload.update(
            guild_id=str(guild_id),
            guild={"id": str(guild_id), "locale": "en-US", "features": []},
            guild_locale="en-US",
            channel=the_channel,
            channel_id=the_channel["id"],
            member=the_member,
            authorizing_integration_owners={"0": str(guild_id)},
            context=0,
        )
    else:
        the_user = who.get("user", who)
        the_channel = dict(channel) if channel is not None else dm_channel(recipient=the_user)
        payload.update(
            user=the_user,
            channel=the_channel,
            channel_id=the_channel["id"],
            authorizing_integration_owners={"1": the_user["id"]},
            context=1,
        )
    return payload


def slash_command(
    name: str,
    options: Mapping[str, Any] | Sequence[Mapping[str, Any]] = (),
    *,
    subcommand: str | None = None,
    group: str | None = None,
    user: Mapping[str, Any] | None = None,
    guild_id: int | None = GUILD_ID,
    channel: Mapping[str, Any] | None = None,
    permissions: int = PERM_MEMBER,
    roles: Iterable[int | str] = (),
    attachments: Mapping[str, Mapping[str, Any]] | None = None,
    application_id: int = APPLICATION_ID,
    created_at: float | None = None,
    attachment_size_limit: int = DEFAULT_UPLOAD_LIMIT,
    locale: str = "en-US",
    command_id: int | None = None,
    command_guild_id: int | None = None,
    focused: str | None = None,
    interaction_type: int = 2,
) -> dict[str, Any]:
    """An INTERACTION_CREATE ``d`` for a chat-input command (type 2).

    ``options`` maps option names to values whose types are inferred (bool, int, float, str,
    user/member, channel, role and attachment dicts); wrap a value in ``Typed`` to force a type,
    or pass a raw option list. ``attachments`` maps option names to attachment dicts.
    ``user`` may be a user or a member dict (which brings its own roles and permissions).
    ``guild_id=None`` makes it a DM interaction; ``command_guild_id`` marks the command as
    guild-registered (``data.guild_id``).
    """
    resolved: dict[str, dict[str, Any]] = {}
    values: Any = options
    if attachments:
        values = {**dict(options), **{k: Typed(ATTACHMENT, v) for k, v in attachments.items()}}
    data: dict[str, Any] = {
        "id": str(command_id if command_id is not None else snowflake()),
        "name": name,
        "type": 1,
        "options": _nest(_options(values, resolved, focused), subcommand, group),
    }
    if resolved:
        data["resolved"] = resolved
    if command_guild_id is not None:
        data["guild_id"] = str(command_guild_id)
    return _interaction(
        interaction_type,
        data,
        user=user,
        guild_id=guild_id,
        channel=channel,
        permissions=permissions,
        roles=roles,
        application_id=application_id,
        created_at=created_at,
        attachment_size_limit=attachment_size_limit,
        locale=locale,
    )


def autocomplete(
    name: str,
    options: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    focused: str,
    **kwargs: Any,
) -> dict[str, Any]:
    """An autocomplete interaction (type 4): ``focused`` names the option being typed."""
    if isinstance(options, Mapping) and focused not in options:
        raise ValueError(f"focused option {focused!r} is not among the options")
    return slash_command(name, options, focused=focused, interaction_type=4, **kwargs)


def button_click(
    custom_id: str,
    message: Mapping[str, Any],
    *,
    component_type: int = 2,
    values: Sequence[str] | None = None,
    user: Mapping[str, Any] | None = None,
    guild_id: int | None = GUILD_ID,
    channel: Mapping[str, Any] | None = None,
    permissions: int = PERM_MEMBER,
    roles: Iterable[int | str] = (),
    application_id: int = APPLICATION_ID,
    created_at: float | None = None,
    attachment_size_limit: int = DEFAULT_UPLOAD_LIMIT,
    locale: str = "en-US",
) -> dict[str, Any]:
    """A component interaction (type 3) on ``message``: a button, or a select with ``values``."""
    data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
    if values is not None:
        data["values"] = list(values)
    if channel is None and guild_id is not None:
        channel = guild_channel(int(message["channel_id"]), guild_id=guild_id)
    payload = _interaction(
        3,
        data,
        user=user,
        guild_id=guild_id,
        channel=channel,
        permissions=permissions,
        roles=roles,
        application_id=application_id,
        created_at=created_at,
        attachment_size_limit=attachment_size_limit,
        locale=locale,
    )
    payload["message"] = dict(message)
    return payload


def modal_submit(
    custom_id: str,
    fields: Mapping[str, str],
    *,
    message: Mapping[str, Any] | None = None,
    user: Mapping[str, Any] | None = None,
    guild_id: int | None = GUILD_ID,
    channel: Mapping[str, Any] | None = None,
    permissions: int = PERM_MEMBER,
    roles: Iterable[int | str] = (),
    application_id: int = APPLICATION_ID,
    created_at: float | None = None,
    attachment_size_limit: int = DEFAULT_UPLOAD_LIMIT,
    locale: str = "en-US",
) -> dict[str, Any]:
    """A modal submit (type 5): one action row per text input (type 4) ``custom_id: value``."""
    if channel is None and guild_id is not None and message is not None:
        channel = guild_channel(int(message["channel_id"]), guild_id=guild_id)
    rows = [
        {"type": 1, "components": [{"type": 4, "custom_id": key, "value": value}]}
        for key, value in fields.items()
    ]
    payload = _interaction(
        5,
        {"custom_id": custom_id, "components": rows},
        user=user,
        guild_id=guild_id,
        channel=channel,
        permissions=permissions,
        roles=roles,
        application_id=application_id,
        created_at=created_at,
        attachment_size_limit=attachment_size_limit,
        locale=locale,
    )
    if message is not None:
        payload["message"] = dict(message)
    return payload
