"""What members read: the text of progress, results and failures, as pure functions."""

from __future__ import annotations

import discord

from bot.jobs import Job, JobState, JobUpdate

CONTENT_LIMIT = 2000
PROMPT_PREVIEW = 300


def quote_prompt(text: str, limit: int = PROMPT_PREVIEW) -> str:
    """A member's prompt, safe to show: no markdown, no mentions, clipped."""
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text)) or "(no prompt)"


def credits(n: int) -> str:
    return f"{n} credit" if n == 1 else f"{n} credits"


def job_link(job: Job) -> str | None:
    """A link to the job's message, if it has one."""
    if job.channel_id is None or job.message_id is None:
        return None
    return f"https://discord.com/channels/{job.guild_id or '@me'}/{job.channel_id}/{job.message_id}"


def header(job: Job) -> str:
    return f"<@{job.user_id}> · job #{job.id}\n> {quote_prompt(job.request.prompt)}"


def progress_line(update: JobUpdate) -> str:
    """One line saying where a job stands."""
    if update.kind == "queued":
        place = f"position {update.position}" if update.position else "waiting for a free slot"
        return f"⏳ **Queued** — {place}"
    if update.kind == "waiting":
        if update.no_workers:
            return (
                "⚠️ **No GPU worker has started.** The endpoint may have no workers available; "
                "an operator should check its max workers on RunPod."
            )
        if update.cold:
            return "🧊 **Waiting for a GPU worker to start** (a cold start usually takes 10–60 s)"
        return "⏳ **Waiting for a GPU** — in RunPod's queue"
    if update.kind == "running":
        return f"🎨 **Generating** — {int(update.elapsed or 0)} s"
    if update.kind == "delivering":
        return "📤 **Uploading**"
    return ""


def cost_line(job: Job, remaining: int | None, this_period: str) -> str:
    """What the job costs and what is left, shown before it runs."""
    if not job.cost:
        return ""
    left = f" · {remaining} left {this_period}" if remaining is not None else ""
    return f"Costs {credits(job.cost)}{left}"


def accepted_text(job: Job, cost: str = "") -> str:
    return "\n".join(line for line in (header(job), "⏳ **Queued**", cost) if line)


def progress_text(update: JobUpdate) -> str:
    return _fit(f"{header(update.job)}\n{progress_line(update)}")


def result_text(job: Job, notes: list[str] | None = None) -> str:
    request = job.request
    width, height = request.output_size
    lines = [header(job), f"✅ seed `{request.seed}` · {width}x{height} · {request.template}"]
    lines += notes or []
    return _fit("\n".join(lines))


def ended_text(job: Job) -> str:
    """A job that ended without images: what happened, and that nothing was charged."""
    icon = {JobState.CANCELLED: "🚫", JobState.TIMED_OUT: "⌛", JobState.EXPIRED: "⌛"}.get(
        job.state, "❌"
    )
    title = {
        JobState.CANCELLED: "Cancelled",
        JobState.TIMED_OUT: "Timed out",
        JobState.EXPIRED: "Expired",
    }.get(job.state, "Failed")
    refund = f" {credits(job.cost).capitalize()} refunded." if job.cost else ""
    reason = job.failure or "Something went wrong."
    return _fit(f"{header(job)}\n{icon} **{title}** — {reason}{refund}")


def _fit(text: str) -> str:
    return text if len(text) <= CONTENT_LIMIT else text[: CONTENT_LIMIT - 1] + "…"
