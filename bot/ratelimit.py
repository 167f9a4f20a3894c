"""A token bucket: calls wait their turn so a rate and a burst are never exceeded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
# Float arithmetic on clock readings can leave a refill a hair short of a whole token;
# without this slack a waiter could sleep ever-smaller amounts and never be served.
_SLACK = 1e-9


class Turn:
    """A token taken ahead for one coming call; given back if that call never happens."""

    def __init__(self, bucket: TokenBucket | None = None) -> None:
        self._bucket = bucket
        self._open = bucket is not None

    def use(self) -> bool:
        """Spend the turn on the call made now; False if it was spent or given back already."""
        used, self._open = self._open, False
        return used

    def give_back(self) -> None:
        """Return the token unless a call spent it; safe to call more than once."""
        if self._open and self._bucket is not None:
            self._bucket.give_back()
        self._open = False


class TokenBucket:
    """Holds up to `burst` tokens, refilled at `per_second`; each call to `acquire` takes one."""

    def __init__(
        self,
        *,
        per_second: float,
        burst: int,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError("a token bucket needs per_second > 0 and burst >= 1")
        self.per_second = per_second
        self.burst = burst
        self._whole = (per_second, burst)
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated = clock()
        # Waiters queue on the lock, so they are served in the order they came.
        self._lock = asyncio.Lock()

    def share(self, parts: int) -> None:
        """Keep one of `parts` equal shares of the rate and burst given (several processes split
        one budget); tokens already held stay, capped at the new burst."""
        per_second, burst = self._whole
        self.per_second = per_second / max(1, parts)
        self.burst = max(1, burst // max(1, parts))
        self._tokens = min(self._tokens, float(self.burst))

    async def take_turn(self) -> Turn:
        """Wait for a token and hold it for a coming call (see `Turn`)."""
        await self.acquire()
        return Turn(self)

    def give_back(self) -> None:
        """Return a token taken by `acquire` and not used after all."""
        now = self._clock()
        self._tokens, self._updated = min(float(self.burst), self._refilled(now) + 1), now

    def ready(self) -> bool:
        """Whether `acquire` would return at once."""
        return self._refilled(self._clock()) >= 1 - _SLACK

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                tokens = self._refilled(now)
                self._tokens, self._updated = tokens, now
                if tokens >= 1 - _SLACK:
                    self._tokens -= 1
                    return
                await self._sleep((1 - tokens) / self.per_second)

    def _refilled(self, now: float) -> float:
        return min(float(self.burst), self._tokens + (now - self._updated) * self.per_second)
