"""Styles, the LoRA list, a server's blocked words and workflows, and /settings conflicts,
through the fake Discord and the fake RunPod."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from bot.app import Stablehand
from bot.config import ConfigError
from bot.db import Database
from bot.services import Services
from tests.conftest import (
    embed_text,
    imagine_result,
    make_settings,
    reply_to,
    start_bot,
    wait_for_state,
)
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_runpod import FakeRunPod

EPHEMERAL = 64
GUILD = payloads.GUILD_ID
OTHER_GUILD = GUILD + 1
MEMBER = payloads.member(payloads.user(2_500_000_000_000_000_001, "member"))
MANAGER = payloads.member(
    payloads.user(2_500_000_000_000_000_002, "owner"), permissions=payloads.PERM_MANAGE_GUILD
)

CINEMATIC = {
    "description": "film still",
    "prompt": "cinematic film still of {prompt}, shallow depth of field",
    "negative": "cartoon",
    "loras": [{"name": "film_grain", "weight": 0.6}],
    "defaults": {"aspect": "16:9", "steps": 30, "cfg": 6.0},
}
LORAS = [
    {"name": "detail_tweaker", "triggers": ["detailed"], "weight": 0.8},
    {"name": "film_grain", "triggers": ["film grain"], "weight": 0.6},
    {"name": "lewd_pose", "triggers": ["lewd pose"], "weight": 0.7, "nsfw": True},
]


@pytest_asyncio.fixture
async def styled_bot(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> AsyncIterator[Stablehand]:
    styles = tmp_path / "styles"
    styles.mkdir()
    (styles / "cinematic.json").write_text(json.dumps(CINEMATIC))
    loras = tmp_path / "loras.json"
    loras.write_text(json.dumps(LORAS))
    settings = make_settings(tmp_path, fake_runpod, STYLES_DIR=str(styles), LORAS_FILE=str(loras))
    running = await start_bot(settings, fake_discord)
    yield running
    await running.close()


def _settings(subcommand: str, options: dict, user: dict, **kwargs) -> dict:
    return payloads.slash_command("settings", options, subcommand=subcommand, user=user, **kwargs)


def _button(message: dict, label: str) -> str:
    return next(
        c["custom_id"]
        for row in message["components"]
        for c in row["components"]
        if c.get("label") == label
    )


def _details(message: dict) -> dict:
    return payloads.button_click(_button(message, "Details"), message)


async def test_an_operators_style_wraps_the_words_and_shows_in_details(
    styled_bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    message = await imagine_result(
        styled_bot, fake_discord, "a pony astronaut", options={"style": "cinematic"}
    )
    job = await styled_bot.services.jobs.get(1)
    request = job.request
    assert request.prompt == "cinematic film still of a pony astronaut, shallow depth of field"
    assert "cartoon" in request.negative
    assert [(lora.name, lora.strength) for lora in request.loras] == [
        ("film_grain.safetensors", 0.6)
    ]
    assert (request.width, request.height, request.steps, request.cfg) == (1344, 768, 30, 6.0)
    workflow = fake_runpod.requests_for("run")[0].json["input"]["workflow"]
    texts = [
        n["inputs"].get("text") for n in workflow.values() if n["class_type"] == "CLIPTextEncode"
    ]
    assert any("cinematic film still of a pony astronaut" in (t or "") for t in texts)

    details = await reply_to(styled_bot, fake_discord, _details(message))
    assert "**Style:** cinematic" in details["content"]


async def test_an_edit_of_a_styled_job_keeps_the_style_without_applying_it_twice(
    styled_bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    fake = fake_discord
    message = await imagine_result(styled_bot, fake, "a fox", options={"style": "cinematic"})
    original = (await styled_bot.services.jobs.get(1)).request
    form = await reply_to(
        styled_bot, fake, payloads.button_click(_button(message, "Edit"), message)
    )
    fields = {
        c["components"][0]["custom_id"]: c["components"][0].get("value") or ""
        for c in form["components"]
    }
    submit = payloads.modal_submit(form["custom_id"], fields, message=message)
    fake.deliver(styled_bot, submit)
    await fake.wait_for_callback(submit)
    edited = (await wait_for_state(styled_bot.services, 2, "done")).request
    assert edited.prompt == "cinematic film still of a fox, shallow depth of field"
    assert edited.negative == original.negative and edited.loras == original.loras
    assert edited.style == "cinematic" and edited == original


async def test_the_members_own_flags_and_options_beat_a_styles_defaults(
    styled_bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    await reply_to(
        styled_bot,
        fake_discord,
        payloads.slash_command(
            "imagine", {"prompt": "a pony --ar 1:1 --steps 12 --style cinematic", "cfg": 4.5}
        ),
    )
    request = (await styled_bot.services.jobs.get(1)).request
    assert (request.width, request.height, request.steps, request.cfg) == (1024, 1024, 12, 4.5)
    assert request.style == "cinematic" and request.prompt.startswith(
        "cinematic film still of a pony"
    )


async def test_a_server_style_added_by_a_moderator_applies_there_only(
    styled_bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    fake = fake_discord
    added = await reply_to(
        styled_bot,
        fake,
        _styles(
            "add",
            {
                "name": "watercolor",
                "prompt": "watercolor painting of {prompt}",
                "loras": "detail_tweaker:0.5",
            },
        ),
    )
    assert "Added the style `watercolor`" in added["content"]
    await reply_to(
        styled_bot,
        fake,
        payloads.slash_command("imagine", {"prompt": "a fox", "style": "watercolor"}),
    )
    request = (await styled_bot.services.jobs.get(1)).request
    assert request.prompt == "watercolor painting of a fox" and request.style == "watercolor"
    assert [lora.name for lora in request.loras] == ["detail_tweaker.safetensors"]

    elsewhere = await reply_to(
        styled_bot,
        fake,
        payloads.slash_command(
            "imagine", {"prompt": "a fox", "style": "watercolor"}, guild_id=OTHER_GUILD
        ),
    )
    assert "There is no style called `watercolor`" in elsewhere["content"]
    assert elsewhere["flags"] & EPHEMERAL

    listed = embed_text(await reply_to(styled_bot, fake, _styles("list", {})))
    assert "`cinematic` (the bot)" in listed and "`watercolor` (this server)" in listed
    choices = await reply_to(
        styled_bot,
        fake,
        payloads.autocomplete("imagine", {"prompt": "x", "style": "wat"}, focused="style"),
    )
    assert [c["value"] for c in choices["choices"]] == ["watercolor"]
    log = embed_text(
        await reply_to(
            styled_bot, fake, payloads.slash_command("quota", subcommand="log", user=MANAGER)
        )
    )
    assert "added the style `watercolor`" in log


def _styles(subcommand: str, options: dict, user: dict = MANAGER) -> dict:
    return payloads.slash_command(
        "settings", options, group="styles", subcommand=subcommand, user=user
    )


async def test_a_broken_server_style_is_refused_naming_the_field(
    styled_bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    refused = await reply_to(
        styled_bot, fake_discord, _styles("add", {"name": "plain", "prompt": "no placeholder"})
    )
    assert "`prompt` must contain {prompt}" in refused["content"]
    taken = await reply_to(styled_bot, fake_discord, _styles("add", {"name": "cinematic"}))
    assert "already a style the bot ships" in taken["content"]
    assert [s.name for s in await styled_bot.services.styles.all(GUILD)] == ["cinematic"]


async def test_moderator_commands_refuse_members_when_they_run(
    styled_bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    fake = fake_discord
    for payload in (
        _settings("words", {"action": "add", "word": "kitten"}, MEMBER),
        _settings("workflows", {"action": "turn off", "workflow": "sdxl"}, MEMBER),
        _styles("add", {"name": "mine"}, user=MEMBER),
        _styles("list", {}, user=MEMBER),
    ):
        refused = await reply_to(styled_bot, fake, payload)
        assert "Only moderators" in refused["content"] and refused["flags"] & EPHEMERAL
    stored = await styled_bot.services.guild_settings.get(GUILD)
    assert stored.blocked_words is None and stored.disabled_workflows is None
    assert [s.name for s in await styled_bot.services.styles.all(GUILD)] == ["cinematic"]


async def test_a_servers_blocked_words_refuse_prompts_there_and_nowhere_else(
    bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    fake = fake_discord
    said = await reply_to(
        bot, fake, _settings("words", {"action": "add", "word": "Kitten"}, MANAGER)
    )
    assert "`kitten` are now refused" in said["content"]
    refused = await reply_to(
        bot, fake, payloads.slash_command("imagine", {"prompt": "a KITTEN on a sofa"})
    )
    assert "does not allow `kitten`" in refused["content"] and refused["flags"] & EPHEMERAL
    assert await bot.services.jobs.recent(GUILD, payloads.MEMBER_ID, 5) == []

    await reply_to(
        bot, fake, payloads.slash_command("imagine", {"prompt": "a kitten"}, guild_id=OTHER_GUILD)
    )
    assert (await bot.services.jobs.get(1)).guild_id == OTHER_GUILD

    listed = await reply_to(bot, fake, _settings("words", {"action": "list"}, MANAGER))
    assert "`kitten`" in listed["content"]
    await reply_to(bot, fake, _settings("words", {"action": "remove", "word": "kitten"}, MANAGER))
    await reply_to(bot, fake, payloads.slash_command("imagine", {"prompt": "a kitten"}))
    assert (await bot.services.jobs.get(2)).guild_id == GUILD


async def test_settings_that_would_fail_every_job_are_refused_naming_the_conflict(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    fake = fake_discord
    await reply_to(bot, fake, _settings("defaults", {"workflow": "pony-v6-xl-hires"}, MANAGER))
    refused = await reply_to(bot, fake, _settings("caps", {"max_megapixels": 1.0}, MANAGER))
    text = refused["content"]
    assert refused["flags"] & EPHEMERAL
    assert "default workflow `pony-v6-xl-hires`" in text and "cap of 1.00 MP" in text, text
    assert "--hires" not in text
    assert (await bot.services.guild_settings.get(GUILD)).max_pixels is None

    off = await reply_to(
        bot,
        fake,
        _settings("workflows", {"action": "turn off", "workflow": "pony-v6-xl-hires"}, MANAGER),
    )
    assert "`pony-v6-xl-hires` is this server's default workflow" in off["content"]
    assert (await bot.services.guild_settings.get(GUILD)).disabled_workflows is None

    await reply_to(bot, fake, payloads.slash_command("imagine", {"prompt": "a pony"}))
    assert (await bot.services.jobs.get(1)).request.template == "pony-v6-xl-hires"


async def test_a_workflow_turned_off_is_hidden_and_refused_by_name(
    bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    fake = fake_discord
    said = embed_text(
        await reply_to(
            bot,
            fake,
            _settings("workflows", {"action": "turn off", "workflow": "pony-v6-xl-hires"}, MANAGER),
        )
    )
    assert "turned off here" in said and "**Workflows turned off:** `pony-v6-xl-hires`" in said
    choices = await reply_to(
        bot,
        fake,
        payloads.autocomplete("imagine", {"prompt": "x", "workflow": "pony"}, focused="workflow"),
    )
    assert "pony-v6-xl-hires" not in [c["value"] for c in choices["choices"]]
    assert "pony-v6-xl" in [c["value"] for c in choices["choices"]]
    refused = await reply_to(
        bot,
        fake,
        payloads.slash_command("imagine", {"prompt": "a pony", "workflow": "pony-v6-xl-hires"}),
    )
    assert "does not allow the `pony-v6-xl-hires` workflow" in refused["content"]
    await reply_to(
        bot,
        fake,
        _settings("workflows", {"action": "turn on", "workflow": "pony-v6-xl-hires"}, MANAGER),
    )
    await reply_to(
        bot,
        fake,
        payloads.slash_command("imagine", {"prompt": "a pony", "workflow": "pony-v6-xl-hires"}),
    )
    assert (await bot.services.jobs.get(1)).request.template == "pony-v6-xl-hires"


async def test_an_unknown_lora_is_refused_before_anything_is_sent_or_charged(
    styled_bot: Stablehand, fake_discord: FakeDiscord, fake_runpod: FakeRunPod
) -> None:
    fake = fake_discord
    services = styled_bot.services
    before = await services.quotas.balance(GUILD, payloads.MEMBER_ID)
    typo = await reply_to(
        styled_bot,
        fake,
        payloads.slash_command("imagine", {"prompt": "a pony <lora:detail_tweeker:0.8>"}),
    )
    assert "There is no LoRA `detail_tweeker.safetensors`" in typo["content"]
    assert "Did you mean `detail_tweaker`?" in typo["content"] and typo["flags"] & EPHEMERAL
    unknown = await reply_to(
        styled_bot, fake, payloads.slash_command("imagine", {"prompt": "a pony", "lora": "nope"})
    )
    assert "There is no LoRA `nope" in unknown["content"] and "/loras" in unknown["content"]
    assert await services.jobs.recent(GUILD, payloads.MEMBER_ID, 5) == []
    assert fake_runpod.requests_for("run") == []
    after = await services.quotas.balance(GUILD, payloads.MEMBER_ID)
    assert after.remaining == before.remaining


async def test_the_lora_option_adds_the_tag_and_trigger_words_and_nsfw_ones_stay_in_nsfw_channels(
    styled_bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    fake = fake_discord
    await reply_to(
        styled_bot,
        fake,
        payloads.slash_command("imagine", {"prompt": "a pony --ar 1:1", "lora": "detail_tweaker"}),
    )
    request = (await styled_bot.services.jobs.get(1)).request
    assert request.prompt == "a pony detailed" and (request.width, request.height) == (1024, 1024)
    assert [(lora.name, lora.strength) for lora in request.loras] == [
        ("detail_tweaker.safetensors", 0.8)
    ]

    refused = await reply_to(
        styled_bot,
        fake,
        payloads.slash_command("imagine", {"prompt": "a pony <lora:lewd_pose:0.7>"}),
    )
    assert "age-restricted channels only" in refused["content"]
    listed = embed_text(await reply_to(styled_bot, fake, payloads.slash_command("loras")))
    assert "detail_tweaker — detailed (weight 0.8)" in listed and "lewd_pose" not in listed
    assert "1 more for age-restricted channels only" in listed
    nsfw = payloads.guild_channel(payloads.CHANNEL_ID, nsfw=True)
    await reply_to(
        styled_bot,
        fake,
        payloads.slash_command("imagine", {"prompt": "a pony <lora:lewd_pose:0.7>"}, channel=nsfw),
    )
    assert [lora.name for lora in (await styled_bot.services.jobs.get(2)).request.loras] == [
        "lewd_pose.safetensors"
    ]
    choices = await reply_to(
        styled_bot,
        fake,
        payloads.autocomplete("imagine", {"prompt": "x", "lora": ""}, focused="lora"),
    )
    assert [c["value"] for c in choices["choices"]] == ["detail_tweaker", "film_grain"]


async def test_a_broken_style_or_lora_file_stops_the_start_naming_file_and_field(
    tmp_path: Path, fake_runpod: FakeRunPod
) -> None:
    styles = tmp_path / "styles"
    styles.mkdir()
    (styles / "noir.json").write_text(
        json.dumps({"prompt": "noir {prompt}", "defaults": {"steps": 500}})
    )
    with pytest.raises(ConfigError, match=r"noir\.json: defaults\.steps` must be from 1 to 150"):
        await Services.open(make_settings(tmp_path, fake_runpod, STYLES_DIR=str(styles)))
    (styles / "noir.json").write_text(json.dumps({"prompt": "noir {prompt}", "workflow": "nope"}))
    with pytest.raises(ConfigError, match=r"noir\.json: workflow` names no workflow"):
        await Services.open(make_settings(tmp_path, fake_runpod, STYLES_DIR=str(styles)))
    (styles / "noir.json").unlink()
    loras = tmp_path / "loras.json"
    loras.write_text(json.dumps([{"name": "a", "weight": "high"}]))
    with pytest.raises(ConfigError, match=r"entry 1 \(a\.safetensors\): `weight` must be a number"):
        await Services.open(make_settings(tmp_path, fake_runpod, LORAS_FILE=str(loras)))


async def test_the_nsfw_mode_is_named_for_what_it_does_and_the_old_name_still_works(
    tmp_path: Path,
    fake_runpod: FakeRunPod,
    fake_discord: FakeDiscord,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.config"):
        settings = make_settings(tmp_path, fake_runpod, NSFW_POLICY="refuse")
    assert settings.nsfw_policy == "age_restricted_only"
    assert "NSFW_POLICY=refuse is deprecated" in caplog.text

    # A server that chose the old name before this version keeps its choice.
    db = await Database.open(tmp_path / "old.db", migrations=_migrations_until(5))
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO guild_settings (guild_id, nsfw_policy, updated_at) VALUES (?, 'refuse', 1)",
            (GUILD,),
        )
    await db.close()
    settings = make_settings(tmp_path, fake_runpod, DATABASE_PATH=str(tmp_path / "old.db"))
    running = await start_bot(settings, fake_discord)
    try:
        assert (
            await running.services.guild_settings.get(GUILD)
        ).nsfw_policy == "age_restricted_only"
        refused = await reply_to(
            running, fake_discord, payloads.slash_command("imagine", {"prompt": "a pony"})
        )
        assert "only be made in age-restricted channels" in refused["content"]
        shown = embed_text(await reply_to(running, fake_discord, _settings("show", {}, MANAGER)))
        assert "`age_restricted_only` — Only make images in age-restricted channels" in shown
    finally:
        await running.close()


def _migrations_until(version: int):
    from bot.db import bundled_migrations

    return [m for m in bundled_migrations() if m.version <= version]
