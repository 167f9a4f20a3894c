"""The webhook receiver over real sockets: RunPod's calls from the fake, and hostile ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bot.config import ConfigError
from bot.runpod import JobStatus, RunPodClient, RunPodError
from bot.webhooks import WebhookReceiver
from tests.conftest import make_client
from tests.fakes import HANG_GUARD
from tests.fakes import fake_runpod as fr
from tests.fakes.fake_runpod import FakeRunPod, Outcome

WORKFLOW = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48}}}


class Handed:
    """The statuses the receiver handed over, by job key."""

    def __init__(self) -> None:
        self.statuses: list[tuple[str, JobStatus]] = []
        self.arrived = asyncio.Event()

    async def __call__(self, key: str, status: JobStatus) -> None:
        self.statuses.append((key, status))
        self.arrived.set()

    async def first(self) -> tuple[str, JobStatus]:
        await asyncio.wait_for(self.arrived.wait(), HANG_GUARD)
        return self.statuses[0]


@pytest.fixture
def handed() -> Handed:
    return Handed()


@pytest.fixture
async def receiver(handed: Handed) -> AsyncIterator[WebhookReceiver[JobStatus]]:
    async with WebhookReceiver(
        public_url=None,
        host="127.0.0.1",
        port=0,
        parse=lambda data, expected: JobStatus.parse(data, op="webhook", expected_id=expected),
        ended=lambda status: status.terminal,
        on_status=handed,
        invalid=(RunPodError,),
    ) as served:
        yield served


@pytest.fixture
async def client(fake_runpod: FakeRunPod) -> AsyncIterator[RunPodClient]:
    fake_runpod.webhook_retry_delay = 0.01
    runpod = make_client(fake_runpod)
    yield runpod
    await runpod.aclose()


async def _post(url: str, body: Any) -> int:
    async with httpx.AsyncClient(timeout=HANG_GUARD) as http:
        return (await http.post(url, json=body)).status_code


async def test_runpods_call_hands_over_the_finished_jobs_validated_status(
    fake_runpod: FakeRunPod,
    client: RunPodClient,
    receiver: WebhookReceiver[JobStatus],
    handed: Handed,
) -> None:
    fake_runpod.script(Outcome(status="STUCK"))
    job = await client.run({"workflow": WORKFLOW}, webhook=receiver.arm("17"))
    receiver.expect("17", job.id)
    assert fake_runpod.requests_for("run")[0].json["webhook"].startswith("http://127.0.0.1:")
    fake_runpod.finish(job.id)
    key, status = await handed.first()
    assert key == "17" and status == await client.status(job.id)
    assert status.status == "COMPLETED" and status.output["images"]
    assert [call.answer for call in fake_runpod.webhook_calls] == [200]
    assert not receiver.armed("17") and receiver.stats.accepted == 1


async def test_a_duplicate_call_is_answered_200_and_ignored(
    fake_runpod: FakeRunPod,
    client: RunPodClient,
    receiver: WebhookReceiver[JobStatus],
    handed: Handed,
) -> None:
    fake_runpod.inject_webhook("duplicate")
    await client.run({"workflow": WORKFLOW}, webhook=receiver.arm("5"))
    await fake_runpod.wait_for_webhook_calls(2)
    assert [call.answer for call in fake_runpod.webhook_calls] == [200, 200]
    await handed.first()
    assert len(handed.statuses) == 1 and receiver.stats.ignored == 1


async def test_wrong_tokens_unknown_and_late_calls_are_answered_200_and_change_nothing(
    receiver: WebhookReceiver[JobStatus], handed: Handed
) -> None:
    body = {"id": "job-9", "status": "COMPLETED", "output": {"images": []}}
    url = receiver.arm("9")
    base, _, token = url.rpartition("/")
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert await _post(f"{base}/{wrong}", body) == 200
    assert await _post(url.replace("/9/", "/10/"), body) == 200, "unknown job"
    assert handed.statuses == [] and receiver.armed("9"), "the real call can still come"
    receiver.disarm("9")  # the job ended through a poll meanwhile
    assert await _post(url, body) == 200, "late"
    assert handed.statuses == [] and receiver.stats.ignored == 3


@pytest.mark.parametrize(
    "garbage",
    [
        {"id": "other-job", "status": "COMPLETED"},
        {"status": "COMPLETED"},
        [],
        {"id": "x", "executionTime": -1},
    ],
)
async def test_a_call_that_is_not_a_status_answer_is_refused_and_the_job_stays_waiting(
    receiver: WebhookReceiver[JobStatus], handed: Handed, garbage: Any
) -> None:
    url = receiver.arm("3")
    receiver.expect("3", "x")
    assert await _post(url, garbage) == 400
    async with httpx.AsyncClient() as http:
        assert (await http.post(url, content=b"{not json")).status_code == 400
    assert handed.statuses == [] and receiver.armed("3")
    assert await _post(url, {"id": "x", "status": "FAILED", "error": "boom"}) == 200
    key, status = await handed.first()
    assert (key, status.status, status.error) == ("3", "FAILED", "boom")


async def test_a_call_about_a_job_that_has_not_ended_is_ignored(
    receiver: WebhookReceiver[JobStatus], handed: Handed
) -> None:
    url = receiver.arm("4")
    assert await _post(url, {"id": "x", "status": "IN_PROGRESS"}) == 200
    assert handed.statuses == [] and receiver.armed("4")


async def test_runpod_retries_a_refused_call_twice_then_gives_up(
    fake_runpod: FakeRunPod,
    client: RunPodClient,
    receiver: WebhookReceiver[JobStatus],
    handed: Handed,
) -> None:
    fr.garble(fake_runpod, executionTime="soon")
    await client.run({"workflow": WORKFLOW}, webhook=receiver.arm("6"))
    await fake_runpod.wait_for_webhook_calls(3)
    assert [call.answer for call in fake_runpod.webhook_calls] == [400, 400, 400]
    assert handed.statuses == [] and receiver.armed("6"), "left for the poller to find"


def test_each_job_gets_its_own_unguessable_token() -> None:
    receiver: WebhookReceiver[JobStatus] = WebhookReceiver(
        public_url="https://bot.example.org/hooks/",
        host="127.0.0.1",
        port=8080,
        parse=JobStatus.parse,
        ended=lambda status: status.terminal,
        on_status=Handed(),
    )
    first, second = receiver.arm("1"), receiver.arm("2")
    assert first.startswith("https://bot.example.org/hooks/runpod/1/")
    tokens = {
        first.rpartition("/")[2],
        second.rpartition("/")[2],
        receiver.arm("1").rpartition("/")[2],
    }
    assert len(tokens) == 3 and all(len(token) >= 43 for token in tokens)
    assert "token" not in repr(receiver) and first.rpartition("/")[2] not in repr(receiver)
    with pytest.raises(ValueError):
        receiver.arm("../1")


async def test_a_listen_address_in_use_is_a_settings_error_naming_it(
    receiver: WebhookReceiver[JobStatus],
) -> None:
    second: WebhookReceiver[JobStatus] = WebhookReceiver(
        public_url=None,
        host="127.0.0.1",
        port=receiver.port,
        parse=JobStatus.parse,
        ended=lambda status: status.terminal,
    )
    with pytest.raises(ConfigError, match=f"WEBHOOK_LISTEN=127.0.0.1:{receiver.port}"):
        await second.start()
    await second.stop()
