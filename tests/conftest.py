"""Shared fixtures: real SQLite files, a real PostgreSQL, the fake RunPod cloud, short intervals."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import httpx._transports.default
import pytest
import pytest_asyncio

from bot.app import Pacing, Stablehand
from bot.config import SETTINGS, Secret, Settings, load_settings
from bot.db import Database
from bot.images import ImageFile
from bot.jobs import Job, JobManager, JobUpdate
from bot.polling import Timing
from bot.runpod import RetryPolicy, RunPodClient
from bot.services import Services
from tests.fakes import HANG_GUARD, payloads
from tests.fakes.fake_discord import FakeDiscord, RecordedRequest
from tests.fakes.fake_runpod import FakeRunPod
from tests.postgres_server import (
    PostgresServer,
    PostgresUnavailable,
    fresh_database,
    running_postgres,
)

ROOT = Path(__file__).resolve().parent.parent
SETTING_NAMES = {setting.name for setting in SETTINGS}


def run_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m bot ...` in `cwd` with no settings but those given (no token, no endpoint)."""
    environ = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    environ.update({"PYTHONPATH": str(ROOT), "DATABASE_PATH": str(cwd / "stablehand.db"), **env})
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


# Every interval of the job manager, shrunk so tests never wait real seconds.
FAST = Timing(
    first_poll=0.01,
    queue_interval=0.01,
    queue_max_interval=0.05,
    dense_interval=0.01,
    running_interval=0.01,
    running_max_interval=0.05,
    health_interval=0.02,
    retry_delay=0.01,
    auth_backoff=0.05,
    submit_retry_delay=0.01,
    delivery_retry_delay=0.01,
    delivery_max_backoff=0.05,
    position_interval=0.01,
    claim_interval=0.02,
    no_worker_notice=0.05,
    shutdown_grace=2.0,
)
FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.01, max_retry_after=0.2)


def make_settings(tmp_path: Path, fake: FakeRunPod | None = None, **env: str) -> Settings:
    """Settings as the bot would read them, from an explicit environment (no .env file)."""
    base = {
        "DISCORD_TOKEN": "fake-discord-token",
        "RUNPOD_API_KEY": fake.api_key if fake else "test-runpod-key",
        "RUNPOD_ENDPOINT_ID": fake.endpoint_id if fake else "test-endpoint",
        "RUNPOD_API_BASE": fake.api_base if fake else "http://127.0.0.1:9/v2",
        "DATABASE_PATH": str(tmp_path / "stablehand.db"),
    }
    base.update(env)
    return load_settings(environ=base, dotenv_path=None)


def make_client(fake: FakeRunPod, **kwargs) -> RunPodClient:
    return RunPodClient(
        api_base=fake.api_base,
        endpoint_id=fake.endpoint_id,
        api_key=Secret(fake.api_key),
        retry=kwargs.pop("retry", FAST_RETRY),
        **kwargs,
    )


class RecordingDelivery:
    """A deliverer that keeps what it was given and lets a test wait for a job's outcome."""

    def __init__(self) -> None:
        self.delivered: dict[int, list[Sequence[ImageFile]]] = {}
        self.notified: dict[int, list[Job]] = {}
        self.fail_next: list[Exception] = []
        self._ended: dict[int, asyncio.Event] = {}

    def _event(self, job_id: int) -> asyncio.Event:
        return self._ended.setdefault(job_id, asyncio.Event())

    async def deliver(self, job: Job, images: Sequence[ImageFile]) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)
        self.delivered.setdefault(job.id, []).append(images)
        self._event(job.id).set()

    async def notify(self, job: Job) -> None:
        self.notified.setdefault(job.id, []).append(job)
        self._event(job.id).set()

    async def wait(self, job_id: int, timeout: float = HANG_GUARD) -> None:
        await asyncio.wait_for(self._event(job_id).wait(), timeout)


class Watcher:
    """Collects a job manager's updates and lets a test wait for one that matches."""

    def __init__(self, jobs: JobManager) -> None:
        self.updates: list[JobUpdate] = []
        self._changed = asyncio.Event()
        jobs.subscribe(self._on_update)

    def _on_update(self, update: JobUpdate) -> None:
        self.updates.append(update)
        self._changed.set()

    async def until(
        self, predicate: Callable[[JobUpdate], bool], timeout: float = HANG_GUARD
    ) -> JobUpdate:
        async with asyncio.timeout(timeout):
            while not (found := [u for u in self.updates if predicate(u)]):
                self._changed.clear()
                await self._changed.wait()
        return found[0]


