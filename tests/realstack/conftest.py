"""The real-stack suite: real ComfyUI 0.8.0 and worker-comfyui's handler behind the fake cloud.

Skipped unless STABLEHAND_REALSTACK names a folder made by `python -m tests.realstack.prepare`.
Here `fake_runpod` is the emulator, so the shared fixtures (`open_services`, `bot`) use it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.fakes.fake_runpod import FakeRunPod
from tests.fakes.real_worker import (
    STACK_ENV,
    ComfyUI,
    RealWorker,
    Stack,
    StackError,
    real_worker_runpod,
)

HERE = Path(__file__).resolve().parent


def _stack_or_reason() -> Stack | str:
    try:
        stack = Stack.from_environment()
    except StackError as exc:
        return f"real-stack suite: {exc}"
    if stack is None:
        return (
            f"real-stack suite: set {STACK_ENV} to a folder made by "
            "`python -m tests.realstack.prepare` (README, For contributors)"
        )
    return stack


STACK = _stack_or_reason()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if isinstance(STACK, Stack):
        return
    skip = pytest.mark.skip(reason=STACK)
    for item in items:
        if HERE in Path(item.fspath).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def stack() -> Stack:
    assert isinstance(STACK, Stack)
    return STACK


@pytest.fixture(scope="session")
def comfy_server(stack: Stack) -> Iterator[ComfyUI]:
    server = ComfyUI(stack)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def comfy(comfy_server: ComfyUI) -> ComfyUI:
    """The session's ComfyUI, started again if a test killed it."""
    if not comfy_server.running:
        comfy_server.start()
    return comfy_server


@pytest_asyncio.fixture
async def real_worker(stack: Stack, comfy: ComfyUI) -> AsyncIterator[RealWorker]:
    async with real_worker_runpod(stack) as worker:
        yield worker


@pytest_asyncio.fixture
async def fake_runpod(real_worker: RealWorker) -> FakeRunPod:
    return real_worker.fake
