"""Exact limits a member or operator relies on: prompt length, templates, RunPod's answers, the ledger."""

from __future__ import annotations

import dataclasses
import email.utils
import io
import json
import random
import time
from pathlib import Path

import pytest
from PIL import Image

from bot import audit
from bot.images import INPUT_PNG_LIMIT, prepare_input_image
from bot.jobs import JobState
from bot.prompt import PromptError
from bot.runpod import OutputError, RetryPolicy, decode_output
from bot.services import Services
from bot.workflows import TemplateError, parse_template
from cogs.common.audit_lines import said
from tests.conftest import (
    OpenServices,
    RecordingDelivery,
    make_client,
    make_settings,
    wait_for_state,
)
from tests.fakes import fake_runpod as fr
from tests.fakes.fake_runpod import FakeRunPod, Outcome

GUILD, OTHER_GUILD, MEMBER = 10, 20, 1
TEMPLATES = Path(__file__).resolve().parent.parent / "bot" / "templates"
# One 1024x1024 image: as noise, a PNG of about 3 MB.
LARGE_IMAGE = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 1024, "height": 1024, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
}


def _prepare(services: Services, text: str):
    return services.prepare(text, user_id=MEMBER, guild_id=GUILD, channel_id=100)


async def _hold(services: Services, job_id: int) -> tuple[str, float | None]:
    row = await services.db.fetchone(
        "SELECT state, gpu_seconds FROM quota_holds WHERE job_id = ?", (job_id,)
    )
    return row["state"], row["gpu_seconds"]


# ----- prompt length ---------------------------------------------------------------------------


def test_a_prompt_exactly_at_the_length_limit_is_accepted_and_one_more_is_refused(
    services: Services,
) -> None:
    limit = services.policy().max_prompt_length
    at_limit = ("pony " * limit)[:limit]
    assert _prepare(services, at_limit).request.prompt
    with pytest.raises(PromptError, match=f"{limit + 1:,} characters long"):
        _prepare(services, at_limit + "y")


# ----- the minimum charge -------------------------------------------------------------------


async def test_the_smallest_job_still_costs_one_credit(services: Services) -> None:
    small = _prepare(services, "a pony --size 512x512 --steps 10")
    assert small.cost == 1, "a tiny job is cheap, never free"
    before = await services.quotas.balance(GUILD, MEMBER)
    job = await services.jobs.accept(small)
    after = await services.quotas.balance(GUILD, MEMBER)
    assert after.held == 1 and after.remaining == before.remaining - 1
    assert job.cost == 1


# ----- templates -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("swapped", "node_input"),
    [(("width", "height"), "'width'"), (("steps", "cfg"), "'steps'")],
    ids=["width and height", "steps and cfg"],
)
def test_a_template_mapping_a_required_input_by_the_wrong_parameter_refuses_to_load(
    swapped: tuple[str, str], node_input: str
) -> None:
    """A member asking 832x1216 would get 1216x832 (or 7 steps at cfg 25) from such a file."""
    data = json.loads((TEMPLATES / "pony-v6-xl.json").read_text("utf-8"))
    first, second = swapped
    parameters = data["parameters"]
    parameters[first], parameters[second] = parameters[second], parameters[first]
    with pytest.raises(TemplateError) as caught:
        parse_template(json.dumps(data), source="swapped.json")
    message = str(caught.value)
    assert message.startswith("swapped.json: ") and f"input {node_input}" in message


# ----- what RunPod answers ---------------------------------------------------------------------


async def test_a_429_asking_for_an_hour_waits_only_the_policys_cap(fake_runpod: FakeRunPod) -> None:
    chosen: list[float] = []

    async def sleep(seconds: float) -> None:
        chosen.append(seconds)

    policy = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01, max_retry_after=30.0)
    client = make_client(fake_runpod, retry=policy, sleep=sleep)
    try:
        job = await client.run({"workflow": {}})
        fake_runpod.inject("status", fr.http(429, retry_after=3600))
        status = await client.status(job.id)
    finally:
        await client.aclose()
    assert status.id == job.id, "the call went through after the capped wait"
    assert chosen == [30.0], "Retry-After: 3600 must not stall the call for an hour"