def result_edit(message_id: int) -> Callable[[RecordedRequest], bool]:
    """Matches the edit that turns a job's message into its result (attachments included)."""

    def matches(request: RecordedRequest) -> bool:
        return (
            request.method == "PATCH"
            and request.path.endswith(f"/messages/{message_id}")
            and bool(request.files)
        )

    return matches


async def wait_for_job(
    services: Services, job_id: int, reached: Callable[[Job], bool], timeout: float = HANG_GUARD
) -> Job:
    """Wait (on the database, in small steps) until the stored job satisfies `reached`."""
    async with asyncio.timeout(timeout):
        while True:
            job = await services.jobs.get(job_id)
            if job is not None and reached(job):
                return job
            await asyncio.sleep(0.005)


async def wait_for_state(
    services: Services, job_id: int, *states: str, timeout: float = HANG_GUARD
) -> Job:
    """Wait until a job reaches one of `states`."""
    return await wait_for_job(services, job_id, lambda job: job.state.value in states, timeout)


@pytest.fixture(scope="session", autouse=True)
def one_ca_bundle_per_run() -> Iterator[None]:
    """Every default httpx client of this run trusts the same CAs from the same environment: parse
    the bundle once, not once per client (about 30 ms each, for hundreds of RunPod clients). A
    context a test builds itself is passed through untouched."""
    create = httpx._transports.default.create_ssl_context
    shared = functools.cache(create)

    def create_ssl_context(
        verify: ssl.SSLContext | str | bool = True, cert: object = None, trust_env: bool = True
    ) -> ssl.SSLContext:
        if verify is True and cert is None:
            return shared(True, None, trust_env)
        return create(verify=verify, cert=cert, trust_env=trust_env)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpx._transports.default, "create_ssl_context", create_ssl_context)
        yield


class MigratedTemplate:
    """An empty SQLite database with every migration applied, built once per run by the bot's own
    migrations; a test's database starts as a copy of it (its own file) instead of running the
    migrations again (about 20 ms each)."""

    def __init__(self, folder: Path) -> None:
        self._path = folder / "migrated.db"
        self._built = False

    async def seed(self, path: Path) -> None:
        """Copy the template to `path`, unless a database is already there."""
        if not self._built:
            database = await Database.open(self._path)
            await database.close()
            self._built = True
        _copy_unless_there(self._path, path)


def _copy_unless_there(source: Path, target: Path) -> None:
    if not target.exists():
        shutil.copyfile(source, target)


_template: MigratedTemplate | None = None


@pytest.fixture(scope="session", autouse=True)
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigratedTemplate]:
    global _template
    _template = MigratedTemplate(tmp_path_factory.mktemp("migrated"))
    yield _template
    _template = None


async def seed_sqlite(settings: Settings) -> None:
    """Start the settings' SQLite database from the migrated template (not on PostgreSQL)."""
    if _template is not None and settings.database_url is None:
        await _template.seed(Path(settings.database_path))


@pytest_asyncio.fixture
async def fake_runpod() -> AsyncIterator[FakeRunPod]:
    async with FakeRunPod() as fake:
        yield fake


