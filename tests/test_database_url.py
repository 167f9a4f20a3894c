"""`DATABASE_URL`: PostgreSQL when set, SQLite exactly as before when not; its password shows nowhere."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from bot import logs
from bot.checks import run_checks
from bot.config import ConfigError, load_settings, secrets
from bot.db import Database, bundled_migrations
from bot.postgres import PostgresDatabase
from tests.conftest import OpenServices, make_settings
from tests.fakes.fake_runpod import FakeRunPod

PASSWORD = "correct-horse-battery-staple"
SCHEMA = len(bundled_migrations())


def _with_password(dsn: str, password: str = PASSWORD) -> str:
    """The test server's DSN with a password (the test server trusts every local connection)."""
    parts = urlsplit(dsn)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _closed_port_url() -> str:
    return f"postgresql://stablehand:{PASSWORD}@127.0.0.1:9/stablehand"


def test_the_url_and_its_password_show_in_no_repr() -> None:
    settings = load_settings(environ={"DATABASE_URL": _closed_port_url()}, dotenv_path=None)
    assert settings.database_url is not None
    assert settings.database_url.reveal() == _closed_port_url()
    for shown in (repr(settings), str(settings.database_url), f"{settings.database_url}"):
        assert PASSWORD not in shown


def test_without_a_url_the_bot_stays_on_sqlite() -> None:
    assert load_settings(environ={}, dotenv_path=None).database_url is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (f"mysql://root:{PASSWORD}@db/stablehand", "must start with postgresql://"),
        (f"postgresql://root:{PASSWORD}@db:port/stablehand", "is not a URL like"),
        (f"postgresql://root:{PASSWORD}@/stablehand", "must name the server"),
    ],
)
def test_a_url_that_is_not_postgresql_is_refused_without_quoting_it(url: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"DATABASE_URL": url}, dotenv_path=None)
    [problem] = caught.value.problems
    assert problem.startswith("DATABASE_URL=(hidden) ") and reason in problem
    assert PASSWORD not in caught.value.render()


def test_the_password_is_masked_in_every_log_line(capsys: pytest.CaptureFixture[str]) -> None:
    in_query = "tr0ub4dor-and-3"
    url = f"postgresql://stablehand:{PASSWORD}@127.0.0.1:9/stablehand?password={in_query}"
    settings = load_settings(environ={"DATABASE_URL": url}, dotenv_path=None)
    root = logging.getLogger()
    before = (root.handlers[:], root.level)
    logs.configure("INFO", secrets(settings))
    try:
        log = logging.getLogger("stablehand.test")
        log.warning("connecting to %s", url)
        log.warning("authentication failed for password %s", PASSWORD)
        log.warning("and the query's one: %s", in_query)
    finally:
        root.handlers[:], root.level = before
    logged = capsys.readouterr().err
    assert PASSWORD not in logged and in_query not in logged
    assert logged.count("********") == 3


async def test_services_open_postgresql_when_the_url_is_set(
    tmp_path: Path, fake_runpod: FakeRunPod, open_services: OpenServices, postgres_dsn: str
) -> None:
    settings = make_settings(tmp_path, fake_runpod, DATABASE_URL=_with_password(postgres_dsn))
    services = await open_services(settings)
    assert isinstance(services.db, PostgresDatabase)
    assert not (tmp_path / "stablehand.db").exists(), "no SQLite file beside it"
    sqlite = await open_services(make_settings(tmp_path, fake_runpod))
    assert isinstance(sqlite.db, Database)


async def test_an_unreachable_server_stops_the_start_with_a_line_that_hides_the_password(
    tmp_path: Path, fake_runpod: FakeRunPod, open_services: OpenServices
) -> None:
    settings = make_settings(tmp_path, fake_runpod, DATABASE_URL=_closed_port_url())
    with pytest.raises(ConfigError) as caught:
        await open_services(settings)
    [problem] = caught.value.problems
    assert problem.startswith(
        "DATABASE_URL=postgresql://stablehand@127.0.0.1:9/stablehand cannot be opened ("
    )
    assert "check that the server is up" in problem and PASSWORD not in caught.value.render()


async def test_check_names_the_engine_its_version_and_the_schema_version(
    tmp_path: Path, postgres_dsn: str
) -> None:
    lines: list[str] = []
    env = {"DATABASE_PATH": str(tmp_path / "check.db")}
    await run_checks({**env, "DATABASE_URL": _with_password(postgres_dsn)}, lines.append)
    await run_checks(env, lines.append)
    [postgresql, sqlite] = [line for line in lines if "database:" in line]
    where = urlsplit(postgres_dsn)
    assert postgresql.startswith("[ok  ] database: PostgreSQL 1")
    assert postgresql.endswith(
        f" at postgresql://postgres@127.0.0.1:{where.port}{where.path} (schema version {SCHEMA})"
    )
    assert sqlite.startswith("[ok  ] database: SQLite 3.")
    assert sqlite.endswith(f"at {tmp_path / 'check.db'} (schema version {SCHEMA})")
    assert all(PASSWORD not in line for line in lines)


async def test_check_fails_an_unreachable_server_with_its_fix_and_no_password(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    env = {"DATABASE_PATH": str(tmp_path / "check.db"), "DATABASE_URL": _closed_port_url()}
    status = await run_checks(env, lines.append)
    text = "\n".join(lines)
    assert status == 1 and PASSWORD not in text
    assert "[FAIL] database: DATABASE_URL=postgresql://stablehand@127.0.0.1:9/stablehand" in text
    assert "fix: check that the server is up" in text
    assert not (tmp_path / "check.db").exists(), "SQLite was not opened instead"
