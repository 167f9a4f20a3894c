"""A fake Discord (REST + gateway) on 127.0.0.1 that discord.py's real client talks to.

It records every request, keeps the messages the bot creates, and enforces the platform rules
that shape the bot: the 3-second acknowledgement, the 15-minute interaction token, message and
upload limits, per-channel rate limits. Time-based rules use the fake's clock, which tests move
with ``advance()`` instead of sleeping. See reference/discord.md for the why.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import io
import json
import math
import mimetypes
import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import discord
import discord.gateway
import discord.http
import yarl
from aiohttp import BodyPartReader, WSMsgType, web

from tests.fakes import HANG_GUARD, payloads

API_PREFIX = "/api/v10"
MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_FILES = 10
MAX_CUSTOM_ID = 100
MAX_CHOICES = 25
MAX_MODAL_INPUTS = 5
EPHEMERAL = 1 << 6
LOADING = 1 << 7
COMPONENTS_V2 = 1 << 15
EDITABLE_FLAGS = (1 << 2) | (1 << 12) | COMPONENTS_V2
EMBED_LIMITS = {"title": 256, "description": 4096}
FIELD_LIMITS = {"name": 256, "value": 1024}
NAMED_LIMITS = (("footer", "text", 2048), ("author", "name", 256))
EMBED_TOTAL = 6000
DEFAULT_REQUEST_LIMIT = 25 * 1024 * 1024
_JSON = web.RequestKey("json", object)
_FILES = web.RequestKey("files", tuple)
_NO_AUTH_PREFIXES = ("/webhooks/", "/interactions/", "/attachments/")
_LIMITED_ROUTES = (
    ("POST", re.compile(r"/channels/(\d+)/messages"), "create"),
    ("PATCH", re.compile(r"/channels/(\d+)/messages/\d+"), "edit"),
    ("DELETE", re.compile(r"/channels/(\d+)/messages/\d+"), "delete"),
)


@dataclasses.dataclass(frozen=True)
class RecordedFile:
    """One uploaded file of a multipart request."""

    field: str
    filename: str
    data: bytes
    content_type: str | None


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received, and the status it answered."""

    method: str
    path: str
    query: dict[str, str]
    json: Any | None
    files: tuple[RecordedFile, ...]
    headers: dict[str, str]
    at: float
    status: int


@dataclasses.dataclass
class FakeAttachment:
    """A stored attachment, served over HTTP at ``url``."""

    id: int
    filename: str
    data: bytes
    content_type: str | None
    spoiler: bool
    url: str
    description: str | None = None
    width: int | None = None
    height: int | None = None

    @property
    def size(self) -> int:
        """Size in bytes."""
        return len(self.data)

    def to_payload(self) -> dict[str, Any]:
        """The attachment object Discord would send."""
        data = payloads.attachment(
            self.id, self.filename, self.size, self.url, self.content_type, self.width, self.height
        )
        if self.description is not None:
            data["description"] = self.description
        return data


@dataclasses.dataclass
class FakeMessage:
    """A message as the fake stores it; ``edits`` counts successful edits."""

    id: int
    channel_id: int
    content: str = ""
    embeds: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    components: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    attachments: list[FakeAttachment] = dataclasses.field(default_factory=list)
    flags: int = 0
    author_id: int = payloads.BOT_USER_ID
    deleted: bool = False
    edits: int = 0
    allowed_mentions: Any = None
    interaction_token: str | None = None
    webhook_id: int | None = None
    guild_id: int | None = None
    type: int = 0
    tts: bool = False
    edited_at: float | None = None
    author: dict[str, Any] | None = None

    @property
    def ephemeral(self) -> bool:
        """Only the invoking user sees it."""
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        """Still the "is thinking..." placeholder of a deferred response."""
        return bool(self.flags & LOADING)


@dataclasses.dataclass
class InteractionRecord:
    """What the fake knows about one interaction (``FakeDiscord.interactions`` keys by token)."""

    id: int
    token: str
    type: int
    application_id: int
    created_at: float
    channel_id: int | None
    guild_id: int | None
    message_id: int | None
    payload: dict[str, Any]
    acknowledged: bool = False
    ack_type: int | None = None
    ack_at: float | None = None
    response_message_id: int | None = None
    followup_ids: list[int] = dataclasses.field(default_factory=list)
    autocomplete_choices: list[dict[str, Any]] | None = None
    modal: dict[str, Any] | None = None


