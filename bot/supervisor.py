"""One supervisor for every background loop: a crash is logged and the loop restarted with capped
backoff, and each loop's last beat is kept so `health` can tell a stuck loop from an idle one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Supervision:
    """The supervisor's intervals, in seconds (tests shrink them)."""

    idle_beat: float = 10.0
    first_backoff: float = 1.0
    max_backoff: float = 60.0
    growth: float = 2.0
    # Longer than any single await a healthy loop makes (a RunPod call with its retries).
    stuck_after: float = 300.0
    # A loop that crashes this often without finishing an iteration is as good as dead.
    crash_limit: int = 5

    def backoff(self, crashes: int) -> float:
        """How long to wait before restarting a loop after its `crashes`-th crash in a row."""
        return min(self.max_backoff, self.first_backoff * self.growth ** max(0, crashes - 1))


@dataclass(frozen=True)
class LoopStatus:
    """One loop as the supervisor sees it now."""

    name: str
    age: float  # seconds since its last beat
    dead: bool
    crashes: int  # in a row, without a finished iteration in between
    restarts: int
    last_error: str | None  # the exception's type only: messages can carry anything


class Loop:
    """A supervised loop's handle: the loop beats through it and waits through it without going quiet."""

    def __init__(
        self,
        name: str,
        supervision: Supervision,
        clock: Callable[[], float],
        forget: Callable[[Loop], None],
    ) -> None:
        self.name = name
        self._forget = forget
        self._supervision = supervision
        self._clock = clock
        self._last_beat = clock()
        self._iterations = 0
        self._crashes = 0
        self._restarts = 0
        self._last_error: str | None = None
        self._stopping = False
        self._never = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def beat(self) -> None:
        """Mark the start of an iteration; two since the (re)start prove the loop works again."""
        self._last_beat = self._clock()
        self._iterations += 1
        if self._iterations >= 2:
            self._crashes = 0

    async def idle(self, event: asyncio.Event, timeout: float | None = None) -> bool:
        """Wait for `event` (at most `timeout` seconds), beating meanwhile: idle is not stuck."""
        now = asyncio.get_running_loop().time
        deadline = None if timeout is None else now() + max(0.0, timeout)
        while not event.is_set():
            wait = self._supervision.idle_beat
            if deadline is not None:
                wait = min(wait, deadline - now())
                if wait <= 0:
                    return False
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands as
            # its wait ends, and a loop that ignores stop() hangs the shutdown.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await event.wait()
            self._last_beat = self._clock()
        return True

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds`, beating meanwhile."""
        await self.idle(self._never, seconds)

    async def stop(self) -> None:
        """Cancel the loop and wait for it; a stopped loop is not reported as dead."""
        self._stopping = True
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self._forget(self)

    def status(self) -> LoopStatus:
        ended = self.task is not None and self.task.done() and not self._stopping
        return LoopStatus(
            name=self.name,
            age=max(0.0, self._clock() - self._last_beat),
            dead=ended or self._crashes >= self._supervision.crash_limit,
            crashes=self._crashes,
            restarts=self._restarts,
            last_error=self._last_error,
        )

    def _started(self) -> None:
        self._last_beat = self._clock()
        self._iterations = 0

    def _crashed(self, error: str) -> float:
        self._crashes += 1
        self._restarts += 1
        self._last_error = error
        return self._supervision.backoff(self._crashes)


LoopBody = Callable[[Loop], Awaitable[None]]


class Supervisor:
    """Runs loops forever: restarts any that crash (or return), and reports how each one fares."""

    def __init__(
        self, supervision: Supervision | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.supervision = supervision or Supervision()
        self._clock = clock
        self._loops: dict[str, Loop] = {}

    def start(self, name: str, body: LoopBody) -> Loop:
        """Run `body(loop)` under supervision; it should loop forever, calling `loop.beat()`."""
        current = self._loops.get(name)
        if current is not None and not current._stopping:
            raise ValueError(f"a loop named {name!r} is already running")
        loop = Loop(name, self.supervision, self._clock, self._forget)
        self._loops[name] = loop
        loop.task = asyncio.create_task(self._supervise(loop, body), name=name)
        loop.task.add_done_callback(lambda _: self._ended(loop))
        return loop

    def statuses(self) -> list[LoopStatus]:
        """Every loop started and not stopped, in the order they were started."""
        return [loop.status() for loop in self._loops.values()]

    async def stop(self) -> None:
        """Stop every loop (owners normally stop their own)."""
        await asyncio.gather(*(loop.stop() for loop in list(self._loops.values())))

    async def _supervise(self, loop: Loop, body: LoopBody) -> None:
        while True:
            loop._started()
            try:
                await body(loop)
            except Exception as exc:
                delay = loop._crashed(type(exc).__name__)
                log.exception(
                    "loop %s crashed (%d in a row); restarting it in %.1f s",
                    loop.name,
                    loop.status().crashes,
                    delay,
                )
            else:
                delay = loop._crashed("returned")
                log.error("loop %s returned, which it never should; restarting it", loop.name)
            await asyncio.sleep(delay)

    def _forget(self, loop: Loop) -> None:
        if self._loops.get(loop.name) is loop:
            del self._loops[loop.name]

    def _ended(self, loop: Loop) -> None:
        if not loop._stopping:
            # Only a cancellation from outside or a BaseException ends a loop: it stays, dead.
            log.error("loop %s ended and will not run again", loop.name)
