"""The result's buttons: their custom_id carries the job id, so they keep working after a restart."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import discord

from bot import prompt
from bot.images import MAX_INPUT_BYTES, ImageError, VerifiedImage, input_size, prepare_input_image
from bot.jobs import Job
from bot.prompt import ContentPolicy, ImageInput, Options, PromptError
from bot.services import Services, image_input
from cogs import gallery
from cogs.common import acknowledge, cancelling, faces, outgoing, render
from cogs.common.errors import MemberError, handle_interaction_error
from cogs.common.launch import launch, read_image, requester
from cogs.common.permissions import is_moderator

if TYPE_CHECKING:
    from bot.app import Stablehand

log = logging.getLogger(__name__)

VARY_WORKFLOW = "pony-v6-xl-img2img"
UPSCALE_WORKFLOW = "pony-v6-xl-upscale"
# How much of the image each Vary redraws: Midjourney's Subtle and Strong. `vary` is the single
# Vary of earlier versions, still answered on the messages that carry it.
VARY_DENOISE = {"subtle": 0.35, "strong": 0.7, "vary": 0.55}
EDIT_MODAL = re.compile(r"sh:edit:(?P<job>[0-9]+)")


async def _job(interaction: discord.Interaction[Stablehand], job_id: int) -> Job:
    job = await interaction.client.services.jobs.get(job_id)
    if job is None or job.guild_id != interaction.guild_id:
        raise MemberError("I no longer know this job.")
    return job


class ResultButton(discord.ui.DynamicItem[discord.ui.Button], template=faces.CUSTOM_ID):
    """One class for every button of a job's message; `action` picks what a click does."""

    def __init__(
        self,
        action: str,
        job_id: int,
        index: int | None = None,
        *,
        count: int = 1,
        cost: int | None = None,
    ) -> None:
        super().__init__(faces.button(action, job_id, index, count=count, cost=cost))
        self.action, self.job_id, self.index = action, job_id, index or 0

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> ResultButton:
        if match["action"] not in faces.FACES:
            raise MemberError("That button is from another version of this bot.")
        index = int(match["index"]) if match["index"] is not None else None
        return cls(match["action"], int(match["job"]), index)

    async def callback(self, interaction: discord.Interaction[Stablehand]) -> None:
        try:
            await getattr(self, f"_{self.action}")(interaction)
        except Exception as error:
            await handle_interaction_error(interaction, error)

    # A click that starts a job is deferred publicly: a new "thinking..." message (not the clicked
    # one) that `launch` turns into the job's progress message. Refusals still go privately.
    async def _reroll(self, interaction: discord.Interaction[Stablehand]) -> None:
        services = interaction.client.services
        job, policy = await acknowledge.in_time(
            interaction,
            asyncio.gather(
                _job(interaction, self.job_id), services.policy_for(interaction.guild_id)
            ),
            ephemeral=False,
        )
        image = None
        if job.request.image is not None:
            # An image job is redone from the same source image, downloaded again: defer first.
            await acknowledge.defer(interaction, ephemeral=False)
            image = await _source_image(
                interaction, job.request.image, policy.max_pixels, gone=REROLL_SOURCE_GONE
            )
        who = requester(interaction)
        request = prompt.revise(
            job.request,
            image=image_input(image),
            library=services.templates,
            policy=policy,
            channel_nsfw=who.pop("channel_nsfw"),
            seed=prompt.random_seed(),
        )
        await launch(interaction, services.job_for(request, image=image, **who))

    async def _cancel(self, interaction: discord.Interaction[Stablehand]) -> None:
        text = await acknowledge.in_time(interaction, cancelling.cancel(interaction, self.job_id))
        await outgoing.answer(interaction, text)

    async def _subtle(self, interaction: discord.Interaction[Stablehand]) -> None:
        await self._from_image(interaction, VARY_WORKFLOW, denoise=VARY_DENOISE["subtle"])

    async def _strong(self, interaction: discord.Interaction[Stablehand]) -> None:
        await self._from_image(interaction, VARY_WORKFLOW, denoise=VARY_DENOISE["strong"])

    async def _vary(self, interaction: discord.Interaction[Stablehand]) -> None:
        await self._from_image(interaction, VARY_WORKFLOW, denoise=VARY_DENOISE["vary"])

    async def _upscale(self, interaction: discord.Interaction[Stablehand]) -> None:
        await self._from_image(interaction, UPSCALE_WORKFLOW, denoise=None)

    async def _from_image(
        self, interaction: discord.Interaction[Stablehand], workflow: str, *, denoise: float | None
    ) -> None:
        """Vary and Upscale start from the image as posted, read back from this very message."""
        job = await acknowledge.in_time(
            interaction, _job(interaction, self.job_id), ephemeral=False
        )
        attachments = [
            a for a in (interaction.message.attachments if interaction.message else []) if a.width
        ]
        if self.index >= len(attachments):
            raise MemberError("That image is no longer attached to this message.")
        await acknowledge.defer(interaction, ephemeral=False)
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
        model = render.model_of(job, interaction.client.services.templates)
        await outgoing.answer(interaction, render.details_text(job, model), file=workflow)


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
            ephemeral=False,
        )
        values = submitted_values(interaction.data or {})
        image = None
        if job.request.image is not None and values.get("image", "").strip():
            # Downloading may take longer than Discord's three seconds: acknowledge first.
            await acknowledge.defer(interaction, ephemeral=False)
            image = await _source_image(interaction, job.request.image, policy.max_pixels)
        style, text = await services.style_for(interaction.guild_id, values.get("prompt", ""), None)
        new_job = services.prepare(
            text,
            options=Options(negative=values.get("negative") or None),
            policy=policy,
            image=image,
            style=style,
            **requester(interaction),
        )
        await launch(interaction, new_job)
    except Exception as error:
        await handle_interaction_error(interaction, error)


