"""Several endpoints through the fake Discord and a fake RunPod serving two endpoint ids."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from bot import failures
from bot.app import Stablehand
from bot.prompt import Options
from tests.conftest import (
    HANG_GUARD,
    OpenServices,
    RecordingDelivery,
    embed_text,
    imagine_result,
    make_settings,
    reply_to,
    run_cli,
    start_bot,
    wait_for_state,
)
from tests.fakes import payloads
from tests.fakes.fake_discord import FakeDiscord
from tests.fakes.fake_runpod import FakeRunPod, Outcome

FLUX = "flux1-dev-fp8"
PONY_PRICE, FLUX_PRICE = 0.0003, 0.0011
OTHER_MEMBER = payloads.user(4242, "bob")


@pytest_asyncio.fixture
async def flux_endpoint(fake_runpod: FakeRunPod) -> FakeRunPod:
    """A second endpoint, `flux-endpoint`, answered under the same API base and key."""
    flux = FakeRunPod(api_key=fake_runpod.api_key, endpoint_id="flux-endpoint")
    fake_runpod.also_serve(flux)
    return flux


@pytest_asyncio.fixture
async def two_endpoint_bot(
    tmp_path: Path, fake_runpod: FakeRunPod, flux_endpoint: FakeRunPod, fake_discord: FakeDiscord
) -> AsyncIterator[Stablehand]:
    settings = make_settings(
        tmp_path,
        fake_runpod,
        RUNPOD_ENDPOINTS=f"flux={flux_endpoint.endpoint_id}",
        ENDPOINT_GPU_PRICES=f"default={PONY_PRICE},flux={FLUX_PRICE}",
        MAX_JOBS_IN_FLIGHT="1",
    )
    running = await start_bot(settings, fake_discord)
    yield running
    await running.close()


def _classes(workflow: dict) -> set[str]:
    return {node["class_type"] for node in workflow.values()}


async def test_a_pony_and_a_flux_job_from_one_channel_each_run_and_are_charged_on_their_endpoint(
    two_endpoint_bot: Stablehand,
    fake_discord: FakeDiscord,
    fake_runpod: FakeRunPod,
    flux_endpoint: FakeRunPod,
) -> None:
    for fake in (fake_runpod, flux_endpoint):
        fake.default_outcome = Outcome(run_delay=0.2)
    pony = await imagine_result(two_endpoint_bot, fake_discord, "a pony on a hill --seed 1")
    flux = await imagine_result(
        two_endpoint_bot, fake_discord, "a red fox in snow", options={"workflow": FLUX}
    )

    [pony_run] = fake_runpod.jobs.values()
    [flux_run] = flux_endpoint.jobs.values()
    assert "FluxGuidance" not in _classes(pony_run.input["workflow"])
    assert "FluxGuidance" in _classes(flux_run.input["workflow"])
    services = two_endpoint_bot.services
    rows = await services.db.fetchall(
        "SELECT jobs.endpoint, jobs.backend_id, quota_holds.gpu_seconds, quota_holds.usd_actual"
        " FROM jobs JOIN quota_holds ON quota_holds.job_id = jobs.id ORDER BY jobs.id"
    )
    assert [(r["endpoint"], r["backend_id"]) for r in rows] == [
        ("default", pony_run.id),
        ("flux", flux_run.id),
    ]
    for row, price in zip(rows, (PONY_PRICE, FLUX_PRICE), strict=True):
        assert row["gpu_seconds"] > 0
        assert abs(row["usd_actual"] - row["gpu_seconds"] * price) < 1e-12, "its endpoint's price"

    listed = embed_text(
        await reply_to(two_endpoint_bot, fake_discord, payloads.slash_command("jobs"))
    )
    flux_entry, pony_entry = listed.split("#2 · ")[1].split("#1 · ")
    assert "a red fox in snow" in flux_entry and "FLUX.1 [dev]" in flux_entry
    assert "a pony on a hill" in pony_entry and "Pony Diffusion V6 XL" in pony_entry
    for message, model in ((pony, "Pony Diffusion V6 XL"), (flux, "FLUX.1 [dev]")):
        buttons = {
            c["label"]: c["custom_id"] for row in message["components"] for c in row["components"]
        }
        details = payloads.button_click(buttons["Details"], message)
        said = await reply_to(two_endpoint_bot, fake_discord, details)
        assert f"**Model:** {model}" in said["content"]


async def test_an_endpoint_with_no_workers_delays_only_its_own_jobs(
    two_endpoint_bot: Stablehand,
    fake_discord: FakeDiscord,
    fake_runpod: FakeRunPod,
    flux_endpoint: FakeRunPod,
) -> None:
    flux_endpoint.workers = {}
    flux_endpoint.default_outcome = Outcome(status="HANG")  # no worker ever takes it
    flux_payload = payloads.slash_command(
        "imagine", {"prompt": "a red fox in snow", "workflow": FLUX}
    )
    await reply_to(two_endpoint_bot, fake_discord, flux_payload)
    flux_message = fake_discord.interactions[flux_payload["token"]].response_message_id
    services = two_endpoint_bot.services
    await wait_for_state(services, 1, "submitted")
    await fake_discord.wait_for(
        lambda r: (
            r.method == "PATCH"
            and str(flux_message) in r.path
            and "No GPU worker has started" in json.dumps(r.json)
        ),
        timeout=HANG_GUARD,
    )

    # Flux holds its endpoint's one slot; the Pony job, even another member's, has its own.
    await imagine_result(
        two_endpoint_bot, fake_discord, "a pony on a hill --seed 1", user=OTHER_MEMBER
    )
    assert (await services.jobs.get(2)).state.value == "done"
    assert (await services.jobs.get(1)).state.value == "submitted", "still waiting for a worker"
    assert len(flux_endpoint.jobs) == 1 and len(fake_runpod.jobs) == 1


async def test_a_job_whose_endpoint_was_taken_out_of_the_settings_ends_refunded_at_start(
    tmp_path: Path,
    fake_runpod: FakeRunPod,
    flux_endpoint: FakeRunPod,
    open_services: OpenServices,
    delivery: RecordingDelivery,
) -> None:
    with_flux = make_settings(tmp_path, fake_runpod, RUNPOD_ENDPOINTS="flux=flux-endpoint")
    before = await open_services(with_flux)
    new = before.prepare(
        "a red fox", user_id=7, guild_id=1, channel_id=2, options=Options(workflow=FLUX)
    )
    job = await before.jobs.accept(new)
    await before.jobs.attach_message(job.id, 2, 3)
    await before.close()

    after = await open_services(make_settings(tmp_path, fake_runpod))
    await after.jobs.start(delivery)
    ended = await wait_for_state(after, job.id, "failed")
    assert ended.failure == failures.ENDPOINT.message and "no longer configured" in ended.error
    hold = await after.db.fetchone("SELECT state FROM quota_holds WHERE job_id = ?", (job.id,))
    assert hold["state"] == "refunded"
    assert flux_endpoint.jobs == {} and fake_runpod.jobs == {}, "nothing was sent anywhere"


def test_a_bundled_template_is_offered_once_its_endpoint_is_named(tmp_path: Path) -> None:
    listed = run_cli("workflows", cwd=tmp_path, RUNPOD_ENDPOINTS="flux=abc123")
    assert listed.returncode == 0, listed.stderr
    assert "model: FLUX.1 [dev], endpoint: flux" in listed.stdout
    assert "sdxl" not in listed.stdout, "no endpoint named sdxl is configured"
