"""Polling intervals: sparse while a job cannot be done, dense around its expected finish."""

from __future__ import annotations

from bot.estimates import DurationModel, Estimate
from bot.polling import Timing, execution_limit, queued_interval, running_interval, time_to_live
from bot.prompt import ContentPolicy, parse
from bot.workflows import load_library

TIMING = Timing()  # the production intervals


def _learned(*seconds: float) -> Estimate:
    request = parse("a pony", library=load_library(), policy=ContentPolicy(), seed=1)
    model = DurationModel()
    for value in seconds:
        model.observe(request, int(value * 1000))
    return model.expect(request)


def test_one_long_sleep_before_the_expected_finish_then_dense_polls() -> None:
    estimate = _learned(9.8, 10.2, 10.0, 9.9, 10.1)
    early = running_interval(TIMING, estimate, elapsed=1.0)
    near = running_interval(TIMING, estimate, elapsed=9.9)
    late = running_interval(TIMING, estimate, elapsed=30.0)
    assert early > 5 * near, "one long sleep instead of many polls while it cannot be done"
    assert near <= 0.5, "polls at least every half second around the expected finish"
    assert near < late <= TIMING.running_max_interval


def test_widely_varying_runs_get_a_wider_sparser_window() -> None:
    steady = _learned(10.0, 10.1, 9.9, 10.0)
    erratic = _learned(5.0, 15.0, 6.0, 14.0)
    assert running_interval(TIMING, erratic, elapsed=10.0) > running_interval(
        TIMING, steady, elapsed=10.0
    )


def test_with_no_history_polls_back_off_from_one_second() -> None:
    unknown = Estimate(seconds=15.0, spread=7.5, learned=False)
    intervals = [running_interval(TIMING, unknown, elapsed=t) for t in (0.5, 8.0, 40.0)]
    assert intervals == [1.0, 2.0, TIMING.running_max_interval]


def test_queue_polls_back_off_but_never_sleep_through_a_short_run() -> None:
    short = Estimate(seconds=4.0, spread=0.2, learned=True)
    long = Estimate(seconds=60.0, spread=2.0, learned=True)
    assert [queued_interval(TIMING, long, n) for n in range(3)] == [1.0, 1.5, 2.25]
    assert queued_interval(TIMING, long, 20) == TIMING.queue_max_interval
    assert queued_interval(TIMING, short, 20) == 2.0, "half the run time at most"


def test_runpod_limits_follow_the_expected_run_time() -> None:
    quick = Estimate(seconds=15.0, spread=1.0, learned=True)
    slow = Estimate(seconds=400.0, spread=10.0, learned=True)
    assert execution_limit(TIMING, quick) == 120.0
    assert execution_limit(TIMING, slow) == TIMING.execution_timeout
    assert time_to_live(TIMING, quick) > TIMING.queue_timeout + 120