class DiscordError(Exception):
    """An error answer in Discord's shape: HTTP status plus JSON ``{code, message, errors}``."""

    def __init__(
        self, status: int, code: int, message: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def response(self) -> web.Response:
        """The HTTP answer."""
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return json_response(body, status=self.status)


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON answer with ``Content-Type: application/json`` exactly (discord.py compares it)."""
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def form_error(path: str, code: str, message: str) -> DiscordError:
    """A 400 / 50035 "Invalid Form Body" error for a dotted field path."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for key in reversed(path.split(".")):
        errors = {key: errors}
    return DiscordError(400, 50035, "Invalid Form Body", errors)


def _too_long(path: str, limit: int) -> DiscordError:
    return form_error(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")


def _unknown_interaction() -> DiscordError:
    return DiscordError(404, 10062, "Unknown interaction")


def _unknown_message() -> DiscordError:
    return DiscordError(404, 10008, "Unknown Message")


def _unknown_channel() -> DiscordError:
    return DiscordError(404, 10003, "Unknown Channel")


def _invalid_webhook_token() -> DiscordError:
    return DiscordError(401, 50027, "Invalid Webhook Token")


def _image_size(data: bytes) -> tuple[int | None, int | None]:
    """Width and height if ``data`` is an image Pillow can read."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:
        return None, None


def _custom_ids(components: Any) -> list[str]:
    """Every ``custom_id`` in a component tree."""
    found: list[str] = []
    if isinstance(components, list):
        for item in components:
            found.extend(_custom_ids(item))
    elif isinstance(components, dict):
        if isinstance(components.get("custom_id"), str):
            found.append(components["custom_id"])
        for key in ("components", "component", "accessory"):
            if key in components:
                found.extend(_custom_ids(components[key]))
    return found


def check_components(components: list[dict[str, Any]], flags: int) -> None:
    """Discord's component limits: 5 rows of 5, ``custom_id`` up to 100 characters."""
    if not flags & COMPONENTS_V2:
        if len(components) > 5:
            raise _too_long("components", 5)
        for index, row in enumerate(components):
            if row.get("type") == 1 and len(row.get("components", [])) > 5:
                raise _too_long(f"components.{index}.components", 5)
    for custom_id in _custom_ids(components):
        if len(custom_id) > MAX_CUSTOM_ID:
            raise _too_long("components.custom_id", MAX_CUSTOM_ID)


def check_embeds(embeds: list[dict[str, Any]]) -> None:
    """Discord's embed limits: 10 embeds, title 256, description 4096, fields 25 of 256/1024,
    footer 2048, author 256, 6000 in total."""
    if len(embeds) > MAX_EMBEDS:
        raise _too_long("embeds", MAX_EMBEDS)
    total = 0
    for index, embed in enumerate(embeds):
        for key, limit in EMBED_LIMITS.items():
            text = embed.get(key) or ""
            if len(text) > limit:
                raise _too_long(f"embeds.{index}.{key}", limit)
            total += len(text)
        if len(embed.get("fields", [])) > 25:
            raise _too_long(f"embeds.{index}.fields", 25)
        for n, field in enumerate(embed.get("fields", [])):
            for key, limit in FIELD_LIMITS.items():
                if len(field.get(key, "")) > limit:
                    raise _too_long(f"embeds.{index}.fields.{n}.{key}", limit)
                total += len(field.get(key, ""))
        for part, key, limit in NAMED_LIMITS:
            text = (embed.get(part) or {}).get(key, "")
            if len(text) > limit:
                raise _too_long(f"embeds.{index}.{part}.{key}", limit)
            total += len(text)
    if total > EMBED_TOTAL:
        raise form_error(
            "embeds", "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000"
        )


class _ChannelRateLimiter:
    """Fixed-window buckets per (route kind, channel), answering like Discord's headers."""

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self._windows: dict[tuple[str, int], tuple[float, int]] = {}

    def hit(self, kind: str, channel_id: int) -> tuple[bool, dict[str, str], float]:
        """Count one request; return (allowed, rate-limit headers, seconds to the reset)."""
        now = time.monotonic()
        start, count = self._windows.get((kind, channel_id), (now, 0))
        if now >= start + self.period:
            start, count = now, 0
        reset_after = start + self.period - now
        allowed = count < self.limit
        if allowed:
            count += 1
            self._windows[(kind, channel_id)] = (start, count)
        # Rounded up so a client that sleeps exactly this long finds the window reset.
        reset_after = math.ceil(reset_after * 1000) / 1000
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.limit - count),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": f"fake-{kind}",
        }
        return allowed, headers, reset_after


def rate_limited(retry_after: float, headers: Mapping[str, str] | None = None) -> web.Response:
    """A 429 discord.py retries: JSON ``retry_after`` plus the ``Via`` header Cloudflare lacks."""
    extra = {
        **(headers or {}),
        "Via": "1.1 google",
        "Retry-After": str(max(1, math.ceil(retry_after))),
        "X-RateLimit-Scope": "user",
    }
    body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
    return json_response(body, status=429, headers=extra)


@dataclasses.dataclass
class _Injection:
    method: str
    pattern: re.Pattern[str]
    statuses: collections.deque[int]
    retry_after: float


@dataclasses.dataclass(eq=False)
class _GatewayConnection:
    ws: web.WebSocketResponse
    session_id: str | None = None
    seq: int = 0
    # IDENTIFY's `shard`: [this shard's id, the bot's shard count]; unsharded is [0, 1].
    shard: tuple[int, int] = (0, 1)

    def serves(self, guild_id: int | None) -> bool:
        """Whether Discord sends this guild's events here: `(guild_id >> 22) % count` (DMs: 0)."""
        shard_id, count = self.shard
        return (0 if guild_id is None else (guild_id >> 22) % count) == shard_id

    async def send(self, op: int, d: Any = None, t: str | None = None) -> None:
        """Send one text frame (discord.py only decompresses binary frames)."""
        message: dict[str, Any] = {"op": op, "d": d, "s": None, "t": None}
        if op == 0:
            self.seq += 1
            message.update(s=self.seq, t=t)
        await self.ws.send_str(json.dumps(message))


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true")


