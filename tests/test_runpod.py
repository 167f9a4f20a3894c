"""The RunPod client against the fake cloud: the contract, retries, and what is never resent."""

from __future__ import annotations

import asyncio
import base64
import io
import time

import httpx
import pytest
from PIL import Image

from bot.config import Secret
from bot.runpod import (
    OutputError,
    RequestBudget,
    RetryPolicy,
    RunPodAuthError,
    RunPodClient,
    RunPodNotFound,
    RunPodRateLimited,
    RunPodServerError,
    RunPodTransportError,
    SubmitUncertain,
    decode_output,
)
from tests.conftest import HANG_GUARD, make_client
from tests.fakes import fake_runpod as fr
from tests.fakes.fake_runpod import FakeRunPod, Outcome

WORKFLOW = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 48, "batch_size": 2, "color": 0},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
}


async def _until_terminal(client: RunPodClient, job_id: str):
    for _ in range(500):
        status = await client.status(job_id)
        if status.terminal:
            return status
    raise AssertionError("job never ended")


async def test_run_status_and_decode_real_pngs(fake_runpod: FakeRunPod) -> None:
    client = make_client(fake_runpod)
    submitted = await client.run(
        {"workflow": WORKFLOW}, execution_timeout_ms=60_000, ttl_ms=3_600_000
    )
    assert submitted.status == "IN_QUEUE"
    body = fake_runpod.requests_for("run")[0].json
    assert body["policy"] == {"executionTimeout": 60_000, "ttl": 3_600_000}
    assert fake_runpod.requests_for("run")[0].headers["authorization"] == "Bearer test-runpod-key"
    done = await _until_terminal(client, submitted.id)
    assert done.status == "COMPLETED" and done.execution_ms is not None
    images = await decode_output(done.output, expected=2, fetch=client.download)
    assert [i.mime for i in images] == ["image/png", "image/png"]
    assert Image.open(io.BytesIO(images[0].data)).size == (64, 48)
    await client.aclose()


async def test_401_is_a_configuration_error_and_never_retried(fake_runpod: FakeRunPod) -> None:
    client = RunPodClient(
        api_base=fake_runpod.api_base,
        endpoint_id=fake_runpod.endpoint_id,
        api_key=Secret("wrong-key-123456"),
        retry=RetryPolicy(attempts=4, base_delay=0.001),
    )
    with pytest.raises(RunPodAuthError) as caught:
        await client.health()
    assert len(fake_runpod.requests_for("health")) == 1
    assert "wrong-key-123456" not in str(caught.value) and "wrong-key-123456" not in repr(client)
    await client.aclose()


async def test_404_for_an_unknown_endpoint_or_job(fake_runpod: FakeRunPod) -> None:
    wrong = RunPodClient(
        api_base=fake_runpod.api_base, endpoint_id="nope", api_key=Secret(fake_runpod.api_key)
    )
    with pytest.raises(RunPodNotFound):
        await wrong.health()
    client = make_client(fake_runpod)
    with pytest.raises(RunPodNotFound):
        await client.status("no-such-job")
    await wrong.aclose()
    await client.aclose()


async def test_429_burst_honours_retry_after_then_succeeds(fake_runpod: FakeRunPod) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    client = make_client(fake_runpod, sleep=sleep)
    fake_runpod.inject("status", fr.http(429, retry_after=0.1), fr.http(429, retry_after=0.15))
    job = await client.run({"workflow": WORKFLOW})
    status = await client.status(job.id)
    assert status.id == job.id
    assert slept == [0.1, 0.15]
    assert len(fake_runpod.requests_for("status")) == 3


async def test_a_refused_run_is_resent_but_creates_one_job(fake_runpod: FakeRunPod) -> None:
    client = make_client(fake_runpod)
    fake_runpod.inject("run", fr.http(429), fr.http(503))
    job = await client.run({"workflow": WORKFLOW})
    assert len(fake_runpod.requests_for("run")) == 3
    assert list(fake_runpod.jobs) == [job.id]


@pytest.mark.parametrize(
    "fault", [fr.reset_after_processing(), fr.http(500), fr.http(502), fr.reset()]
)
async def test_an_ambiguous_run_failure_is_never_resent(fake_runpod: FakeRunPod, fault) -> None:
    client = make_client(fake_runpod)
    fake_runpod.inject("run", fault)
    with pytest.raises(SubmitUncertain):
        await client.run({"workflow": WORKFLOW})
    assert len(fake_runpod.requests_for("run")) == 1


