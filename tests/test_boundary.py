"""Garbage from RunPod or the worker, through the real client against the fake cloud.

Each answer field is checked where it enters; a malformed answer is a failed call, never a
traceback loop; worker output is bounded (entries, bytes, pixels) and fetched only from public
https addresses (or hosts the operator allows), with no credentials.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import io
import json
import logging
import ssl
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bot import failures
from bot.config import ConfigError, Secret
from bot.images import ImageError, PixelLimitError, prepare_input_image, verify_output_image
from bot.jobs import Job
from bot.runpod import (
    MAX_REDIRECTS,
    MAX_RESPONSE_BYTES,
    Health,
    JobStatus,
    OutputError,
    RetryPolicy,
    RunPodClient,
    RunPodError,
    RunPodMalformed,
    RunPodServerError,
    RunPodTransportError,
    decode_output,
)
from bot.services import Services
from tests.conftest import (
    OpenServices,
    RecordingDelivery,
    make_client,
    make_settings,
    wait_for_state,
)
from tests.fakes import fake_runpod as fr
from tests.fakes.fake_runpod import MISSING, FakeRunPod, garble, garble_health

WORKFLOW = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
}


async def _finished(fake: FakeRunPod, client) -> str:
    """Submit a job and force it COMPLETED at the fake; its RunPod id."""
    job = await client.run({"workflow": WORKFLOW})
    fake.finish(job.id)
    return job.id


# ----- every status field checked where it enters ---------------------------------------------


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"executionTime": 1e300}, "executionTime"),
        ({"executionTime": -1_116_000}, "executionTime"),
        ({"executionTime": float("inf")}, "executionTime"),
        ({"executionTime": float("nan")}, "executionTime"),
        ({"executionTime": "4567"}, "executionTime"),
        ({"executionTime": True}, "executionTime"),
        ({"delayTime": -5}, "delayTime"),
        ({"delayTime": 10**30}, "delayTime"),
        ({"id": MISSING}, "no usable job id"),
        ({"id": 42}, "no usable job id"),
        ({"id": "../health"}, "no usable job id"),
        ({"id": "someone-elses-job-u1"}, "not "),
        ({"status": 42}, "status"),
        ({"status": ["COMPLETED"]}, "status"),
        ({"": ["not", "an", "object"]}, "not a JSON object"),
        ({"": "COMPLETED"}, "not a JSON object"),
    ],
    ids=lambda v: json.dumps(v, default=str)[:40] if isinstance(v, dict) else v,
)
async def test_a_malformed_status_answer_is_a_failed_poll_that_says_what_was_wrong(
    fake_runpod: FakeRunPod, fields: dict, problem: str
) -> None:
    client = make_client(fake_runpod)
    job_id = await _finished(fake_runpod, client)
    garble(fake_runpod, **fields)
    with pytest.raises(RunPodMalformed, match=problem) as caught:
        await client.status(job_id)
    assert "malformed answer from RunPod" in str(caught.value)
    assert fake_runpod.api_key not in str(caught.value)
    await client.aclose()


async def test_the_raw_answer_in_the_error_is_clipped(fake_runpod: FakeRunPod) -> None:
    client = make_client(fake_runpod)
    job_id = await _finished(fake_runpod, client)
    garble(fake_runpod, executionTime=-1, output={"images": ["A" * 1_000_000]}, error="E" * 10_000)
    with pytest.raises(RunPodMalformed) as caught:
        await client.status(job_id)
    assert len(str(caught.value)) < 600
    await client.aclose()


async def test_unknown_status_strings_are_not_terminal_and_case_is_ignored(
    fake_runpod: FakeRunPod,
) -> None:
    client = make_client(fake_runpod)
    job_id = await _finished(fake_runpod, client)
    garble(fake_runpod, times=1, status="WARMING_UP")
    assert not (await client.status(job_id)).terminal
    garble(fake_runpod, times=1, status="completed")
    assert (await client.status(job_id)).status == "COMPLETED"
    await client.aclose()


async def test_a_failed_jobs_output_is_kept_raw_for_its_details(fake_runpod: FakeRunPod) -> None:
    client = make_client(fake_runpod)
    fake_runpod.script(fr.Outcome(status="FAILED", error=fr.ERROR_JOB_PROCESSING))
    job = await client.run({"workflow": WORKFLOW})
    fake_runpod.finish(job.id)
    details = {"details": ["Workflow execution error: Node Type: X, Node ID: 2"]}
    garble(fake_runpod, when="FAILED", output=details)
    status = await client.status(job.id)
    assert status.status == "FAILED" and status.output == details
    await client.aclose()


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"workers": {"idle": -1}}, "workers.idle"),
        ({"workers": {"idle": 10**9}}, "workers.idle"),
        ({"workers": {"idle": 1.5}}, "workers.idle"),
        ({"workers": "many"}, "workers is not an object"),
        ({"jobs": {"inQueue": -3}}, "jobs.inQueue"),
        ({"": []}, "not a JSON object"),
    ],
)
async def test_insane_worker_counts_are_malformed(
    fake_runpod: FakeRunPod, fields: dict, problem: str
) -> None:
    client = make_client(fake_runpod)
    garble_health(fake_runpod, **fields)
    with pytest.raises(RunPodMalformed, match=problem):
        await client.health()
    await client.aclose()


async def test_health_fields_of_other_kinds_are_ignored_not_fatal(fake_runpod: FakeRunPod) -> None:
    client = make_client(fake_runpod)
    garble_health(fake_runpod, workers={"idle": 2, "regions": ["eu"], "note": "ok"})
    health = await client.health()
    assert health.workers == {"idle": 2} and health.available_workers == 2
    await client.aclose()


async def test_an_answer_over_the_size_cap_is_refused_without_reading_it(
    fake_runpod: FakeRunPod,
) -> None:
    client = make_client(fake_runpod)
    fake_runpod.inject("health", fr.http(200, body=b"[" + b" " * MAX_RESPONSE_BYTES + b"]"))
    with pytest.raises(RunPodMalformed, match="longer than 40 MB"):
        await client.health()
    await client.aclose()


async def test_json_nested_too_deep_is_a_bad_answer_not_a_crash(fake_runpod: FakeRunPod) -> None:
    client = make_client(fake_runpod)
    fake_runpod.inject("health", *[fr.http(200, body="[" * 200_000)] * 4)
    with pytest.raises(RunPodServerError, match="not JSON"):
        await client.health()
    await client.aclose()


async def test_an_unparseable_retry_after_is_ignored(fake_runpod: FakeRunPod) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    client = make_client(fake_runpod, sleep=sleep)
    fake_runpod.inject("health", fr.Fault("http", status=429, retry_after=float("nan")))
    await client.health()
    assert len(slept) == 1 and slept[0] >= 0
    await client.aclose()


FIELDS = ["id", "status", "delayTime", "executionTime", "output", "error", "images", "type"]
FIELDS += ["data", "filename", "message", "workers", "jobs", "idle", "x"]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(FIELDS),
            inner,
            max_size=6,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_json_answer_parses_or_raises_malformed(data) -> None:
    for parse in (JobStatus.parse, Health.parse):
        with contextlib.suppress(RunPodMalformed):
            parse(data)


async def _refusing_resolver(host: str, port: int) -> list[str]:
    return ["203.0.113.9"]  # documentation range: never global, so never connected to


PNG = fr.small_png()
ENTRY = st.one_of(
    JSON,
    st.binary(max_size=200).map(lambda data: base64.b64encode(data).decode()),
    st.text(max_size=40).map(lambda rest: "https://" + rest),
    st.text(max_size=40).map(lambda rest: "http://" + rest),
    st.integers(0, len(PNG)).map(lambda cut: fr.base64_entry(PNG[:cut])),
)
OUTPUT = JSON | st.lists(ENTRY, max_size=5).map(lambda entries: fr.images_output(*entries))


@pytest.fixture(scope="module")
def offline_client() -> Iterator[RunPodClient]:
    """One client for every example: building its HTTP client (an SSL context) took most of the
    fuzz's time. It keeps no state between downloads and never connects (the resolver refuses)."""
    client = RunPodClient(
        api_base="http://127.0.0.1:9/v2",
        endpoint_id="e",
        api_key=Secret("k"),
        resolve=_refusing_resolver,
        retry=RetryPolicy(attempts=1),
    )
    yield client
    asyncio.run(client.aclose())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OUTPUT, st.integers(min_value=1, max_value=4))
