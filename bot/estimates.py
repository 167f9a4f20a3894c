"""Expected GPU run time of a request, learned from past `executionTime` of the same kind."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from bot.config import DEFAULT_ENDPOINT
from bot.prompt import GenerationRequest

# The seed doc's figure: a 1024x1024, 25-step image takes about 15 s on an RTX 4090.
SECONDS_PER_WORK_UNIT = 15.0
_ALPHA = 0.3


def work_units(request: GenerationRequest) -> float:
    """GPU work relative to one 1024x1024, 25-step image."""
    width, height = request.output_size
    steps = request.steps or 25
    return (width * height) / (1024 * 1024) * (steps / 25) * max(1, request.count)


@dataclass(frozen=True)
class Estimate:
    """Expected seconds of execution and how far actual runs strayed from it."""

    seconds: float
    spread: float
    learned: bool


@dataclass
class _Stats:
    mean: float
    deviation: float
    samples: int


class DurationModel:
    """Running means per (endpoint, template, size, steps, count), with a per-template fallback
    rate: endpoints run different GPUs, so each learns its own times."""

    def __init__(self) -> None:
        self._exact: dict[tuple, _Stats] = {}
        self._rate: dict[tuple[str, str], _Stats] = {}

    @staticmethod
    def _key(request: GenerationRequest, endpoint: str) -> tuple:
        return (endpoint, request.template, *request.output_size, request.steps, request.count)

    def observe(
        self, request: GenerationRequest, execution_ms: int, endpoint: str = DEFAULT_ENDPOINT
    ) -> None:
        seconds = max(0.0, execution_ms / 1000)
        _update(self._exact, self._key(request, endpoint), seconds)
        rate = seconds / max(work_units(request), 1e-6)
        _update(self._rate, (endpoint, request.template), rate)

    def expect(self, request: GenerationRequest, endpoint: str = DEFAULT_ENDPOINT) -> Estimate:
        exact = self._exact.get(self._key(request, endpoint))
        if exact is not None:
            return Estimate(exact.mean, exact.deviation, learned=True)
        units = max(work_units(request), 1e-6)
        rate = self._rate.get((endpoint, request.template))
        if rate is not None:
            return Estimate(rate.mean * units, rate.deviation * units, learned=True)
        seconds = SECONDS_PER_WORK_UNIT * units
        return Estimate(seconds, seconds / 2, learned=False)


def _update(table: dict, key: object, value: float) -> None:
    stats = table.get(key)
    if stats is None:
        table[key] = _Stats(value, value * 0.1, 1)
        return
    error = abs(value - stats.mean)
    stats.mean += _ALPHA * (value - stats.mean)
    stats.deviation += _ALPHA * (error - stats.deviation)
    stats.samples += 1


def expected_wait(slots: int, in_flight_left: Sequence[float], ahead: Sequence[float]) -> float:
    """Seconds until a job waiting behind `ahead` gets one of `slots` slots.

    `in_flight_left` is the expected time left of each job holding a slot; each job ahead takes
    the first slot to free up and holds it for its expected time.
    """
    free_at = sorted(max(0.0, left) for left in in_flight_left)[:slots]
    free_at += [0.0] * (max(1, slots) - len(free_at))
    heapq.heapify(free_at)
    for seconds in ahead:
        heapq.heappush(free_at, heapq.heappop(free_at) + max(0.0, seconds))
    return free_at[0]