async def test_a_run_read_timeout_is_uncertain_and_not_resent(fake_runpod: FakeRunPod) -> None:
    client = make_client(fake_runpod, http=httpx.AsyncClient(timeout=httpx.Timeout(0.1)))
    fake_runpod.inject("run", fr.delay(5))
    with pytest.raises(SubmitUncertain):
        await client.run({"workflow": WORKFLOW})
    assert len(fake_runpod.requests_for("run")) == 1
    assert len(fake_runpod.jobs) == 1  # it did reach RunPod: resending would have run it twice


async def test_connection_refused_is_retried_then_reported_as_not_sent() -> None:
    client = RunPodClient(
        api_base="http://127.0.0.1:9/v2",
        endpoint_id="e",
        api_key=Secret("k"),
        retry=RetryPolicy(attempts=3, base_delay=0.001),
    )
    with pytest.raises(RunPodTransportError) as caught:
        await client.run({"workflow": WORKFLOW})
    assert caught.value.sent is False
    assert client.stats.calls["run"] == 3


@pytest.mark.parametrize("fault", [fr.http(500), fr.http(502), fr.http(503), fr.reset()])
async def test_status_reads_retry_5xx_and_resets(fake_runpod: FakeRunPod, fault) -> None:
    client = make_client(fake_runpod)
    job = await client.run({"workflow": WORKFLOW})
    fake_runpod.inject("status", fault, fault)
    assert (await client.status(job.id)).id == job.id


async def test_status_read_timeout_is_retried(fake_runpod: FakeRunPod) -> None:
    client = make_client(fake_runpod, http=httpx.AsyncClient(timeout=httpx.Timeout(0.1)))
    job = await client.run({"workflow": WORKFLOW})
    fake_runpod.inject("status", fr.delay(5))
    assert (await client.status(job.id)).id == job.id


async def test_reads_give_up_after_the_bound(fake_runpod: FakeRunPod) -> None:
    client = make_client(fake_runpod)
    fake_runpod.inject("health", *[fr.http(500)] * 4)
    with pytest.raises(RunPodServerError):
        await client.health()
    assert len(fake_runpod.requests_for("health")) == 4


async def test_429_with_no_retry_after_still_backs_off(fake_runpod: FakeRunPod) -> None:
    client = make_client(fake_runpod)
    fake_runpod.inject("health", *[fr.http(429)] * 4)
    with pytest.raises(RunPodRateLimited):
        await client.health()


async def test_cancel_and_health(fake_runpod: FakeRunPod) -> None:
    client = make_client(fake_runpod)
    fake_runpod.script(Outcome(status="HANG"))
    hung = await client.run({"workflow": WORKFLOW})
    assert (await client.cancel(hung.id)).status == "CANCELLED"
    health = await client.health()
    assert health.available_workers == 2 and not health.cold


async def test_unknown_status_values_parse_without_crashing(fake_runpod: FakeRunPod) -> None:
    client = make_client(fake_runpod)
    fake_runpod.script(Outcome(status="STUCK", unknown_status="THROTTLED"))
    job = await client.run({"workflow": WORKFLOW})
    status = await client.status(job.id)
    assert status.status == "THROTTLED" and not status.terminal


async def test_progress_output_while_in_progress_is_not_mistaken_for_a_result(
    fake_runpod: FakeRunPod,
) -> None:
    client = make_client(fake_runpod)
    fake_runpod.script(Outcome(run_delay=5, progress_output={"progress": 0.5}))
    job = await client.run({"workflow": WORKFLOW})
    fake_runpod.start_running(job.id)
    status = await client.status(job.id)
    assert (
        status.status == "IN_PROGRESS"
        and status.output == {"progress": 0.5}
        and not status.terminal
    )


async def test_the_request_budget_paces_calls(fake_runpod: FakeRunPod) -> None:
    client = make_client(fake_runpod, budget=RequestBudget(50, burst=1))
    started = time.monotonic()
    for _ in range(6):
        await client.health()
    assert time.monotonic() - started >= 5 / 50 * 0.9


async def test_a_turn_pays_one_run_s_first_attempt_and_an_unused_one_goes_back(
    fake_runpod: FakeRunPod,
) -> None:
    budget = RequestBudget(1, burst=2, clock=lambda: 0.0)  # the clock never refills it
    client = make_client(fake_runpod, budget=budget)
    used, unused = await client.reserve_run(), await client.reserve_run()
    unused.give_back()
    unused.give_back()  # twice: still one token back, not two
    # Paid by its turn, the run takes no token: the one given back is left for /health (a call
    # that found none would wait for good on this clock).
    await asyncio.wait_for(client.run({"workflow": WORKFLOW}, turn=used), HANG_GUARD)
    used.give_back()  # spent: nothing goes back
    await asyncio.wait_for(client.health(), HANG_GUARD)
    assert not budget.ready(), "both tokens spent: one by the run's turn, one by /health"
    assert len(fake_runpod.requests_for("run")) == 1