def test_any_worker_output_decodes_or_fails_as_a_runpod_error(
    offline_client: RunPodClient, output, expected: int
) -> None:
    async def decode() -> None:
        with contextlib.suppress(RunPodError):
            await decode_output(output, expected=expected, fetch=offline_client.download)

    asyncio.run(decode())


# ----- where worker images may come from --------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://bucket:abc/img.png", "cannot be parsed"),
        ("http://127.0.0.1:99999/img.png", "no valid host"),
        ("https://exa mple.com/img.png", "no valid host"),
        ("https://" + "a" * 40 + "!.example/img.png", "no valid host"),  # no regex backtracking
        ("simulated_uploaded/ab12.png", "local path"),
        ("ftp://example.com/img.png", "local path"),
        ("https://" + "a" * 9000 + ".com/img.png", "cannot be parsed"),
    ],
)
async def test_an_unusable_image_url_fails_the_job_once_with_a_reason(
    fake_runpod: FakeRunPod, url: str, reason: str
) -> None:
    client = make_client(fake_runpod)
    with pytest.raises(OutputError, match=reason):
        await decode_output(fr.images_output(fr.s3_entry(url)), expected=1, fetch=client.download)
    assert fake_runpod.requests == []
    await client.aclose()


async def test_plain_http_from_a_host_the_operator_did_not_allow_is_never_fetched(
    fake_runpod: FakeRunPod,
) -> None:
    client = make_client(fake_runpod)  # no WORKER_OUTPUT_HTTP_HOSTS
    secret = fake_runpod.serve("admin-secret", fr.small_png())
    for url in (secret, secret.replace("127.0.0.1", "localhost")):
        with pytest.raises(OutputError, match="plain http") as caught:
            await client.download(url)
        assert caught.value.kind == "forbidden_url"
    assert fake_runpod.requests_for("s3") == []
    await client.aclose()


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "64:ff9b::a00:1",
        "2002:c0a8:0101::1",
    ],
)
async def test_https_to_a_name_resolving_to_an_internal_address_is_refused_before_connecting(
    fake_runpod: FakeRunPod, address: str
) -> None:
    lookups: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["93.184.216.34", address]  # one bad record among good ones is enough

    client = make_client(fake_runpod, resolve=resolve)
    with pytest.raises(OutputError, match="private or local address"):
        await client.download(f"https://images.example:{fake_runpod.port}/s3/admin-secret")
    assert lookups == ["images.example"]
    assert fake_runpod.requests == []
    await client.aclose()


