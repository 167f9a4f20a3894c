"""How often the client calls RunPod: retry backoff, the shared request budget, call counts."""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.ratelimit import Clock, TokenBucket

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter; `Retry-After` wins when given."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


class RequestBudget(TokenBucket):
    """A token bucket shared by every call to RunPod, so polling stays far below its limits."""

    def __init__(
        self, per_second: float, *, burst: int | None = None, clock: Clock = time.monotonic
    ) -> None:
        # A small bucket: in any one second at most per_second + burst calls go out.
        burst = burst if burst is not None else max(1, int(per_second) // 10)
        super().__init__(per_second=per_second, burst=burst, clock=clock)


@dataclass
class CallStats:
    """Counts of calls made, by operation: figures for benchmarks and `check`."""

    calls: dict[str, int] = field(default_factory=dict)

    def count(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1
