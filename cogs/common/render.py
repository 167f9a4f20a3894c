"""What members read: progress lines, the result embed, failures and details, as pure functions.

Also the shared Discord wording of the core's values: credits, timestamps, quota refusals.
"""

from __future__ import annotations

import discord

from bot.jobs import Job, JobState
from bot.quotas import Blocked, BudgetReached, BudgetScope, QuotaError, QuotaExceeded
from bot.samplers import display_name
from bot.workflows import TemplateLibrary

NO_MENTIONS = discord.AllowedMentions.none()
PROMPT_PREVIEW = 300
RESULT_COLOUR = discord.Colour(0x5865F2)


def credit_text(n: int) -> str:
    """`1 credit`, `2 credits`: how every message counts them."""
    return f"{n} credit" if n == 1 else f"{n} credits"


def bonus_text(n: int) -> str:
    """`1 bonus credit`, `5 bonus credits`."""
    return f"{n} bonus credit{'' if n == 1 else 's'}"


def dollars(amount: float) -> str:
    """Cents for real money; down to a hundredth of a cent for what one image costs, so a small
    figure never shows as `$0.00`."""
    if amount == 0 or abs(amount) >= 0.01:
        return f"${amount:,.2f}"
    return f"${amount:.4f}".rstrip("0") if abs(amount) >= 0.0001 else "less than $0.0001"


def relative(at: float) -> str:
    """A Discord timestamp that each member sees in their own time zone ("in 3 hours")."""
    return f"<t:{int(at)}:R>"


def refusal_text(error: QuotaError) -> str:
    """Why the ledger refused a job, and when that changes."""
    if isinstance(error, Blocked):
        block = error.block
        until = f" The block ends {relative(block.expires_at)}." if block.expires_at else ""
        return f"A moderator has blocked you from making images here: {block.reason}.{until}"
    if isinstance(error, QuotaExceeded):
        return (
            f"This needs {credit_text(error.cost)} but you have {error.remaining} left. "
            f"Your credits come back {relative(error.resets_at)}."
        )
    if isinstance(error, BudgetReached):
        if error.scope is BudgetScope.SERVER:
            return f"This server's GPU budget for today ({dollars(error.budget_usd)}) is used up. It reopens {relative(error.reopens_at)}."
        return (
            "The bot's GPU budget for today is used up, so no new images can start. "
            f"It reopens {relative(error.reopens_at)}."
        )
    return str(error)


def quote_prompt(text: str, limit: int = PROMPT_PREVIEW) -> str:
    """A member's prompt, safe to show: no markdown, no mentions, clipped."""
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text)) or "(no prompt)"


STATE_ICONS = {
    JobState.DONE: "✅",
    JobState.FAILED: "❌",
    JobState.CANCELLED: "🚫",
    JobState.TIMED_OUT: "⌛",
    JobState.EXPIRED: "⌛",
    JobState.RUNNING: "🎨",
    JobState.DELIVERING: "📤",
}
ENDED_TITLES = {
    JobState.CANCELLED: "Cancelled",
    JobState.TIMED_OUT: "Timed out",
    JobState.EXPIRED: "Expired",
}


# What each state is called wherever a member reads it: the same words as the progress message.
STATE_WORDS = {
    JobState.ACCEPTED: "Starting",
    JobState.QUEUED: "Queued",
    JobState.SUBMITTING: "Sending to the GPU",
    JobState.SUBMITTED: "Waiting for a GPU",
    JobState.RUNNING: "Generating",
    JobState.DELIVERING: "Uploading",
    JobState.DONE: "Done",
    JobState.FAILED: "Failed",
    JobState.CANCELLED: "Cancelled",
    JobState.TIMED_OUT: "Timed out",
    JobState.EXPIRED: "Expired",
}


def state_words(state: JobState, position: int | None = None) -> str:
    """`Waiting for a GPU`, `Queued, position 2`: a job's state as the member reads it."""
    words = STATE_WORDS[state]
    return f"{words}, position {position}" if position and state is JobState.QUEUED else words


def state_icon(state: JobState) -> str:
    return STATE_ICONS.get(state, "⏳")


def message_link(guild_id: int | None, channel_id: int, message_id: int) -> str:
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def job_link(job: Job) -> str | None:
    """A link to the job's message, if it has one."""
    if job.channel_id is None or job.message_id is None:
        return None
    return message_link(job.guild_id, job.channel_id, job.message_id)


def header(job: Job) -> str:
    return f"<@{job.user_id}> · job #{job.id}\n> {quote_prompt(job.request.prompt)}"


def cost_line(job: Job, remaining: int | None, this_period: str) -> str:
    """What the job costs and what is left, shown before it runs."""
    if not job.cost:
        return ""
    left = f" · {remaining} left {this_period}" if remaining is not None else ""
    return f"Costs {credit_text(job.cost)}{left}"


def accepted_text(job: Job, cost: str = "") -> str:
    notes = [f"ℹ️ {note}" for note in job.request.notes]
    return "\n".join(line for line in (header(job), "⏳ **Queued**", cost, *notes) if line)