async def test_https_to_an_internal_ip_literal_is_refused(fake_runpod: FakeRunPod) -> None:
    client = make_client(fake_runpod)
    for url in ("https://169.254.169.254/latest/meta-data/", "https://[::1]/x.png"):
        with pytest.raises(OutputError, match="private or local address"):
            await client.download(url)
    await client.aclose()


async def test_credentials_in_an_image_url_are_refused(fake_runpod: FakeRunPod) -> None:
    client = make_client(fake_runpod, output_http_hosts=[fake_runpod.host])
    url = fake_runpod.serve("x.png", fr.small_png()).replace("http://", "http://user:pw@")
    with pytest.raises(OutputError, match="credentials"):
        await client.download(url)
    assert fake_runpod.requests_for("s3") == []
    await client.aclose()


async def test_an_allowed_host_is_fetched_over_http_at_its_checked_address_without_credentials(
    fake_runpod: FakeRunPod,
) -> None:
    lookups: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]  # a name only our resolver knows: the connection used its answer

    http = httpx.AsyncClient()
    http.cookies.set("session", "from-runpod", domain="127.0.0.1")
    client = make_client(fake_runpod, http=http, resolve=resolve, output_http_hosts=["minio"])
    png = fr.small_png()
    url = fake_runpod.serve("ok.png", png).replace("127.0.0.1", "minio")
    assert await client.download(url) == png
    (request,) = fake_runpod.requests_for("s3")
    assert request.headers["host"] == f"minio:{fake_runpod.port}"
    assert "authorization" not in request.headers and "cookie" not in request.headers
    assert lookups == ["minio"]
    await client.aclose()


