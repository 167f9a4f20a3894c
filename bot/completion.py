"""Following jobs by long-poll: a bounded number of held status requests, each re-armed.

The watcher knows nothing of RunPod or of the job manager: it is handed a long-poll call and
callbacks, so it serves any backend that can hold a status request open until a job ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

S = TypeVar("S")

LongPoll = Callable[[str, float], Awaitable[S]]
OnStatus = Callable[[str, S], Awaitable[None]]
OnFault = Callable[[str, Exception], Awaitable[None]]
OnRelease = Callable[[str], Awaitable[None]]


class CompletionWatcher(Generic[S]):
    """At most `slots` jobs followed by long-poll at once; the rest are the poller's.

    Each answer goes to `on_status`; a job whose answer is not an ending is long-polled again.
    A failed long-poll goes to `on_fault` (the job is then the poller's, as after a failed
    poll), and so does every job once `available()` says the backend no longer long-polls
    (`on_release`). `stop` cancels the held requests; a callback under way finishes first.
    """

    def __init__(
        self,
        long_poll: LongPoll[S],
        *,
        ended: Callable[[S], bool],
        on_status: OnStatus[S],
        on_fault: OnFault,
        on_release: OnRelease,
        slots: int,
        wait: float = 60.0,
        available: Callable[[], bool] = lambda: True,
    ) -> None:
        self._long_poll = long_poll
        self._ended = ended
        self._on_status = on_status
        self._on_fault = on_fault
        self._on_release = on_release
        self._available = available
        self.slots = slots
        self.wait = wait
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._holding: set[str] = set()
        self._stopping = False

    def __len__(self) -> int:
        return len(self._tasks)

    def watching(self, job_id: str) -> bool:
        return job_id in self._tasks

    def watch(self, job_id: str) -> bool:
        """Start long-polling `job_id`; False if every slot is taken (or long-polls are off)."""
        if job_id in self._tasks:
            return True
        if self._stopping or len(self._tasks) >= self.slots or not self._available():
            return False
        task = asyncio.create_task(self._follow(job_id), name=f"long-poll-{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda done: self._forget_task(job_id, done))
        return True

    def forget(self, job_id: str) -> None:
        """Stop following `job_id` (it ended another way); a callback under way finishes first."""
        task = self._tasks.pop(job_id, None)
        if task is not None and job_id in self._holding:
            task.cancel()

    async def stop(self) -> None:
        """Cancel every held long-poll, let callbacks under way finish, and wait for all."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for job_id in list(self._holding):
            task = self._tasks.get(job_id)
            if task is not None:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _forget_task(self, job_id: str, task: asyncio.Task[None]) -> None:
        self._free_slot(job_id, task)
        if not task.cancelled() and task.exception() is not None:
            log.error("long-poll of job %s ended by surprise", job_id, exc_info=task.exception())

    def _free_slot(self, job_id: str, task: asyncio.Task[None] | None) -> None:
        if self._tasks.get(job_id) is task:
            del self._tasks[job_id]

    async def _follow(self, job_id: str) -> None:
        # Before a callback that ends the following, the slot is freed: the callback may hand
        # the job to the poller, or watch it again, and sees it as no longer watched.
        me = asyncio.current_task()
        while not self._stopping and self._tasks.get(job_id) is me:
            self._holding.add(job_id)
            try:
                status = await self._long_poll(job_id, self.wait)
            except Exception as exc:
                self._holding.discard(job_id)
                self._free_slot(job_id, me)
                await self._callback(job_id, self._on_fault(job_id, exc))
                return
            finally:
                self._holding.discard(job_id)
            ended = self._ended(status)
            released = not ended and not self._available()
            if ended or released:
                self._free_slot(job_id, me)
            if not await self._callback(job_id, self._on_status(job_id, status)):
                return
            if released:
                await self._callback(job_id, self._on_release(job_id))
            if ended or released:
                return

    async def _callback(self, job_id: str, call: Awaitable[None]) -> bool:
        """Run one callback; if it raises, hand the job back to the poller (which retries)."""
        try:
            await call
        except Exception:
            log.exception(
                "job %s: handling a long-poll answer failed; it is polled instead", job_id
            )
            self._free_slot(job_id, asyncio.current_task())
            try:
                await self._on_release(job_id)
            except Exception:
                log.exception("job %s: could not hand it back to the poller", job_id)
            return False
        return True
