"""The progress message's lines: a bar from the learned duration, the queue, and what is left.

Everything here is an estimate and says so; the bar stops at 99 % until the images exist.
"""

from __future__ import annotations

from bot.estimates import Estimate
from bot.jobs import JobUpdate, UpdateKind
from cogs.common import render

BAR_CELLS = 10
# Until the worker has answered with the images, nothing is finished, whatever the clock says.
MOST_BEFORE_IMAGES = 99


def bar(percent: int) -> str:
    """`▰▰▰▱▱▱▱▱▱▱`: ten cells, one filled per full 10 %."""
    filled = max(0, min(BAR_CELLS, percent * BAR_CELLS // 100))
    return "▰" * filled + "▱" * (BAR_CELLS - filled)


def percent_done(elapsed: float, estimate: Estimate) -> int:
    """How far a running job is along its expected time, never 100 before its images exist."""
    expected = max(estimate.seconds, 1.0)
    return max(0, min(MOST_BEFORE_IMAGES, int(elapsed / expected * 100)))


def duration(seconds: float) -> str:
    """`8 s`, `1 min 20 s`, `12 min`: rounded the way a person says it."""
    seconds = max(1, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    if minutes >= 10 or rest == 0:
        return f"{minutes + (rest >= 30)} min"
    return f"{minutes} min {rest} s"


def running_line(elapsed: float, estimate: Estimate) -> str:
    """`🎨 Generating — bar 40 % · about 9 s left (estimate)`; past the estimate it says so."""
    percent = percent_done(elapsed, estimate)
    source = "estimated from recent runs" if estimate.learned else "a first guess"
    if elapsed < estimate.seconds:
        left = f"about {duration(estimate.seconds - elapsed)} left ({source})"
    else:
        left = f"taking longer than the {duration(estimate.seconds)} expected"
    return f"🎨 **Generating** — `{bar(percent)}` {percent} % · {left}"


def queued_line(position: int | None, starts_at: float | None) -> str:
    """Where a job waits here, and roughly when it should start."""
    place = f"position {position}" if position else "waiting for a free slot"
    start = f" · expected to start {render.relative(starts_at)} (estimate)" if starts_at else ""
    return f"⏳ **Queued** — {place}{start}"


def waiting_line(update: JobUpdate) -> str:
    """A job the GPU side has but has not started: why it may take a while."""
    if update.no_workers:
        return (
            "⚠️ **No GPU worker has started.** The endpoint may have no workers available; "
            "an operator should check its max workers on RunPod."
        )
    if update.cold:
        return "🧊 **Waiting for a GPU worker to start** (a cold start usually takes 10–60 s)"
    return "⏳ **Waiting for a GPU** — in RunPod's queue"


def progress_line(update: JobUpdate, *, estimate: Estimate | None = None) -> str:
    """One line saying where a job stands; a running job's bar needs its `estimate`."""
    if update.kind is UpdateKind.QUEUED:
        return queued_line(update.position, update.starts_at)
    if update.kind is UpdateKind.WAITING:
        return waiting_line(update)
    if update.kind is UpdateKind.RUNNING:
        if estimate is None:
            return f"🎨 **Generating** — {int(update.elapsed or 0)} s"
        return running_line(update.elapsed or 0.0, estimate)
    if update.kind is UpdateKind.DELIVERING:
        return "📤 **Uploading**"
    return ""


def progress_text(update: JobUpdate, *, estimate: Estimate | None = None) -> str:
    line = progress_line(update, estimate=estimate)
    return f"{render.header(update.job)}\n{line}"