async def test_every_redirect_is_checked_again(fake_runpod: FakeRunPod) -> None:
    client = make_client(fake_runpod, output_http_hosts=[fake_runpod.host])
    secret = fake_runpod.serve("admin-secret", fr.small_png())
    to_localhost = fake_runpod.redirect("hop1", secret.replace("127.0.0.1", "localhost"))
    with pytest.raises(OutputError, match="plain http"):
        await client.download(to_localhost)
    assert [r.path for r in fake_runpod.requests_for("s3")] == ["/s3/hop1"]
    await client.aclose()


async def test_a_redirect_to_an_internal_https_address_is_refused(fake_runpod: FakeRunPod) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host == fake_runpod.host else ["10.0.0.7"]

    client = make_client(fake_runpod, resolve=resolve, output_http_hosts=[fake_runpod.host])
    hop = fake_runpod.redirect("hop2", "https://bucket.internal.example/latest/meta-data")
    with pytest.raises(OutputError, match="private or local address"):
        await client.download(hop)
    await client.aclose()


async def test_redirect_loops_are_bounded(fake_runpod: FakeRunPod) -> None:
    client = make_client(fake_runpod, output_http_hosts=[fake_runpod.host])
    loop = fake_runpod.redirect("loop", f"{fake_runpod.base_url}/s3/loop")
    with pytest.raises(OutputError, match="redirects too many times"):
        await client.download(loop)
    assert len(fake_runpod.requests_for("s3")) == MAX_REDIRECTS + 1
    await client.aclose()


async def test_a_redirect_to_an_allowed_image_is_followed(fake_runpod: FakeRunPod) -> None:
    client = make_client(fake_runpod, output_http_hosts=[fake_runpod.host])
    png = fr.small_png()
    target = fake_runpod.serve("real.png", png)
    assert await client.download(fake_runpod.redirect("moved", target)) == png
    await client.aclose()


# ----- how much worker output is used -------------------------------------------------------------


