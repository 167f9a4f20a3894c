"""When to poll RunPod and how long to wait: every interval and deadline, as pure functions."""

from __future__ import annotations

from dataclasses import dataclass

from bot.estimates import Estimate


@dataclass(frozen=True)
class Timing:
    """Every interval, deadline and retry delay of the manager, in seconds (tests shrink them)."""

    first_poll: float = 1.0
    queue_interval: float = 1.0
    queue_max_interval: float = 10.0
    growth: float = 1.5
    dense_interval: float = 0.3
    running_interval: float = 1.0
    running_max_interval: float = 5.0
    health_interval: float = 15.0
    retry_delay: float = 2.0
    auth_backoff: float = 60.0
    submit_retry_delay: float = 5.0
    max_submit_attempts: int = 5
    delivery_retry_delay: float = 5.0
    delivery_max_backoff: float = 300.0
    max_delivery_attempts: int = 6
    position_interval: float = 1.0
    queue_timeout: float = 1800.0
    execution_timeout: float = 600.0
    execution_grace: float = 30.0
    no_worker_notice: float = 120.0
    shutdown_grace: float = 5.0
    reconcile_interval: float = 60.0
    # How long a job stays leased to a process that stops renewing (PostgreSQL, several processes).
    lease_ttl: float = 60.0
    # How often a process looks for jobs other processes queued in the shared table (PostgreSQL).
    claim_interval: float = 1.0
    # How often a process recounts the processes sharing the RunPod request budget (PostgreSQL):
    # until it does, a process that just joined and the others together overshoot the budget.
    budget_interval: float = 2.0
    # How often a process looks for leases run out (their process died), to take the jobs over.
    takeover_interval: float = 5.0
    # How long a job may sit accepted without its progress message before it runs without one.
    accept_grace: float = 300.0
    # Unexpected errors in a row while following one job before it is failed instead of re-polled.
    max_poll_crashes: int = 3
    # Longest a long-poll holds; with a webhook, the one poll comes this long after the finish.
    long_poll_wait: float = 60.0
    webhook_grace: float = 2.0


def running_interval(timing: Timing, estimate: Estimate, elapsed: float) -> float:
    """Sparse until near the expected finish, dense around it, backing off after.

    The wider past run times spread, the wider the window and the sparser its polls: dense
    polling only pays when the finish can be predicted.
    """
    if not estimate.learned:
        return min(timing.running_max_interval, max(timing.running_interval, elapsed / 4))
    spread = max(estimate.spread, timing.dense_interval / 2)
    dense = min(max(timing.dense_interval, spread / 2), 2.0)
    window_start = estimate.seconds - 2 * spread
    if elapsed < window_start:
        return max(dense, window_start - elapsed)
    overrun = elapsed - (estimate.seconds + 2 * spread)
    if overrun <= 0:
        return dense
    return min(timing.running_max_interval, max(dense, overrun / 2))


def queued_interval(timing: Timing, estimate: Estimate, polls_so_far: int) -> float:
    """Back off while a job waits in RunPod's queue, but never sleep through a whole run."""
    ceiling = min(timing.queue_max_interval, max(timing.queue_interval, estimate.seconds / 2))
    return min(ceiling, timing.queue_interval * timing.growth**polls_so_far)


def execution_limit(timing: Timing, estimate: Estimate) -> float:
    """RunPod's executionTimeout for one job: generous for its size, capped by settings."""
    return min(timing.execution_timeout, max(120.0, 4 * estimate.seconds + 60))


def time_to_live(timing: Timing, estimate: Estimate) -> float:
    """RunPod's ttl: once our own deadlines have passed, RunPod may drop the job too."""
    return timing.queue_timeout + execution_limit(timing, estimate) + 300


def trusted_age(stored: float, now: float, *, plausible: float) -> float | None:
    """Seconds since a stored wall-clock time, or None if the clock must have been wrong.

    A time in the future, or older than anything still alive could be, says more about the clock
    when it was written than about the job: such a job's deadline counts from now instead.
    """
    age = now - stored
    return age if 0.0 <= age <= plausible else None
