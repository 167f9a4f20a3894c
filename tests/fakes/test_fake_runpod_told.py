"""The fake RunPod's two ways of telling: `/status-sync` long-polls and `webhook` calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from tests.fakes.fake_runpod import FakeRunPod, Outcome
from tests.fakes.test_fake_runpod import make_client, workflow


class Receiver:
    """A webhook receiver on 127.0.0.1 answering scripted statuses (200 once the script ends)."""

    def __init__(self, *answers: int) -> None:
        self.answers = list(answers)
        self.bodies: list[object] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        return web.Response(status=self.answers.pop(0) if self.answers else 200)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.fixture
async def fake() -> AsyncIterator[FakeRunPod]:
    async with FakeRunPod() as server:
        server.webhook_retry_delay = 0.01
        server.status_sync_time_scale = 0.01
        yield server


@pytest.fixture
async def client(fake: FakeRunPod) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(fake, timeout=10.0) as http_client:
        yield http_client


async def _run(client: httpx.AsyncClient, **extra: object) -> str:
    answer = await client.post("run", json={"input": {"workflow": workflow()}, **extra})
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


async def test_status_sync_answers_the_moment_the_job_ends(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    fake.status_sync_time_scale = 1.0  # a 90 s hold: only the job's end can answer in time
    fake.script(Outcome(status="STUCK"))
    job_id = await _run(client)
    held = asyncio.create_task(client.get(f"status-sync/{job_id}", params={"wait": "90000"}))
    await fake.wait_for_requests("status-sync", 1)
    assert not held.done()
    fake.finish(job_id)
    answer = await held
    assert answer.status_code == 200
    assert answer.json()["status"] == "COMPLETED"
    assert answer.json() == (await client.get(f"status/{job_id}")).json()


async def test_status_sync_answers_the_current_status_when_the_wait_runs_out(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    fake.script(Outcome(status="STUCK"), Outcome(status="HANG"))
    running, queued = await _run(client), await _run(client)
    for job_id, status in ((running, "IN_PROGRESS"), (queued, "IN_QUEUE")):
        answer = await client.get(f"status-sync/{job_id}", params={"wait": "1000"})
        assert answer.status_code == 200 and answer.json()["status"] == status


async def test_status_sync_of_a_finished_job_answers_at_once_and_unknown_jobs_are_404(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    fake.status_sync_time_scale = 1.0
    job_id = await _run(client)
    done = await client.get(f"status-sync/{job_id}", params={"wait": "90000"})
    assert done.json()["status"] == "COMPLETED"
    missing = await client.get("status-sync/no-such-job", params={"wait": "1000"})
    assert missing.status_code == 404


@pytest.mark.parametrize("answer", [404, 405])
async def test_status_sync_switched_off_answers_like_a_missing_route(
    fake: FakeRunPod, client: httpx.AsyncClient, answer: int
) -> None:
    job_id = await _run(client)
    fake.switch_off_status_sync(answer=answer)
    assert (await client.get(f"status-sync/{job_id}", params={"wait": "1000"})).status_code == (
        answer
    )
    assert (await client.get(f"status/{job_id}")).json()["status"] == "COMPLETED"


async def test_status_sync_is_get_only_and_needs_a_job_id(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    job_id = await _run(client)
    assert (await client.post(f"status-sync/{job_id}")).status_code == 405
    assert (await client.get("status-sync")).status_code == 404


async def test_webhook_gets_the_status_json_when_the_job_ends(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    fake.script(Outcome(status="STUCK"))
    async with Receiver() as receiver:
        job_id = await _run(client, webhook=receiver.url)
        assert receiver.bodies == [], "nothing is called before the job ends"
        fake.finish(job_id)
        await fake.wait_for_webhook_calls(1)
        status = (await client.get(f"status/{job_id}")).json()
    assert receiver.bodies == [status] and status["status"] == "COMPLETED"
    assert [(c.job_id, c.attempt, c.answer) for c in fake.webhook_calls] == [(job_id, 0, 200)]


async def test_webhook_is_retried_twice_until_it_gets_200(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    async with Receiver(500, 503) as receiver:
        await _run(client, webhook=receiver.url)
        await fake.wait_for_webhook_calls(3)
    assert [c.answer for c in fake.webhook_calls] == [500, 503, 200]
    assert len(receiver.bodies) == 3 and receiver.bodies[0] == receiver.bodies[2]


async def test_webhook_gives_up_after_three_failed_attempts(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    async with Receiver(500, 500, 500, 500) as receiver:
        await _run(client, webhook=receiver.url)
        await fake.wait_for_webhook_calls(3)
        second = await _run(client, webhook=receiver.url)  # its call comes after the first's
        await fake.wait_for_webhook_calls(4)
    first_calls = [c for c in fake.webhook_calls if c.job_id != second]
    assert [c.attempt for c in first_calls] == [0, 1, 2]


async def test_webhook_faults_drop_an_attempt_skip_a_job_or_call_twice(
    fake: FakeRunPod, client: httpx.AsyncClient
) -> None:
    async with Receiver() as receiver:
        fake.inject_webhook("drop")
        await _run(client, webhook=receiver.url)
        await fake.wait_for_webhook_calls(2)
        assert [c.answer for c in fake.webhook_calls] == [None, 200]
        assert len(receiver.bodies) == 1

        fake.inject_webhook("never", "duplicate")
        await _run(client, webhook=receiver.url)
        await _run(client, webhook=receiver.url)
        await fake.wait_for_webhook_calls(4)
    assert len(receiver.bodies) == 3, "one job never called, the other called twice"
    assert receiver.bodies[1] == receiver.bodies[2]


async def test_a_webhook_that_is_not_a_url_is_refused(client: httpx.AsyncClient) -> None:
    answer = await client.post("run", json={"input": {"workflow": workflow()}, "webhook": 5})
    assert answer.status_code == 400


async def test_the_fake_counts_the_most_connections_open_at_once(fake: FakeRunPod) -> None:
    fake.status_sync_time_scale = 1.0
    fake.script(Outcome(status="STUCK"))
    clients = [make_client(fake, timeout=10.0) for _ in range(3)]
    job_id = await _run(clients[0])
    held = [
        asyncio.create_task(c.get(f"status-sync/{job_id}", params={"wait": "90000"}))
        for c in clients
    ]
    await fake.wait_for_requests("status-sync", 3)
    fake.finish(job_id)
    await asyncio.gather(*held)
    for c in clients:
        await c.aclose()
    assert fake.peak_connections == 3
    assert fake.snapshot()["peak_connections"] == 3
