"""Charts and their figures: equal to the ledger for a seeded past, drawn as PNGs, and answered in time."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

from bot import charts
from bot.app import Stablehand
from bot.db import Database
from bot.estimates import DurationModel
from bot.quotas import QuotaConfig, QuotaLedger
from bot.stats import OUTCOMES, Figures, ServerFigures, TemplateTimes, Window
from bot.store import stores_for
from cogs.common import charts as chart_text
from tests.conftest import FAST_PACING, ROOT, embed_text, make_settings, start_bot
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord, RecordedRequest
from tests.fakes.fake_runpod import FakeRunPod
from tests.history import seed_history

GUILD = payloads.GUILD_ID
MEMBERS = [2_000 + n for n in range(6)]
# A fixed afternoon, so days and periods never turn during a test.
NOW = datetime(2026, 11, 26, 15, 30, tzinfo=UTC).timestamp()
DAYS = 10
EPHEMERAL = 64
DEFERRED = 5
PNG = b"\x89PNG\r\n\x1a\n"


@pytest_asyncio.fixture
async def seeded(db: Database) -> tuple[Figures, QuotaLedger]:
    await seed_history(db, GUILD, MEMBERS, days=DAYS, now=NOW, running=2)
    quotas = QuotaLedger(db, QuotaConfig(), DurationModel(), clock=lambda: NOW)
    return Figures(stores_for(db).stats, quotas, clock=lambda: NOW), quotas


async def _holds_by_day(db: Database, user_id: int, state: str, column: str) -> dict[int, int]:
    """An independent count straight from quota_holds: day index (0 = today) -> sum."""
    today = datetime(2026, 11, 26, tzinfo=UTC).timestamp()
    rows = await db.fetchall(
        f"SELECT CAST((created_at - ?) / 86400 + 1000 AS INTEGER) - 1000 AS day, SUM({column}) "
        "FROM quota_holds WHERE guild_id = ? AND user_id = ? AND state = ? GROUP BY day",
        (today, GUILD, user_id, state),
    )
    return {r[0]: r[1] for r in rows}


async def test_usage_figures_equal_the_ledger_for_a_seeded_history(
    seeded: tuple[Figures, QuotaLedger], db: Database
) -> None:
    figures, quotas = seeded
    refunds_seen = 0
    for user in MEMBERS:
        balance = await quotas.balance(GUILD, user)
        usage = await figures.usage(GUILD, user, limit=balance.limit)
        assert usage.window.days == 7 and usage.limit == balance.limit == 25
        # Today is the current period: the ledger's "used" is today's allowance bar.
        assert usage.allowance[-1] == usage.used_in_period[-1] == balance.used
        refunded = await _holds_by_day(db, user, "refunded", "credits")
        for back in range(7):
            assert usage.refunded[-1 - back] == refunded.get(-back, 0), (user, back)
        refunds_seen += sum(usage.refunded)
    assert refunds_seen > 0  # the seeded past has refunds inside the window


async def test_spend_figures_equal_the_ledgers_top_spenders(
    seeded: tuple[Figures, QuotaLedger],
) -> None:
    figures, quotas = seeded
    since = NOW - 4 * 86_400
    spend = await figures.spend(GUILD, since)
    top = await quotas.top(GUILD, since, limit=100)
    assert [
        (m.user_id, m.jobs, m.credits, round(m.gpu_seconds, 6), round(m.usd, 9))
        for m in spend.members
    ] == [(s.user_id, s.jobs, s.credits, round(s.gpu_seconds, 6), round(s.usd, 9)) for s in top]
    assert len(spend.members) == len(MEMBERS)


async def test_server_figures_count_every_job_and_the_budget_days_dollars(
    seeded: tuple[Figures, QuotaLedger], db: Database
) -> None:
    figures, quotas = seeded
    server = await figures.server(GUILD, DAYS)
    ended = await db.fetchall(
        "SELECT state, COUNT(*) FROM jobs WHERE guild_id = ? AND state != 'running' GROUP BY state",
        (GUILD,),
    )
    by_state = {r[0]: r[1] for r in ended}
    assert sum(server.outcomes["done"]) == by_state["done"]
    assert sum(server.outcomes["cancelled"]) == by_state["cancelled"]
    assert sum(server.outcomes["timed out"]) == by_state.get("timed_out", 0) + by_state.get(
        "expired", 0
    )
    assert server.jobs == sum(by_state.values())
    # Today's dollars are what the budget counts (held jobs at their estimate).
    status = await quotas.budget_status(GUILD)
    assert server.usd[-1] == pytest.approx(status.guild_spent_usd)
    failed = by_state["failed"] + by_state.get("timed_out", 0) + by_state.get("expired", 0)
    assert sum(count for _, count in server.causes) == failed
    assert {words for words, _ in server.causes} <= {
        "out of GPU memory",
        "worker error",
        "workflow refused",
        "took too long",
        "result expired",
    }
    assert all(t.median_run > 0 and t.median_wait > 0 for t in server.templates)


async def test_each_chart_is_a_png_and_an_empty_one_says_so_instead_of_axes(
    seeded: tuple[Figures, QuotaLedger],
) -> None:
    figures, _ = seeded
    usage = await figures.usage(GUILD, MEMBERS[0], limit=25)
    drawn = {
        "usage": charts.usage_chart(usage),
        "spend": charts.spend_chart(await figures.spend(GUILD, 0), {}, "all time", charts.LIGHT),
        "stats": charts.server_chart(await figures.server(GUILD, DAYS)),
    }
    empty = charts.usage_chart(
        dataclasses.replace(usage, allowance=(0,) * 7, bonus=(0,) * 7, refunded=(0,) * 7)
    )
    card = charts.no_data("Your credits per day", "You have not used any credits in this time.")
    assert empty == card
    card_width, card_height = Image.open(io.BytesIO(card)).size
    for name, png in drawn.items():
        assert png.startswith(PNG), name
        width, height = Image.open(io.BytesIO(png)).size
        assert width == card_width and height > card_height, name


# ----- through the fake Discord -----------------------------------------------------------------


@pytest_asyncio.fixture
async def slow_bot(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> AsyncIterator[Stablehand]:
    """A bot whose acknowledgement deadline has always passed: any work not done at once is deferred."""
    pacing = dataclasses.replace(FAST_PACING, ack_deadline=0.0)
    bot = await start_bot(make_settings(tmp_path, fake_runpod), fake_discord, pacing=pacing)
    yield bot
    await bot.close()


async def _answer(fake: FakeDiscord, payload: dict) -> tuple[dict, tuple]:
    """The callback, or after a deferral the followup: its JSON body and uploaded files."""
    callback = await fake.wait_for_callback(payload)
    assert callback.status == 200, callback
    if callback.json["type"] != DEFERRED:
        return callback.json["data"], callback.files

    def followup(r: RecordedRequest) -> bool:
        return r.method == "POST" and r.path.startswith("/webhooks/") and payload["token"] in r.path

    answer = await fake.wait_for(followup)
    assert answer.status < 400, answer
    return answer.json, answer.files


Check = Callable[[Stablehand, str], Awaitable[None]]


async def _usage_text(bot: Stablehand, text: str) -> None:
    user = payloads.MEMBER_ID
    usage = await bot.services.figures.usage(GUILD, user, limit=25)
    for start, used in zip(usage.window.day_starts, usage.allowance, strict=True):
        assert f"`{charts.day_label(start)}` {used}" in text


async def _top_text(bot: Stablehand, text: str) -> None:
    spend = await bot.services.figures.spend(GUILD, 0)
    assert spend.members
    for member in spend.members:
        assert f"<@{member.user_id}> — {member.credits} credit" in text


async def _stats_text(bot: Stablehand, text: str) -> None:
    server = await bot.services.figures.server(GUILD, 14)
    today = server.outcomes
    assert f"{sum(today['done'])} jobs" in text or f"{server.jobs} jobs" in text
    for outcome in OUTCOMES:
        if today[outcome][-1]:
            assert f"{today[outcome][-1]} {outcome}" in text


COMMANDS = [
    ("usage", {}, None, payloads.member, _usage_text),
    ("quota", {"period": "all time"}, "top", payloads.moderator_member, _top_text),
    ("stats", {"days": 14}, None, payloads.moderator_member, _stats_text),
]


@pytest.mark.parametrize(
    ("name", "options", "subcommand", "who", "check"), COMMANDS, ids=["usage", "top", "stats"]
)
async def test_each_chart_command_is_acknowledged_in_time_with_a_png_and_the_same_figures(
    slow_bot: Stablehand,
    fake_discord: FakeDiscord,
    name: str,
    options: dict,
    subcommand: str | None,
    who: Callable[[], dict],
    check: Check,
) -> None:
    await seed_history(
        slow_bot.services.db, GUILD, [payloads.MEMBER_ID, payloads.MODERATOR_ID, 3_000], days=14,
        now=datetime.now(UTC).timestamp(), jobs_per_member_day=(1, 3),
    )  # fmt: skip
    payload = payloads.slash_command(name, options, subcommand=subcommand, user=who())
    fake_discord.deliver(slow_bot, payload)
    # Drawing is never done at the deadline here: the interaction is deferred first.
    assert (await fake_discord.wait_for_callback(payload)).json["type"] == DEFERRED
    data, files = await _answer(fake_discord, payload)
    assert data["flags"] & EPHEMERAL
    [png] = files
    assert png.data.startswith(PNG)
    [embed] = data["embeds"]
    assert embed["image"]["url"] == f"attachment://{png.filename}"
    await check(slow_bot, embed_text(data))


async def test_stats_refuses_a_member_when_it_runs(
    slow_bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    payload = payloads.slash_command("stats", user=payloads.member())
    fake_discord.deliver(slow_bot, payload)
    data, files = await _answer(fake_discord, payload)
    assert "Only moderators" in data["content"] and not files


async def test_a_server_with_no_jobs_gets_a_card_saying_so(
    slow_bot: Stablehand, fake_discord: FakeDiscord
) -> None:
    payload = payloads.slash_command(
        "quota", {"period": "week"}, subcommand="top", user=payloads.moderator_member()
    )
    fake_discord.deliver(slow_bot, payload)
    data, [png] = await _answer(fake_discord, payload)
    assert "Nobody has spent anything yet." in embed_text(data)
    card = charts.no_data("Spend per member (week)", "Nobody has spent any credits in this time.")
    assert png.data == card


def test_stats_text_counts_one_job_singular_and_shows_a_tiny_spend_as_quota_top_does() -> None:
    one_job = {o: (0, 0) for o in OUTCOMES} | {"done": (0, 1)}
    figures = ServerFigures(
        window=Window(NOW - 86_400, 2),
        outcomes=one_job,
        gpu_seconds=(0.0, 6.5),
        usd=(0.0, 0.0019),
        daily_budget=None,
        templates=(TemplateTimes("pony-v6-xl", 1, 2.0, 6.5),),
    )
    said = embed_text({"embeds": [chart_text.server_embed(figures, 2).to_dict()]})
    assert "1 jobs" not in said
    assert "1 job · $0.0019" in said and "(1 job)" in said


def test_a_bot_that_draws_no_chart_never_loads_matplotlib() -> None:
    """matplotlib costs every process about 40 MB; only the first chart should pay for it."""
    code = (
        "import sys, bot.app\n"
        "for name in bot.app.EXTENSIONS: __import__(name)\n"
        "print('matplotlib' in sys.modules)"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip() == "False"
