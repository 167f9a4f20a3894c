"""The fake RunPod cloud with a real worker behind it: ComfyUI and worker-comfyui's own handler.

    python -m tests.fakes.real_worker [STACK_DIR]

A stack folder is made by `python -m tests.realstack.prepare`. Each submitted job runs through
the real handler under runpod-python's `run_job` (in the stack's Python, one job at a time, like
a worker with concurrency 1) and its result becomes the job's status/output/error, so the bot
talks to the same cloud contract as with the drawn PNGs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.fake_runpod import FakeJob, FakeRunPod, Outcome

STACK_ENV = "STABLEHAND_REALSTACK"
STACK_FILE = "stack.json"
BRIDGE = Path(__file__).resolve().with_name("real_worker_bridge.py")
# What worker-comfyui's start.sh passes, minus --verbose; --cpu and loopback for a GPU-less host.
COMFY_FLAGS = ("--cpu", "--disable-auto-launch", "--disable-metadata", "--log-stdout")
COMFY_START_TIMEOUT = 300.0
# Kept from what run_job returns: RunPod's /status shows these two (stopPod is for the worker).
REPORTED_KEYS = ("output", "error")


class StackError(Exception):
    """The stack folder is missing, incomplete or its ComfyUI would not start; says what to do."""


@dataclass(frozen=True)
class Stack:
    """A prepared folder: where the sources and their Python are, and ComfyUI's port."""

    folder: Path
    python: Path
    comfyui: Path
    worker: Path
    port: int = 8188

    @classmethod
    def load(cls, folder: Path | str) -> Stack:
        path = Path(folder).expanduser().resolve() / STACK_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StackError(
                f"{path} cannot be read ({exc}); prepare the folder with "
                "`python -m tests.realstack.prepare`"
            ) from exc
        return cls(
            folder=path.parent,
            python=Path(data["python"]),
            comfyui=Path(data["comfyui"]),
            worker=Path(data["worker"]),
            port=int(data["port"]),
        )

    @classmethod
    def from_environment(cls) -> Stack | None:
        folder = os.environ.get(STACK_ENV)
        return cls.load(folder) if folder else None

    def save(self) -> None:
        data = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        del data["folder"]
        (self.folder / STACK_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    @property
    def comfy_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def comfy_url(self) -> str:
        return f"http://{self.comfy_host}"

    @property
    def volume(self) -> Path:
        """The stand-in for the worker's /runpod-volume."""
        return self.folder / "runpod-volume"

    @property
    def checkpoints(self) -> Path:
        return self.volume / "models" / "checkpoints"

    @property
    def loras(self) -> Path:
        return self.volume / "models" / "loras"

    @property
    def pid_file(self) -> Path:
        return self.folder / "comfyui.pid"

    @property
    def comfy_log(self) -> Path:
        return self.folder / "comfyui.log"

    @property
    def worker_log(self) -> Path:
        return self.folder / "worker.log"

    def comfy_command(self) -> list[str]:
        base = self.folder / "comfyui-base"
        return [
            "nice",
            "-n",
            "10",
            str(self.python),
            "-u",
            str(self.comfyui / "main.py"),
            *COMFY_FLAGS,
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--base-directory",
            str(base),
            "--extra-model-paths-config",
            str(self.folder / "extra_model_paths.yaml"),
            "--database-url",
            f"sqlite:///{base / 'comfyui.db'}",
        ]


def stack_argument(folder: str) -> Stack:
    """argparse `type=` for a stack folder: a refusal reads as the reason, not a traceback."""
    try:
        return Stack.load(folder)
    except StackError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def comfy_answers(stack: Stack) -> bool:
    try:
        return httpx.get(f"{stack.comfy_url}/system_stats", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class ComfyUI:
    """The stack's ComfyUI server, started the way worker-comfyui's start.sh does (PID file)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = COMFY_START_TIMEOUT) -> None:
        """Start ComfyUI and return once it answers; StackError if it exits or never answers."""
        if comfy_answers(self.stack):
            raise StackError(
                f"something already answers on {self.stack.comfy_host}: stop it, or prepare the "
                "stack with another --port"
            )
        (self.stack.folder / "comfyui-base" / "custom_nodes").mkdir(parents=True, exist_ok=True)
        with self.stack.comfy_log.open("ab") as log:
            self.process = subprocess.Popen(
                self.stack.comfy_command(),
                cwd=self.stack.comfyui,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.stack.pid_file.write_text(f"{self.process.pid}\n", encoding="utf-8")
        deadline = time.monotonic() + timeout
        while not comfy_answers(self.stack):
            if time.monotonic() > deadline:
                self.stop()
                raise StackError(f"ComfyUI did not answer within {timeout:g} s")
            # ComfyUI signals readiness only by answering: between two asks, wait on the
            # process itself, so an exit is seen the moment it happens.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(0.5)
            if self.process.poll() is not None:
                raise StackError(
                    f"ComfyUI exited with status {self.process.returncode}; "
                    f"see {self.stack.comfy_log}"
                )

    def kill(self) -> None:
        """SIGKILL, as when the kernel's OOM killer or a crash ends it mid-job."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class RealWorker:
    """One worker: runs the fake's jobs in order through the real handler, in the stack's Python."""

    def __init__(self, stack: Stack, fake: FakeRunPod) -> None:
        self.stack = stack
        self.fake = fake
        self.runpod_version = ""
        # Every run_job result by job id, as the handler returned it (for reports and tests).
        self.results: dict[str, dict[str, Any]] = {}
        self._queue: asyncio.Queue[FakeJob] = asyncio.Queue()
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # runpod-python logs every result in full at DEBUG, base64 images included.
        environ = {"RUNPOD_LOG_LEVEL": "INFO", **os.environ}
        with self.stack.worker_log.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                str(self.stack.python),
                str(BRIDGE),
                str(self.stack.worker),
                self.stack.comfy_host,
                str(self.stack.pid_file),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=environ,
                limit=64 * 1024 * 1024,
            )
        hello = await self._read()
        self.runpod_version = str(hello.get("runpod", ""))
        self.fake.job_runner = self._queue.put_nowait
        self._task = asyncio.create_task(self._work(), name="real-worker")

    async def close(self) -> None:
        self.fake.job_runner = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()

    async def _read(self) -> dict[str, Any]:
        assert self._process is not None and self._process.stdout is not None
        line = await self._process.stdout.readline()
        if not line:
            raise StackError(f"the worker process ended; see {self.stack.worker_log}")
        return json.loads(line)

    async def _work(self) -> None:
        assert self._process is not None and self._process.stdin is not None
        while True:
            job = await self._queue.get()
            now = time.monotonic()
            if job.is_terminal(now) or job.id not in self.fake.jobs:
                continue  # cancelled or purged while queued
            # Until the handler answers, only executionTimeout can end it (as on RunPod).
            job.started_at = now
            job.completed_at = now + job.execution_timeout
            job.final_status = "TIMED_OUT"
            self._process.stdin.write(json.dumps({"id": job.id, "input": job.input}).encode())
            self._process.stdin.write(b"\n")
            await self._process.stdin.drain()
            result = await self._read()
            self.results[job.id] = result
            if job.is_terminal(time.monotonic()):
                continue  # cancelled or timed out meanwhile: the worker's answer is dropped
            job.reported = {k: result[k] for k in REPORTED_KEYS if k in result}
            self.fake.finish(job.id, Outcome(status="FAILED" if "error" in result else "COMPLETED"))


@contextlib.asynccontextmanager
async def real_worker_runpod(stack: Stack, **fake_options: Any) -> AsyncIterator[RealWorker]:
    """A FakeRunPod (`.fake`) whose jobs the real handler runs; ComfyUI must already be up."""
    async with FakeRunPod(**fake_options) as fake:
        worker = RealWorker(stack, fake)
        await worker.start()
        try:
            yield worker
        finally:
            await worker.close()


@contextlib.asynccontextmanager
async def fake_cloud(stack: Stack | None, **fake_options: Any) -> AsyncIterator[FakeRunPod]:
    """The fake RunPod: drawing PNGs when `stack` is None, else with the real worker behind it."""
    if stack is None:
        async with FakeRunPod(**fake_options) as fake:
            yield fake
    else:
        async with real_worker_runpod(stack) as worker:
            yield worker.fake


@contextlib.asynccontextmanager
async def comfyui_running(stack: Stack | None) -> AsyncIterator[None]:
    """The stack's ComfyUI for the duration (nothing when `stack` is None)."""
    if stack is None:
        yield
        return
    server = ComfyUI(stack)
    await asyncio.to_thread(server.start)
    try:
        yield
    finally:
        await asyncio.to_thread(server.stop)


async def _serve(stack: Stack) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"starting ComfyUI on {stack.comfy_host} (log: {stack.comfy_log})", flush=True)
    async with comfyui_running(stack), real_worker_runpod(stack) as worker:
        fake = worker.fake
        print(
            f"worker-comfyui handler under runpod {worker.runpod_version} "
            f"(log: {stack.worker_log}); use these settings:\n"
            f"  RUNPOD_API_BASE={fake.api_base}\n"
            f"  RUNPOD_ENDPOINT_ID={fake.endpoint_id}\n"
            f"  RUNPOD_API_KEY={fake.api_key}\n"
            "Ctrl-C stops both.",
            flush=True,
        )
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "stack",
        nargs="?",
        type=stack_argument,
        default=os.environ.get(STACK_ENV),
        help=f"a folder made by tests.realstack.prepare (default: ${STACK_ENV})",
    )
    args = parser.parse_args(argv)
    if args.stack is None:
        parser.error(f"name the stack folder, or set {STACK_ENV}")
    try:
        asyncio.run(_serve(args.stack))
    except StackError as exc:
        print(f"real worker: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