async def test_extra_entries_beyond_the_images_asked_for_are_never_fetched(
    fake_runpod: FakeRunPod, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(fake_runpod, output_http_hosts=[fake_runpod.host])
    urls = [fake_runpod.serve(f"big-{n}.png", fr.small_png()) for n in range(12)]
    output = fr.images_output(*(fr.s3_entry(url) for url in urls))
    with caplog.at_level(logging.WARNING, logger="bot.runpod"):
        images = await decode_output(output, expected=1, fetch=client.download)
    assert len(images) == 1
    assert [r.path for r in fake_runpod.requests_for("s3")] == ["/s3/big-0.png"]
    assert "returned 12 outputs for 1 images asked for" in caplog.text
    await client.aclose()


def _noise_png(side: int, seed: int) -> bytes:
    import random

    pixels = random.Random(seed).randbytes(side * side * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(out, "PNG", compress_level=1)
    return out.getvalue()


async def test_the_byte_cap_is_a_running_total_across_all_images(fake_runpod: FakeRunPod) -> None:
    client = make_client(fake_runpod, output_http_hosts=[fake_runpod.host])
    pngs = [_noise_png(100, seed) for seed in range(3)]  # about 30 KB each
    size = len(pngs[0])
    output = fr.images_output(
        fr.s3_entry(fake_runpod.serve("a.png", pngs[0])),
        fr.base64_entry(pngs[1]),
        fr.s3_entry(fake_runpod.serve("c.png", pngs[2])),
    )
    images = await decode_output(
        output,
        expected=3,
        fetch=client.download,
        max_image_bytes=size * 2,
        max_total_bytes=size * 4,
    )
    assert len(images) == 3, "each under the per-image cap, all under the total"
    with pytest.raises(OutputError, match="together are over") as caught:
        await decode_output(
            output,
            expected=3,
            fetch=client.download,
            max_image_bytes=size * 2,
            max_total_bytes=int(size * 2.5),
        )
    assert caught.value.kind == "too_large"
    await client.aclose()


async def test_one_image_over_the_per_image_cap_is_refused_before_decoding_its_base64() -> None:
    huge = "A" * (4 * 2**20)  # would decode to 3 MB

    async def no_fetch(url: str, *, max_bytes: int) -> bytes:
        raise AssertionError("nothing to fetch")

    with pytest.raises(OutputError, match="over the 1 MB cap") as caught:
        await decode_output(
            fr.images_output({"type": "base64", "data": huge}),
            expected=1,
            fetch=no_fetch,
            max_image_bytes=2**20,
        )
    assert caught.value.kind == "too_large"


def _patched_jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(out, "JPEG")
    data = out.getvalue()
    at = data.index(b"\xff\xc0")
    scan = data.index(b"\xff\xda")
    (scan_header,) = struct.unpack(">H", data[scan + 2 : scan + 4])
    # Every header segment kept, the compressed scan dropped.
    return (
        data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 : scan + 2 + scan_header]
    )


def _patched_webp(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(out, "WEBP")
    data = out.getvalue()
    at = data.index(b"\x9d\x01\x2a")
    return data[: at + 3] + struct.pack("<HH", width, height) + data[at + 7 :]


@pytest.mark.parametrize(
    "data",
    [
        fr.oversized_png(13000, 13000, whole=False),
        _patched_jpeg(13000, 13000),
        _patched_webp(13000, 13000),
    ],
    ids=["png", "jpeg", "webp"],
)
def test_the_pixel_cap_is_checked_from_the_header_before_decoding(data: bytes) -> None:
    # The image data after each header is cut or wrong: decoding it first would have answered
    # "damaged"; the pixel cap answers because only the header was read.
    with pytest.raises(PixelLimitError, match="13000x13000"):
        verify_output_image(data)


def test_a_damaged_worker_image_is_refused_like_a_members_attachment() -> None:
    broken = fr.small_png((64, 64))[:70]
    with pytest.raises(ImageError, match="damaged or incomplete"):
        verify_output_image(broken)
    with pytest.raises(ImageError, match="damaged or incomplete"):
        prepare_input_image(broken, max_pixels=2**20, max_bytes=2**20)


async def test_a_13000_pixel_square_png_from_the_worker_fails_the_job_with_its_size() -> None:
    png = fr.oversized_png()  # 20 KB on the wire, 169 megapixels once decoded

    async def no_fetch(url: str, *, max_bytes: int) -> bytes:
        raise AssertionError("nothing to fetch")

    with pytest.raises(OutputError, match="13000x13000") as caught:
        await decode_output(fr.images_output(fr.base64_entry(png)), expected=1, fetch=no_fetch)
    assert caught.value.kind == "too_many_pixels"


async def test_worker_file_names_are_cleaned_before_members_see_them() -> None:
    async def no_fetch(url: str, *, max_bytes: int) -> bytes:
        raise AssertionError("nothing to fetch")

    output = fr.images_output(fr.base64_entry(fr.small_png(), filename="../../@everyone x.png"))
    (image,) = await decode_output(output, expected=1, fetch=no_fetch)
    assert image.filename == "everyone_x.png"


# ----- through the job manager: garbage ends a job once, refunded -------------------------------

GUILD = 10
TERMINAL = {"done", "failed", "expired", "timed_out", "cancelled"}


async def _accepted(services: Services, user: int = 1) -> int:
    new = services.prepare(
        "a pony --workflow test-pattern", user_id=user, guild_id=GUILD, channel_id=100
    )
    job = await services.jobs.accept(new)
    await services.jobs.attach_message(job.id, new.channel_id, 500 + job.id)
    return job.id


async def _endings(services: Services, job_id: int) -> list[str]:
    return [to for _, to, _ in await services.jobs.events(job_id) if to in TERMINAL]


async def _holds(services: Services, job_id: int) -> list[tuple[str, float | None]]:
    rows = await services.db.fetchall(
        "SELECT state, usd_actual FROM quota_holds WHERE job_id = ?", (job_id,)
    )
    return [(r["state"], r["usd_actual"]) for r in rows]


async def _ended_once_refunded(services: Services, delivery: RecordingDelivery, job_id: int) -> Job:
    """Wait for the job's one ending, then check a later job runs: no poll loop holds the manager."""
    await delivery.wait(job_id)
    job = await wait_for_state(services, job_id, "failed", "expired")
    assert await _holds(services, job_id) == [("refunded", None)]
    balance = await services.quotas.balance(GUILD, 1)
    assert balance.held == 0 and balance.used == 0
    return job


@pytest.mark.parametrize(
    "fields",
    [{"executionTime": 1e300}, {"executionTime": -1_116_000_000}, {"delayTime": -1}],
    ids=["execution-1e300", "execution-negative", "delay-negative"],
)
async def test_a_completed_answer_with_impossible_timings_ends_the_job_once_refunded(
    open_services: OpenServices,
    tmp_path: Path,
    fake_runpod: FakeRunPod,
    delivery: RecordingDelivery,
    caplog: pytest.LogCaptureFixture,
    fields: dict,
) -> None:
    settings = make_settings(tmp_path, fake_runpod, DAILY_BUDGET_USD="5")
    services = await open_services(settings)
    garble(fake_runpod, **fields)
    await services.jobs.start(delivery)
    job_id = await _accepted(services)
    await _until_garbled_twice_or_ended(services, fake_runpod, job_id)
    runpod_id = (await services.jobs.get(job_id)).backend_id
    fake_runpod.jobs.pop(runpod_id, None)  # RunPod forgets the result (retention), at the latest
    await _ended_once_refunded(services, delivery, job_id)
    assert "unexpected error while polling" not in caplog.text, "no traceback per poll"
    assert "OverflowError" not in caplog.text
    status = await services.quotas.budget_status(GUILD)
    assert status.total_spent_usd == 0 and status.guild_spent_usd == 0
    garble_stop(fake_runpod)
    next_job = await _accepted(services, user=2)
    await wait_for_state(services, next_job, "done")
    assert await _endings(services, job_id) == [(await services.jobs.get(job_id)).state.value]


async def _until_garbled_twice_or_ended(services: Services, fake: FakeRunPod, job_id: int) -> None:
    """Wait on the fake's count of garbled answers (two malformed polls survived) or the end."""
    async with asyncio.timeout(10):
        while fake.garbage.garbled < 2:
            job = await services.jobs.get(job_id)
            if job is not None and job.state.value in TERMINAL:
                return
            await asyncio.sleep(0.005)


def garble_stop(fake: FakeRunPod) -> None:
    fake.garbage.status.clear()


async def test_a_brief_burst_of_garbage_is_survived_and_the_charge_is_never_negative(
    open_services: OpenServices,
    tmp_path: Path,
    fake_runpod: FakeRunPod,
    delivery: RecordingDelivery,
) -> None:
    services = await open_services(make_settings(tmp_path, fake_runpod, DAILY_BUDGET_USD="5"))
    garble(fake_runpod, times=3, executionTime=-1_116_000_000)
    fake_runpod.script(fr.Outcome(run_delay=0.05))
    await services.jobs.start(delivery)
    job_id = await _accepted(services)
    done = await wait_for_state(services, job_id, "done")
    assert fake_runpod.garbage.garbled == 3, "three malformed polls, then a good one"
    assert done.execution_ms is not None and done.execution_ms >= 0
    [(state, usd)] = await _holds(services, job_id)
    assert state == "captured" and usd is not None and usd >= 0
    assert (await services.quotas.budget_status(GUILD)).total_spent_usd >= 0


async def test_the_ledger_never_books_negative_gpu_time(services: Services) -> None:
    job_id = await _accepted(services)
    job = await services.jobs.get(job_id)
    assert job is not None
    # A row with a negative time (older version, hand edit): the capture clamps it at zero.
    async with services.db.transaction() as tx:
        await services.quotas.capture(tx, dataclasses.replace(job, execution_ms=-3_600_000_000))
    [(state, usd)] = await _holds(services, job_id)
    assert state == "captured" and usd == 0
    status = await services.quotas.budget_status(GUILD)
    assert status.total_spent_usd == 0, "spent today is never below $0.00"


async def test_an_unparseable_image_url_fails_the_job_once_with_a_reason(
    services: Services, fake_runpod: FakeRunPod, delivery: RecordingDelivery
) -> None:
    garble(fake_runpod, output=fr.images_output(fr.s3_entry("http://bucket:abc/img.png")))
    await services.jobs.start(delivery)
    job_id = await _accepted(services)
    job = await _ended_once_refunded(services, delivery, job_id)
    assert job.state.value == "failed" and "cannot be parsed" in (job.failure or "")
    reads = fake_runpod.jobs[job.backend_id].status_reads
    garble_stop(fake_runpod)
    await wait_for_state(services, await _accepted(services, user=2), "done")
    assert fake_runpod.jobs[job.backend_id].status_reads == reads, "no more polls after the end"
    assert await _endings(services, job_id) == ["failed"]
    assert fake_runpod.requests_for("s3") == []


async def test_twelve_entries_for_one_image_deliver_one_and_fetch_one(
    open_services: OpenServices, fake_runpod: FakeRunPod, delivery: RecordingDelivery
) -> None:
    services = await open_services(
        runpod=make_client(fake_runpod, output_http_hosts=[fake_runpod.host])
    )
    urls = [fake_runpod.serve(f"entry-{n}.png", fr.small_png((16, 16))) for n in range(12)]
    garble(fake_runpod, output=fr.images_output(*(fr.s3_entry(url) for url in urls)))
    await services.jobs.start(delivery)
    job_id = await _accepted(services)
    await wait_for_state(services, job_id, "done")
    assert [len(images) for images in delivery.delivered[job_id]] == [1]
    assert [r.path for r in fake_runpod.requests_for("s3")] == ["/s3/entry-0.png"]


async def test_an_image_url_at_an_internal_address_is_never_fetched_and_the_job_ends_once(
    open_services: OpenServices, fake_runpod: FakeRunPod, delivery: RecordingDelivery
) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    services = await open_services(runpod=make_client(fake_runpod, resolve=resolve))
    secret = fake_runpod.serve("admin-secret", fr.small_png())
    https_name = f"https://storage.example:{fake_runpod.port}/s3/admin-secret"
    garble(fake_runpod, times=1, output=fr.images_output(fr.s3_entry(secret)))
    garble(fake_runpod, times=1, output=fr.images_output(fr.s3_entry(https_name)))
    await services.jobs.start(delivery)
    reasons = set()
    # Which job's poll meets which answer is the scheduler's business: each reason once, in all.
    for job_id in (await _accepted(services, user=1), await _accepted(services, user=2)):
        await delivery.wait(job_id)
        job = await wait_for_state(services, job_id, "failed")
        assert job.failure == failures.FORBIDDEN_OUTPUT_URL.message  # no setting names for members
        reasons |= {r for r in ("plain http", "private or local address") if r in job.error}
        assert await _endings(services, job_id) == ["failed"]
        assert await _holds(services, job_id) == [("refunded", None)]
    assert reasons == {"plain http", "private or local address"}
    assert fake_runpod.requests_for("s3") == [], "nothing fetched from the internal address"


async def test_a_13000_pixel_square_png_fails_the_job_once_before_it_is_decoded(
    services: Services, fake_runpod: FakeRunPod, delivery: RecordingDelivery
) -> None:
    garble(fake_runpod, output=fr.images_output(fr.base64_entry(fr.oversized_png())))
    await services.jobs.start(delivery)
    job_id = await _accepted(services)
    job = await _ended_once_refunded(services, delivery, job_id)
    assert job.state.value == "failed" and "13000x13000" in (job.failure or "")
    assert await _endings(services, job_id) == ["failed"]
    assert job_id not in delivery.delivered


async def test_an_operator_allowed_local_bucket_serves_images_over_plain_http(
    open_services: OpenServices,
    tmp_path: Path,
    fake_runpod: FakeRunPod,
    delivery: RecordingDelivery,
) -> None:
    settings = make_settings(tmp_path, fake_runpod, WORKER_OUTPUT_HTTP_HOSTS="127.0.0.1")
    services = await open_services(settings, runpod=None)  # the client the bot builds itself
    fake_runpod.script(fr.Outcome(output_format="s3_url"))
    await services.jobs.start(delivery)
    job_id = await _accepted(services)
    await wait_for_state(services, job_id, "done")
    assert len(fake_runpod.requests_for("s3")) == 1 and delivery.delivered[job_id]


@pytest.mark.parametrize("value", ["http://minio", "minio:9000", "minio/bucket"])
def test_a_worker_output_host_with_a_scheme_or_port_is_a_settings_error(
    tmp_path: Path, value: str
) -> None:
    with pytest.raises(ConfigError, match="host names like minio or localhost"):
        make_settings(tmp_path, WORKER_OUTPUT_HTTP_HOSTS=value)
    allowed = make_settings(tmp_path, WORKER_OUTPUT_HTTP_HOSTS="MinIO, localhost,::1")
    assert allowed.worker_output_http_hosts == ("minio", "localhost", "::1")


def test_a_header_past_pillows_own_bomb_limit_is_a_pixel_refusal_too() -> None:
    with pytest.raises(PixelLimitError, match="more than"):
        verify_output_image(fr.oversized_png(20000, 20000, whole=False))


@pytest.fixture
def tls_ca() -> trustme.CA:
    return trustme.CA()


async def _https_bucket(fake: FakeRunPod, ca: trustme.CA, name: str) -> int:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(server)
    return await fr.serve_tls(fake, server)


def _trusting(ca: trustme.CA) -> httpx.AsyncClient:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return httpx.AsyncClient(verify=context)


async def test_https_goes_to_the_checked_address_and_still_verifies_the_name(
    fake_runpod: FakeRunPod, tls_ca: trustme.CA
) -> None:
    port = await _https_bucket(fake_runpod, tls_ca, "bucket.test")

    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]  # a name no real DNS has: the connection used our checked answer

    client = make_client(
        fake_runpod, http=_trusting(tls_ca), resolve=resolve, output_http_hosts=["bucket.test"]
    )
    png = fr.small_png()
    fake_runpod.serve("tls.png", png)
    assert await client.download(f"https://bucket.test:{port}/s3/tls.png") == png
    (request,) = fake_runpod.requests_for("s3")
    assert request.headers["host"] == f"bucket.test:{port}"
    await client.aclose()


async def test_a_certificate_for_another_name_is_refused_at_the_pinned_address(
    fake_runpod: FakeRunPod, tls_ca: trustme.CA
) -> None:
    port = await _https_bucket(fake_runpod, tls_ca, "someone-else.test")

    async def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    client = make_client(
        fake_runpod, http=_trusting(tls_ca), resolve=resolve, output_http_hosts=["bucket.test"]
    )
    fake_runpod.serve("tls.png", fr.small_png())
    with pytest.raises(RunPodTransportError, match="download failed"):
        await client.download(f"https://bucket.test:{port}/s3/tls.png")
    assert fake_runpod.requests_for("s3") == []
    await client.aclose()