EDIT_SOURCE_GONE = (
    "The source image is no longer available from Discord. Clear the Source image box to "
    "edit without it, or use `/imagine` and attach it again."
)
REROLL_SOURCE_GONE = (
    "The source image is no longer available from Discord, so this cannot be rerolled. "
    "Use `/imagine` and attach it again."
)


async def _source_image(
    interaction: discord.Interaction[Stablehand],
    source: ImageInput,
    max_pixels: int,
    *,
    gone: str = EDIT_SOURCE_GONE,
) -> VerifiedImage:
    """The job's source image downloaded again from where the member gave it."""
    if source.source_url is None:
        raise MemberError(gone)
    try:
        data = await interaction.client.http.get_from_cdn(source.source_url)
        image = prepare_input_image(data, max_pixels=max_pixels, max_bytes=MAX_INPUT_BYTES)
    except (discord.HTTPException, ImageError):
        raise MemberError(gone) from None
    return replace(image, source_url=source.source_url)


@dataclass(frozen=True)
class Offers:
    """What a result's buttons would start, priced under the server's policy of the moment."""

    reroll: int | None  # credits, or None where Reroll cannot work
    vary: int | None
    upscale: int | None
    no_upscale: str | None = None  # why Upscale is not offered, for the member


def price_offers(services: Services, job: Job, policy: ContentPolicy) -> Offers:
    """Cost each button's job the way a click would build it, so its label can tell the truth."""

    def cost(workflow: str | None, image: ImageInput | None, denoise: float | None = None) -> int:
        request = prompt.revise(
            job.request,
            image=image,
            workflow=workflow,
            library=services.templates,
            policy=policy,
            channel_nsfw=True,  # tags and spoilers differ by channel, the cost does not
            denoise=denoise,
        )
        return services.job_for(request, user_id=job.user_id, guild_id=None, channel_id=None).cost

    template = services.templates.get(job.template)
    source = job.request.image
    # A job made from an image is redone from that image, downloaded again from Discord.
    rerolls = template is not None and (
        not template.needs_image or (source is not None and source.source_url is not None)
    )
    reroll = _priced(lambda: cost(None, source)) if rerolls else None
    varies = (
        template is not None
        and template.pony_tags
        and all(services.templates.get(name) for name in (VARY_WORKFLOW, UPSCALE_WORKFLOW))
    )
    if not varies:
        return Offers(reroll, None, None)
    # Vary and Upscale start from the result as posted: its size, made fit for an input.
    width, height = input_size(*job.request.output_size, max_pixels=policy.max_pixels)
    posted = ImageInput("result.png", width, height)
    vary = _priced(lambda: cost(VARY_WORKFLOW, posted, VARY_DENOISE["strong"]))
    try:
        return Offers(reroll, vary, cost(UPSCALE_WORKFLOW, posted))
    except PromptError as refusal:
        # What a click would have been told, said up front instead of a dead-end button.
        return Offers(reroll, vary, None, f"No Upscale here: {refusal}")


NOT_PRICED = Offers(None, None, None)


def _priced(cost: Callable[[], int]) -> int | None:
    """The cost, or None where today's policy refuses that job (the button is left out)."""
    try:
        return cost()
    except PromptError:
        return None


def result_view(job: Job, image_count: int, offers: Offers) -> discord.ui.View:
    """Reroll, Edit, Details, Delete; Vary (subtle, strong), Upscale and Share per image.

    A button whose job costs more than one credit says so on its label.
    """
    view = discord.ui.View(timeout=None)
    if offers.reroll is not None:
        view.add_item(ResultButton("reroll", job.id, cost=offers.reroll))
    for action in ("edit", "details", "delete"):
        view.add_item(ResultButton(action, job.id))
    shown = range(min(image_count, 5))
    for action, cost in (
        ("subtle", offers.vary),
        ("strong", offers.vary),
        ("upscale", offers.upscale),
    ):
        if cost is not None:
            for index in shown:
                view.add_item(ResultButton(action, job.id, index, count=image_count, cost=cost))
    if job.guild_id is not None:
        for button in gallery.share_buttons(job.id, image_count):
            view.add_item(button)
    return view
