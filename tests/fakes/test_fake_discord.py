"""Self-test of the fake Discord, driven by discord.py's real client (no mocks)."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import discord
import discord.gateway
import discord.http
import pytest
import pytest_asyncio
import yarl
from discord import app_commands
from discord.ext import commands
from PIL import Image

from tests.fakes import payloads
from tests.fakes.fake_discord import (
    DiscordError,
    FakeDiscord,
    RecordedFile,
    RecordedRequest,
    check_embeds,
)

CHANNEL_MESSAGE = r"/channels/\d+/messages/\d+"
CHANNEL_MESSAGES = r"/channels/\d+/messages"


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), "red").save(buffer, "PNG")
    return buffer.getvalue()


PNG = _png()


def png_file(name: str = "a.png") -> discord.File:
    """A fresh discord.File of the test PNG."""
    return discord.File(io.BytesIO(PNG), name)


def make_bot(**options: Any) -> commands.Bot:
    """The smallest real bot: default intents, no cogs."""
    return commands.Bot(command_prefix="!", intents=discord.Intents.default(), **options)


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(channel_rate=(5, 0.2)) as server:
        server.install()
        yield server


@pytest_asyncio.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[commands.Bot]:
    client = make_bot()
    await client.login(fake.token)
    yield client
    await client.close()


async def interaction_from(
    fake: FakeDiscord, bot: commands.Bot, name: str, payload: dict[str, Any] | None = None
) -> tuple[discord.Interaction, dict[str, Any]]:
    """Run a no-argument command ``name`` through the tree; return its live interaction."""
    received: asyncio.Future[discord.Interaction] = asyncio.get_running_loop().create_future()

    @bot.tree.command(name=name, description="Hands its interaction to the test")
    async def capture(interaction: discord.Interaction) -> None:
        received.set_result(interaction)

    payload = payload or payloads.slash_command(name)
    fake.deliver(bot, payload)
    return await asyncio.wait_for(received, 5), payload


async def test_slash_command_reply_uploads_png(fake: FakeDiscord, bot: commands.Bot) -> None:
    @bot.tree.command(name="draw", description="Draw a picture")
    async def draw(interaction: discord.Interaction, prompt: str) -> None:
        await interaction.response.send_message(
            f"drew {prompt}", file=png_file(), allowed_mentions=discord.AllowedMentions.none()
        )

    payload = payloads.slash_command("draw", {"prompt": "a cat"})
    fake.deliver(bot, payload)
    request = await fake.wait_for_callback(payload)

    assert request.status == 200 and request.query == {"with_response": "1"}
    assert request.json["type"] == 4 and request.json["data"]["content"] == "drew a cat"
    assert request.files == (RecordedFile("files[0]", "a.png", PNG, "application/octet-stream"),)
    assert "Authorization" not in request.headers
    record = fake.interactions[payload["token"]]
    assert record.acknowledged and record.ack_type == 4
    message = fake.messages[record.response_message_id]
    assert message.content == "drew a cat" and message.type == 20
    assert message.allowed_mentions["parse"] == []
    [attachment] = message.attachments
    assert (attachment.data, attachment.content_type, attachment.width) == (PNG, "image/png", 8)
    assert fake.channel_messages(payloads.CHANNEL_ID) == [message]


async def test_attachments_are_served_over_http(fake: FakeDiscord, bot: commands.Bot) -> None:
    downloaded: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    @bot.tree.command(name="upscale", description="Upscale an image")
    async def upscale(interaction: discord.Interaction, image: discord.Attachment) -> None:
        downloaded.set_result(await image.read())

    upload = fake.host_attachment("input.png", PNG)
    fake.deliver(bot, payloads.slash_command("upscale", attachments={"image": upload}))
    assert await asyncio.wait_for(downloaded, 5) == PNG

    sent = await bot.get_partial_messageable(payloads.CHANNEL_ID).send(file=png_file("b.png"))
    assert await sent.attachments[0].read() == PNG
    assert fake.requests_to("GET", r"/attachments/.*")[-1].status == 200


async def test_bot_token_edit_outlives_the_interaction_token(
    fake: FakeDiscord, bot: commands.Bot
) -> None:
    interaction, payload = await interaction_from(fake, bot, "slow")
    await interaction.response.defer(thinking=True)
    record = fake.interactions[payload["token"]]
    message_id = record.response_message_id
    assert record.ack_type == 5 and fake.messages[message_id].loading

    await interaction.edit_original_response(content="queued")
    fake.advance(fake.token_ttl + 1)
    with pytest.raises(discord.HTTPException) as expired:
        await interaction.edit_original_response(content="done")
    assert (expired.value.status, expired.value.code) == (401, 50027)

    channel = bot.get_partial_messageable(payloads.CHANNEL_ID)
    await channel.get_partial_message(message_id).edit(content="done", attachments=[png_file()])
    message = fake.messages[message_id]
    assert (message.content, message.loading, message.edits) == ("done", False, 2)
    assert [a.data for a in message.attachments] == [PNG]


async def test_first_followup_replaces_the_thinking_message(
    fake: FakeDiscord, bot: commands.Bot
) -> None:
    interaction, payload = await interaction_from(fake, bot, "private")
    await interaction.response.defer(thinking=True, ephemeral=True)
    first = await interaction.followup.send("done", wait=True)
    second = await interaction.followup.send("and more", wait=True)

    placeholder = fake.interactions[payload["token"]].response_message_id
    assert first.id == placeholder != second.id
    message = fake.messages[placeholder]
    assert (message.content, message.loading, message.ephemeral) == ("done", False, True)
    with pytest.raises(discord.NotFound) as hidden:
        await bot.get_partial_messageable(payloads.CHANNEL_ID).fetch_message(placeholder)
    assert hidden.value.code == 10008


async def test_second_acknowledgement_is_rejected(fake: FakeDiscord, bot: commands.Bot) -> None:
    payload = payloads.slash_command("twice")
    fake.register_interaction(payload)
    await discord.Interaction(data=payload, state=bot._connection).response.send_message("one")
    again = discord.Interaction(data=payload, state=bot._connection)
    with pytest.raises(discord.HTTPException) as rejected:
        await again.response.defer()
    assert (rejected.value.status, rejected.value.code) == (400, 40060)


@pytest.mark.parametrize("how", ["created_long_ago", "clock_advanced", "never_registered"])
async def test_late_or_unknown_acknowledgement_is_unknown_interaction(
    fake: FakeDiscord, bot: commands.Bot, how: str
) -> None:
    created_at = time.time() - fake.ack_deadline - 1 if how == "created_long_ago" else None
    payload = payloads.slash_command("late", created_at=created_at)
    if how != "never_registered":
        fake.register_interaction(payload)
    if how == "clock_advanced":
        fake.advance(fake.ack_deadline + 0.1)
    interaction = discord.Interaction(data=payload, state=bot._connection)
    with pytest.raises(discord.NotFound) as unknown:
        await interaction.response.send_message("too late")
    assert unknown.value.code == 10062
    assert not fake.messages


async def test_injected_429_is_retried_by_discord_py(fake: FakeDiscord, bot: commands.Bot) -> None:
    message = await bot.get_partial_messageable(payloads.CHANNEL_ID).send("hi")
    fake.inject("PATCH", CHANNEL_MESSAGE, 429, 429, retry_after=0.05)
    await message.edit(content="edited")

    assert [r.status for r in fake.requests_to("PATCH", CHANNEL_MESSAGE)] == [429, 429, 200]
    assert fake.messages[message.id].content == "edited"
    assert fake.edit_rate_429s == 0


async def test_injected_5xx_is_plain_text(fake: FakeDiscord, bot: commands.Bot) -> None:
    fake.inject("POST", CHANNEL_MESSAGES, 503)
    with pytest.raises(discord.DiscordServerError) as failed:
        await bot.get_partial_messageable(payloads.CHANNEL_ID).send("hi")
    assert failed.value.status == 503 and "injected" in failed.value.text
    await bot.get_partial_messageable(payloads.CHANNEL_ID).send("hi again")
    assert [m.content for m in fake.channel_messages(payloads.CHANNEL_ID)] == ["hi again"]


async def test_channel_rate_limiter_429s_are_retried(fake: FakeDiscord) -> None:
    # One client paces itself from the X-RateLimit headers and never trips the limiter; two
    # clients (say, an old and a new bot process) editing one channel do.
    bots = [make_bot(), make_bot()]
    for client in bots:
        await client.login(fake.token)
    try:
        target = await bots[0].get_partial_messageable(payloads.CHANNEL_ID).send("progress")
        edits = [
            client.get_partial_messageable(payloads.CHANNEL_ID)
            .get_partial_message(target.id)
            .edit(content=f"step {step}")
            for step in range(10)
            for client in bots
        ]
        await asyncio.gather(*edits)
    finally:
        for client in bots:
            await client.close()

    statuses = [r.status for r in fake.requests_to("PATCH", CHANNEL_MESSAGE)]
    assert statuses.count(200) == 20 == fake.messages[target.id].edits
    assert fake.edit_rate_429s == statuses.count(429) > 0


async def test_rate_limiter_answers_like_discord() -> None:
    async with FakeDiscord(channel_rate=(5, 60.0)) as server:
        url = f"{server.url}/api/v10/channels/{payloads.CHANNEL_ID}/messages"
        auth = {"Authorization": f"Bot {server.token}"}
        async with aiohttp.ClientSession(headers=auth) as session:
            answers = []
            for index in range(6):
                async with session.post(url, json={"content": f"m{index}"}) as response:
                    answers.append((response.status, response.headers, await response.json()))
    (_, ok_headers, _), (_, headers, body) = answers[0], answers[-1]
    assert [a[0] for a in answers] == [200] * 5 + [429]
    assert ok_headers["X-RateLimit-Limit"] == "5" and ok_headers["X-RateLimit-Remaining"] == "4"
    assert {"X-RateLimit-Reset", "X-RateLimit-Reset-After", "X-RateLimit-Bucket"} <= set(ok_headers)
    assert headers["Via"] and headers["Content-Type"] == "application/json"
    assert body["global"] is False and 0 < body["retry_after"] <= 60
    assert server.edit_rate_429s == 1


async def test_content_over_2000_characters_is_rejected(
    fake: FakeDiscord, bot: commands.Bot
) -> None:
    with pytest.raises(discord.HTTPException) as rejected:
        await bot.get_partial_messageable(payloads.CHANNEL_ID).send("x" * 2001)
    assert (rejected.value.status, rejected.value.code) == (400, 50035)
    assert "content" in rejected.value.text


async def test_upload_over_the_limit_is_413(fake: FakeDiscord, bot: commands.Bot) -> None:
    fake.upload_limit = len(PNG) - 1
    with pytest.raises(discord.HTTPException) as rejected:
        await bot.get_partial_messageable(payloads.CHANNEL_ID).send(file=png_file())
    assert (rejected.value.status, rejected.value.code) == (413, 40005)


async def test_deleted_message_and_channel_are_unknown(
    fake: FakeDiscord, bot: commands.Bot
) -> None:
    channel = bot.get_partial_messageable(payloads.CHANNEL_ID)
    message = await channel.send("soon gone")
    fake.delete_message(message.id)
    with pytest.raises(discord.NotFound) as gone:
        await message.edit(content="edited")
    assert gone.value.code == 10008

    fake.delete_channel(payloads.CHANNEL_ID)
    with pytest.raises(discord.NotFound) as no_channel:
        await channel.send("anyone?")
    assert no_channel.value.code == 10003


async def test_tree_sync_records_commands(fake: FakeDiscord, bot: commands.Bot) -> None:
    @bot.tree.command(name="imagine", description="Generate an image")
    async def imagine(interaction: discord.Interaction, prompt: str, count: int = 1) -> None:
        raise AssertionError("not invoked")

    synced = await bot.tree.sync()
    guild = discord.Object(payloads.GUILD_ID)
    bot.tree.copy_global_to(guild=guild)
    guild_synced = await bot.tree.sync(guild=guild)
    again = await bot.tree.sync()

    assert [c.name for c in synced] == ["imagine"] == [c["name"] for c in fake.commands]
    assert [o["name"] for o in fake.commands[0]["options"]] == ["prompt", "count"]
    assert [c.name for c in guild_synced] == ["imagine"]
    assert fake.guild_commands[payloads.GUILD_ID][0]["guild_id"] == str(payloads.GUILD_ID)
    assert again[0].id == synced[0].id and synced[0].application_id == fake.application_id


async def test_options_arrive_typed_and_resolved(fake: FakeDiscord, bot: commands.Bot) -> None:
    received: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    quota = app_commands.Group(name="quota", description="Quotas")

    @quota.command(name="grant", description="Grant credits")
    async def grant(
        interaction: discord.Interaction,
        member: discord.Member,
        credits: int,
        reason: str,
        cfg: float,
        notify: bool,
        role: discord.Role,
    ) -> None:
        received.set_result({"interaction": interaction, **interaction.namespace.__dict__})

    bot.tree.add_command(quota)
    target = payloads.member(payloads.user(42, "pony"))
    options = {"member": target, "credits": 5, "reason": "art", "cfg": 6.5, "notify": True}
    options["role"] = payloads.role(77, "artists")
    payload = payloads.slash_command(
        "quota", options, subcommand="grant", user=payloads.moderator_member()
    )
    fake.deliver(bot, payload)
    got = await asyncio.wait_for(received, 5)

    assert isinstance(got["member"], discord.Member) and got["member"].name == "pony"
    assert (got["credits"], got["reason"], got["cfg"], got["notify"]) == (5, "art", 6.5, True)
    assert isinstance(got["role"], discord.Role) and got["role"].name == "artists"
    invoker = got["interaction"].user
    assert invoker.id == payloads.MODERATOR_ID and got["interaction"].permissions.manage_guild
    assert got["interaction"].filesize_limit == payloads.DEFAULT_UPLOAD_LIMIT


async def test_autocomplete_choices_are_recorded(fake: FakeDiscord, bot: commands.Bot) -> None:
    @bot.tree.command(name="style", description="Pick a style")
    async def style(interaction: discord.Interaction, name: str) -> None:
        raise AssertionError("not invoked")

    @style.autocomplete("name")
    async def complete(interaction: discord.Interaction, current: str) -> list[Any]:
        names = ("anime", "analog", "pixel")
        return [app_commands.Choice(name=n, value=n) for n in names if n.startswith(current)]

    payload = payloads.autocomplete("style", {"name": "an"}, focused="name")
    fake.deliver(bot, payload)
    await fake.wait_for_callback(payload)
    choices = fake.interactions[payload["token"]].autocomplete_choices
    assert choices == [{"name": "anime", "value": "anime"}, {"name": "analog", "value": "analog"}]


async def test_button_click_updates_its_message(fake: FakeDiscord, bot: commands.Bot) -> None:
    view = discord.ui.View(timeout=None)
    button = discord.ui.Button(label="Reroll", custom_id="job:1:reroll")

    async def clicked(interaction: discord.Interaction) -> None:
        await interaction.response.edit_message(content="rerolling", view=None)

    button.callback = clicked
    view.add_item(button)
    sent = await bot.get_partial_messageable(payloads.CHANNEL_ID).send("result", view=view)
    assert fake.messages[sent.id].components[0]["components"][0]["custom_id"] == "job:1:reroll"

    payload = payloads.button_click("job:1:reroll", fake.message_payload(sent.id))
    fake.deliver(bot, payload)
    await fake.wait_for_callback(payload)
    message = fake.messages[sent.id]
    assert (message.content, message.components, message.edits) == ("rerolling", [], 1)
    assert fake.interactions[payload["token"]].ack_type == 7


async def test_modal_submit_reaches_on_submit(fake: FakeDiscord, bot: commands.Bot) -> None:
    class PromptModal(discord.ui.Modal, title="Edit prompt"):
        prompt = discord.ui.TextInput(label="Prompt", custom_id="prompt")

        async def on_submit(self, interaction: discord.Interaction) -> None:
            await interaction.response.send_message(f"got {self.prompt.value}", ephemeral=True)

    shown = asyncio.Event()

    @bot.tree.command(name="edit", description="Edit a prompt")
    async def edit(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(PromptModal(custom_id="edit-modal"))
        shown.set()

    opened = payloads.slash_command("edit")
    fake.deliver(bot, opened)
    await fake.wait_for_callback(opened)
    assert fake.interactions[opened["token"]].modal["custom_id"] == "edit-modal"
    # discord.py stores the modal (to route its submit) only once it has read the callback's answer.
    await asyncio.wait_for(shown.wait(), 5)

    submitted = payloads.modal_submit("edit-modal", {"prompt": "a horse"})
    fake.deliver(bot, submitted)
    await fake.wait_for_callback(submitted)
    reply = fake.messages[fake.interactions[submitted["token"]].response_message_id]
    assert (reply.content, reply.ephemeral) == ("got a horse", True)


async def test_direct_messages(fake: FakeDiscord, bot: commands.Bot) -> None:
    interaction, _ = await interaction_from(
        fake, bot, "whoami", payloads.slash_command("whoami", guild_id=None)
    )
    assert interaction.guild is None and isinstance(interaction.channel, discord.DMChannel)
    await interaction.response.send_message("in a DM")
    assert fake.channel_messages(payloads.DM_CHANNEL_ID)[0].content == "in a DM"

    member = await bot.fetch_user(payloads.MEMBER_ID)
    await member.send("your image is ready")
    [dm] = fake.requests_to("POST", "/users/@me/channels")
    dm_channel_id = int(fake.requests_to("POST", CHANNEL_MESSAGES)[-1].path.split("/")[2])
    assert dm.json == {"recipient_id": payloads.MEMBER_ID}
    assert fake.channels[dm_channel_id]["type"] == 1


async def test_full_gateway_round_trip(fake: FakeDiscord) -> None:
    client = make_bot(guild_ready_timeout=0.05)
    ran: asyncio.Future[discord.Guild | None] = asyncio.get_running_loop().create_future()

    @client.tree.command(name="ping", description="Ping")
    async def ping(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("pong")
        ran.set_result(interaction.guild)

    task = asyncio.create_task(client.start(fake.token))
    try:
        await asyncio.wait_for(fake.connected.wait(), 5)
        await asyncio.wait_for(client.wait_until_ready(), 5)
        cached = client.get_guild(payloads.GUILD_ID)
        assert cached is not None and cached.get_channel(payloads.CHANNEL_ID) is not None
        await fake.dispatch("INTERACTION_CREATE", payloads.slash_command("ping"))
        assert await asyncio.wait_for(ran, 5) is cached

        resumed = asyncio.create_task(client.wait_for("resumed", timeout=5))
        await fake.drop_gateway()
        await resumed
        assert fake.connected.is_set() and len(fake.identify_payloads) == 1
    finally:
        await client.close()
        await task
    assert fake.identify_payloads[0]["intents"] == discord.Intents.default().value
    assert [m.content for m in fake.channel_messages(payloads.CHANNEL_ID)] == ["pong"]


async def test_gaps_are_loud_and_rest_needs_the_bot_token(fake: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{fake.url}/api/v10/guilds/1/audit-logs") as missing:
            assert missing.status == 404 and missing.headers["Content-Type"] == "application/json"
        async with session.get(f"{fake.url}/api/v10/users/@me") as anonymous:
            assert anonymous.status == 401
    assert [r.status for r in fake.requests] == [404, 401]


async def test_wait_for_sees_past_and_future_requests(fake: FakeDiscord, bot: commands.Bot) -> None:
    def is_post(request: RecordedRequest) -> bool:
        return request.method == "POST"

    later = asyncio.create_task(fake.wait_for(is_post))
    await bot.get_partial_messageable(payloads.CHANNEL_ID).send("hello")
    assert (await later).path == f"/channels/{payloads.CHANNEL_ID}/messages"
    assert await fake.wait_for(is_post) is fake.requests_to("POST", CHANNEL_MESSAGES)[0]
    with pytest.raises(TimeoutError):
        await fake.wait_for(lambda r: r.method == "PUT", timeout=0.05)


async def test_discord_private_hooks_exist() -> None:
    assert isinstance(discord.http.Route.BASE, str)
    assert discord.http.Route("GET", "/users/@me").url.startswith(discord.http.Route.BASE)
    assert isinstance(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY, yarl.URL)
    client = discord.Client(intents=discord.Intents.none())
    assert callable(client._connection.parsers["INTERACTION_CREATE"])
    assert callable(app_commands.CommandTree._call)
    await client.close()


def test_sitecustomize_redirects_only_when_asked() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent / "sitecustomize")}
    env["STABLEHAND_FAKE_DISCORD_URL"] = "http://127.0.0.1:4321"
    show = "import discord.gateway as g, discord.http as h; print(h.Route.BASE, g.DiscordWebSocket.DEFAULT_GATEWAY)"
    redirected = subprocess.run(
        [sys.executable, "-c", show], env=env, capture_output=True, text=True, check=True
    )
    assert redirected.stdout.split() == [
        "http://127.0.0.1:4321/api/v10",
        "ws://127.0.0.1:4321/gateway",
    ]

    del env["STABLEHAND_FAKE_DISCORD_URL"]
    untouched = subprocess.run(
        [sys.executable, "-c", "import sys; print('discord' in sys.modules)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert untouched.stdout.strip() == "False"


def test_snowflakes_encode_time_and_are_unique() -> None:
    at = 1_700_000_000.123
    ids = [payloads.snowflake(at) for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert abs(payloads.snowflake_time(ids[0]) - at) < 0.001
    assert discord.utils.snowflake_time(ids[0]).timestamp() == pytest.approx(at, abs=0.001)


def test_interaction_payload_shapes() -> None:
    upload = payloads.attachment(9, "in.png", 3, "http://x/in.png", "image/png")
    guild = payloads.slash_command("imagine", {"prompt": "x"}, attachments={"image": upload})
    required = {"id", "application_id", "type", "token", "version", "attachment_size_limit"}
    assert required <= set(guild) and guild["member"]["user"]["id"] == str(payloads.MEMBER_ID)
    assert [(o["name"], o["type"]) for o in guild["data"]["options"]] == [
        ("prompt", payloads.STRING),
        ("image", payloads.ATTACHMENT),
    ]
    assert guild["data"]["resolved"]["attachments"]["9"]["filename"] == "in.png"
    assert guild["channel"]["id"] == guild["channel_id"] == str(payloads.CHANNEL_ID)

    nested = payloads.slash_command("a", {"n": 1}, group="b", subcommand="c")["data"]["options"]
    assert nested[0]["type"] == 2 and nested[0]["options"][0]["type"] == 1
    assert nested[0]["options"][0]["options"] == [{"name": "n", "type": 4, "value": 1}]

    dm = payloads.slash_command("a", guild_id=None)
    assert "member" not in dm and dm["user"]["id"] == str(payloads.MEMBER_ID)
    assert dm["channel"]["type"] == 1 and dm["context"] == 1
    assert payloads.slash_command("a")["token"] != payloads.slash_command("a")["token"]


@pytest.mark.parametrize(
    ("embed", "where"),
    [
        ({"title": "t" * 257}, "embeds.0.title"),
        ({"description": "d" * 4097}, "embeds.0.description"),
        ({"fields": [{"name": "n" * 257, "value": "v"}]}, "embeds.0.fields.0.name"),
        ({"fields": [{"name": "n", "value": "v" * 1025}]}, "embeds.0.fields.0.value"),
        ({"footer": {"text": "f" * 2049}}, "embeds.0.footer.text"),
        ({"author": {"name": "a" * 257}}, "embeds.0.author.name"),
        ({"description": "d" * 4000, "footer": {"text": "f" * 2001}}, "embeds"),
    ],
)
def test_each_embed_limit_is_refused_like_discord_does(embed: dict, where: str) -> None:
    with pytest.raises(DiscordError) as refused:
        check_embeds([embed])
    assert refused.value.status == 400
    errors = refused.value.errors
    for part in where.split("."):
        errors = errors[part]
    assert "_errors" in errors
    check_embeds([{"title": "t" * 256, "fields": [{"name": "n" * 256, "value": "v" * 1024}]}])


async def test_offline_refuses_connections_and_online_serves_the_same_messages(
    fake: FakeDiscord, bot: commands.Bot
) -> None:
    channel = bot.get_partial_messageable(payloads.CHANNEL_ID)
    sent = await channel.send("before the outage")
    await fake.go_offline()
    with pytest.raises(aiohttp.ClientError):
        await channel.send("during the outage")  # a kept-alive connection may just be cut
    with pytest.raises(aiohttp.ClientConnectorError):
        await channel.send("during the outage")
    await fake.go_online()
    await channel.get_partial_message(sent.id).edit(content="after the outage")
    assert [m.content for m in fake.channel_messages(payloads.CHANNEL_ID)] == ["after the outage"]


async def test_each_shard_gets_only_its_guilds_as_discord_routes_them(fake: FakeDiscord) -> None:
    """Discord sends a guild's events to shard `(guild_id >> 22) % shard_count` only."""
    other_guild = payloads.GUILD_ID + (1 << 22)  # the next shard's
    other_channel = payloads.snowflake()
    fake.add_guild(
        payloads.guild(other_guild, channels=[payloads.guild_channel(other_channel, other_guild)])
    )
    ran: dict[int, int] = {}
    clients = []
    for shard in (0, 1):
        client = commands.AutoShardedBot(
            command_prefix="!",
            intents=discord.Intents.default(),
            shard_count=2,
            shard_ids=[shard],
            guild_ready_timeout=0.05,
        )

        @client.tree.command(name="ping", description="Ping")
        async def ping(interaction: discord.Interaction, shard: int = shard) -> None:
            await interaction.response.send_message("pong")
            ran[interaction.guild_id or 0] = shard

        clients.append(client)
    tasks = [asyncio.create_task(client.start(fake.token)) for client in clients]
    try:
        for client in clients:
            await asyncio.wait_for(client.wait_until_ready(), 5)
        shard_of = {
            payloads.GUILD_ID: (payloads.GUILD_ID >> 22) % 2,
            other_guild: 1 - (payloads.GUILD_ID >> 22) % 2,
        }
        for guild_id, shard in shard_of.items():
            assert clients[shard].get_guild(guild_id) is not None
            assert clients[1 - shard].get_guild(guild_id) is None
        await fake.dispatch("INTERACTION_CREATE", payloads.slash_command("ping"))
        channel = payloads.guild_channel(other_channel, other_guild)
        await fake.dispatch(
            "INTERACTION_CREATE",
            payloads.slash_command("ping", guild_id=other_guild, channel=channel),
        )
        async with asyncio.timeout(5):
            while len(ran) < 2:
                await asyncio.sleep(0.01)
        assert ran == shard_of
    finally:
        for client in clients:
            await client.close()
        await asyncio.gather(*tasks)
    assert sorted(p["shard"] for p in fake.identify_payloads) == [[0, 2], [1, 2]]
