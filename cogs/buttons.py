"""The result's buttons: their custom_id carries the job id, so they keep working after a restart."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

import discord

from bot import prompt
from bot.images import MAX_INPUT_BYTES, ImageError, VerifiedImage, prepare_input_image
from bot.jobs import Job
from bot.prompt import ImageInput, Options
from bot.services import image_input
from cogs import acknowledge, gallery, outgoing, render
from cogs.errors import MemberError, handle_interaction_error
from cogs.launch import launch, read_image, requester
from cogs.permissions import is_moderator

if TYPE_CHECKING:
    from bot.app import Stablehand

log = logging.getLogger(__name__)

VARY_WORKFLOW = "pony-v6-xl-img2img"
UPSCALE_WORKFLOW = "pony-v6-xl-upscale"
VARY_DENOISE = 0.55
EDIT_MODAL = re.compile(r"sh:edit:(?P<job>[0-9]+)")


async def _job(interaction: discord.Interaction[Stablehand], job_id: int) -> Job:
    job = await interaction.client.services.jobs.get(job_id)
    if job is None or job.guild_id != interaction.guild_id:
        raise MemberError("I no longer know this job.")
    return job


class ResultButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"sh:(?P<action>[a-z]+):(?P<job>[0-9]+)(?::(?P<index>[0-9]))?",
):
    """One class for every result button; `action` picks what a click does."""

    LABELS: ClassVar[dict[str, tuple[str, str, discord.ButtonStyle]]] = {
        "reroll": ("Reroll", "🎲", discord.ButtonStyle.secondary),
        "edit": ("Edit", "✏️", discord.ButtonStyle.secondary),
        "details": ("Details", "🔎", discord.ButtonStyle.secondary),
        "delete": ("Delete", "🗑️", discord.ButtonStyle.danger),
        "vary": ("Vary", "🔀", discord.ButtonStyle.primary),
        "upscale": ("Upscale", "⬆️", discord.ButtonStyle.primary),
    }

    def __init__(
        self, action: str, job_id: int, index: int | None = None, *, count: int = 1
    ) -> None:
        label, emoji, style = self.LABELS[action]
        if index is not None and count > 1:
            label = f"{label[0]}{index + 1}"
        custom_id = f"sh:{action}:{job_id}" + (f":{index}" if index is not None else "")
        row = {"vary": 1, "upscale": 2}.get(action, 0)
        super().__init__(
            discord.ui.Button(label=label, emoji=emoji, style=style, custom_id=custom_id, row=row)
        )
        self.action, self.job_id, self.index = action, job_id, index or 0

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> ResultButton:
        if match["action"] not in cls.LABELS:
            raise MemberError("That button is from another version of this bot.")
        index = int(match["index"]) if match["index"] is not None else None
        return cls(match["action"], int(match["job"]), index)

    async def callback(self, interaction: discord.Interaction[Stablehand]) -> None:
        try:
            await getattr(self, f"_{self.action}")(interaction)
        except Exception as error:
            await handle_interaction_error(interaction, error)

    async def _reroll(self, interaction: discord.Interaction[Stablehand]) -> None:
        services = interaction.client.services
        job, policy = await acknowledge.in_time(
            interaction,
            asyncio.gather(
                _job(interaction, self.job_id), services.policy_for(interaction.guild_id)
            ),
        )
        who = requester(interaction)
        request = prompt.revise(
            job.request,
            library=services.templates,
            policy=policy,
            channel_nsfw=who.pop("channel_nsfw"),
            seed=prompt.random_seed(),
        )
        await launch(interaction, services.job_for(request, **who))

    async def _vary(self, interaction: discord.Interaction[Stablehand]) -> None:
        await self._from_image(interaction, VARY_WORKFLOW, denoise=VARY_DENOISE)

    async def _upscale(self, interaction: discord.Interaction[Stablehand]) -> None:
        await self._from_image(interaction, UPSCALE_WORKFLOW, denoise=None)

    async def _from_image(
        self, interaction: discord.Interaction[Stablehand], workflow: str, *, denoise: float | None
    ) -> None:
        """Vary and Upscale start from the image as posted, read back from this very message."""
        job = await acknowledge.in_time(interaction, _job(interaction, self.job_id))
        attachments = [
            a for a in (interaction.message.attachments if interaction.message else []) if a.width
        ]
        if self.index >= len(attachments):
            raise MemberError("That image is no longer attached to this message.")
        await acknowledge.defer(interaction)
        services = interaction.client.services
        policy = await services.policy_for(interaction.guild_id)
        image = await read_image(attachments[self.index], max_pixels=policy.max_pixels)
        who = requester(interaction)
        request = prompt.revise(
            job.request,
            image=image_input(image),
            workflow=workflow,
            library=services.templates,
            policy=policy,
            channel_nsfw=who.pop("channel_nsfw"),
            seed=prompt.random_seed(),
            denoise=denoise,
        )
        await launch(interaction, services.job_for(request, image=image, **who))

    async def _edit(self, interaction: discord.Interaction[Stablehand]) -> None:
        job = await _job(interaction, self.job_id)
        modal = EditModal(job)
        # Not stored with discord.py: every submit, before or after a restart, goes to on_edit_submit.
        modal.stop()
        await interaction.response.send_modal(modal)

    async def _delete(self, interaction: discord.Interaction[Stablehand]) -> None:
        job = await acknowledge.in_time(interaction, _job(interaction, self.job_id))
        if interaction.user.id != job.user_id and not await is_moderator(interaction):
            raise MemberError(
                "Only the member who made these images, or a moderator, can delete them."
            )
        if interaction.message is not None:
            await interaction.message.delete()
        await outgoing.answer(interaction, "Deleted.")

    async def _details(self, interaction: discord.Interaction[Stablehand]) -> None:
        job = await acknowledge.in_time(interaction, _job(interaction, self.job_id))
        workflow = discord.File(
            io.BytesIO(job.workflow_json.encode()), filename=f"job{job.id}-workflow.json"
        )
        await outgoing.answer(interaction, render.details_text(job), file=workflow)


KEEP_IMAGE = "keep"


class EditModal(discord.ui.Modal):
    """The whole request as text, the negative, and the source image; submitting starts a new job."""

    def __init__(self, job: Job) -> None:
        super().__init__(title=f"Edit job #{job.id}", custom_id=f"sh:edit:{job.id}", timeout=None)
        self.add_item(
            discord.ui.TextInput(
                label="Prompt (flags work too)",
                custom_id="prompt",
                style=discord.TextStyle.paragraph,
                default=prompt.as_text(job.request)[:4000],
                max_length=4000,
            )
        )
        self.add_item(
            discord.ui.TextInput(
                label="Negative",
                custom_id="negative",
                style=discord.TextStyle.paragraph,
                default=job.request.negative[:4000] or None,
                required=False,
                max_length=4000,
            )
        )
        if job.request.image is not None:
            self.add_item(
                discord.ui.TextInput(
                    label="Source image (clear this box to drop it)",
                    custom_id="image",
                    default=KEEP_IMAGE,
                    required=False,
                    max_length=20,
                )
            )


def submitted_values(data: dict[str, Any]) -> dict[str, str]:
    """Text input values from a modal submit, as plain rows or wrapped in labels."""
    values: dict[str, str] = {}

    def walk(components: list[dict[str, Any]]) -> None:
        for component in components:
            if "value" in component and "custom_id" in component:
                values[component["custom_id"]] = component["value"]
            walk(component.get("components", []))
            if "component" in component:
                walk([component["component"]])

    walk(data.get("components", []))
    return values


async def on_edit_submit(interaction: discord.Interaction[Stablehand], job_id: int) -> None:
    """A submitted Edit modal: a new job from the edited text, charged to whoever submitted it."""
    try:
        services = interaction.client.services
        job, policy = await acknowledge.in_time(
            interaction,
            asyncio.gather(_job(interaction, job_id), services.policy_for(interaction.guild_id)),
        )
        values = submitted_values(interaction.data or {})
        image = None
        if job.request.image is not None and values.get("image", "").strip():
            # Downloading may take longer than Discord's three seconds: acknowledge first.
            await acknowledge.defer(interaction)
            image = await _source_image(interaction, job.request.image, policy.max_pixels)
        new_job = services.prepare(
            values.get("prompt", ""),
            options=Options(negative=values.get("negative") or None),
            policy=policy,
            image=image,
            **requester(interaction),
        )
        await launch(interaction, new_job)
    except Exception as error:
        await handle_interaction_error(interaction, error)


async def _source_image(
    interaction: discord.Interaction[Stablehand], source: ImageInput, max_pixels: int
) -> VerifiedImage:
    """The job's source image downloaded again from where the member gave it."""
    gone = MemberError(
        "The source image is no longer available from Discord. Clear the Source image box to "
        "edit without it, or use `/imagine` and attach it again."
    )
    if source.source_url is None:
        raise gone
    try:
        data = await interaction.client.http.get_from_cdn(source.source_url)
        image = prepare_input_image(data, max_pixels=max_pixels, max_bytes=MAX_INPUT_BYTES)
    except (discord.HTTPException, ImageError):
        raise gone from None
    return replace(image, source_url=source.source_url)


def result_view(
    job: Job, image_count: int, *, can_vary: bool, can_reroll: bool = True
) -> discord.ui.View:
    """Reroll, Edit, Details, Delete; Vary / Upscale per image where the workflow allows; Share."""
    view = discord.ui.View(timeout=None)
    for action in ("reroll", "edit", "details", "delete"):
        if action != "reroll" or can_reroll:
            view.add_item(ResultButton(action, job.id))
    if can_vary:
        for index in range(min(image_count, 5)):
            view.add_item(ResultButton("vary", job.id, index, count=image_count))
            view.add_item(ResultButton("upscale", job.id, index, count=image_count))
    if job.guild_id is not None:
        for button in gallery.share_buttons(job.id, image_count):
            view.add_item(button)
    return view