async def test_a_retried_run_waits_for_the_budget_like_any_call(fake_runpod: FakeRunPod) -> None:
    budget = RequestBudget(1, burst=2, clock=lambda: 0.0)
    client = make_client(fake_runpod, budget=budget)
    turn = await client.reserve_run()
    fake_runpod.inject("run", fr.http(429))  # refused before creating anything: sent again
    await client.run({"workflow": WORKFLOW}, turn=turn)
    assert len(fake_runpod.requests_for("run")) == 2
    assert not budget.ready(), "the retry took the other token; the turn paid only the first try"


# ----- output decoding: every shape worker-comfyui has produced ------------------------------


def _png(size=(8, 8)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, "red").save(out, "PNG")
    return out.getvalue()


async def _no_fetch(url: str, *, max_bytes: int) -> bytes:
    raise AssertionError("nothing to fetch")


@pytest.mark.parametrize(
    "output",
    [
        {
            "images": [
                {
                    "filename": "ComfyUI_00001_.png",
                    "type": "base64",
                    "data": base64.b64encode(_png()).decode(),
                }
            ]
        },
        {"images": [base64.b64encode(_png()).decode()]},
        {"images": ["data:image/png;base64," + base64.b64encode(_png()).decode()]},
        {"status": "success", "message": base64.b64encode(_png()).decode()},
    ],
    ids=["current", "bare-base64", "data-uri", "legacy-message"],
)
async def test_every_success_shape_decodes_to_a_png(output) -> None:
    images = await decode_output(output, expected=1, fetch=_no_fetch)
    assert images[0].mime == "image/png" and images[0].filename.endswith(".png")


@pytest.mark.parametrize(
    ("output", "kind"),
    [
        ({"status": "success_no_images", "images": []}, "no_images"),
        (None, "no_images"),
        ({"images": [{"type": "base64", "data": "not base64!!"}]}, "bad_output"),
        (
            {"images": [{"type": "base64", "data": base64.b64encode(b"hello").decode()}]},
            "bad_output",
        ),
        ({"status": "error", "message": "ComfyUI output file not found"}, "worker"),
        ({"images": [{"type": "s3_url", "data": "simulated_uploaded/ab12.png"}]}, "bad_output"),
        (42, "bad_output"),
    ],
    ids=["no-images", "none", "bad-base64", "not-an-image", "legacy-error", "local-path", "number"],
)
async def test_unusable_outputs_are_failures(output, kind, fake_runpod: FakeRunPod) -> None:
    client = make_client(fake_runpod)
    with pytest.raises(OutputError) as caught:
        await decode_output(output, expected=1, fetch=client.download)
    assert caught.value.kind == kind


async def test_fewer_images_than_asked_is_a_failure() -> None:
    output = {"images": [base64.b64encode(_png()).decode()]}
    with pytest.raises(OutputError) as caught:
        await decode_output(output, expected=2, fetch=_no_fetch)
    assert caught.value.kind == "missing_images"


async def test_s3_urls_are_downloaded_and_webp_is_sniffed(fake_runpod: FakeRunPod) -> None:
    client = make_client(fake_runpod, output_http_hosts=[fake_runpod.host])
    for fmt, mime in (("s3_url", "image/png"), ("webp", "image/webp")):
        fake_runpod.script(Outcome(output_format=fmt))
        job = await client.run({"workflow": WORKFLOW})
        done = await _until_terminal(client, job.id)
        images = await decode_output(done.output, expected=2, fetch=client.download)
        assert {i.mime for i in images} == {mime}
    s3_calls = fake_runpod.requests_for("s3")
    assert s3_calls and all("authorization" not in r.headers for r in s3_calls)


async def test_downloads_over_the_cap_are_refused(fake_runpod: FakeRunPod) -> None:
    client = make_client(fake_runpod, output_http_hosts=[fake_runpod.host])
    fake_runpod.script(Outcome(output_format="s3_url", noise=True))
    job = await client.run({"workflow": WORKFLOW})
    done = await _until_terminal(client, job.id)
    url = done.output["images"][0]["data"]
    with pytest.raises(OutputError) as caught:
        await client.download(url, max_bytes=100)
    assert caught.value.kind == "too_large"


async def test_a_run_answered_2xx_without_a_job_id_is_uncertain_and_not_resent(
    fake_runpod: FakeRunPod,
) -> None:
    client = make_client(fake_runpod)
    fake_runpod.inject("run", fr.http(200, body={"status": "IN_QUEUE"}))
    with pytest.raises(SubmitUncertain, match="without a usable job id"):
        await client.run({"workflow": WORKFLOW})
    assert len(fake_runpod.requests_for("run")) == 1