def result_content(job: Job, notes: tuple[str, ...] = ()) -> str:
    notes = (*job.request.notes, *notes)
    lines = [f"<@{job.user_id}> · job #{job.id}", *(f"ℹ️ {note}" for note in notes)]
    return "\n".join(lines)


def ready_text(job: Job, link: str | None) -> str:
    """The short reply that tells a member their images have landed."""
    where = f": {link}" if link else "."
    return f"<@{job.user_id}> your images for job #{job.id} are ready{where}"


def sent_by_dm_text(job: Job) -> str:
    """What a job's channel message says once its images went to the member's DMs."""
    return f"{header(job)}\n📬 **Sent by DM**, as <@{job.user_id}> prefers."


def result_embed(job: Job, *, remaining: int | None, this_period: str) -> discord.Embed:
    """Every parameter that made these images, and what they cost."""
    request = job.request
    width, height = request.output_size
    embed = discord.Embed(description=quote_prompt(request.prompt, 1000), colour=RESULT_COLOUR)
    if request.negative:
        embed.add_field(name="Negative", value=quote_prompt(request.negative, 500), inline=False)
    embed.add_field(name="Seed", value=f"`{request.seed}`")
    embed.add_field(
        name="Size", value=f"{width}×{height}" + (f" ×{request.count}" if request.count > 1 else "")
    )
    if request.steps is not None:
        embed.add_field(name="Steps", value=str(request.steps))
    if request.cfg is not None:
        embed.add_field(name="CFG", value=f"{request.cfg:g}")
    if request.sampler and request.scheduler:
        embed.add_field(name="Sampler", value=display_name(request.sampler, request.scheduler))
    embed.add_field(name="Workflow", value=request.template)
    if request.loras:
        embed.add_field(
            name="LoRAs",
            value=", ".join(f"{lora.name} ({lora.strength:g})" for lora in request.loras),
        )
    if job.execution_ms is not None:
        embed.add_field(name="GPU time", value=f"{job.execution_ms / 1000:.1f} s")
    spent = credit_text(job.cost) + (
        f" · {remaining} left {this_period}" if remaining is not None else ""
    )
    embed.add_field(name="Credits", value=spent)
    return embed


def ended_text(job: Job) -> str:
    """A job that ended without images: what happened, and that nothing was charged."""
    icon = STATE_ICONS.get(job.state, "❌")
    title = ENDED_TITLES.get(job.state, "Failed")
    refund = f" {credit_text(job.cost).capitalize()} refunded." if job.cost else ""
    reason = job.failure or "Something went wrong."
    return f"{header(job)}\n{icon} **{title}** — {reason}{refund}"


def model_of(job: Job, library: TemplateLibrary) -> str:
    """The model a job runs on, as its template names it (the template's name once it is gone)."""
    template = library.get(job.template)
    return template.model.label if template is not None else job.template


def details_text(job: Job, model: str) -> str:
    """Every parameter of a job, for the Details button (the workflow goes along as a file)."""
    request = job.request
    rows = [
        ("Model", model),
        ("Prompt", quote_prompt(request.prompt, 800)),
        ("Negative", quote_prompt(request.negative, 400) if request.negative else "—"),
        ("Sent to the model", quote_prompt(request.positive_text, 400)),
        ("Negative sent", quote_prompt(request.negative_text, 300)),
        ("Workflow", request.template),
        ("Style", request.style or "—"),
        ("Seed", f"`{request.seed}`"),
        ("Size", "{}×{}".format(*request.output_size)),
        ("Images", str(request.count)),
        ("Steps", str(request.steps) if request.steps is not None else "—"),
        ("CFG", f"{request.cfg:g}" if request.cfg is not None else "—"),
        ("Sampler", _sampler(request.sampler, request.scheduler)),
        ("Checkpoint", request.checkpoint or "—"),
        ("LoRAs", ", ".join(f"{lora.name} ({lora.strength:g})" for lora in request.loras) or "—"),
        ("GPU time", f"{job.execution_ms / 1000:.1f} s" if job.execution_ms is not None else "—"),
        ("Waited for a GPU", f"{job.delay_ms / 1000:.1f} s" if job.delay_ms is not None else "—"),
        ("Credits", str(job.cost)),
        ("State", state_words(job.state)),
    ]
    if request.from_preferences:
        rows.append(("From preferences", ", ".join(request.from_preferences)))
    if request.denoise is not None:
        rows.insert(9, ("Denoise", f"{request.denoise:g}"))
    if request.hires_scale:
        rows.insert(9, ("Hires scale", f"{request.hires_scale:g}"))
    return f"**Job #{job.id}**\n" + "\n".join(f"**{name}:** {value}" for name, value in rows)


def _sampler(sampler: str | None, scheduler: str | None) -> str:
    """The A1111 name members know, with ComfyUI's names for pasting into a workflow."""
    if not sampler or not scheduler:
        return "—"
    return f"{display_name(sampler, scheduler)} (`{sampler}` / `{scheduler}`)"


def choice_label(text: str, limit: int = 100) -> str:
    """An autocomplete label within Discord's 100 characters, cut with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