async def test_a_429_with_a_retry_after_date_waits_until_that_date(
    fake_runpod: FakeRunPod,
) -> None:
    chosen: list[float] = []

    async def sleep(seconds: float) -> None:
        chosen.append(seconds)

    policy = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01, max_retry_after=120.0)
    client = make_client(fake_runpod, retry=policy, sleep=sleep)
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    try:
        job = await client.run({"workflow": {}})
        fake_runpod.inject("status", fr.http(429, retry_after=in_a_minute))
        await client.status(job.id)
    finally:
        await client.aclose()
    assert len(chosen) == 1 and 0 < chosen[0] <= 60


async def test_an_oversized_output_arriving_in_small_chunks_is_refused(
    fake_runpod: FakeRunPod,
) -> None:
    fake_runpod.script(Outcome(output_format="s3_url", noise=True))
    client = make_client(fake_runpod, output_http_hosts=[fake_runpod.host])  # a local bucket
    try:
        job = await client.run({"workflow": LARGE_IMAGE})
        fake_runpod.finish(job.id)
        url = (await client.status(job.id)).output["images"][0]["data"]
        whole = await client.download(url)
        # No Content-Length to refuse it up front: the size is only known as the pieces arrive.
        fake_runpod.inject("s3", fr.chunked())
        # Far more than one network chunk, far less than the image: only a running total sees it.
        with pytest.raises(OutputError) as caught:
            await client.download(url, max_bytes=len(whole) // 2)
    finally:
        await client.aclose()
    assert caught.value.kind == "too_large"
    assert len(whole) > 1_000_000, "the image arrives in many chunks"


# ----- the ledger settles a hold exactly once ----------------------------------------------------


async def _delivered(services: Services) -> int:
    job = await services.jobs.accept(_prepare(services, "a pony --workflow test-pattern"))
    await services.jobs.attach_message(job.id, 100, 500)
    await wait_for_state(services, job.id, "done")
    return job.id


@pytest.fixture
async def ledger_services(
    tmp_path: Path, fake_runpod: FakeRunPod, open_services: OpenServices
) -> Services:
    services = await open_services(make_settings(tmp_path, fake_runpod, DAILY_CREDITS="5"))
    await services.jobs.start(RecordingDelivery())
    return services


async def test_a_delivered_jobs_credits_never_come_back_on_a_late_refund(
    ledger_services: Services,
) -> None:
    services = ledger_services
    job_id = await _delivered(services)
    job = await services.jobs.get(job_id)
    async with services.db.transaction() as tx:
        await services.quotas.refund(tx, job)
    balance = await services.quotas.balance(GUILD, MEMBER)
    assert (balance.used, balance.remaining) == (1, 4), "the member keeps paying for what they got"
    assert (await _hold(services, job_id))[0] == "captured"


async def test_a_capture_asked_twice_keeps_the_first_gpu_time(ledger_services: Services) -> None:
    services = ledger_services
    job_id = await _delivered(services)
    first = await _hold(services, job_id)
    job = await services.jobs.get(job_id)
    async with services.db.transaction() as tx:
        await services.quotas.capture(tx, dataclasses.replace(job, execution_ms=999_000))
    assert await _hold(services, job_id) == first, "the operator's GPU figures are not rewritten"
    assert (await services.quotas.balance(GUILD, MEMBER)).used == 1


async def test_a_cancelled_job_is_never_charged_by_a_late_capture(
    ledger_services: Services, fake_runpod: FakeRunPod
) -> None:
    services = ledger_services
    fake_runpod.script(Outcome(status="HANG"))
    job = await services.jobs.accept(_prepare(services, "a pony --workflow test-pattern"))
    await services.jobs.attach_message(job.id, 100, 500)
    await wait_for_state(services, job.id, "submitted")
    cancelled = await services.jobs.cancel(job.id, by_user=MEMBER)
    assert cancelled.state is JobState.CANCELLED
    for _ in range(2):  # a refund asked twice, then a capture: still one refund
        async with services.db.transaction() as tx:
            await services.quotas.refund(tx, cancelled)
    async with services.db.transaction() as tx:
        await services.quotas.capture(tx, cancelled)
    balance = await services.quotas.balance(GUILD, MEMBER)
    assert (balance.used, balance.held, balance.remaining) == (0, 0, 5)
    assert (await _hold(services, job.id))[0] == "refunded"


# ----- what moderators read ------------------------------------------------------------------------


async def test_moderators_see_this_servers_gpu_spend_and_the_whole_bots(
    tmp_path: Path, fake_runpod: FakeRunPod, open_services: OpenServices
) -> None:
    settings = make_settings(tmp_path, fake_runpod, GPU_PRICE_PER_SECOND="0.001")
    services = await open_services(settings)
    await services.jobs.start(RecordingDelivery())
    fake_runpod.default_outcome = Outcome(run_delay=0.05)
    for guild, user in ((GUILD, MEMBER), (GUILD, 2), (OTHER_GUILD, 3)):
        new = services.prepare(
            "a pony --workflow test-pattern", user_id=user, guild_id=guild, channel_id=100
        )
        job = await services.jobs.accept(new)
        await services.jobs.attach_message(job.id, 100, 500 + job.id)
        await wait_for_state(services, job.id, "done")
    here = await services.quotas.budget_status(GUILD)
    there = await services.quotas.budget_status(OTHER_GUILD)
    assert here.guild_spent_usd > 0 and there.guild_spent_usd > 0
    assert here.total_spent_usd == there.total_spent_usd
    assert here.total_spent_usd == pytest.approx(here.guild_spent_usd + there.guild_spent_usd)


async def test_todays_top_spenders_name_the_member(
    ledger_services: Services, fake_runpod: FakeRunPod
) -> None:
    services = ledger_services
    await _delivered(services)
    quotas = services.quotas
    spenders = await quotas.top(GUILD, quotas.today_start(time.time()))
    assert [(s.user_id, s.credits) for s in spenders] == [(MEMBER, 1)]


async def test_the_audit_trail_says_which_limit_a_moderator_changed(services: Services) -> None:
    quotas = services.quotas
    await quotas.set_limit(GUILD, 9, scope="member", target_id=MEMBER, credits=4)
    await quotas.set_limit(GUILD, 9, scope="role", target_id=55, credits=8)
    await quotas.set_limit(GUILD, 9, scope="default", target_id=0, credits=6)
    details = [said(e) for e in await audit.entries(services.db, GUILD)]  # as /quota log shows
    assert details[::-1] == [
        f"set <@{MEMBER}>'s own limit to 4 credits per {quotas.period_word}",
        f"set the <@&55> tier to 8 credits per {quotas.period_word}",
        f"set the server default to 6 credits per {quotas.period_word}",
    ]


# ----- a member's picture ---------------------------------------------------------------------------


def test_a_large_photo_goes_to_the_worker_as_a_jpeg_that_decodes() -> None:
    """A PNG of it would not fit RunPod's 10 MB request with its base64 overhead."""
    noise = Image.frombytes("RGB", (1536, 1536), random.Random(3).randbytes(1536 * 1536 * 3))
    out = io.BytesIO()
    noise.save(out, "PNG")
    assert len(out.getvalue()) > INPUT_PNG_LIMIT
    image = prepare_input_image(out.getvalue(), max_pixels=1536 * 1536, max_bytes=25 * 2**20)
    assert image.mime == "image/jpeg" and image.name.endswith(".jpg")
    with Image.open(io.BytesIO(image.data)) as sent:
        assert sent.format == "JPEG" and sent.size == (1536, 1536)


async def test_a_data_uri_that_is_not_base64_is_refused_saying_so() -> None:
    async def no_fetch(url: str) -> bytes:
        raise AssertionError(url)

    with pytest.raises(OutputError) as caught:
        await decode_output({"images": ["data:image/png,iVBORw0KGgo="]}, expected=1, fetch=no_fetch)
    assert (caught.value.kind, str(caught.value)) == (
        "bad_output",
        "an output data: URI is not base64",
    )


async def test_the_gpu_budget_estimate_learns_from_finished_jobs(
    ledger_services: Services, fake_runpod: FakeRunPod
) -> None:
    services = ledger_services
    request = _prepare(services, "a pony --workflow test-pattern").request
    before = services.quotas.estimate_usd(request)
    fake_runpod.default_outcome = Outcome(run_delay=0.05)  # far faster than the first guess
    await _delivered(services)
    assert services.quotas.estimate_usd(request) < before, "budgets hold what jobs really cost"


async def test_an_output_entry_of_unknown_shape_is_reported_as_bad_output() -> None:
    """The kind is what the job's history and the operator's log call the failure."""

    async def no_fetch(url: str) -> bytes:
        raise AssertionError(url)

    with pytest.raises(OutputError) as caught:
        await decode_output({"images": [5]}, expected=1, fetch=no_fetch)
    assert (caught.value.kind, str(caught.value)) == (
        "bad_output",
        "an output entry has an unknown shape",
    )