class FakeDiscord:
    """A fake Discord: REST under ``{url}/api/v10``, gateway at ``ws://.../gateway``."""

    heartbeat_interval_ms = 45_000

    def __init__(
        self,
        *,
        token: str = "fake-discord-token",
        application_id: int = payloads.APPLICATION_ID,
        bot_user_id: int = payloads.BOT_USER_ID,
        ack_deadline: float = 3.0,
        token_ttl: float = 900.0,
        upload_limit: int = payloads.DEFAULT_UPLOAD_LIMIT,
        request_limit: int | None = None,
        channel_rate: tuple[int, float] | None = (5, 5.0),
        default_guild: bool = True,
    ) -> None:
        self.token = token
        self.application_id = application_id
        self.bot_user_id = bot_user_id
        self.ack_deadline = ack_deadline
        self.token_ttl = token_ttl
        self.upload_limit = upload_limit
        self.request_limit = request_limit or max(upload_limit, DEFAULT_REQUEST_LIMIT)
        self._limiter = _ChannelRateLimiter(*channel_rate) if channel_rate else None
        self.url = ""
        self.requests: list[RecordedRequest] = []
        self.messages: dict[int, FakeMessage] = {}
        self.interactions: dict[str, InteractionRecord] = {}
        self.guilds: dict[int, dict[str, Any]] = {}
        self.channels: dict[int, dict[str, Any]] = {}
        self.members: dict[int, dict[int, dict[str, Any]]] = {}
        self.users: dict[int, dict[str, Any]] = {bot_user_id: self._bot_user()}
        self.commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self.identify_payloads: list[dict[str, Any]] = []
        self.connected = asyncio.Event()
        self.edit_rate_429s = 0
        self._deleted_channels: set[int] = set()
        self._dm_channels: dict[int, int] = {}
        self._attachments: dict[int, FakeAttachment] = {}
        self._injections: list[_Injection] = []
        self._gateways: set[_GatewayConnection] = set()
        self._sessions: dict[str, int] = {}
        self._session_shards: dict[str, tuple[int, int]] = {}
        self._sockets: set[web.WebSocketResponse] = set()
        self._recorded = asyncio.Condition()
        self._offset = 0.0
        self._installed: tuple[str, yarl.URL] | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        if default_guild:
            self.add_guild(payloads.guild())

    # lifecycle

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1; sets ``url``."""
        app = web.Application(middlewares=[self._middleware], client_max_size=256 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{channel}/{attachment}/{filename}", self._get_attachment)
        for method, path, handler in self._routes():
            app.router.add_route(method, API_PREFIX + path, handler)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await self._site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def go_offline(self) -> None:
        """Become unreachable, state kept: new connections refused, the gateway and open ones cut."""
        if self._site is not None:
            site, self._site = self._site, None
            await site.stop()
        await self.drop_gateway()
        server = self._runner.server if self._runner is not None else None
        for handler in server.connections if server is not None else ():
            if handler.transport is not None:
                handler.transport.abort()

    async def go_online(self) -> None:
        """Listen again on the same port after ``go_offline()``."""
        if self._site is None and self._runner is not None:
            self._site = web.TCPSite(self._runner, "127.0.0.1", yarl.URL(self.url).port)
            await self._site.start()

    async def close(self) -> None:
        """Disconnect gateway clients, stop listening and undo ``install()``."""
        self.uninstall()
        for ws in list(self._sockets):
            await ws.close(code=1001)
        self.connected.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def gateway_url(self) -> str:
        """The websocket URL discord.py connects to."""
        return self.url.replace("http://", "ws://", 1) + "/gateway"

    def install(self) -> None:
        """Point discord.py (this process) at the fake; ``uninstall()`` restores it."""
        if not self.url:
            raise RuntimeError("start() the fake before install()")
        if self._installed is None:
            self._installed = (
                discord.http.Route.BASE,
                discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
            )
        discord.http.Route.BASE = self.url + API_PREFIX
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)

    def uninstall(self) -> None:
        """Restore discord.py's real endpoints."""
        if self._installed is not None:
            base, gateway = self._installed
            discord.http.Route.BASE = base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway
            self._installed = None

    # clock

    def now(self) -> float:
        """The fake's clock: epoch seconds, moved forward by ``advance()``."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for acknowledgement deadlines and token expiry, without waiting."""
        self._offset += seconds

    # state the fake serves

    def add_guild(self, guild_payload: Mapping[str, Any]) -> None:
        """Serve a guild (GUILD_CREATE shape), its channels and members; sent on IDENTIFY."""
        guild = dict(guild_payload)
        guild_id = int(guild["id"])
        self.guilds[guild_id] = guild
        for channel in guild.get("channels", []):
            self.add_channel({**channel, "guild_id": str(guild_id)})
        for member in guild.get("members", []):
            self.add_member(member, guild_id)

    def add_channel(self, channel_payload: Mapping[str, Any]) -> None:
        """Serve a channel (guild channel or DM)."""
        channel = {k: v for k, v in channel_payload.items() if k != "permissions"}
        channel_id = int(channel["id"])
        self.channels[channel_id] = channel
        self._deleted_channels.discard(channel_id)

    def add_member(
        self, member_payload: Mapping[str, Any], guild_id: int = payloads.GUILD_ID
    ) -> None:
        """Serve a guild member (``GET /guilds/{guild}/members/{user}``) and its user."""
        member = {k: v for k, v in member_payload.items() if k != "permissions"}
        user_id = int(member["user"]["id"])
        self.members.setdefault(guild_id, {})[user_id] = member
        self.users.setdefault(user_id, dict(member["user"]))

    def delete_message(self, message_id: int) -> None:
        """Simulate someone deleting a message: later edits answer 404 / 10008."""
        self.messages[int(message_id)].deleted = True

    def delete_channel(self, channel_id: int) -> None:
        """Simulate a deleted channel: later requests to it answer 404 / 10003."""
        self._deleted_channels.add(int(channel_id))

    def host_attachment(
        self,
        filename: str,
        data: bytes,
        content_type: str | None = None,
        channel_id: int = payloads.CHANNEL_ID,
    ) -> dict[str, Any]:
        """Serve a user's upload and return its attachment object (for attachment options)."""
        return self._store_attachment(channel_id, filename, data, content_type).to_payload()

    def channel_messages(self, channel_id: int) -> list[FakeMessage]:
        """Messages in a channel that are not deleted, oldest first (ephemeral ones included)."""
        found = [m for m in self.messages.values() if m.channel_id == channel_id and not m.deleted]
        return sorted(found, key=lambda m: m.id)

    def message_payload(self, message_id: int) -> dict[str, Any]:
        """The message object Discord would send for a stored message (e.g. for button clicks)."""
        return self._message_payload(self.messages[int(message_id)])

    # requests

    def requests_to(self, method: str, path_regex: str) -> list[RecordedRequest]:
        """Recorded requests whose method matches (``*`` for any) and path fully matches."""
        return [r for r in self.requests if _matches(r, method, re.compile(path_regex))]

    async def wait_for(
        self,
        predicate: Callable[[RecordedRequest], bool],
        timeout: float = HANG_GUARD,
    ) -> RecordedRequest:
        """The first recorded request (past or future) matching ``predicate``."""

        def first() -> RecordedRequest | None:
            return next((r for r in self.requests if predicate(r)), None)

        async with self._recorded:
            try:
                return await asyncio.wait_for(self._recorded.wait_for(first), timeout)
            except TimeoutError:
                seen = [f"{r.method} {r.path} -> {r.status}" for r in self.requests[-10:]]
                raise TimeoutError(
                    f"no matching request in {timeout}s; last seen: {seen}"
                ) from None

    async def wait_for_callback(
        self,
        payload: Mapping[str, Any],
        timeout: float = HANG_GUARD,
    ) -> RecordedRequest:
        """The interaction callback request for ``payload`` (whatever its status)."""
        suffix = f"/{payload['id']}/{payload['token']}/callback"
        return await self.wait_for(
            lambda r: r.method == "POST" and r.path.endswith(suffix), timeout
        )

    def inject(
        self, method: str, path_regex: str, *statuses: int, retry_after: float = 0.05
    ) -> None:
        """Answer the next matching requests with ``statuses``, one each, before any other rule."""
        pattern = re.compile(path_regex)
        self._injections.append(
            _Injection(method.upper(), pattern, collections.deque(statuses), retry_after)
        )

    # interactions and gateway

    def register_interaction(self, payload: Mapping[str, Any]) -> None:
        """Remember an interaction so its callback and webhook routes work (and expire).

        The time in its snowflake id counts as its creation on the fake's clock; registering the
        same token again changes nothing.
        """
        if payload["token"] in self.interactions:
            return
        registered = self.now()
        created = payloads.snowflake_time(payload["id"]) + self._offset
        if not registered - 86_400 < created <= registered + 5:
            created = registered
        channel = payload.get("channel") or {}
        guild_id = int(payload["guild_id"]) if payload.get("guild_id") else None
        self._learn(payload, guild_id)
        message = payload.get("message")
        self.interactions[payload["token"]] = InteractionRecord(
            id=int(payload["id"]),
            token=payload["token"],
            type=int(payload["type"]),
            application_id=int(payload["application_id"]),
            created_at=created,
            channel_id=int(channel["id"]) if "id" in channel else None,
            guild_id=guild_id,
            message_id=int(message["id"]) if message else None,
            payload=dict(payload),
        )

    def deliver(self, client: discord.Client, payload: Mapping[str, Any]) -> None:
        """REST-only mode: register ``payload`` and hand it to the client's gateway parser."""
        self.register_interaction(payload)
        client._connection.parsers["INTERACTION_CREATE"](dict(payload))

    async def dispatch(self, event: str, data: Mapping[str, Any]) -> None:
        """Send a gateway DISPATCH to every identified client (registers interactions)."""
        if event == "INTERACTION_CREATE":
            self.register_interaction(data)
        elif event == "GUILD_CREATE":
            self.add_guild(data)
        guild = data.get("guild_id") if event == "INTERACTION_CREATE" else data.get("id")
        guild_id = int(guild) if guild else None
        serving = [c for c in self._gateways if c.serves(guild_id)]
        if not serving:
            raise RuntimeError(f"no gateway client is connected to receive {event}")
        for connection in serving:
            await connection.send(0, dict(data), event)
            self._sessions[connection.session_id or ""] = connection.seq

    def connected_shards(self) -> set[int]:
        """The shard ids with an identified gateway connection now."""
        return {connection.shard[0] for connection in self._gateways}

    async def drop_gateway(self, code: int = 4000) -> None:
        """Close every gateway connection, as Discord does now and then; clients RESUME."""
        self.connected.clear()
        self._gateways.clear()
        for ws in list(self._sockets):
            await ws.close(code=code)

    # internals: bookkeeping

    def _bot_user(self) -> dict[str, Any]:
        return {**payloads.bot_user(), "id": str(self.bot_user_id)}

    def _learn(self, payload: Mapping[str, Any], guild_id: int | None) -> None:
        """Adopt the channel, member and message an interaction shows to exist (as it shows them)."""
        channel = payload.get("channel")
        if channel and int(channel["id"]) not in self._deleted_channels:
            extra = {"guild_id": str(guild_id)} if guild_id else {}
            self.add_channel({**channel, **extra})
        if guild_id and payload.get("member"):
            self.add_member(payload["member"], guild_id)
        if payload.get("user"):
            self.users.setdefault(int(payload["user"]["id"]), dict(payload["user"]))
        message = payload.get("message")
        if message and int(message["id"]) not in self.messages:
            self._adopt_message(message, guild_id)

    def _adopt_message(self, data: Mapping[str, Any], guild_id: int | None) -> FakeMessage:
        """Store a message the fake did not create itself (from an interaction payload)."""
        author = dict(data.get("author") or self._bot_user())
        message = FakeMessage(
            id=int(data["id"]),
            channel_id=int(data["channel_id"]),
            content=data.get("content", ""),
            embeds=list(data.get("embeds", [])),
            components=list(data.get("components", [])),
            flags=int(data.get("flags", 0)),
            author_id=int(author["id"]),
            guild_id=guild_id,
            type=int(data.get("type", 0)),
            author=author,
        )
        for item in data.get("attachments", []):
            known = self._attachments.get(int(item["id"]))
            if known is not None:
                message.attachments.append(known)
        self.messages[message.id] = message
        return message

    def _store_attachment(
        self, channel_id: int, filename: str, data: bytes, content_type: str | None = None
    ) -> FakeAttachment:
        attachment_id = payloads.snowflake(self.now())
        guessed = content_type or mimetypes.guess_type(filename)[0]
        width, height = _image_size(data) if (guessed or "").startswith("image/") else (None, None)
        attachment = FakeAttachment(
            id=attachment_id,
            filename=filename,
            data=data,
            content_type=guessed,
            spoiler=filename.startswith("SPOILER_"),
            url=f"{self.url}/attachments/{channel_id}/{attachment_id}/{filename}",
            width=width,
            height=height,
        )
        self._attachments[attachment_id] = attachment
        return attachment

    def _message_payload(self, message: FakeMessage) -> dict[str, Any]:
        author = message.author
        if author is None:
            is_bot = message.author_id == self.bot_user_id
            author = self._bot_user() if is_bot else payloads.user(message.author_id)
        data = payloads.message(
            message.id,
            message.channel_id,
            message.content,
            author,
            message.embeds,
            [a.to_payload() for a in message.attachments],
            message.components,
            guild_id=message.guild_id,
            flags=message.flags,
            type=message.type,
            webhook_id=message.webhook_id,
            edited_at=message.edited_at,
        )
        record = self.interactions.get(message.interaction_token or "")
        if record is not None:
            invoker = record.payload.get("member", {}).get("user") or record.payload.get("user")
            data["interaction_metadata"] = {
                "id": str(record.id),
                "type": record.type,
                "user": invoker,
                "authorizing_integration_owners": record.payload.get(
                    "authorizing_integration_owners", {}
                ),
            }
        return data

    # internals: HTTP plumbing

    def _routes(self) -> list[tuple[str, str, Callable[[web.Request], Any]]]:
        app = "/applications/{app}"
        webhook_message = "/webhooks/{app}/{token}/messages/{message}"
        channel_message = "/channels/{channel}/messages/{message}"
        return [
            ("GET", "/users/@me", self._get_me),
            ("POST", "/users/@me/channels", self._create_dm),
            ("GET", "/users/{user}", self._get_user),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("PUT", app + "/commands", self._put_commands),
            ("GET", app + "/commands", self._get_commands),
            ("PUT", app + "/guilds/{guild}/commands", self._put_commands),
            ("GET", app + "/guilds/{guild}/commands", self._get_commands),
            ("POST", "/interactions/{interaction}/{token}/callback", self._callback),
            ("POST", "/webhooks/{app}/{token}", self._followup),
            ("GET", webhook_message, self._get_webhook_message),
            ("PATCH", webhook_message, self._edit_webhook_message),
            ("DELETE", webhook_message, self._delete_webhook_message),
            ("GET", "/channels/{channel}", self._get_channel),
            ("GET", "/channels/{channel}/messages", self._get_channel_messages),
            ("POST", "/channels/{channel}/messages", self._create_channel_message),
            ("GET", channel_message, self._get_channel_message),
            ("PATCH", channel_message, self._edit_channel_message),
            ("DELETE", channel_message, self._delete_channel_message),
            ("POST", "/channels/{channel}/typing", self._typing),
            ("GET", "/guilds/{guild}", self._get_guild),
            ("GET", "/guilds/{guild}/members/{user}", self._get_member),
        ]

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/gateway":
            return await handler(request)
        at = self.now()
        path = request.path
        if path.startswith(API_PREFIX + "/"):
            path = path[len(API_PREFIX) :]
        request[_JSON], request[_FILES] = None, ()
        response = await self._answer(request, handler, path)
        await self._record(
            RecordedRequest(
                method=request.method,
                path=path,
                query=dict(request.query),
                json=request[_JSON],
                files=request[_FILES],
                headers=dict(request.headers),
                at=at,
                status=response.status,
            )
        )
        return response

    async def _answer(self, request: web.Request, handler: Any, path: str) -> web.StreamResponse:
        """Apply injections, auth and the rate limiter, then the route handler."""
        limit_headers: dict[str, str] = {}
        try:
            request[_JSON], request[_FILES] = await _read_body(request)
            injected = self._take_injection(request.method, path)
            if injected is not None:
                return injected
            if request.match_info.http_exception is not None:
                raise request.match_info.http_exception
            self._check_auth(request, path)
            limit_headers, limited = self._rate_limit(request.method, path)
            if limited is not None:
                return limited
            response = await handler(request)
        except DiscordError as exc:
            response = exc.response()
        except web.HTTPException as exc:
            body = {"message": f"{exc.status}: {exc.reason}", "code": 0}
            response = json_response(body, status=exc.status)
        response.headers.update(limit_headers)
        return response

    async def _record(self, request: RecordedRequest) -> None:
        async with self._recorded:
            self.requests.append(request)
            self._recorded.notify_all()

    def _take_injection(self, method: str, path: str) -> web.Response | None:
        for injection in self._injections:
            if not injection.statuses or not _method_matches(injection.method, method):
                continue
            if injection.pattern.fullmatch(path):
                return _injected_response(injection.statuses.popleft(), injection.retry_after)
        return None

    def _check_auth(self, request: web.Request, path: str) -> None:
        if path.startswith(_NO_AUTH_PREFIXES) or path == "/gateway":
            return
        if request.headers.get("Authorization") != f"Bot {self.token}":
            raise DiscordError(401, 0, "401: Unauthorized")

    def _rate_limit(self, method: str, path: str) -> tuple[dict[str, str], web.Response | None]:
        if self._limiter is None:
            return {}, None
        for limited_method, pattern, kind in _LIMITED_ROUTES:
            match = pattern.fullmatch(path)
            if method == limited_method and match:
                allowed, headers, reset_after = self._limiter.hit(kind, int(match[1]))
                if allowed:
                    return headers, None
                self.edit_rate_429s += 1
                return {}, rate_limited(reset_after, headers)
        return {}, None

    # internals: REST handlers

    async def _get_me(self, request: web.Request) -> web.Response:
        return json_response(self._bot_user())

    async def _get_user(self, request: web.Request) -> web.Response:
        user = self.users.get(int(request.match_info["user"]))
        if user is None:
            raise DiscordError(404, 10013, "Unknown User")
        return json_response(user)

    async def _get_application(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "id": str(self.application_id),
                "name": "Stablehand",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": payloads.user(payloads.OWNER_ID, "owner"),
                "team": None,
                "verify_key": "0" * 64,
                "flags": 0,
                "interactions_endpoint_url": None,
                "bot": self._bot_user(),
                "rpc_origins": [],
                "tags": [],
                "redirect_uris": [],
            }
        )

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return json_response({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 86_400_000, "max_concurrency": 1}
        return json_response({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    async def _put_commands(self, request: web.Request) -> web.Response:
        self._check_application(request)
        guild = request.match_info.get("guild")
        body = request[_JSON]
        if not isinstance(body, list):
            raise form_error("_root", "LIST_TYPE_CONVERT", "Must be an array.")
        previous = self.guild_commands.get(int(guild), []) if guild else self.commands
        stored = _register_commands(body, previous, self.application_id, guild)
        if guild:
            self.guild_commands[int(guild)] = stored
        else:
            self.commands = stored
        return json_response(stored)

    async def _get_commands(self, request: web.Request) -> web.Response:
        self._check_application(request)
        guild = request.match_info.get("guild")
        return json_response(self.guild_commands.get(int(guild), []) if guild else self.commands)

    def _check_application(self, request: web.Request) -> None:
        if int(request.match_info["app"]) != self.application_id:
            raise DiscordError(403, 50001, "Missing Access")

    async def _get_channel(self, request: web.Request) -> web.Response:
        return json_response(self._channel(int(request.match_info["channel"])))

    async def _typing(self, request: web.Request) -> web.Response:
        self._channel(int(request.match_info["channel"]))
        return web.Response(status=204)

    async def _get_guild(self, request: web.Request) -> web.Response:
        guild = self.guilds.get(int(request.match_info["guild"]))
        if guild is None:
            raise DiscordError(404, 10004, "Unknown Guild")
        gateway_only = ("channels", "members", "threads", "voice_states", "presences", "large")
        return json_response({k: v for k, v in guild.items() if k not in gateway_only})

    async def _get_member(self, request: web.Request) -> web.Response:
        guild_id = int(request.match_info["guild"])
        if guild_id not in self.guilds:
            raise DiscordError(404, 10004, "Unknown Guild")
        member = self.members.get(guild_id, {}).get(int(request.match_info["user"]))
        if member is None:
            raise DiscordError(404, 10007, "Unknown Member")
        return json_response(member)

    async def _create_dm(self, request: web.Request) -> web.Response:
        body = request[_JSON] or {}
        if "recipient_id" not in body:
            raise form_error("recipient_id", "BASE_TYPE_REQUIRED", "This field is required")
        user_id = int(body["recipient_id"])
        user = self.users.get(user_id) or payloads.user(user_id, f"user{user_id}")
        channel_id = self._dm_channels.setdefault(user_id, payloads.snowflake(self.now()))
        if channel_id not in self.channels:
            self.add_channel(payloads.dm_channel(channel_id, user))
        return json_response(self.channels[channel_id])

    def _channel(self, channel_id: int) -> dict[str, Any]:
        if channel_id in self._deleted_channels or channel_id not in self.channels:
            raise _unknown_channel()
        return self.channels[channel_id]

    def _channel_message(self, request: web.Request) -> FakeMessage:
        """A message reachable with the bot token: not deleted, not ephemeral, in that channel."""
        channel_id = int(request.match_info["channel"])
        self._channel(channel_id)
        message = self.messages.get(int(request.match_info["message"]))
        if message is None or message.deleted or message.ephemeral:
            raise _unknown_message()
        if message.channel_id != channel_id:
            raise _unknown_message()
        return message

    async def _get_channel_messages(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel"])
        self._channel(channel_id)
        limit = int(request.query.get("limit", 50))
        visible = [m for m in self.channel_messages(channel_id) if not m.ephemeral]
        if "before" in request.query:
            visible = [m for m in visible if m.id < int(request.query["before"])]
        if "after" in request.query:
            visible = [m for m in visible if m.id > int(request.query["after"])][:limit]
        newest_first = list(reversed(visible))[:limit]
        return json_response([self._message_payload(m) for m in newest_first])

    async def _create_channel_message(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel"])
        self._channel(channel_id)
        message = self._create_message(channel_id, request[_JSON] or {}, request[_FILES])
        return json_response(self._message_payload(message))

    async def _get_channel_message(self, request: web.Request) -> web.Response:
        return json_response(self._message_payload(self._channel_message(request)))

    async def _edit_channel_message(self, request: web.Request) -> web.Response:
        message = self._channel_message(request)
        if message.author_id != self.bot_user_id:
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        self._edit_message(message, request[_JSON] or {}, request[_FILES])
        return json_response(self._message_payload(message))

    async def _delete_channel_message(self, request: web.Request) -> web.Response:
        self._channel_message(request).deleted = True
        return web.Response(status=204)

    async def _get_attachment(self, request: web.Request) -> web.Response:
        attachment = self._attachments.get(int(request.match_info["attachment"]))
        if attachment is None or attachment.filename != request.match_info["filename"]:
            return web.Response(status=404, text="Not Found")
        content_type = attachment.content_type or "application/octet-stream"
        return web.Response(body=attachment.data, headers={"Content-Type": content_type})

    # internals: interactions and webhooks

    async def _callback(self, request: web.Request) -> web.Response:
        record = self.interactions.get(request.match_info["token"])
        if record is None or str(record.id) != request.match_info["interaction"]:
            raise _unknown_interaction()
        if record.acknowledged:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        if self.now() - record.created_at > self.ack_deadline:
            raise _unknown_interaction()
        body = request[_JSON] or {}
        kind = body.get("type")
        resource = self._respond(record, kind, body.get("data") or {}, request[_FILES])
        record.acknowledged, record.ack_type, record.ack_at = True, kind, self.now()
        if not _truthy(request.query.get("with_response")):
            return web.Response(status=204)
        message = self.messages.get(record.response_message_id or 0)
        return json_response(
            {
                "interaction": {
                    "id": str(record.id),
                    "type": record.type,
                    "response_message_id": str(message.id) if message else None,
                    "response_message_loading": bool(message and message.loading),
                    "response_message_ephemeral": bool(message and message.ephemeral),
                },
                "resource": resource,
            }
        )

    def _respond(
        self, record: InteractionRecord, kind: Any, data: dict[str, Any], files: tuple
    ) -> dict[str, Any]:
        """Carry out one interaction callback; return its ``resource``."""
        allowed = {
            1: {1},
            2: {4, 5, 9},
            3: {4, 5, 6, 7, 9},
            4: {8},
            5: {4, 5, 6, 7},
        }.get(record.type, set())
        if kind not in allowed:
            raise form_error("type", "INTERACTION_RESPONSE_TYPE_INVALID", f"Invalid type {kind}")
        if kind in (6, 7) and record.message_id is None:
            raise form_error("type", "INTERACTION_RESPONSE_TYPE_INVALID", "No message to update")
        if kind == 8:
            choices = data.get("choices", [])
            if len(choices) > MAX_CHOICES:
                raise _too_long("data.choices", MAX_CHOICES)
            record.autocomplete_choices = choices
            return {"type": 8}
        if kind == 9:
            if len(data.get("components", [])) > MAX_MODAL_INPUTS:
                raise _too_long("data.components", MAX_MODAL_INPUTS)
            record.modal = data
            return {"type": 9}
        if kind in (6, 7):
            message = self._live_message(record.message_id)
            if kind == 7:
                self._edit_message(message, data, files)
            record.response_message_id = message.id
        else:
            flags = int(data.get("flags", 0))
            if kind == 5:
                data = {"flags": LOADING | (flags & EPHEMERAL)}
            message = self._create_message(
                self._interaction_channel(record), data, files, record=record, empty_ok=kind == 5
            )
            record.response_message_id = message.id
        resource: dict[str, Any] = {"type": kind}
        if kind != 6:
            resource["message"] = self._message_payload(message)
        return resource

    def _interaction_channel(self, record: InteractionRecord) -> int:
        if record.channel_id is None:
            raise _unknown_channel()
        self._channel(record.channel_id)
        return record.channel_id

    def _webhook_record(self, request: web.Request) -> InteractionRecord:
        """The interaction behind a webhook route, if its token is still valid."""
        record = self.interactions.get(request.match_info["token"])
        if record is None or self.now() - record.created_at > self.token_ttl:
            raise _invalid_webhook_token()
        if int(request.match_info["app"]) != record.application_id:
            raise DiscordError(404, 10015, "Unknown Webhook")
        if record.channel_id is not None and record.channel_id in self._deleted_channels:
            raise _unknown_channel()
        return record

    def _live_message(self, message_id: int | None) -> FakeMessage:
        message = self.messages.get(message_id or 0)
        if message is None or message.deleted:
            raise _unknown_message()
        return message

    def _webhook_message(self, request: web.Request) -> tuple[InteractionRecord, FakeMessage]:
        record = self._webhook_record(request)
        raw = request.match_info["message"]
        if raw == "@original":
            return record, self._live_message(record.response_message_id)
        message_id = int(raw)
        if message_id not in (record.response_message_id, *record.followup_ids):
            raise _unknown_message()
        return record, self._live_message(message_id)

    async def _followup(self, request: web.Request) -> web.Response:
        record = self._webhook_record(request)
        if not record.acknowledged:
            raise DiscordError(404, 10015, "Unknown Webhook")
        body = request[_JSON] or {}
        original = self.messages.get(record.response_message_id or 0)
        if (
            record.ack_type == 5
            and original is not None
            and original.loading
            and not original.deleted
        ):
            # The first followup after a "thinking" defer replaces the placeholder, keeping its
            # visibility; once the placeholder is deleted, a followup is a new message.
            self._edit_message(original, body, request[_FILES])
            message = original
        else:
            channel_id = self._interaction_channel(record)
            message = self._create_message(channel_id, body, request[_FILES], record=record)
            record.followup_ids.append(message.id)
        if not _truthy(request.query.get("wait")):
            return web.Response(status=204)
        return json_response(self._message_payload(message))

    async def _get_webhook_message(self, request: web.Request) -> web.Response:
        _, message = self._webhook_message(request)
        return json_response(self._message_payload(message))

    async def _edit_webhook_message(self, request: web.Request) -> web.Response:
        _, message = self._webhook_message(request)
        self._edit_message(message, request[_JSON] or {}, request[_FILES])
        return json_response(self._message_payload(message))

    async def _delete_webhook_message(self, request: web.Request) -> web.Response:
        _, message = self._webhook_message(request)
        message.deleted = True
        return web.Response(status=204)

    # internals: messages

    def _check_files(self, files: tuple[RecordedFile, ...], count: int) -> None:
        if count > MAX_FILES:
            raise _too_long("attachments", MAX_FILES)
        too_large = DiscordError(413, 40005, "Request entity too large")
        if any(len(f.data) > self.upload_limit for f in files):
            raise too_large
        if sum(len(f.data) for f in files) > self.request_limit:
            raise too_large

    def _check_message(self, body: Mapping[str, Any]) -> None:
        content = body.get("content")
        if content is not None and len(content) > MAX_CONTENT:
            raise _too_long("content", MAX_CONTENT)
        check_embeds(body.get("embeds") or [])
        check_components(body.get("components") or [], int(body.get("flags") or 0))

    def _new_attachments(
        self, channel_id: int, body: Mapping[str, Any], files: tuple[RecordedFile, ...]
    ) -> list[FakeAttachment]:
        """Attachments for uploaded files, with descriptions from the ``attachments`` list."""
        described = {str(a.get("id")): a for a in body.get("attachments") or []}
        created = []
        for file in files:
            index = file.field.removeprefix("files[").removesuffix("]")
            attachment = self._store_attachment(channel_id, file.filename, file.data)
            attachment.description = described.get(index, {}).get("description")
            created.append(attachment)
        return created

    def _create_message(
        self,
        channel_id: int,
        body: Mapping[str, Any],
        files: tuple[RecordedFile, ...],
        *,
        record: InteractionRecord | None = None,
        empty_ok: bool = False,
    ) -> FakeMessage:
        self._check_message(body)
        self._check_files(files, len(files))
        empty = not any(
            body.get(k) for k in ("content", "embeds", "components", "poll", "sticker_ids")
        )
        if empty and not files and not empty_ok:
            raise DiscordError(400, 50006, "Cannot send an empty message")
        channel = self.channels.get(channel_id, {})
        message = FakeMessage(
            id=payloads.snowflake(self.now()),
            channel_id=channel_id,
            content=body.get("content") or "",
            embeds=list(body.get("embeds") or []),
            components=list(body.get("components") or []),
            attachments=self._new_attachments(channel_id, body, files),
            flags=int(body.get("flags") or 0),
            author_id=self.bot_user_id,
            allowed_mentions=body.get("allowed_mentions"),
            guild_id=int(channel["guild_id"]) if channel.get("guild_id") else None,
            tts=bool(body.get("tts")),
        )
        if record is not None:
            message.interaction_token = record.token
            message.webhook_id = record.application_id
            message.type = 20 if record.type == 2 else 0
        self.messages[message.id] = message
        return message

    def _edit_message(
        self, message: FakeMessage, body: Mapping[str, Any], files: tuple[RecordedFile, ...]
    ) -> None:
        """Apply an edit the way Discord does (``attachments`` lists what to keep)."""
        self._check_message(body)
        kept = message.attachments
        if "attachments" in body:
            keep_ids = {str(a.get("id")) for a in body["attachments"] or []}
            kept = [a for a in message.attachments if str(a.id) in keep_ids]
        self._check_files(files, len(kept) + len(files))
        content = (body["content"] or "") if "content" in body else message.content
        embeds = list(body["embeds"] or []) if "embeds" in body else message.embeds
        components = list(body["components"] or []) if "components" in body else message.components
        if not (content or embeds or components or kept or files):
            raise DiscordError(400, 50006, "Cannot send an empty message")
        message.content, message.embeds, message.components = content, embeds, components
        if "allowed_mentions" in body:
            message.allowed_mentions = body["allowed_mentions"]
        if body.get("flags") is not None:
            requested = int(body["flags"]) & EDITABLE_FLAGS
            message.flags = (message.flags & ~EDITABLE_FLAGS) | requested
        message.attachments = kept + self._new_attachments(message.channel_id, body, files)
        message.flags &= ~LOADING
        message.edits += 1
        message.edited_at = self.now()

    # internals: gateway

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        connection = _GatewayConnection(ws)
        self._sockets.add(ws)
        try:
            await connection.send(10, {"heartbeat_interval": self.heartbeat_interval_ms})
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    await self._on_gateway_message(connection, json.loads(frame.data))
        finally:
            self._sockets.discard(ws)
            self._gateways.discard(connection)
        return ws

    async def _on_gateway_message(self, connection: _GatewayConnection, message: dict) -> None:
        op, data = message.get("op"), message.get("d")
        if op == 1:
            await connection.send(11)
        elif op == 2:
            await self._identify(connection, data)
        elif op == 6:
            await self._resume(connection, data)
        elif op == 8:
            await self._send_member_chunk(connection, data)
        if connection.session_id:
            self._sessions[connection.session_id] = connection.seq

    async def _identify(self, connection: _GatewayConnection, data: dict[str, Any]) -> None:
        if data.get("token") != self.token:
            await connection.ws.close(code=4004, message=b"Authentication failed.")
            return
        shard = data.get("shard") or [0, 1]
        if not (isinstance(shard, list) and len(shard) == 2 and 0 <= shard[0] < shard[1]):
            await connection.ws.close(code=4010, message=b"Invalid shard.")
            return
        self.identify_payloads.append(data)
        connection.shard = (int(shard[0]), int(shard[1]))
        connection.session_id = secrets.token_hex(16)
        self._session_shards[connection.session_id] = connection.shard
        ready = {
            "v": 10,
            "user": self._bot_user(),
            "guilds": [
                {"id": str(g), "unavailable": True} for g in self.guilds if connection.serves(g)
            ],
            "shard": list(connection.shard),
            "session_id": connection.session_id,
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "geo_ordered_rtc_regions": [],
            "_trace": ["fake-discord"],
        }
        await connection.send(0, ready, "READY")
        for guild_id, guild in self.guilds.items():
            if connection.serves(guild_id):
                await connection.send(0, guild, "GUILD_CREATE")
        self._gateways.add(connection)
        self.connected.set()

    async def _resume(self, connection: _GatewayConnection, data: dict[str, Any]) -> None:
        session_id = data.get("session_id")
        if data.get("token") != self.token or session_id not in self._sessions:
            await connection.send(9, False)
            return
        connection.session_id = session_id
        connection.seq = self._sessions[session_id]
        connection.shard = self._session_shards.get(session_id, (0, 1))
        await connection.send(0, {}, "RESUMED")
        self._gateways.add(connection)
        self.connected.set()

    async def _send_member_chunk(self, connection: _GatewayConnection, data: dict) -> None:
        guild_id = int(data["guild_id"])
        members = list(self.members.get(guild_id, {}).values())
        if data.get("user_ids"):
            wanted = {str(u) for u in data["user_ids"]}
            members = [m for m in members if m["user"]["id"] in wanted]
        elif data.get("query"):
            members = [m for m in members if m["user"]["username"].startswith(data["query"])]
        chunk: dict[str, Any] = {
            "guild_id": str(guild_id),
            "members": members[: data.get("limit") or None],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        await connection.send(0, chunk, "GUILD_MEMBERS_CHUNK")


async def _read_body(request: web.Request) -> tuple[Any, tuple[RecordedFile, ...]]:
    """The JSON body (or a multipart ``payload_json``) and any uploaded files."""
    if not request.body_exists:
        return None, ()
    if request.content_type.startswith("multipart/"):
        return await _read_multipart(request)
    raw = await request.read()
    if request.content_type != "application/json" or not raw:
        return None, ()
    try:
        return json.loads(raw), ()
    except ValueError:
        raise DiscordError(400, 50109, "The request body contains invalid JSON.") from None


async def _read_multipart(request: web.Request) -> tuple[Any, tuple[RecordedFile, ...]]:
    payload: Any = None
    files: list[RecordedFile] = []
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        if part.filename is not None:
            data = bytes(await part.read())
            content_type = part.headers.get("Content-Type")
            files.append(RecordedFile(part.name or "", part.filename, data, content_type))
        elif part.name == "payload_json":
            payload = json.loads(await part.text())
    return payload, tuple(files)


def _injected_response(status: int, retry_after: float) -> web.Response:
    if status == 429:
        return rate_limited(retry_after)
    if status >= 500:
        return web.Response(status=status, text=f"{status}: injected upstream error")
    return json_response({"message": f"{status}: injected", "code": 0}, status=status)


def _method_matches(expected: str, method: str) -> bool:
    return expected == "*" or expected == method.upper()


def _matches(request: RecordedRequest, method: str, pattern: re.Pattern[str]) -> bool:
    return _method_matches(method.upper(), request.method) and bool(pattern.fullmatch(request.path))


_COMMAND_NAME = re.compile(r"^[-_\w]{1,32}$")


def _check_command_options(options: list[dict[str, Any]], path: str) -> None:
    """Discord's option rules: 25 at most, valid names, required ones first, 25 choices."""
    if len(options) > 25:
        raise _too_long(f"{path}.options", 25)
    seen_optional = False
    for index, option in enumerate(options):
        where = f"{path}.options.{index}"
        name = option.get("name", "")
        if not _COMMAND_NAME.match(name) or name != name.lower():
            raise form_error(f"{where}.name", "APPLICATION_COMMAND_INVALID_NAME", "Invalid name")
        if option.get("type") in (1, 2):
            _check_command_options(option.get("options") or [], where)
            continue
        if option.get("required") and seen_optional:
            raise form_error(
                where, "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID", "Required options first"
            )
        seen_optional = seen_optional or not option.get("required")
        if len(option.get("choices") or []) > MAX_CHOICES:
            raise _too_long(f"{where}.choices", MAX_CHOICES)


def _register_commands(
    body: list[dict[str, Any]],
    previous: list[dict[str, Any]],
    application_id: int,
    guild: str | None,
) -> list[dict[str, Any]]:
    """Validate a bulk overwrite and echo it back as Discord stores it (stable ids per name)."""
    if len(body) > 100:
        raise _too_long("_root", 100)
    known = {(c["name"], c.get("type", 1)): c["id"] for c in previous}
    seen: set[tuple[str, int]] = set()
    stored = []
    for index, command in enumerate(body):
        kind = command.get("type", 1)
        name = command.get("name", "")
        if (name, kind) in seen:
            raise form_error(f"{index}.name", "APPLICATION_COMMANDS_DUPLICATE_NAME", "Duplicate")
        seen.add((name, kind))
        if kind == 1:
            if not _COMMAND_NAME.match(name) or name != name.lower():
                raise form_error(
                    f"{index}.name", "APPLICATION_COMMAND_INVALID_NAME", "Invalid name"
                )
            if not 1 <= len(command.get("description", "")) <= 100:
                raise form_error(f"{index}.description", "BASE_TYPE_BAD_LENGTH", "1 to 100")
            _check_command_options(command.get("options") or [], str(index))
        entry = {
            "default_member_permissions": None,
            "nsfw": False,
            "options": [],
            **command,
            "id": known.get((name, kind)) or str(payloads.snowflake()),
            "application_id": str(application_id),
            "version": str(payloads.snowflake()),
            "type": kind,
        }
        if guild:
            entry["guild_id"] = guild
        stored.append(entry)
    return stored