@pytest_asyncio.fixture
async def db(tmp_path: Path, migrated_template: MigratedTemplate) -> AsyncIterator[Database]:
    await migrated_template.seed(tmp_path / "test.db")
    database = await Database.open(tmp_path / "test.db")
    yield database
    await database.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run, started on first use; a test needing it fails
    (never skips) where it cannot start."""
    try:
        with running_postgres() as server:
            yield server
    except PostgresUnavailable as exc:
        pytest.fail(f"the PostgreSQL test server could not start: {exc}", pytrace=False)


@pytest_asyncio.fixture
async def postgres_dsn(postgres_server: PostgresServer) -> AsyncIterator[str]:
    """An empty database of its own on the test server (no tables, no migrations)."""
    async with fresh_database(postgres_server) as dsn:
        yield dsn


OpenServices = Callable[..., Awaitable[Services]]


@pytest_asyncio.fixture
async def open_services(tmp_path: Path, fake_runpod: FakeRunPod) -> AsyncIterator[OpenServices]:
    """Opens the real services (on the fake RunPod by default) and closes every one at teardown.

    An aiosqlite connection left open keeps the test process alive, so nothing opens them by hand.
    """
    opened: list[Services] = []

    async def factory(settings: Settings | None = None, **kwargs) -> Services:
        kwargs.setdefault("timing", FAST)
        kwargs.setdefault("runpod", make_client(fake_runpod))
        settings = settings or make_settings(tmp_path, fake_runpod)
        await seed_sqlite(settings)
        services = await Services.open(settings, **kwargs)
        opened.append(services)
        return services

    yield factory
    for services in opened:
        await services.close()


@pytest_asyncio.fixture
async def services(open_services: OpenServices) -> Services:
    """The real services (database file, RunPod client, templates, job manager) on the fake."""
    return await open_services()


@pytest.fixture
def delivery() -> RecordingDelivery:
    return RecordingDelivery()


# ----- the real bot against the fake Discord and the fake RunPod ------------------------------

FAST_PACING = Pacing(message_interval=0.01, channel_burst=5, channel_per_second=200.0)
DEFERRED_CHANNEL_MESSAGE = 5  # an interaction callback's "<bot> is thinking..."


@pytest_asyncio.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    # The 3-second acknowledgement rule is tested on the fake's own clock (test_fake_discord);
    # here it would only measure how loaded the machine is.
    async with FakeDiscord(channel_rate=(5, 0.05), ack_deadline=HANG_GUARD) as server:
        server.install()
        yield server
        server.uninstall()


async def _identify_at_once(shard_id: int | None, *, initial: bool = False) -> None:
    """The fake Discord has no IDENTIFY rate limit to respect."""


def connects_at_once(bot: Stablehand) -> Stablehand:
    """Drop discord.py's waits for real Discord's pace, for a bot about to connect to the fake: 5 s
    between two shards' IDENTIFYs, and 2 s after the last GUILD_CREATE for more (the fake sends
    every guild right after READY)."""
    bot.before_identify_hook = _identify_at_once  # type: ignore[method-assign]
    bot._connection.guild_ready_timeout = 0.1
    return bot


async def start_bot(
    settings: Settings, fake: FakeDiscord, *, timing: Timing = FAST, pacing: Pacing = FAST_PACING
) -> Stablehand:
    """The bot as `python -m bot` builds it, logged in over REST, with jobs resumed."""
    await seed_sqlite(settings)
    bot = Stablehand(settings, timing=timing, pacing=pacing)
    await bot.login(fake.token)
    await bot.start_jobs()
    return bot


@pytest_asyncio.fixture
async def bot(
    tmp_path: Path, fake_runpod: FakeRunPod, fake_discord: FakeDiscord
) -> AsyncIterator[Stablehand]:
    running = await start_bot(make_settings(tmp_path, fake_runpod), fake_discord)
    yield running
    await running.close()


async def reply_to(bot: Stablehand, fake: FakeDiscord, payload: dict) -> dict:
    """Deliver an interaction and return what the bot answered (the callback's `data`)."""
    fake.deliver(bot, payload)
    callback = await fake.wait_for_callback(payload)
    assert callback.status == 200, callback
    return callback.json.get("data", {})


async def answer_to(fake: FakeDiscord, payload: dict) -> dict:
    """What the member reads: the callback's `data`, or after a "thinking..." deferral the
    followup that came in its place."""
    callback = await fake.wait_for_callback(payload)
    assert callback.status == 200, callback
    if callback.json["type"] != DEFERRED_CHANNEL_MESSAGE:
        return callback.json.get("data", {})
    followup = await fake.wait_for(
        lambda r: (
            r.method == "POST" and r.path.startswith("/webhooks/") and payload["token"] in r.path
        )
    )
    return followup.json


def embed_text(data: dict) -> str:
    """Everything a member reads in a reply: content, and each embed's title, text and fields."""
    parts = [data.get("content") or ""]
    for embed in data.get("embeds", []):
        parts += [embed.get("title", ""), embed.get("description", "")]
        parts += [f"{f['name']}: {f['value']}" for f in embed.get("fields", [])]
        parts.append(embed.get("footer", {}).get("text", ""))
    return "\n".join(p for p in parts if p)


async def imagine_result(bot: Stablehand, fake: FakeDiscord, prompt: str, **options) -> dict:
    """Run /imagine to the end and return the finished message, as a button click would carry it."""
    payload = payloads.slash_command(
        "imagine", {"prompt": prompt, **options.pop("options", {})}, **options
    )
    await reply_to(bot, fake, payload)
    message_id = fake.interactions[payload["token"]].response_message_id
    await fake.wait_for(
        lambda r: (
            r.method == "PATCH" and r.path.endswith(f"/messages/{message_id}") and bool(r.files)
        ),
        timeout=HANG_GUARD,
    )
    return fake.message_payload(message_id)
